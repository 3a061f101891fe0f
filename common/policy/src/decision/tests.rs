use jiff::Timestamp;
use model::{CheckState, PolicyAction, TimeWindow, Weekday};
use test_case::test_case;

use crate::fixtures::{NOW, World, id, policy, profile, report, ts, world};
use crate::{Decision, ReasonCode, decide};

/// `world()` with one allow policy (id 1) changed by `f`.
fn with_allow(f: impl FnOnce(&mut model::Policy, &mut World)) -> World {
    let mut w = world();
    let mut p = policy(1, PolicyAction::Allow);
    f(&mut p, &mut w);
    w.policies.push(p);
    w
}

fn codes(decision: &Decision) -> Vec<ReasonCode> {
    decision.reasons().iter().map(|r| r.code).collect()
}

fn allow_until(w: &World) -> Timestamp {
    match decide(&w.input()) {
        Decision::Allow { expires_at, .. } => expires_at,
        deny => panic!("expected allow, got {deny:#?}"),
    }
}

fn window(days: &[Weekday], start: &str, end: &str) -> TimeWindow {
    TimeWindow {
        days: days.to_vec(),
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

#[test]
fn a_plain_allow_policy_allows_for_the_session_length() {
    let w = with_allow(|_, _| {});
    assert_eq!(
        decide(&w.input()),
        Decision::Allow {
            expires_at: ts("2026-11-25T18:00:00Z"),
            policy: id(1)
        }
    );
}

#[test_case(true, false, false, &[ReasonCode::UserDisabled] ; "user disabled")]
#[test_case(false, true, false, &[ReasonCode::DeviceDisabled] ; "device disabled")]
#[test_case(false, false, true, &[ReasonCode::DeviceNotOwned] ; "device of another user")]
#[test_case(true, true, true, &[ReasonCode::UserDisabled, ReasonCode::DeviceDisabled, ReasonCode::DeviceNotOwned] ; "all of them")]
fn user_and_device_come_first(
    user_disabled: bool,
    device_disabled: bool,
    foreign: bool,
    expected: &[ReasonCode],
) {
    let mut w = with_allow(|_, _| {});
    w.user.disabled = user_disabled;
    w.device.disabled = device_disabled;
    if foreign {
        w.device.user_id = id(2);
    }
    assert_eq!(codes(&decide(&w.input())), expected);
}

#[test_case(|_, _| {} ; "no policies at all")]
#[test_case(|p, w| { p.resource_id = id(2); w.policies.push(p.clone()) } ; "policy for another resource")]
#[test_case(|p, w| { p.group_id = id(2); w.policies.push(p.clone()) } ; "policy for another group")]
#[test_case(|p, w| { p.disabled = true; w.policies.push(p.clone()) } ; "disabled policy")]
#[test_case(|p, w| { p.action = PolicyAction::Deny; w.policies.push(p.clone()) } ; "only a deny policy")]
fn without_an_allow_policy_there_is_no_access(f: fn(&mut model::Policy, &mut World)) {
    let mut w = world();
    let mut p = policy(1, PolicyAction::Allow);
    f(&mut p, &mut w);
    let decision = decide(&w.input());
    assert_eq!(codes(&decision), [ReasonCode::NoPolicy]);
    assert_eq!(
        decision.reasons()[0].message,
        "You have no access to db; ask an administrator for access."
    );
}

#[test]
fn membership_in_any_group_counts() {
    let mut w = with_allow(|p, _| p.group_id = id(7));
    w.groups = vec![id(3), id(7)];
    assert!(decide(&w.input()).is_allow());
}

#[test_case(None, "okta", None ; "no requirement")]
#[test_case(Some("okta"), "okta", None ; "same provider")]
#[test_case(Some("okta"), "local", Some(ReasonCode::WrongIdentityProvider) ; "local account")]
#[test_case(Some("local"), "okta", Some(ReasonCode::WrongIdentityProvider) ; "sso instead of local")]
fn identity_provider(required: Option<&str>, actual: &str, code: Option<ReasonCode>) {
    let mut w = with_allow(|p, _| p.conditions.identity_provider = required.map(Into::into));
    w.identity_provider = actual.into();
    let decision = decide(&w.input());
    assert_eq!(codes(&decision), code.into_iter().collect::<Vec<_>>());
}

#[test_case(&[], "198.51.100.1", true ; "anywhere")]
#[test_case(&["192.0.2.0/24"], "192.0.2.10", true ; "inside")]
#[test_case(&["10.0.0.0/8", "192.0.2.0/24"], "192.0.2.10", true ; "inside the second")]
#[test_case(&["192.0.2.0/24"], "198.51.100.1", false ; "outside")]
#[test_case(&["192.0.2.0/24"], "::ffff:192.0.2.10", true ; "ipv4 written as ipv6")]
#[test_case(&["2001:db8::/32"], "2001:db8::1", true ; "ipv6 inside")]
#[test_case(&["2001:db8::/32"], "192.0.2.10", false ; "other family")]
fn source_ranges(cidrs: &[&str], source: &str, allowed: bool) {
    let mut w = with_allow(|p, _| {
        p.conditions.source_cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
    });
    w.source = source.parse().unwrap();
    let decision = decide(&w.input());
    if allowed {
        assert!(decision.is_allow(), "{decision:#?}");
    } else {
        assert_eq!(codes(&decision), [ReasonCode::SourceNotAllowed]);
        assert!(decision.reasons()[0].message.contains(source));
    }
}

#[test_case(None, Some("2026-11-25T09:00:00Z"), Some("2026-11-25T18:00:00Z") ; "no requirement")]
#[test_case(Some(12 * 3600), Some("2026-11-25T09:00:00Z"), Some("2026-11-25T18:00:00Z") ; "session ends first")]
#[test_case(Some(3600), Some("2026-11-25T09:30:00Z"), Some("2026-11-25T10:30:00Z") ; "mfa age ends first")]
#[test_case(Some(3600), Some("2026-11-25T09:00:00Z"), None ; "exactly as old as allowed")]
#[test_case(Some(3600), Some("2026-11-25T08:00:00Z"), None ; "too old")]
#[test_case(Some(3600), None, None ; "never")]
fn mfa_age(max: Option<u64>, last: Option<&str>, expires_at: Option<&str>) {
    let mut w = with_allow(|p, _| p.conditions.max_mfa_age_secs = max);
    w.last_mfa_at = last.map(ts);
    let decision = decide(&w.input());
    match expires_at {
        Some(at) => assert_eq!(allow_until(&w), ts(at)),
        None => {
            assert_eq!(codes(&decision), [ReasonCode::MfaTooOld]);
            assert!(decision.reasons()[0].message.contains("sign in again"));
        }
    }
}

const WEEKDAYS: &[Weekday] = &[
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];

// NOW is Wednesday 10:00 UTC, 11:00 in Berlin, 05:00 in New York.
#[test_case(None, "09:00", "18:00", Ok("2026-11-25T18:00:00Z") ; "utc office hours")]
#[test_case(Some("UTC"), "09:00", "12:00", Ok("2026-11-25T12:00:00Z") ; "window ends before the session")]
#[test_case(Some("Europe/Berlin"), "09:00", "12:00", Ok("2026-11-25T11:00:00Z") ; "berlin")]
#[test_case(Some("America/New_York"), "09:00", "18:00", Err(ReasonCode::OutsideTimeWindow) ; "too early in new york")]
#[test_case(Some("America/New_York"), "22:00", "06:00", Ok("2026-11-25T11:00:00Z") ; "overnight in new york")]
#[test_case(None, "10:00", "10:01", Ok("2026-11-25T10:01:00Z") ; "one minute")]
#[test_case(None, "08:00", "10:00", Err(ReasonCode::OutsideTimeWindow) ; "just closed")]
#[test_case(Some("Mars/Olympus"), "00:00", "24:00", Err(ReasonCode::UnknownTimeZone) ; "unknown time zone")]
fn time_windows(tz: Option<&str>, start: &str, end: &str, expected: Result<&str, ReasonCode>) {
    let w = with_allow(|p, _| {
        p.conditions.time_windows = vec![window(WEEKDAYS, start, end)];
        p.conditions.time_zone = tz.map(Into::into);
    });
    match expected {
        Ok(at) => assert_eq!(allow_until(&w), ts(at)),
        Err(code) => assert_eq!(codes(&decide(&w.input())), [code]),
    }
}

#[test]
fn time_window_reason_names_the_hours() {
    let w = with_allow(|p, _| {
        p.conditions.time_windows = vec![window(&[Weekday::Sat, Weekday::Sun], "10:00", "16:00")];
        p.conditions.time_zone = Some("Europe/Berlin".into());
    });
    assert_eq!(
        decide(&w.input()).reasons()[0].message,
        "Access to db is only allowed Sat, Sun 10:00-16:00 (Europe/Berlin time): try again then."
    );
}

#[test]
fn time_zone_without_windows_is_ignored() {
    let w = with_allow(|p, _| p.conditions.time_zone = Some("Mars/Olympus".into()));
    assert!(decide(&w.input()).is_allow());
}

#[test]
fn the_latest_end_of_the_windows_holding_now_counts() {
    let w = with_allow(|p, _| {
        p.conditions.time_windows = vec![
            window(WEEKDAYS, "09:00", "11:00"),
            window(WEEKDAYS, "08:00", "14:00"),
            window(&[Weekday::Sun], "00:00", "24:00"),
        ];
    });
    assert_eq!(allow_until(&w), ts("2026-11-25T14:00:00Z"));
}

#[test]
fn posture_profile_that_does_not_exist_fails_closed() {
    let w = with_allow(|p, _| p.conditions.posture_profile_id = Some(id(9)));
    assert_eq!(
        codes(&decide(&w.input())),
        [ReasonCode::UnknownPostureProfile]
    );
}

#[test_case(None, None, Ok("2026-11-25T18:00:00Z") ; "healthy, no age limit")]
#[test_case(Some(600), None, Ok("2026-11-25T10:09:00Z") ; "report age limits the access")]
#[test_case(Some(60), None, Err(ReasonCode::PostureStale) ; "stale")]
#[test_case(None, Some("missing"), Err(ReasonCode::PostureMissing) ; "no report")]
#[test_case(None, Some("future"), Err(ReasonCode::PostureFromFuture) ; "report from the future")]
#[test_case(None, Some("firewall"), Err(ReasonCode::FirewallOff) ; "firewall off")]
#[test_case(None, Some("disk unknown"), Err(ReasonCode::PostureUndetermined) ; "disk encryption unknown")]
fn posture(max_age: Option<u64>, change: Option<&str>, expected: Result<&str, ReasonCode>) {
    let mut w = with_allow(|p, w| {
        p.conditions.posture_profile_id = Some(id(5));
        let mut prof = profile(5);
        prof.max_report_age_secs = max_age;
        prof.require_firewall = true;
        prof.require_disk_encryption = true;
        w.profiles.insert(prof.id, prof);
    });
    match change {
        Some("missing") => w.posture = None,
        Some("future") => w.posture = Some(report(ts("2026-11-25T10:06:00Z"))),
        Some("firewall") => w.posture.as_mut().unwrap().firewall = CheckState::Fail,
        Some("disk unknown") => {
            w.posture.as_mut().unwrap().disk_encryption = CheckState::Unknown;
        }
        _ => {}
    }
    match expected {
        Ok(at) => assert_eq!(allow_until(&w), ts(at)),
        Err(code) => assert_eq!(codes(&decide(&w.input())), [code]),
    }
}

#[test]
fn every_failing_condition_is_reported() {
    let mut w = with_allow(|p, w| {
        p.conditions.identity_provider = Some("google".into());
        p.conditions.source_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        p.conditions.max_mfa_age_secs = Some(60);
        p.conditions.posture_profile_id = Some(id(5));
        let mut prof = profile(5);
        prof.require_screen_lock = true;
        w.profiles.insert(prof.id, prof);
    });
    w.posture.as_mut().unwrap().screen_lock = CheckState::Fail;
    assert_eq!(
        codes(&decide(&w.input())),
        [
            ReasonCode::WrongIdentityProvider,
            ReasonCode::SourceNotAllowed,
            ReasonCode::MfaTooOld,
            ReasonCode::ScreenLockOff
        ]
    );
}

#[test]
fn zero_session_length_does_not_allow() {
    let w = with_allow(|p, _| p.max_session_secs = 0);
    assert_eq!(codes(&decide(&w.input())), [ReasonCode::EmptySession]);
}

#[test]
fn an_applying_deny_policy_wins() {
    let mut w = with_allow(|_, _| {});
    let mut deny = policy(2, PolicyAction::Deny);
    deny.name = "contractors off".into();
    w.policies.push(deny);
    let decision = decide(&w.input());
    assert_eq!(codes(&decision), [ReasonCode::DeniedByPolicy]);
    assert!(
        decision.reasons()[0]
            .message
            .contains("\"contractors off\"")
    );
}

#[test]
fn a_deny_policy_whose_conditions_fail_does_not_apply() {
    let mut w = with_allow(|_, _| {});
    let mut deny = policy(2, PolicyAction::Deny);
    deny.conditions.source_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    w.policies.push(deny);
    assert!(decide(&w.input()).is_allow());
}

#[test]
fn a_deny_policy_needs_no_session_length() {
    let mut w = with_allow(|_, _| {});
    let mut deny = policy(2, PolicyAction::Deny);
    deny.max_session_secs = 0;
    w.policies.push(deny);
    assert_eq!(codes(&decide(&w.input())), [ReasonCode::DeniedByPolicy]);
}

#[test_case(|d| d.conditions.time_zone = Some("Mars/Olympus".into()), ReasonCode::UnknownTimeZone ; "unknown time zone")]
#[test_case(|d| d.conditions.posture_profile_id = Some(id(9)), ReasonCode::UnknownPostureProfile ; "unknown profile")]
fn a_deny_policy_that_cannot_be_evaluated_fails_closed(
    f: fn(&mut model::Policy),
    code: ReasonCode,
) {
    let mut w = with_allow(|_, _| {});
    let mut deny = policy(2, PolicyAction::Deny);
    deny.conditions.time_windows = vec![window(WEEKDAYS, "09:00", "18:00")];
    f(&mut deny);
    w.policies.push(deny.clone());
    assert_eq!(
        codes(&decide(&w.input())),
        [ReasonCode::DeniedByPolicy, code]
    );

    // Unless another of its conditions certainly fails.
    deny.conditions.identity_provider = Some("local".into());
    w.policies[1] = deny;
    assert!(decide(&w.input()).is_allow());
}

#[test]
fn the_longest_allow_wins_and_ties_go_to_the_smallest_id() {
    let mut w = world();
    for (n, secs) in [(4, 3600), (3, 7200), (2, 7200), (5, 60)] {
        let mut p = policy(n, PolicyAction::Allow);
        p.max_session_secs = secs;
        w.policies.push(p);
    }
    assert_eq!(
        decide(&w.input()),
        Decision::Allow {
            expires_at: ts("2026-11-25T12:00:00Z"),
            policy: id(2)
        }
    );
}

#[test]
fn reasons_are_deduplicated_and_do_not_depend_on_policy_order() {
    let mut w = world();
    for n in [3, 1, 2] {
        let mut p = policy(n, PolicyAction::Allow);
        p.conditions.source_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        if n == 2 {
            p.conditions.identity_provider = Some("local".into());
        }
        w.policies.push(p);
    }
    let decision = decide(&w.input());
    assert_eq!(
        codes(&decision),
        [
            ReasonCode::WrongIdentityProvider,
            ReasonCode::SourceNotAllowed
        ]
    );
    w.policies.reverse();
    assert_eq!(decide(&w.input()), decision);
}

#[test]
fn decisions_serialize_with_an_outcome_tag() {
    let w = with_allow(|_, _| {});
    let allow = serde_json::to_value(decide(&w.input())).unwrap();
    assert_eq!(
        allow,
        serde_json::json!({
            "outcome": "allow",
            "expires_at": "2026-11-25T18:00:00Z",
            "policy": "00000000-0000-0000-0000-000000000001",
        })
    );
    let deny = serde_json::to_value(decide(&world().input())).unwrap();
    assert_eq!(
        deny,
        serde_json::json!({
            "outcome": "deny",
            "reasons": [{
                "code": "no_policy",
                "message": "You have no access to db; ask an administrator for access.",
            }],
        })
    );
    let back: Decision = serde_json::from_value(deny).unwrap();
    assert_eq!(back, decide(&world().input()));
}

#[test]
fn extreme_inputs_do_not_panic() {
    let mut w = with_allow(|p, w| {
        p.max_session_secs = u64::MAX;
        p.conditions.max_mfa_age_secs = Some(u64::MAX);
        p.conditions.time_windows = vec![window(WEEKDAYS, "24:00", "24:00")];
        p.conditions.posture_profile_id = Some(id(5));
        let mut prof = profile(5);
        prof.max_report_age_secs = Some(u64::MAX);
        w.profiles.insert(prof.id, prof);
    });
    for now in [Timestamp::MIN, Timestamp::MAX, ts(NOW)] {
        w.now = now;
        w.last_mfa_at = Some(now);
        w.posture = Some(report(now));
        let decision = decide(&w.input());
        if let Decision::Allow { expires_at, .. } = decision {
            assert!(expires_at > now);
        } else {
            assert!(!decision.reasons().is_empty());
        }
    }
}

#[test]
fn decisions_have_an_openapi_schema() {
    use utoipa::PartialSchema;
    let schema = serde_json::to_string(&Decision::schema()).unwrap();
    assert!(schema.contains("outcome"), "{schema}");
    assert!(schema.contains("expires_at"), "{schema}");
    let code = serde_json::to_string(&crate::ReasonCode::schema()).unwrap();
    assert!(code.contains("firewall_off"), "{code}");
    let posture = serde_json::to_string(&crate::PostureOutcome::schema()).unwrap();
    assert!(posture.contains("fresh_until"), "{posture}");
}
