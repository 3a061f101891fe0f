//! Property tests: `decide` and `check_posture` against the reference model in
//! `reference.rs`, on random worlds with a few policies, profiles and time zones.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use model::{
    CheckState, Conditions, Policy, PolicyAction, PostureProfile, PostureReport, TimeWindow,
    Weekday,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

use crate::fixtures::{World, id, world};
use crate::reference::{self, Expected};
use crate::{Decision, ReasonCode, check_posture, decide};

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Mars/Olympus",
];

/// Zones with daylight-saving changes, to test near their transitions.
const DST_ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
];

const DAYS: &[Weekday] = &[
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// An instant in 2020..2030, half of the time within three hours of a daylight-saving
/// change of `zone` (when it has them), with seconds but no fraction half of the time.
fn now(zone: &'static str) -> impl Strategy<Value = Timestamp> {
    let start = 1_577_836_800i64; // 2020-01-01
    let span = 10 * 365 * DAY;
    let uniform = (0..span, 0u32..1_000_000_000, any::<bool>()).prop_map(move |(s, ns, whole)| {
        let t = Timestamp::new(start + s, 0).unwrap();
        if whole {
            t
        } else {
            Timestamp::new(t.as_second(), ns as i32).unwrap()
        }
    });
    let near_change = (0..span, -3 * HOUR..3 * HOUR).prop_map(move |(s, delta)| {
        let base = Timestamp::new(start + s, 0).unwrap();
        let change = TimeZone::get(zone)
            .ok()
            .and_then(|tz| tz.following(base).next().map(|t| t.timestamp()))
            .unwrap_or(base);
        Timestamp::new(change.as_second() + delta, 0).unwrap()
    });
    prop_oneof![uniform, near_change]
}

/// A time of day in quarter hours, `00:00` to `24:00`, often at night when clocks change.
fn clock() -> impl Strategy<Value = model::Clock> {
    prop_oneof![0u16..=96, 0u16..=16].prop_map(|q| model::Clock::new(q / 4, (q % 4) * 15).unwrap())
}

fn windows() -> impl Strategy<Value = Vec<TimeWindow>> {
    let window = (subsequence(DAYS, 1..=7), clock(), clock())
        .prop_map(|(days, start, end)| TimeWindow { days, start, end });
    prop_oneof![
        1 => Just(vec![]),
        1 => prop::collection::vec(window, 1..=3),
    ]
}

/// Conditions whose time zone is mostly `zone`.
fn conditions(zone: &'static str) -> impl Strategy<Value = Conditions> {
    (
        prop::option::weighted(0.25, 1u128..=3),
        windows(),
        prop_oneof![
            4 => Just(Some(zone)),
            1 => prop::option::weighted(0.8, select(ZONES)),
        ],
        prop_oneof![
            2 => Just(vec![]),
            1 => prop::collection::vec(
                select(&["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"][..]),
                1..=2,
            ),
        ],
        prop::option::weighted(0.25, 0u64..2 * DAY as u64),
        prop::option::weighted(0.2, select(&["okta", "local"][..])),
    )
        .prop_map(|(profile, windows, zone, cidrs, mfa, idp)| Conditions {
            posture_profile_id: profile.map(id),
            time_windows: windows,
            time_zone: zone.map(Into::into),
            source_cidrs: cidrs.into_iter().map(|c| c.parse().unwrap()).collect(),
            max_mfa_age_secs: mfa,
            identity_provider: idp.map(Into::into),
        })
}

fn policy(zone: &'static str) -> impl Strategy<Value = Policy> {
    (
        1u128..=6,
        prop_oneof![3 => Just(1u128), 1 => 2u128..=3],
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
        conditions(zone),
        prop_oneof![1 => Just(0u64), 19 => 1..DAY as u64],
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(n, group, this_resource, deny, conditions, max_session_secs, disabled)| Policy {
                id: id(n),
                name: format!("policy {n}"),
                group_id: id(group),
                resource_id: id(if this_resource { 1 } else { 2 }),
                action: if deny {
                    PolicyAction::Deny
                } else {
                    PolicyAction::Allow
                },
                conditions,
                max_session_secs,
                disabled,
                created_at: Timestamp::UNIX_EPOCH,
            },
        )
}

fn state() -> impl Strategy<Value = CheckState> {
    prop_oneof![
        6 => Just(CheckState::Pass),
        1 => Just(CheckState::Fail),
        1 => Just(CheckState::Unknown),
    ]
}

fn version() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.85,
        select(&["11", "12", "12.4", "24.04", "0.1.0", "0.2", "", "x"][..]).prop_map(String::from),
    )
}

