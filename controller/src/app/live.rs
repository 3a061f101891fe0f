//! Live access equals what policy decides now. After every committed change that can change
//! a decision, the change's transaction re-evaluates the live grants it may affect with the
//! same pure decision function that issued them ([`policy::decide`]), on the facts each was
//! issued on (source address, identity provider, MFA time) and the objects as they are now:
//! a grant the decision no longer allows is revoked (audited with the cause and the denial's
//! reason codes), one it allows only for a shorter time is shortened and its gateway told,
//! one it allows under another policy is re-attributed. Time is a change too: every grant
//! ends at its expiry, the earliest of its session limit, time window, MFA age and posture
//! report freshness, and [`Service::end_due_grants`] (driven by the `timers` shell on the
//! earliest expiry) ends it on time with the reasons the decision gives then.
//!
//! This is the one place "what happens when something changes" lives; the feature files
//! call [`Service::reevaluate_in`] inside their transaction and
//! [`Service::announce_reevaluation`] after committing.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use jiff::Timestamp;
use model::{
    Device, DeviceId, Grant, GroupId, Policy, PostureProfile, PostureProfileId, PostureReport,
    Resource, ResourceId, User, UserId,
};
use store::{self, Conn, DecisionFacts, GrantFilter};

use super::kernel::{Actor, Result, Service, now, subject};

/// What changed, as the audit of a revocation names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// The change, as its own audit event names it (`policy.updated`, `group.member_added`,
    /// `posture.reported`, `time`).
    pub(crate) change: String,
    /// What it changed (`policy:<id>`).
    pub(crate) subject: String,
}

impl Cause {
    /// A change of kind `change` to `kind:id`.
    pub(crate) fn new(change: &str, kind: &str, id: impl std::fmt::Display) -> Self {
        Self {
            change: change.to_owned(),
            subject: subject(kind, id),
        }
    }
}

/// What a re-evaluation did inside its transaction, to announce once it committed.
#[derive(Debug, Default)]
#[must_use = "announce it after the commit"]
pub(crate) struct Reevaluation {
    /// Grants revoked.
    pub(crate) revoked: Vec<Grant>,
    /// Grants whose expiry moved earlier (with the new expiry).
    pub(crate) shortened: Vec<Grant>,
}

impl Reevaluation {
    /// Adds what another re-evaluation did.
    pub(crate) fn extend(&mut self, other: Reevaluation) {
        self.revoked.extend(other.revoked);
        self.shortened.extend(other.shortened);
    }
}

/// The objects decisions are made on, each read once per re-evaluation.
#[derive(Default)]
struct Objects {
    users: HashMap<UserId, Option<User>>,
    groups: HashMap<UserId, Vec<GroupId>>,
    devices: HashMap<DeviceId, Option<Device>>,
    postures: HashMap<DeviceId, Option<PostureReport>>,
    resources: HashMap<ResourceId, Option<Resource>>,
    policies: HashMap<ResourceId, Vec<Policy>>,
    profiles: Option<BTreeMap<PostureProfileId, PostureProfile>>,
}

/// What the decision says of one live grant now.
enum Verdict {
    /// Still allowed, until `expires_at` under `policy`.
    Allow {
        expires_at: Timestamp,
        policy: model::PolicyId,
    },
    /// No longer allowed.
    Deny(Vec<policy::Reason>),
}

