use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use model::{
    Device, GroupId, Policy, PolicyAction, PolicyId, PostureProfile, PostureProfileId,
    PostureReport, Resource, User,
};
use serde::{Deserialize, Serialize};

use crate::posture::{check_posture, plus_secs};
use crate::reason::{Reason, ReasonCode, describe_secs};
use crate::schedule::{describe_windows, windows_end};

/// Everything an access decision depends on. The caller gathers it; [`decide`] reads
/// nothing else.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    /// The user asking for access.
    pub user: &'a User,
    /// The groups the user is a member of.
    pub user_groups: &'a [GroupId],
    /// The device the user asks from.
    pub device: &'a Device,
    /// The device's latest posture report.
    pub posture: Option<&'a PostureReport>,
    /// How the user signed in: `local` or the name of an identity provider.
    pub identity_provider: &'a str,
    /// When the user last completed multi-factor authentication.
    pub last_mfa_at: Option<Timestamp>,
    /// The request's source address.
    pub source: IpAddr,
    /// The time of the decision.
    pub now: Timestamp,
    /// The resource asked for.
    pub resource: &'a Resource,
    /// Policies to consider; those for other resources or groups, and disabled ones, are
    /// ignored.
    pub policies: &'a [Policy],
    /// The posture profiles policies may refer to.
    pub posture_profiles: &'a BTreeMap<PostureProfileId, PostureProfile>,
}

/// The outcome of an access decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// Access is allowed until `expires_at`.
    Allow {
        /// When the access ends unless renewed: always after the decision's `now`.
        #[schema(value_type = String, format = DateTime)]
        expires_at: Timestamp,
        /// The policy that allows it.
        policy: PolicyId,
    },
    /// Access is denied.
    Deny {
        /// Why, in the order to show them; never empty.
        reasons: Vec<Reason>,
    },
}

impl Decision {
    /// Whether access is allowed.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The reasons for a denial; empty for an allow.
    pub fn reasons(&self) -> &[Reason] {
        match self {
            Decision::Allow { .. } => &[],
            Decision::Deny { reasons } => reasons,
        }
    }
}

/// Decides whether `input.user` on `input.device` may reach `input.resource` now, and
/// until when.
///
/// Denied at once when the user or device is disabled or the device is not the user's.
/// Otherwise the enabled policies for the resource and the user's groups are the
/// candidates. A deny policy whose conditions hold wins over every allow policy; so does a
/// deny policy that cannot be evaluated (unknown time zone or posture profile), to fail
/// closed. Among the allow policies whose conditions hold, the one whose access lasts
/// longest is chosen (the smallest id on a tie). Access lasts until the earliest of: the
/// policy's maximum session, the end of the stretch of time windows `now` lies in, the
/// MFA age limit, and the posture report's age limit.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let mut reasons = Vec::new();
    if input.user.disabled {
        reasons.push(Reason::new(
            ReasonCode::UserDisabled,
            "Your account is disabled: ask an administrator to enable it.",
        ));
    }
    if input.device.disabled {
        reasons.push(Reason::new(
            ReasonCode::DeviceDisabled,
            format!(
                "This device ({}) is disabled: ask an administrator to enable it, or enroll \
                 the device again.",
                input.device.name
            ),
        ));
    }
    if input.device.user_id != input.user.id {
        reasons.push(Reason::new(
            ReasonCode::DeviceNotOwned,
            format!(
                "This device ({}) is enrolled to another user: sign in on it again to \
                 enroll it as yours.",
                input.device.name
            ),
        ));
    }
    if !reasons.is_empty() {
        return Decision::Deny { reasons };
    }

    let mut candidates: Vec<&Policy> = input
        .policies
        .iter()
        .filter(|p| {
            !p.disabled
                && p.resource_id == input.resource.id
                && input.user_groups.contains(&p.group_id)
        })
        .collect();
    candidates.sort_by_key(|p| p.id);

    if !candidates.iter().any(|p| p.action == PolicyAction::Allow) {
        return Decision::Deny {
            reasons: vec![Reason::new(
                ReasonCode::NoPolicy,
                format!(
                    "You have no access to {}; ask an administrator for access.",
                    input.resource.name
                ),
            )],
        };
    }

    for policy in candidates.iter().filter(|p| p.action == PolicyAction::Deny) {
        let evaluation = evaluate(policy, input);
        if evaluation.truth != Truth::Fails {
            reasons.push(Reason::new(
                ReasonCode::DeniedByPolicy,
                format!(
                    "Access to {} is blocked by the policy \"{}\"; ask an administrator if \
                     you need it.",
                    input.resource.name, policy.name
                ),
            ));
            if evaluation.truth == Truth::Unknown {
                reasons.extend(evaluation.reasons);
            }
        }
    }
    if !reasons.is_empty() {
        return Decision::Deny {
            reasons: sorted(reasons),
        };
    }

    let mut best: Option<(Timestamp, PolicyId)> = None;
    for policy in candidates
        .iter()
        .filter(|p| p.action == PolicyAction::Allow)
    {
        let evaluation = evaluate(policy, input);
        match (evaluation.truth, evaluation.deadline) {
            (Truth::Holds, Some(expires_at)) => {
                // Candidates come in id order, so only a strictly later expiry replaces.
                if best.is_none_or(|(best_expiry, _)| expires_at > best_expiry) {
                    best = Some((expires_at, policy.id));
                }
            }
            _ => reasons.extend(evaluation.reasons),
        }
    }
    match best {
        Some((expires_at, policy)) => Decision::Allow { expires_at, policy },
        None => Decision::Deny {
            reasons: sorted(reasons),
        },
    }
}

