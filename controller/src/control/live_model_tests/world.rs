//! The model: what the service should hold after each step, and its checks.

use super::*;

// ------------------------------------------------------------------ the model

pub(super) struct MUser {
    pub(super) id: UserId,
    pub(super) disabled: bool,
}

pub(super) struct MDevice {
    pub(super) id: DeviceId,
    pub(super) owner: usize,
    pub(super) owner_id: UserId,
    pub(super) disabled: bool,
    pub(super) key: DeviceKey,
    /// The device session's secret while it lasts (disabling the device or its user ends
    /// it for good).
    pub(super) session: Option<String>,
    pub(super) seq: u64,
    pub(super) posture: Option<PostureReport>,
}

pub(super) struct MResource {
    pub(super) id: ResourceId,
    pub(super) name: String,
    /// Which of its two addresses it reaches.
    pub(super) moved: bool,
}

/// What a decision is made on besides the objects.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    pub(super) user: UserId,
    pub(super) device: DeviceId,
    pub(super) resource: ResourceId,
    pub(super) source: IpAddr,
    pub(super) provider: String,
    pub(super) mfa: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alive {
    /// Not revoked: live until its expiry.
    Yes,
    /// A change met a deadline within one call: revoked or not, the service tells.
    Maybe,
    /// Revoked or expired: never live again.
    No,
}

#[derive(Debug)]
pub(super) struct MGrant {
    pub(super) id: GrantId,
    pub(super) facts: Facts,
    /// The earliest and the latest its expiry may be.
    pub(super) lower: Timestamp,
    pub(super) upper: Timestamp,
    pub(super) alive: Alive,
}

pub(super) fn is_allow(e: &Expected) -> bool {
    matches!(e, Expected::Allow { .. })
}

pub(super) fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// What a case did, for `LIVE_MODEL_STATS=1`.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) granted: usize,
    pub(super) denied: usize,
    pub(super) revoked: usize,
    pub(super) shortened: usize,
    pub(super) ambiguous: usize,
    /// Grants seen to expire.
    pub(super) expired: usize,
    /// Grants issued for less than 600 ms.
    pub(super) short: usize,
    /// Revocations by posture reports, by the device's own and by recorded ones.
    pub(super) posture_revoked: (usize, usize),
    /// The service's reasons for its denials.
    pub(super) denials: BTreeMap<String, usize>,
}

/// The reference's state of the world, kept from the operations alone.
pub(super) struct Model<'a> {
    pub(super) stats: Stats,
    pub(super) f: &'a Fixture,
    pub(super) case: u64,
    pub(super) serial: u64,
    pub(super) started: Timestamp,
    pub(super) slept: Duration,
    pub(super) users: [Option<MUser>; USERS],
    pub(super) groups: [Option<GroupId>; GROUPS],
    /// (group slot, user slot).
    pub(super) members: BTreeSet<(usize, usize)>,
    pub(super) resources: [Option<MResource>; RESOURCES],
    pub(super) devices: [Option<MDevice>; DEVICES],
    pub(super) profiles: [Option<PostureProfile>; PROFILES],
    pub(super) policies: [Option<Policy>; POLICIES],
    pub(super) grants: Vec<MGrant>,
    /// Every user of this case, to tell its grants from other cases'.
    pub(super) case_users: BTreeSet<UserId>,
}

impl<'a> Model<'a> {
    pub(super) fn new(f: &'a Fixture, case: u64) -> Self {
        Self {
            stats: Stats::default(),
            f,
            case,
            serial: 0,
            started: ms_now(),
            slept: Duration::ZERO,
            users: std::array::from_fn(|_| None),
            groups: [None; GROUPS],
            members: BTreeSet::new(),
            resources: std::array::from_fn(|_| None),
            devices: std::array::from_fn(|_| None),
            profiles: std::array::from_fn(|_| None),
            policies: std::array::from_fn(|_| None),
            grants: Vec::new(),
            case_users: BTreeSet::new(),
        }
    }

    pub(super) fn service(&self) -> &Service {
        &self.f.h.service
    }

    pub(super) fn name(&mut self, kind: &str, slot: usize) -> String {
        self.serial += 1;
        format!("c{}-{kind}{slot}-{}", self.case, self.serial)
    }