impl Objects {
    async fn decide(
        &mut self,
        c: &mut Conn,
        g: &Grant,
        facts: &DecisionFacts,
        now: Timestamp,
    ) -> Result<Verdict> {
        if let Entry::Vacant(e) = self.users.entry(g.user_id) {
            e.insert(store::get_user(c, g.user_id).await?);
            let groups = store::groups_of_user(c, g.user_id).await?;
            self.groups.insert(g.user_id, groups);
        }
        if let Entry::Vacant(e) = self.devices.entry(g.device_id) {
            e.insert(store::get_device(c, g.device_id).await?);
            let posture = store::get_posture(c, g.device_id).await?;
            self.postures.insert(g.device_id, posture);
        }
        if let Entry::Vacant(e) = self.resources.entry(g.resource_id) {
            e.insert(store::get_resource(c, g.resource_id).await?);
            let policies = store::policies_for_resource(c, g.resource_id).await?;
            self.policies.insert(g.resource_id, policies);
        }
        if self.profiles.is_none() {
            self.profiles = Some(store::profiles_by_id(c).await?);
        }
        let gone = |what: &str| {
            Verdict::Deny(vec![policy::Reason::new(
                policy::ReasonCode::SubjectGone,
                format!("The {what} of this grant no longer exists."),
            )])
        };
        let (Some(Some(user)), Some(Some(device)), Some(Some(resource))) = (
            self.users.get(&g.user_id),
            self.devices.get(&g.device_id),
            self.resources.get(&g.resource_id),
        ) else {
            return Ok(gone("user, device or resource"));
        };
        let empty = Vec::new();
        let decision = policy::decide(&policy::DecisionInput {
            user,
            user_groups: self.groups.get(&g.user_id).unwrap_or(&empty),
            device,
            posture: self.postures.get(&g.device_id).and_then(Option::as_ref),
            identity_provider: facts.identity_provider.as_deref().unwrap_or("local"),
            last_mfa_at: facts.last_mfa_at,
            // A grant issued before sources were recorded is decided as from nowhere: a
            // policy that names source ranges no longer admits it.
            source: facts.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            now,
            resource,
            policies: self.policies.get(&g.resource_id).unwrap_or(&Vec::new()),
            posture_profiles: self.profiles.as_ref().unwrap_or(&BTreeMap::new()),
        });
        Ok(match decision {
            policy::Decision::Allow { expires_at, policy } => Verdict::Allow { expires_at, policy },
            policy::Decision::Deny { reasons } => Verdict::Deny(reasons),
        })
    }
}

/// The text a revocation's reason field and the client's message carry.
fn reason_text(cause: &Cause, reasons: &[policy::Reason]) -> String {
    let words: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
    format!(
        "access re-evaluated after {}: {}",
        cause.change,
        words.join(" ")
    )
}