/// Reasons without duplicates, in code order, so the result does not depend on the order
/// of the policies.
fn sorted(mut reasons: Vec<Reason>) -> Vec<Reason> {
    reasons.sort();
    reasons.dedup();
    reasons
}

/// Whether a policy's conditions hold: `Unknown` when none fails but one cannot be
/// evaluated because the policy refers to something that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Holds,
    Fails,
    Unknown,
}

/// The evaluation of one policy's conditions.
struct Evaluation {
    truth: Truth,
    /// Why the conditions do not hold or cannot be evaluated.
    reasons: Vec<Reason>,
    /// For an allow policy whose conditions hold, when its access ends: always after now.
    deadline: Option<Timestamp>,
}

impl Evaluation {
    fn fail(&mut self, reason: Reason) {
        self.truth = Truth::Fails;
        self.reasons.push(reason);
    }

    fn unknown(&mut self, reason: Reason) {
        if self.truth == Truth::Holds {
            self.truth = Truth::Unknown;
        }
        self.reasons.push(reason);
    }

    fn limit(&mut self, until: Timestamp) {
        self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
    }
}

fn evaluate(policy: &Policy, input: &DecisionInput<'_>) -> Evaluation {
    let conditions = &policy.conditions;
    let resource = &input.resource.name;
    let now = input.now;
    let mut ev = Evaluation {
        truth: Truth::Holds,
        reasons: Vec::new(),
        deadline: None,
    };

    if let Some(provider) = conditions
        .identity_provider
        .as_deref()
        .filter(|&p| p != input.identity_provider)
    {
        ev.fail(Reason::new(
            ReasonCode::WrongIdentityProvider,
            format!(
                "Access to {resource} needs a sign-in with {provider}, but you signed in with \
                 {}: sign out, sign in with {provider} and try again.",
                input.identity_provider
            ),
        ));
    }

    if !conditions.source_cidrs.is_empty()
        && !source_allowed(&conditions.source_cidrs, input.source)
    {
        ev.fail(Reason::new(
            ReasonCode::SourceNotAllowed,
            format!(
                "Access to {resource} is not allowed from your network address {}: connect \
                 from an allowed network (such as the office network) and try again.",
                input.source
            ),
        ));
    }

    if let Some(max) = conditions.max_mfa_age_secs {
        match input.last_mfa_at.map(|at| plus_secs(at, max)) {
            Some(deadline) if deadline > now => ev.limit(deadline),
            Some(_) => ev.fail(Reason::new(
                ReasonCode::MfaTooOld,
                format!(
                    "Access to {resource} needs a multi-factor sign-in within the last {}, \
                     and yours is older: sign in again and try again.",
                    describe_secs(max)
                ),
            )),
            None => ev.fail(Reason::new(
                ReasonCode::MfaTooOld,
                format!(
                    "Access to {resource} needs a multi-factor sign-in: sign in again with \
                     multi-factor authentication and try again."
                ),
            )),
        }
    }

    if let Some(profile_id) = conditions.posture_profile_id {
        match input.posture_profiles.get(&profile_id) {
            None => ev.unknown(Reason::new(
                ReasonCode::UnknownPostureProfile,
                format!(
                    "The policy \"{}\" requires a posture profile that does not exist, so it \
                     cannot be evaluated: ask an administrator to fix the policy.",
                    policy.name
                ),
            )),
            Some(profile) => {
                let outcome = check_posture(profile, input.posture, now);
                if outcome.passed() {
                    if let Some(until) = outcome.fresh_until {
                        ev.limit(until);
                    }
                } else {
                    for reason in outcome.failures() {
                        ev.fail(reason.clone());
                    }
                }
            }
        }
    }

    if policy.action == PolicyAction::Allow {
        if policy.max_session_secs == 0 {
            ev.fail(empty_session(policy));
        } else {
            ev.limit(plus_secs(now, policy.max_session_secs));
        }
    }

    if !conditions.time_windows.is_empty() {
        let zone = conditions.time_zone.as_deref().unwrap_or("UTC");
        match model::time_zone(zone) {
            Err(_) => ev.unknown(Reason::new(
                ReasonCode::UnknownTimeZone,
                format!(
                    "The policy \"{}\" uses the unknown time zone `{zone}`, so it cannot be \
                     evaluated: ask an administrator to fix the policy.",
                    policy.name
                ),
            )),
            Ok(tz) => {
                // Only the end of the stretch before the other limits matters.
                let horizon = ev.deadline.unwrap_or(now);
                match windows_end(&conditions.time_windows, &tz, now, horizon) {
                    Some(end) => ev.limit(end),
                    None => ev.fail(Reason::new(
                        ReasonCode::OutsideTimeWindow,
                        format!(
                            "Access to {resource} is only allowed {} ({zone} time): try again \
                             then.",
                            describe_windows(&conditions.time_windows)
                        ),
                    )),
                }
            }
        }
    }

    if policy.action == PolicyAction::Allow
        && ev.truth == Truth::Holds
        && ev.deadline.is_none_or(|d| d <= now)
    {
        // Only at the very end of time; kept so that an allow always expires after now.
        ev.fail(empty_session(policy));
    }
    ev
}

fn empty_session(policy: &Policy) -> Reason {
    Reason::new(
        ReasonCode::EmptySession,
        format!(
            "The policy \"{}\" grants sessions of no length, so it cannot allow access: ask \
             an administrator to fix the policy.",
            policy.name
        ),
    )
}

/// Whether `source` lies in one of `nets`, also when it is an IPv4 address written as
/// IPv6 (`::ffff:10.0.0.1`), as dual-stack sockets report them.
fn source_allowed(nets: &[IpNet], source: IpAddr) -> bool {
    let canonical = source.to_canonical();
    nets.iter()
        .any(|net| net.contains(&source) || net.contains(&canonical))
}

#[cfg(test)]
mod tests;