    /// The reference decision for `facts` at `now`; with `only`, as if the allow policies
    /// were that one alone (the deny policies all stay).
    pub(super) fn expected(
        &self,
        facts: &Facts,
        now: Timestamp,
        only: Option<PolicyId>,
    ) -> Expected {
        let Some(us) = self
            .users
            .iter()
            .position(|u| u.as_ref().is_some_and(|u| u.id == facts.user))
        else {
            return Expected::Deny;
        };
        let mu = self.users[us].as_ref().unwrap();
        let (Some(md), Some(mr)) = (
            self.devices.iter().flatten().find(|d| d.id == facts.device),
            self.resources
                .iter()
                .flatten()
                .find(|r| r.id == facts.resource),
        ) else {
            return Expected::Deny;
        };
        let user = model::User {
            id: mu.id,
            email: String::new(),
            name: String::new(),
            role: Role::User,
            disabled: mu.disabled,
            created_at: Timestamp::UNIX_EPOCH,
        };
        let device = model::Device {
            id: md.id,
            user_id: md.owner_id,
            name: String::new(),
            public_key: String::new(),
            disabled: md.disabled,
            created_at: Timestamp::UNIX_EPOCH,
            last_seen_at: None,
        };
        let resource = model::Resource {
            id: mr.id,
            name: mr.name.clone(),
            site_id: self.f.h.site,
            addresses: Vec::new(),
            ports: Vec::new(),
            created_at: Timestamp::UNIX_EPOCH,
        };
        let groups: Vec<GroupId> = self
            .members
            .iter()
            .filter(|&&(_, u)| u == us)
            .filter_map(|&(g, _)| self.groups[g])
            .collect();
        let policies: Vec<Policy> = self
            .policies
            .iter()
            .flatten()
            .filter(|p| only.is_none_or(|id| p.id == id || p.action == PolicyAction::Deny))
            .cloned()
            .collect();
        let profiles: BTreeMap<PostureProfileId, PostureProfile> = self
            .profiles
            .iter()
            .flatten()
            .map(|p| (p.id, p.clone()))
            .collect();
        reference::expected(&policy::DecisionInput {
            user: &user,
            user_groups: &groups,
            device: &device,
            posture: md.posture.as_ref(),
            identity_provider: &facts.provider,
            last_mfa_at: facts.mfa,
            source: facts.source,
            now,
            resource: &resource,
            policies: &policies,
            posture_profiles: &profiles,
        })
    }

    /// After a change committed between `t0` and `t1`: decides every grant still live
    /// again, as the service must have at some instant in between.
    pub(super) fn changed(&mut self, t0: Timestamp, t1: Timestamp) {
        for i in 0..self.grants.len() {
            let g = &self.grants[i];
            if g.alive == Alive::No {
                continue;
            }
            if g.upper <= t0 {
                // Expired before the change: nothing decides it again.
                self.grants[i].alive = Alive::No;
                continue;
            }
            let facts = g.facts.clone();
            let (v0, v1) = (
                self.expected(&facts, t0, None),
                self.expected(&facts, t1, None),
            );
            let g = &mut self.grants[i];
            match (v0, v1) {
                (Expected::Deny, Expected::Deny) => {
                    g.alive = Alive::No;
                    self.stats.revoked += 1;
                }
                (
                    Expected::Allow { expires_at: e0, .. },
                    Expected::Allow { expires_at: e1, .. },
                ) => {
                    if e1 < g.upper {
                        self.stats.shortened += 1;
                    }
                    g.lower = g.lower.min(e0);
                    g.upper = g.upper.min(e1);
                }
                (Expected::Allow { expires_at: e0, .. }, Expected::Deny) => {
                    g.alive = Alive::Maybe;
                    g.lower = g.lower.min(e0);
                    self.stats.ambiguous += 1;
                }
                (Expected::Deny, Expected::Allow { expires_at: e1, .. }) => {
                    g.alive = Alive::Maybe;
                    g.lower = g.lower.min(t0);
                    g.upper = g.upper.min(e1);
                    self.stats.ambiguous += 1;
                }
            }
        }
    }

    /// The grants of this case as the store has them, live or not.
    pub(super) async fn stored_grants(
        &self,
        live: bool,
    ) -> Result<HashMap<GrantId, Grant>, TestCaseError> {
        let mut out = HashMap::new();
        for user in &self.case_users {
            let grants = self
                .service()
                .list_grants(&admin(), GrantFilter::for_user(*user), live)
                .await
                .map_err(fail)?;
            out.extend(grants.into_iter().map(|g| (g.id, g)));
        }
        Ok(out)
    }