impl Service {
    /// Re-evaluates the live grants matching `scope` inside `c`'s transaction, after a change
    /// `cause` made by `actor` that may change their decision: revokes those the decision no
    /// longer allows, shortens those it allows for less time, and audits each. Announce the
    /// result after committing.
    pub(crate) async fn reevaluate_in(
        &self,
        c: &mut Conn,
        actor: &Actor,
        cause: &Cause,
        scope: GrantFilter,
    ) -> Result<Reevaluation> {
        let now = now();
        let scope = GrantFilter {
            live_at: Some(now),
            ..scope
        };
        let grants = store::list_grants_with_facts(c, &scope).await?;
        let mut objects = Objects::default();
        let mut out = Reevaluation::default();
        for (g, facts) in grants {
            match objects.decide(c, &g, &facts, now).await? {
                Verdict::Deny(reasons) => {
                    let text = reason_text(cause, &reasons);
                    let revoked =
                        store::revoke_grants(c, &GrantFilter::for_grant(g.id), now, &text).await?;
                    for r in &revoked {
                        self.audit_reevaluated(c, actor, cause, r, "grant.revoked", &reasons, None)
                            .await?;
                    }
                    out.revoked.extend(revoked);
                }
                Verdict::Allow { expires_at, policy } if expires_at < g.expires_at => {
                    if store::shorten_grant(c, g.id, expires_at, policy).await? {
                        let shortened = Grant {
                            expires_at,
                            policy_id: policy,
                            ..g
                        };
                        self.audit_reevaluated(
                            c,
                            actor,
                            cause,
                            &shortened,
                            "grant.shortened",
                            &[],
                            Some(g.expires_at),
                        )
                        .await?;
                        out.shortened.push(shortened);
                    }
                }
                Verdict::Allow { policy, .. } if policy != g.policy_id => {
                    store::set_grant_policy(c, g.id, policy).await?;
                }
                Verdict::Allow { .. } => {}
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit_reevaluated(
        &self,
        c: &mut Conn,
        actor: &Actor,
        cause: &Cause,
        g: &Grant,
        kind: &str,
        reasons: &[policy::Reason],
        was: Option<Timestamp>,
    ) -> Result<()> {
        let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
        let mut details = serde_json::json!({
            "device": g.device_id, "user": g.user_id, "resource": g.resource_id,
            "gateway": g.gateway_id, "policy": g.policy_id,
            "cause": cause.change, "changed": cause.subject, "by": actor.id,
        });
        if let Some(map) = details.as_object_mut() {
            if kind == "grant.revoked" {
                map.insert("reason".into(), reason_text(cause, reasons).into());
                map.insert("reason_codes".into(), codes.into());
            } else {
                map.insert("expires_at".into(), serde_json::json!(g.expires_at));
                map.insert("was".into(), serde_json::json!(was));
            }
        }
        self.audit(c, actor, kind, subject("grant", g.id), details)
            .await
    }

    /// Tells gateways and clients what a committed re-evaluation did: revocations at once,
    /// and each shortened grant's new expiry to its gateway.
    pub(crate) async fn announce_reevaluation(&self, r: Reevaluation) {
        let Reevaluation { revoked, shortened } = r;
        self.announce(revoked);
        if shortened.is_empty() {
            return;
        }
        self.bus.deadline_changed();
        for g in shortened {
            match self.grant_spec(g.id).await {
                Ok(Some(spec)) => {
                    // The gateway updates the peer in place; its acknowledgement is not
                    // awaited (the grant ends at the latest at the old expiry anyway, and
                    // the controller's own timer ends it at the new one).
                    let _ = self.bus.push_grant(g.gateway_id, spec);
                    self.bus.forget_push(g.id);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(grant = %g.id, error = %e, "reading a shortened grant"),
            }
        }
    }

    /// The earliest time a grant not yet ended is due to end.
    pub async fn next_grant_end(&self) -> Result<Option<Timestamp>> {
        let mut c = self.store.conn().await?;
        Ok(store::next_grant_end(&mut c).await?)
    }

    /// Ends every grant whose time is up (at most `limit`): audits each with the reasons the
    /// decision gives at its expiry (posture report stale, time window over, MFA too old, or
    /// its session limit), and tells its gateway and client. Returns how many it ended.
    pub async fn end_due_grants(&self, limit: i64) -> Result<usize> {
        let now = now();
        let mut tx = self.store.begin().await?;
        let due = store::due_grants(&mut tx, now, limit).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let cause = Cause {
            change: "time".into(),
            subject: "clock".into(),
        };
        let actor = Actor::system();
        let mut objects = Objects::default();
        let mut ended = Vec::with_capacity(due.len());
        for (g, facts) in due {
            // Stored times are milliseconds, reports' are finer: decide just after the
            // expiry, where what ended the grant (a stale report, say) has happened.
            let at = now.max(g.expires_at + jiff::SignedDuration::from_millis(1));
            let reasons = match objects.decide(&mut tx, &g, &facts, at).await? {
                Verdict::Deny(reasons) => reasons,
                Verdict::Allow { .. } => vec![policy::Reason::new(
                    policy::ReasonCode::SessionEnded,
                    "The grant reached the end of its session: the client asks again.",
                )],
            };
            let text = reason_text(&cause, &reasons);
            if store::end_grant(&mut tx, &g, &text).await? {
                let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
                self.audit(
                    &mut tx,
                    &actor,
                    "grant.expired",
                    subject("grant", g.id),
                    serde_json::json!({
                        "device": g.device_id, "user": g.user_id, "resource": g.resource_id,
                        "gateway": g.gateway_id, "policy": g.policy_id,
                        "cause": cause.change, "changed": cause.subject, "by": actor.id,
                        "reason": text, "reason_codes": codes, "expires_at": g.expires_at,
                    }),
                )
                .await?;
                ended.push(Grant {
                    revoked_at: Some(g.expires_at),
                    ..g
                });
            }
        }
        tx.commit().await?;
        let n = ended.len();
        self.announce(ended);
        Ok(n)
    }
}
