//! A reference model of the decision for the property tests, written apart from the real
//! one and as plainly as possible: sets of policies instead of a single pass, integer
//! nanoseconds instead of saturating timestamps, time windows as sets of minutes of the
//! week, and window ends found by stepping minute by minute.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use model::{
    CheckState, Policy, PolicyAction, PolicyId, PostureProfile, PostureReport, TimeWindow,
    compare_versions,
};

use crate::DecisionInput;

const SECOND: i128 = 1_000_000_000;
const MINUTE: i128 = 60 * SECOND;
const WEEK_MINUTES: i32 = 7 * 24 * 60;

/// What the reference model decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Allowed until `expires_at` under `policy`.
    Allow {
        /// When the access ends.
        expires_at: Timestamp,
        /// The policy that allows it.
        policy: PolicyId,
    },
    /// Denied.
    Deny,
}

/// Whether a policy's conditions hold: `None` when none is false but one cannot be known.
pub(crate) fn truth(policy: &Policy, input: &DecisionInput<'_>) -> Option<bool> {
    let facts = conditions(policy, input);
    if facts.contains(&Some(false)) {
        Some(false)
    } else if facts.contains(&None) {
        None
    } else {
        Some(true)
    }
}

fn conditions(policy: &Policy, input: &DecisionInput<'_>) -> [Option<bool>; 5] {
    let c = &policy.conditions;
    let now = input.now.as_nanosecond();
    let idp = c
        .identity_provider
        .as_ref()
        .is_none_or(|p| p.as_str() == input.identity_provider);
    let source = c.source_cidrs.is_empty()
        || c.source_cidrs.iter().any(|net| {
            net.contains(&input.source)
                || match input.source {
                    std::net::IpAddr::V6(v6) => v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| net.contains(&std::net::IpAddr::V4(v4))),
                    std::net::IpAddr::V4(_) => false,
                }
        });
    let mfa = match (c.max_mfa_age_secs, input.last_mfa_at) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(max), Some(at)) => at.as_nanosecond() + i128::from(max) * SECOND > now,
    };
    let posture = c.posture_profile_id.map_or(Some(true), |id| {
        input
            .posture_profiles
            .get(&id)
            .map(|profile| posture_ok(profile, input.posture, input.now))
    });
    let windows = if c.time_windows.is_empty() {
        Some(true)
    } else {
        zone(c).map(|tz| covered(&c.time_windows, &tz, input.now))
    };
    [Some(idp), Some(source), Some(mfa), posture, windows]
}

fn zone(c: &model::Conditions) -> Option<TimeZone> {
    TimeZone::get(c.time_zone.as_deref().unwrap_or("UTC")).ok()
}

/// Whether a device with `report` passes `profile` at `now`.
pub(crate) fn posture_ok(
    profile: &PostureProfile,
    report: Option<&PostureReport>,
    now: Timestamp,
) -> bool {
    let Some(r) = report else { return false };
    let collected = r.collected_at.as_nanosecond();
    let now = now.as_nanosecond();
    let at_least = |version: Option<&str>, min: &str| {
        version
            .and_then(|v| compare_versions(v, min))
            .is_some_and(|o| o != Ordering::Less)
    };
    let os_ok = profile.min_os_versions.is_empty()
        || r.os_name.as_deref().is_some_and(|os| {
            match profile
                .min_os_versions
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(os.trim()))
            {
                None => true,
                Some((_, min)) => at_least(r.os_version.as_deref(), min),
            }
        });
    let flag = |required: bool, state: CheckState| !required || state == CheckState::Pass;
    let serial_ok = profile.serial_allowlist.is_empty()
        || r.serial.as_deref().is_some_and(|s| {
            let s = s.trim().to_ascii_lowercase();
            !s.is_empty()
                && profile
                    .serial_allowlist
                    .iter()
                    .any(|a| a.trim().to_ascii_lowercase() == s)
        });
    collected <= now + 300 * SECOND
        && profile
            .max_report_age_secs
            .is_none_or(|max| collected + i128::from(max) * SECOND > now)
        && os_ok
        && flag(profile.require_disk_encryption, r.disk_encryption)
        && flag(profile.require_firewall, r.firewall)
        && flag(profile.require_secure_boot, r.secure_boot)
        && flag(profile.require_screen_lock, r.screen_lock)
        && profile
            .required_processes
            .iter()
            .all(|p| r.processes.contains(p))
        && profile
            .min_client_version
            .as_deref()
            .is_none_or(|min| at_least(r.client_version.as_deref(), min))
        && serial_ok
}