    /// The invariants, after every step.
    pub(super) async fn check(&mut self, step: &str) -> Result<(), TestCaseError> {
        let tq0 = ms_now();
        let live = self.stored_grants(true).await?;
        let tq1 = ms_now();
        for g in &mut self.grants {
            let is_live = live.get(&g.id);
            match g.alive {
                Alive::No => prop_assert!(
                    is_live.is_none(),
                    "after {step}: grant {} is live, but the reference revoked it: {:?}",
                    g.id,
                    is_live
                ),
                Alive::Yes => {
                    prop_assert!(
                        is_live.is_some() || g.lower <= tq1,
                        "after {step}: grant {} is not live, but the reference allows it \
                         until at least {} (now {tq1})",
                        g.id,
                        g.lower
                    );
                    prop_assert!(
                        is_live.is_none() || g.upper > tq0,
                        "after {step}: grant {} is live, but it expired at {} at the latest \
                         (now {tq0})",
                        g.id,
                        g.upper
                    );
                }
                Alive::Maybe => {}
            }
            if g.alive == Alive::Yes && is_live.is_none() {
                self.stats.expired += 1;
            }
            g.alive = if is_live.is_some() {
                Alive::Yes
            } else {
                Alive::No
            };
            if let Some(s) = is_live {
                prop_assert!(
                    g.lower <= s.expires_at && s.expires_at <= g.upper,
                    "after {step}: grant {} expires at {}, the reference says between {} and {}",
                    g.id,
                    s.expires_at,
                    g.lower,
                    g.upper
                );
            }
        }
        let issued: BTreeSet<GrantId> = self.grants.iter().map(|g| g.id).collect();
        for (id, s) in &live {
            prop_assert!(
                issued.contains(id),
                "after {step}: grant {id} is live, but no request was answered with it"
            );
            let g = self.grants.iter().find(|g| g.id == *id).unwrap();
            // From scratch: the reference allows it now, at least until it ends, and so
            // does the policy it is attributed to.
            match self.expected(&g.facts, tq0, None) {
                Expected::Allow { expires_at, .. } => prop_assert!(
                    expires_at >= s.expires_at,
                    "after {step}: live grant {id} ends at {}, but the reference allows it only \
                     until {expires_at}",
                    s.expires_at
                ),
                Expected::Deny => {
                    return Err(fail(format!(
                        "after {step}: live grant {id} is one the reference denies: {s:?}"
                    )));
                }
            }
            match self.expected(&g.facts, tq0, Some(s.policy_id)) {
                Expected::Allow { expires_at, .. } => prop_assert!(
                    expires_at >= s.expires_at,
                    "after {step}: live grant {id} ends at {}, but its policy {} allows it only \
                     until {expires_at}",
                    s.expires_at,
                    s.policy_id
                ),
                Expected::Deny => {
                    return Err(fail(format!(
                        "after {step}: live grant {id} is attributed to policy {}, which does \
                         not allow it",
                        s.policy_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs one operation against the service and the model.
    pub(super) async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let a = admin();
        match op.clone() {
            Op::Request {
                device,
                resource,
                other_user,
                source,
                provider,
                mfa,
                client,
            } => {
                self.request(device, resource, other_user, source, provider, mfa, client)
                    .await?;
            }
            Op::AddMember { group, user } => {
                let (Some(g), Some(u)) = (self.groups[group], self.user_id(user)) else {
                    return Ok(());
                };
                let t0 = ms_now();
                self.service()
                    .add_member(&a, g, MemberInput { user_id: u })
                    .await
                    .map_err(fail)?;
                let t1 = ms_now();
                self.members.insert((group, user));
                self.changed(t0, t1);
            }
            Op::RemoveMember { group, user } => {
                let (Some(g), Some(u)) = (self.groups[group], self.user_id(user)) else {
                    return Ok(());
                };
                let t0 = ms_now();
                let result = self.service().remove_member(&a, g, u).await;
                let t1 = ms_now();
                if self.members.remove(&(group, user)) {
                    result.map_err(fail)?;
                    self.changed(t0, t1);
                } else {
                    prop_assert!(
                        matches!(result, Err(ServiceError::NotFound(_))),
                        "removing a non-member: {result:?}"
                    );
                }
            }
            Op::PutPolicy { slot, spec } => self.put_policy(slot, &spec).await?,
            Op::DeletePolicy { slot } => {
                let Some(p) = &self.policies[slot] else {
                    return Ok(());
                };
                let t0 = ms_now();
                self.service().delete_policy(&a, p.id).await.map_err(fail)?;
                let t1 = ms_now();
                self.policies[slot] = None;
                self.changed(t0, t1);
            }
            Op::PutProfile { slot, spec } => self.put_profile(slot, &spec).await?,
            Op::DeleteProfile { slot } => {
                let Some(p) = &self.profiles[slot] else {
                    return Ok(());
                };
                let id = p.id;
                let used = self
                    .policies
                    .iter()
                    .flatten()
                    .any(|p| p.conditions.posture_profile_id == Some(id));
                let result = self.service().delete_profile(&a, id).await;
                if used {
                    prop_assert!(
                        matches!(result, Err(ServiceError::Conflict { .. })),
                        "deleting a used profile: {result:?}"
                    );
                } else {
                    result.map_err(fail)?;
                    self.profiles[slot] = None;
                }
            }
            Op::Posture {
                device,
                report,
                client,
            } => self.posture(device, &report, client).await?,
            Op::DisableUser { user, disabled } => {
                let Some(u) = &self.users[user] else {
                    return Ok(());
                };
                let (id, was) = (u.id, u.disabled);
                let t0 = ms_now();
                self.service()
                    .update_user(
                        &a,
                        id,
                        UserPatch {
                            disabled: Some(disabled),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(fail)?;
                let t1 = ms_now();
                self.users[user].as_mut().unwrap().disabled = disabled;
                if disabled && !was {
                    for d in self.devices.iter_mut().flatten() {
                        if d.owner == user {
                            d.session = None;
                        }
                    }
                }
                self.changed(t0, t1);
            }
            Op::DisableDevice { device, disabled } => {
                let Some(d) = &self.devices[device] else {
                    return Ok(());
                };
                let (id, was) = (d.id, d.disabled);
                let t0 = ms_now();
                self.service()
                    .update_device(
                        &a,
                        id,
                        DevicePatch {
                            disabled: Some(disabled),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(fail)?;
                let t1 = ms_now();
                let d = self.devices[device].as_mut().unwrap();
                d.disabled = disabled;
                if disabled && !was {
                    d.session = None;
                }
                self.changed(t0, t1);
            }
            Op::CreateUser { user } => {
                if self.users[user].is_some() {
                    return Ok(());
                }
                let email = format!("{}@example.com", self.name("u", user));
                let u = self
                    .service()
                    .create_user(
                        &a,
                        UserInput {
                            email,
                            name: format!("User {user}"),
                            role: None,
                        },
                    )
                    .await
                    .map_err(fail)?;
                self.case_users.insert(u.id);
                self.users[user] = Some(MUser {
                    id: u.id,
                    disabled: false,
                });
            }
            Op::DeleteUser { user } => {
                let Some(u) = &self.users[user] else {
                    return Ok(());
                };
                let t0 = ms_now();
                self.service().delete_user(&a, u.id).await.map_err(fail)?;
                let t1 = ms_now();
                self.users[user] = None;
                self.members.retain(|&(_, u)| u != user);
                for d in &mut self.devices {
                    if d.as_ref().is_some_and(|d| d.owner == user) {
                        *d = None;
                    }
                }
                self.changed(t0, t1);
            }
            Op::CreateDevice { device, owner } => {
                if self.devices[device].is_some() {
                    return Ok(());
                }
                let Some(owner_id) = self.user_id(owner) else {
                    return Ok(());
                };
                let enrollment = self
                    .service()
                    .create_enrollment_key(
                        &a,
                        EnrollmentKeyInput {
                            user_id: owner_id,
                            reusable: false,
                            expires_in_secs: None,
                        },
                    )
                    .await
                    .map_err(fail)?;
                let key = DeviceKey::generate();
                let name = self.name("d", device);
                let enrolled = self
                    .service()
                    .enroll_with_key(&enrollment.secret, &name, &key.public_key())
                    .await
                    .map_err(fail)?;
                self.devices[device] = Some(MDevice {
                    id: enrolled.device_id,
                    owner,
                    owner_id,
                    disabled: false,
                    key,
                    session: Some(enrolled.session),
                    seq: 0,
                    posture: None,
                });
            }
            Op::DeleteDevice { device } => {
                let Some(d) = &self.devices[device] else {
                    return Ok(());
                };
                let t0 = ms_now();
                self.service().delete_device(&a, d.id).await.map_err(fail)?;
                let t1 = ms_now();
                self.devices[device] = None;
                self.changed(t0, t1);
            }
            Op::CreateGroup { group } => {
                if self.groups[group].is_some() {
                    return Ok(());
                }
                let name = self.name("g", group);
                let g = self
                    .service()
                    .create_group(
                        &a,
                        GroupInput {
                            name,
                            description: String::new(),
                        },
                    )
                    .await
                    .map_err(fail)?;
                self.groups[group] = Some(g.id);
            }
            Op::DeleteGroup { group } => {
                let Some(id) = self.groups[group] else {
                    return Ok(());
                };
                let used = self.policies.iter().flatten().any(|p| p.group_id == id);
                let t0 = ms_now();
                let result = self.service().delete_group(&a, id).await;
                let t1 = ms_now();
                if used {
                    prop_assert!(
                        matches!(result, Err(ServiceError::Conflict { .. })),
                        "deleting a group a policy names: {result:?}"
                    );
                } else {
                    result.map_err(fail)?;
                    self.groups[group] = None;
                    self.members.retain(|&(g, _)| g != group);
                    self.changed(t0, t1);
                }
            }
            Op::CreateResource { resource } => {
                if self.resources[resource].is_some() {
                    return Ok(());
                }
                let name = self.name("r", resource);
                let r = self
                    .service()
                    .create_resource(&a, self.resource_input(resource, &name, false))
                    .await
                    .map_err(fail)?;
                self.resources[resource] = Some(MResource {
                    id: r.id,
                    name,
                    moved: false,
                });
            }
            Op::UpdateResource { resource, reach } => {
                let Some(r) = &self.resources[resource] else {
                    return Ok(());
                };
                let (id, moved) = (r.id, r.moved != reach);
                let name = self.name("r", resource);
                let t0 = ms_now();
                self.service()
                    .update_resource(&a, id, self.resource_input(resource, &name, moved))
                    .await
                    .map_err(fail)?;
                let t1 = ms_now();
                let r = self.resources[resource].as_mut().unwrap();
                r.name = name;
                r.moved = moved;
                if reach {
                    // What a live grant reaches is fixed at its gateway: a resource that
                    // reaches elsewhere ends its grants, whatever the decision.
                    for g in &mut self.grants {
                        if g.facts.resource == id {
                            g.alive = Alive::No;
                        }
                    }
                }
                self.changed(t0, t1);
            }
            Op::DeleteResource { resource } => {
                let Some(r) = &self.resources[resource] else {
                    return Ok(());
                };
                let id = r.id;
                let used = self.policies.iter().flatten().any(|p| p.resource_id == id);
                let t0 = ms_now();
                let result = self.service().delete_resource(&a, id).await;
                let t1 = ms_now();
                if used {
                    prop_assert!(
                        matches!(result, Err(ServiceError::Conflict { .. })),
                        "deleting a resource a policy names: {result:?}"
                    );
                } else {
                    result.map_err(fail)?;
                    self.resources[resource] = None;
                    self.changed(t0, t1);
                }
            }
            Op::Revoke { nth } => {
                if self.grants.is_empty() {
                    return Ok(());
                }
                let i = nth % self.grants.len();
                let id = self.grants[i].id;
                let result = self.service().revoke_grant(&a, id).await;
                match self.grants[i].alive {
                    // Revoked before: refused. (One past its expiry but not yet ended is
                    // still revoked.)
                    Alive::No if self.stored_grants(false).await?[&id].revoked_at.is_some() => {
                        prop_assert!(
                            matches!(result, Err(ServiceError::Conflict { .. })),
                            "revoking a revoked grant: {result:?}"
                        );
                    }
                    _ => {
                        result.map_err(fail)?;
                    }
                }
                self.grants[i].alive = Alive::No;
            }
            Op::Sleep { ms, past_expiry } => {
                let now = ms_now();
                let next = self
                    .grants
                    .iter()
                    .filter(|g| g.alive == Alive::Yes && g.upper > now)
                    .map(|g| g.upper)
                    .min();
                let step = match next {
                    Some(at) if past_expiry => {
                        (at.duration_since(now) + millis(ms as i64 / 10)).unsigned_abs()
                    }
                    _ => Duration::from_millis(ms),
                };
                if self.slept + step <= SLEEP_BUDGET {
                    tokio::time::sleep(step).await;
                    self.slept += step;
                }
                let t0 = ms_now();
                self.service().end_due_grants(10_000).await.map_err(fail)?;
                // Every grant whose time was up is ended now, not merely past its expiry.
                for (id, g) in self.stored_grants(false).await? {
                    prop_assert!(
                        g.revoked_at.is_some() || g.expires_at > t0,
                        "grant {id} expired at {} but was not ended at {t0}",
                        g.expires_at
                    );
                }
            }
        }
        Ok(())
    }
}
