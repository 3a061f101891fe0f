//! The model applying the operations that need more than one service call.

use super::*;

impl Model<'_> {
    pub(super) fn user_id(&self, slot: usize) -> Option<UserId> {
        self.users[slot].as_ref().map(|u| u.id)
    }

    pub(super) fn resource_input(&self, slot: usize, name: &str, moved: bool) -> ResourceInput {
        ResourceInput {
            name: name.to_owned(),
            site_id: self.f.h.site,
            addresses: vec![format!("10.9.{slot}.{}", if moved { 2 } else { 1 })],
            ports: vec!["tcp/22".into()],
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn request(
        &mut self,
        device: usize,
        resource: usize,
        other_user: bool,
        source: usize,
        provider: usize,
        mfa: Mfa,
        client: bool,
    ) -> Result<(), TestCaseError> {
        let (Some(d), Some(r)) = (&self.devices[device], &self.resources[resource]) else {
            return Ok(());
        };
        let (device_id, resource_id, owner) = (d.id, r.id, d.owner);
        let source_ip: IpAddr = SOURCES[source].parse().unwrap();
        let t0 = ms_now();
        let (facts, outcome) = if client {
            // The device's own request, as its session signed in (with an enrollment key:
            // no MFA).
            let Some(secret) = d.session.clone() else {
                return Ok(());
            };
            let usable = !d.disabled && self.users[owner].as_ref().is_some_and(|u| !u.disabled);
            let ctx = self
                .service()
                .device_session(device_id, &secret)
                .await
                .map_err(fail)?;
            let ctx = match ctx {
                Ok(ctx) if usable => ctx,
                Err(_) if !usable => return Ok(()),
                other => return Err(fail(format!("device session: {other:?}"))),
            };
            let facts = Facts {
                user: d.owner_id,
                device: device_id,
                resource: resource_id,
                source: source_ip,
                provider: "enrollment_key".into(),
                mfa: None,
            };
            let outcome = self
                .service()
                .client_request_access(&ctx, resource_id, &key(), None, source_ip)
                .await;
            (facts, outcome)
        } else {
            let user = if other_user {
                (owner + 1) % USERS
            } else {
                owner
            };
            let Some(user_id) = self.user_id(user) else {
                return Ok(());
            };
            let last_mfa_at = match mfa {
                Mfa::None => None,
                Mfa::Fresh => Some(t0),
                Mfa::Aging(ms) => Some(t0 - secs(60) + millis(ms)),
                Mfa::Old => Some(t0 - secs(7200)),
            };
            let provider = REQUEST_PROVIDERS[provider];
            let facts = Facts {
                user: user_id,
                device: device_id,
                resource: resource_id,
                source: source_ip,
                provider: provider.unwrap_or("local").into(),
                mfa: last_mfa_at,
            };
            let outcome = self
                .service()
                .request_access(
                    &admin(),
                    AccessRequest {
                        user_id,
                        device_id,
                        resource_id,
                        source: SOURCES[source].into(),
                        public_key: key(),
                        identity_provider: provider.map(Into::into),
                        last_mfa_at,
                    },
                )
                .await;
            (facts, outcome)
        };
        let t1 = ms_now();
        let (v0, v1) = (
            self.expected(&facts, t0, None),
            self.expected(&facts, t1, None),
        );
        match outcome {
            Ok(AccessOutcome::Granted(g)) => {
                prop_assert!(
                    is_allow(&v0) || is_allow(&v1),
                    "granted {g:?} for {facts:?}, which the reference denies"
                );
                if let (
                    Expected::Allow { expires_at: e0, .. },
                    Expected::Allow { expires_at: e1, .. },
                ) = (v0, v1)
                {
                    prop_assert!(
                        e0 <= g.expires_at && g.expires_at <= e1,
                        "granted until {}, the reference says between {e0} and {e1}",
                        g.expires_at
                    );
                }
                self.stats.granted += 1;
                if g.expires_at < t1 + millis(600) {
                    self.stats.short += 1;
                }
                self.grants.push(MGrant {
                    id: g.grant_id,
                    facts,
                    lower: g.expires_at,
                    upper: g.expires_at,
                    alive: Alive::Yes,
                });
            }
            Ok(AccessOutcome::Denied { reasons }) => {
                self.stats.denied += 1;
                for r in &reasons {
                    *self
                        .stats
                        .denials
                        .entry(r.code.as_str().to_owned())
                        .or_default() += 1;
                }
                prop_assert!(
                    !is_allow(&v0) || !is_allow(&v1),
                    "denied {facts:?} ({reasons:?}), which the reference allows: {v0:?}"
                );
            }
            Err(e) => return Err(fail(format!("access request {facts:?}: {e}"))),
        }
        Ok(())
    }

    pub(super) async fn put_policy(
        &mut self,
        slot: usize,
        spec: &PolicySpec,
    ) -> Result<(), TestCaseError> {
        let a = admin();
        let zone = ZONES[spec.zone];
        let time_windows = windows(spec.window, zone, ms_now());
        let group = self.groups[spec.group];
        let resource = self.resources[spec.resource].as_ref().map(|r| r.id);
        let profile = spec
            .profile
            .map(|k| self.profiles[k].as_ref().map(|p| p.id));
        let name = format!("c{}-p{slot}", self.case);
        let input = PolicyInput {
            name: name.clone(),
            // Missing objects are named by ids nothing has, which the service refuses.
            group_id: group.unwrap_or_default(),
            resource_id: resource.unwrap_or_default(),
            action: if spec.deny {
                PolicyAction::Deny
            } else {
                PolicyAction::Allow
            },
            conditions: ConditionsInput {
                posture_profile_id: profile.map(|p| p.unwrap_or_default()),
                time_windows: time_windows.clone(),
                time_zone: zone.map(Into::into),
                source_cidrs: CIDRS[spec.cidrs].iter().map(|c| (*c).into()).collect(),
                max_mfa_age_secs: MFA_AGES[spec.mfa],
                identity_provider: POLICY_PROVIDERS[spec.provider].map(Into::into),
            },
            max_session_secs: Some(SESSIONS[spec.session]),
            disabled: spec.disabled,
        };
        let valid = group.is_some() && resource.is_some() && profile.is_none_or(|p| p.is_some());
        let t0 = ms_now();
        let result = match &self.policies[slot] {
            Some(p) => self.service().update_policy(&a, p.id, input.clone()).await,
            None => self.service().create_policy(&a, input.clone()).await,
        };
        let t1 = ms_now();
        if !valid {
            prop_assert!(
                matches!(result, Err(ServiceError::Invalid(_))),
                "a policy naming missing objects: {result:?}"
            );
            return Ok(());
        }
        let id = result.map_err(fail)?.id;
        self.policies[slot] = Some(Policy {
            id,
            name,
            group_id: input.group_id,
            resource_id: input.resource_id,
            action: input.action,
            conditions: Conditions {
                posture_profile_id: input.conditions.posture_profile_id,
                time_windows,
                time_zone: input.conditions.time_zone,
                source_cidrs: CIDRS[spec.cidrs]
                    .iter()
                    .map(|c| c.parse().unwrap())
                    .collect(),
                max_mfa_age_secs: input.conditions.max_mfa_age_secs,
                identity_provider: input.conditions.identity_provider,
            },
            max_session_secs: SESSIONS[spec.session],
            disabled: spec.disabled,
            created_at: Timestamp::UNIX_EPOCH,
        });
        self.changed(t0, t1);
        Ok(())
    }

    pub(super) async fn put_profile(
        &mut self,
        slot: usize,
        spec: &ProfileSpec,
    ) -> Result<(), TestCaseError> {
        let a = admin();
        let name = match &self.profiles[slot] {
            Some(p) => p.name.clone(),
            None => self.name("k", slot),
        };
        let min_os_versions: BTreeMap<String, String> = spec
            .min_os
            .map(|v| ("debian".to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        let max_report_age_secs = spec.max_age.then_some(60);
        let input = PostureProfileInput {
            name: name.clone(),
            min_os_versions: min_os_versions.clone(),
            require_disk_encryption: false,
            require_firewall: spec.firewall,
            require_secure_boot: false,
            require_screen_lock: false,
            required_processes: Vec::new(),
            min_client_version: None,
            serial_allowlist: Vec::new(),
            max_report_age_secs,
        };
        let t0 = ms_now();
        let id = match &self.profiles[slot] {
            Some(p) => {
                self.service()
                    .update_profile(&a, p.id, input)
                    .await
                    .map_err(fail)?
                    .id
            }
            None => {
                self.service()
                    .create_profile(&a, input)
                    .await
                    .map_err(fail)?
                    .id
            }
        };
        let t1 = ms_now();
        self.profiles[slot] = Some(PostureProfile {
            id,
            name,
            min_os_versions,
            require_disk_encryption: false,
            require_firewall: spec.firewall,
            require_secure_boot: false,
            require_screen_lock: false,
            required_processes: Vec::new(),
            min_client_version: None,
            serial_allowlist: Vec::new(),
            max_report_age_secs,
        });
        self.changed(t0, t1);
        Ok(())
    }

    pub(super) async fn posture(
        &mut self,
        device: usize,
        spec: &ReportSpec,
        client: bool,
    ) -> Result<(), TestCaseError> {
        let Some(d) = &self.devices[device] else {
            return Ok(());
        };
        let now = ms_now();
        let report = PostureReport {
            collected_at: match spec.aging {
                Some(ms) => now - secs(60) + millis(ms),
                None => now,
            },
            os_name: Some("debian".into()),
            os_version: Some(spec.os.into()),
            kernel_version: None,
            disk_encryption: CheckState::Pass,
            firewall: if spec.firewall {
                CheckState::Pass
            } else {
                CheckState::Fail
            },
            secure_boot: CheckState::Unknown,
            screen_lock: CheckState::Unknown,
            processes: Vec::new(),
            client_version: Some("0.1.0".into()),
            hostname: None,
            serial: None,
        };
        let t0 = ms_now();
        if client {
            let Some(secret) = d.session.clone() else {
                return Ok(());
            };
            let usable = !d.disabled && self.users[d.owner].as_ref().is_some_and(|u| !u.disabled);
            let ctx = self
                .service()
                .device_session(d.id, &secret)
                .await
                .map_err(fail)?;
            let ctx = match ctx {
                Ok(ctx) if usable => ctx,
                Err(_) if !usable => return Ok(()),
                other => return Err(fail(format!("device session: {other:?}"))),
            };
            let seq = d.seq + 1;
            let signed = d.key.sign_report(d.id, seq, report.clone());
            self.service()
                .accept_posture(&ctx, &signed)
                .await
                .map_err(fail)?;
            self.devices[device].as_mut().unwrap().seq = seq;
        } else {
            self.service()
                .record_posture(d.id, &report)
                .await
                .map_err(fail)?;
        }
        let t1 = ms_now();
        self.devices[device].as_mut().unwrap().posture = Some(report);
        let before = self.stats.revoked;
        self.changed(t0, t1);
        let revoked = self.stats.revoked - before;
        if client {
            self.stats.posture_revoked.0 += revoked;
        } else {
            self.stats.posture_revoked.1 += revoked;
        }
        Ok(())
    }

    /// At the end of a case: the gateway holds exactly the grants not ended, with their
    /// expiry, and every grant that ended is in the audit log with why.
    pub(super) async fn finish(&mut self) -> Result<(), TestCaseError> {
        self.service().end_due_grants(10_000).await.map_err(fail)?;
        let stored = self.stored_grants(false).await?;
        let expected: BTreeMap<GrantId, Timestamp> = stored
            .values()
            .filter(|g| g.revoked_at.is_none())
            .map(|g| (g.id, g.expires_at))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let held: BTreeMap<GrantId, Timestamp> = self
                .f
                .gw
                .grants()
                .into_iter()
                .filter(|(id, _)| stored.contains_key(id))
                .map(|(id, spec)| (id, spec.expires_at))
                .collect();
            if held == expected {
                break;
            }
            prop_assert!(
                Instant::now() < deadline,
                "the gateway holds {held:?}, the store {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events = self
            .service()
            .audit_log(
                &admin(),
                AuditFilter {
                    kind: Some("grant.".into()),
                    since: Some(self.started),
                    limit: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(fail)?;
        for g in stored.values().filter(|g| g.revoked_at.is_some()) {
            let subject = format!("grant:{}", g.id);
            let ended: Vec<_> = events
                .iter()
                .filter(|e| {
                    e.subject == subject && (e.kind == "grant.revoked" || e.kind == "grant.expired")
                })
                .collect();
            prop_assert!(ended.len() == 1, "grant {} ended, audited {ended:?}", g.id);
            let e = ended[0];
            let d = &e.details;
            // Every end names the grant's device, resource and gateway, why, what caused
            // it and who.
            prop_assert!(
                d["device"] == json!(g.device_id)
                    && d["user"] == json!(g.user_id)
                    && d["resource"] == json!(g.resource_id)
                    && d["gateway"] == json!(g.gateway_id)
                    && d["reason"].is_string()
                    && d["cause"].is_string()
                    && d["by"] == json!(e.actor),
                "{e:?}"
            );
            let decided = d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("access re-evaluated after"));
            if e.kind == "grant.expired" {
                prop_assert!(
                    d["cause"] == json!("time") && e.actor == "system" && decided,
                    "{e:?}"
                );
            }
            if decided {
                // Ended by a decision: what changed, and the decision's reasons.
                prop_assert!(
                    d["changed"].is_string()
                        && d["reason_codes"].as_array().is_some_and(|c| !c.is_empty()),
                    "{e:?}"
                );
            }
        }
        Ok(())
    }
}