/// Whether one of `windows` holds at `t` in `tz`: each window is a set of minutes of the
/// week, starting on each of its days and running past midnight when it ends before it
/// starts.
pub(crate) fn covered(windows: &[TimeWindow], tz: &TimeZone, t: Timestamp) -> bool {
    let local = t.to_zoned(tz.clone());
    let minute_of_week = i32::from(local.weekday().to_monday_zero_offset()) * 1440
        + i32::from(local.hour()) * 60
        + i32::from(local.minute());
    windows.iter().any(|w| {
        let (start, end) = (i32::from(w.start.minutes()), i32::from(w.end.minutes()));
        let length = if start < end {
            end - start
        } else {
            1440 - start + end
        };
        w.days.iter().any(|&day| {
            let first = day as i32 * 1440 + start;
            (minute_of_week - first).rem_euclid(WEEK_MINUTES) < length
        })
    })
}

/// When the access a policy gives ends, in nanoseconds, if its conditions hold: the
/// session, MFA and report limits, and the first whole minute from `now` at which no window
/// holds, found by stepping.
fn expiry(policy: &Policy, input: &DecisionInput<'_>) -> i128 {
    let c = &policy.conditions;
    let now = input.now.as_nanosecond();
    let mut limits = vec![now + i128::from(policy.max_session_secs) * SECOND];
    if let (Some(max), Some(at)) = (c.max_mfa_age_secs, input.last_mfa_at) {
        limits.push(at.as_nanosecond() + i128::from(max) * SECOND);
    }
    let profile = c
        .posture_profile_id
        .and_then(|id| input.posture_profiles.get(&id));
    if let (Some(max), Some(report)) = (profile.and_then(|p| p.max_report_age_secs), input.posture)
    {
        limits.push(report.collected_at.as_nanosecond() + i128::from(max) * SECOND);
    }
    let bound = limits.iter().copied().min().unwrap_or(now);
    if c.time_windows.is_empty() {
        return bound;
    }
    let Some(tz) = zone(c) else { return now };
    let mut t = (now.div_euclid(MINUTE) + 1) * MINUTE;
    while t < bound && covered(&c.time_windows, &tz, ts(t)) {
        t += MINUTE;
    }
    t.min(bound)
}

pub(crate) fn ts(nanos: i128) -> Timestamp {
    let nanos = nanos.clamp(
        Timestamp::MIN.as_nanosecond(),
        Timestamp::MAX.as_nanosecond(),
    );
    Timestamp::from_nanosecond(nanos).unwrap()
}

/// The reference decision.
pub fn expected(input: &DecisionInput<'_>) -> Expected {
    if input.user.disabled || input.device.disabled || input.device.user_id != input.user.id {
        return Expected::Deny;
    }
    let groups: BTreeSet<_> = input.user_groups.iter().collect();
    let candidates: Vec<&Policy> = input
        .policies
        .iter()
        .filter(|p| {
            !p.disabled && p.resource_id == input.resource.id && groups.contains(&p.group_id)
        })
        .collect();
    let allows: Vec<&Policy> = candidates
        .iter()
        .copied()
        .filter(|p| p.action == PolicyAction::Allow)
        .collect();
    let denies: BTreeSet<PolicyId> = candidates
        .iter()
        .filter(|p| p.action == PolicyAction::Deny && truth(p, input) != Some(false))
        .map(|p| p.id)
        .collect();
    if allows.is_empty() || !denies.is_empty() {
        return Expected::Deny;
    }
    let now = input.now.as_nanosecond();
    let applying: BTreeSet<(i128, Reverse<PolicyId>)> = allows
        .iter()
        .filter(|p| p.max_session_secs > 0 && truth(p, input) == Some(true))
        .map(|p| (expiry(p, input), Reverse(p.id)))
        .filter(|&(until, _)| until > now)
        .collect();
    match applying.last() {
        Some(&(until, Reverse(policy))) => Expected::Allow {
            expires_at: ts(until),
            policy,
        },
        None => Expected::Deny,
    }
}