fn profile(n: u128) -> impl Strategy<Value = PostureProfile> {
    (
        prop::collection::btree_map(
            select(&["debian", "ubuntu", "macos"][..]).prop_map(String::from),
            select(&["12", "24.04", "14.2"][..]).prop_map(String::from),
            0..=2,
        ),
        prop::array::uniform4(prop::bool::weighted(0.3)),
        subsequence(&["falcon-sensor", "osqueryd"][..], 0..=2),
        prop::option::weighted(0.3, select(&["0.1.0", "0.2"][..])),
        prop::option::weighted(0.2, Just(vec!["ABC123".to_owned(), "def456".to_owned()])),
        prop::option::weighted(0.4, 1u64..2 * DAY as u64),
    )
        .prop_map(
            move |(min_os_versions, flags, processes, client, serials, max_age)| PostureProfile {
                id: id(n),
                name: format!("profile {n}"),
                min_os_versions,
                require_disk_encryption: flags[0],
                require_firewall: flags[1],
                require_secure_boot: flags[2],
                require_screen_lock: flags[3],
                required_processes: processes.into_iter().map(String::from).collect(),
                min_client_version: client.map(String::from),
                serial_allowlist: serials.unwrap_or_default(),
                max_report_age_secs: max_age,
            },
        )
}

/// A report collected up to two days before `now`, or a little after it.
fn report(now: Timestamp) -> impl Strategy<Value = PostureReport> {
    (
        -2 * DAY..10 * 60,
        prop::option::weighted(0.9, select(&["debian", "Ubuntu", "macos", "windows"][..])),
        version(),
        prop::array::uniform4(state()),
        subsequence(&["falcon-sensor", "osqueryd"][..], 0..=2),
        version(),
        prop::option::weighted(0.8, select(&["ABC123", "DEF456", "zzz", " "][..])),
    )
        .prop_map(
            move |(age, os, os_version, states, processes, client, serial)| PostureReport {
                collected_at: Timestamp::new(now.as_second() + age, 0).unwrap(),
                os_name: os.map(String::from),
                os_version,
                kernel_version: None,
                disk_encryption: states[0],
                firewall: states[1],
                secure_boot: states[2],
                screen_lock: states[3],
                processes: processes.into_iter().map(String::from).collect(),
                client_version: client,
                hostname: None,
                serial: serial.map(String::from),
            },
        )
}

/// A random world: the user (in groups 1 and/or 2) asks for resource 1.
fn random_world() -> impl Strategy<Value = World> {
    select(ZONES).prop_flat_map(random_world_in)
}

fn random_world_in(zone: &'static str) -> impl Strategy<Value = World> {
    now(zone).prop_flat_map(move |now| {
        (
            prop::collection::vec(policy(zone), 1..=4),
            prop_oneof![
                4 => Just(vec![1u128]),
                4 => Just(vec![1u128, 2]),
                1 => subsequence(&[2u128, 3][..], 0..=2),
            ],
            prop::option::weighted(0.9, report(now)),
            profile(1),
            prop::option::weighted(0.5, profile(2)),
            select(&["okta", "local", "google"][..]),
            prop::option::weighted(0.85, -3 * DAY..60),
            select(
                &[
                    "10.1.2.3",
                    "192.0.2.7",
                    "198.51.100.1",
                    "2001:db8::5",
                    "::ffff:10.1.2.3",
                ][..],
            ),
            prop::array::uniform3(prop::bool::weighted(0.05)),
        )
            .prop_map(
                move |(policies, groups, posture, p1, p2, idp, mfa, source, [ud, dd, foreign])| {
                    let mut w = world();
                    w.now = now;
                    w.policies = policies;
                    w.groups = groups.into_iter().map(id).collect();
                    w.posture = posture;
                    w.profiles = BTreeMap::from_iter([(p1.id, p1)]);
                    if let Some(p2) = p2 {
                        w.profiles.insert(p2.id, p2);
                    }
                    w.identity_provider = idp.into();
                    w.last_mfa_at = mfa.map(|d| Timestamp::new(now.as_second() + d, 0).unwrap());
                    w.source = source.parse().unwrap();
                    w.user.disabled = ud;
                    w.device.disabled = dd;
                    if foreign {
                        w.device.user_id = id(2);
                    }
                    w
                },
            )
    })
}

fn is_candidate(w: &World, p: &Policy) -> bool {
    !p.disabled && p.resource_id == w.resource.id && w.groups.contains(&p.group_id)
}

// 256 cases each by default (`PROPTEST_CASES` changes it); the suite takes well under a
// second in a debug build.
proptest! {
    #[test]
    fn decide_agrees_with_the_reference(w in random_world()) {
        let decision = decide(&w.input());
        match (reference::expected(&w.input()), &decision) {
            (Expected::Allow { expires_at, policy }, Decision::Allow { expires_at: got, policy: got_policy }) => {
                prop_assert_eq!(got, &expires_at);
                prop_assert_eq!(got_policy, &policy);
                prop_assert!(*got > w.now);
            }
            (Expected::Deny, Decision::Deny { reasons }) => prop_assert!(!reasons.is_empty()),
            (expected, _) => prop_assert!(false, "reference {:?}, decide {:#?}", expected, decision),
        }
    }

    #[test]
    fn window_ends_agree_with_the_reference_near_clock_changes(
        (zone, now) in select(DST_ZONES).prop_flat_map(|zone| (Just(zone), now(zone))),
        windows in prop::collection::vec(
            (subsequence(DAYS, 1..=7), clock(), clock())
                .prop_map(|(days, start, end)| TimeWindow { days, start, end }),
            1..=3,
        ),
        session in 1..DAY as u64,
    ) {
        let mut w = world();
        w.now = now;
        let mut p = crate::fixtures::policy(1, PolicyAction::Allow);
        p.conditions.time_windows = windows;
        p.conditions.time_zone = Some(zone.into());
        p.max_session_secs = session;
        w.policies.push(p);
        let decision = decide(&w.input());
        match (reference::expected(&w.input()), &decision) {
            (Expected::Allow { expires_at, .. }, Decision::Allow { expires_at: got, .. }) => {
                prop_assert_eq!(got, &expires_at);
            }
            (Expected::Deny, Decision::Deny { reasons }) => {
                prop_assert_eq!(reasons.iter().map(|r| r.code).collect::<Vec<_>>(), vec![ReasonCode::OutsideTimeWindow]);
            }
            (expected, _) => prop_assert!(false, "reference {:?}, decide {:#?}", expected, decision),
        }
    }

    #[test]
    fn every_sampled_instant_of_an_allow_lies_in_a_window(mut w in random_world(), samples in prop::collection::vec(0.0f64..1.0, 8)) {
        // One policy per id, so that the chosen one is known.
        let mut seen = std::collections::BTreeSet::new();
        w.policies.retain(|p| seen.insert(p.id));
        if let Decision::Allow { expires_at, policy } = decide(&w.input()) {
            let chosen = w.policies.iter().find(|p| p.id == policy && is_candidate(&w, p)).unwrap();
            let c = &chosen.conditions;
            if !c.time_windows.is_empty() {
                let tz = TimeZone::get(c.time_zone.as_deref().unwrap_or("UTC")).unwrap();
                let (from, to) = (w.now.as_nanosecond(), expires_at.as_nanosecond());
                let last = reference::ts(to - 1);
                prop_assert!(reference::covered(&c.time_windows, &tz, last));
                for s in samples {
                    let t = reference::ts(from + ((to - from) as f64 * s) as i128);
                    prop_assert!(reference::covered(&c.time_windows, &tz, t), "{} not covered", t);
                }
            }
        }
    }

    #[test]
    fn the_order_of_policies_does_not_matter(w in random_world(), k in 0usize..4) {
        let decision = decide(&w.input());
        let mut shuffled = w.clone();
        shuffled.policies.reverse();
        let len = shuffled.policies.len();
        shuffled.policies.rotate_left(k % len.max(1));
        prop_assert_eq!(decide(&shuffled.input()), decision);
    }

    #[test]
    fn without_a_candidate_allow_policy_access_is_denied(mut w in random_world()) {
        let allows: Vec<Policy> = w.policies.iter().filter(|p| p.action == PolicyAction::Allow && is_candidate(&w, p)).cloned().collect();
        w.policies.retain(|p| !allows.contains(p));
        let decision = decide(&w.input());
        prop_assert!(!decision.is_allow());
        let identity_ok = !w.user.disabled && !w.device.disabled && w.device.user_id == w.user.id;
        if identity_ok {
            prop_assert_eq!(decision.reasons().iter().map(|r| r.code).collect::<Vec<_>>(), vec![ReasonCode::NoPolicy]);
        }
    }

    #[test]
    fn an_applying_deny_policy_always_wins(mut w in random_world(), conditions in conditions("Europe/Berlin"), n in 1u128..=6) {
        w.user.disabled = false;
        w.device.disabled = false;
        w.device.user_id = w.user.id;
        w.groups.push(id(1));
        let mut allow = crate::fixtures::policy(7, PolicyAction::Allow);
        allow.conditions = conditions.clone();
        w.policies.push(allow);
        let mut deny = crate::fixtures::policy(n, PolicyAction::Deny);
        // Half of the time without conditions, so that it surely applies.
        if n % 2 == 0 {
            deny.conditions = conditions;
        }
        w.policies.push(deny.clone());
        let decision = decide(&w.input());
        if reference::truth(&deny, &w.input()) != Some(false) {
            prop_assert!(decision.reasons().iter().any(|r| r.code == ReasonCode::DeniedByPolicy), "{:#?}", decision);
        }
    }

    #[test]
    fn a_disabled_user_or_device_is_always_denied(mut w in random_world(), which in 0..3u8) {
        let code = match which {
            0 => { w.user.disabled = true; ReasonCode::UserDisabled }
            1 => { w.device.disabled = true; ReasonCode::DeviceDisabled }
            _ => { w.device.user_id = id(9); ReasonCode::DeviceNotOwned }
        };
        let decision = decide(&w.input());
        prop_assert!(decision.reasons().iter().any(|r| r.code == code), "{:#?}", decision);
        prop_assert!(decision.reasons().iter().all(|r| matches!(r.code, ReasonCode::UserDisabled | ReasonCode::DeviceDisabled | ReasonCode::DeviceNotOwned)));
    }

    #[test]
    fn check_posture_agrees_with_the_reference(
        (now, report) in now("UTC").prop_flat_map(|now| (Just(now), prop::option::weighted(0.9, report(now)))),
        profile in profile(1),
    ) {
        let outcome = check_posture(&profile, report.as_ref(), now);
        prop_assert_eq!(outcome.passed(), reference::posture_ok(&profile, report.as_ref(), now));
        prop_assert_eq!(outcome.passed(), outcome.failures().next().is_none());
        for check in &outcome.checks {
            prop_assert_eq!(check.reason.is_none(), check.state == CheckState::Pass);
        }
        let fresh_until = report.as_ref().and_then(|r| {
            profile.max_report_age_secs.map(|max| Timestamp::new(r.collected_at.as_second() + max as i64, 0).unwrap())
        });
        prop_assert_eq!(outcome.fresh_until, fresh_until);
    }
}
