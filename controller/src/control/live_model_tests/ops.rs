//! The operations a case is made of, and their strategies.

use super::*;

// ------------------------------------------------------------------ the operations

pub(super) const USERS: usize = 3;
pub(super) const GROUPS: usize = 3;
pub(super) const RESOURCES: usize = 2;
pub(super) const DEVICES: usize = 5;
pub(super) const PROFILES: usize = 2;
pub(super) const POLICIES: usize = 5;

/// Where requests come from.
pub(super) const SOURCES: [&str; 4] = [
    "192.0.2.7",
    "198.51.100.9",
    "::ffff:192.0.2.8",
    "2001:db8::5",
];
/// The source ranges a policy may name.
pub(super) const CIDRS: [&[&str]; 4] = [
    &[],
    &["192.0.2.0/24"],
    &["198.51.100.0/24"],
    &["192.0.2.0/24", "2001:db8::/32"],
];
/// The identity provider a policy may require (`enrollment_key` is what devices enrolled
/// with a key sign in with).
pub(super) const POLICY_PROVIDERS: [Option<&str>; 4] =
    [None, Some("local"), Some("enrollment_key"), Some("corp")];
/// The identity provider an admin's access request may name (none: `local`).
pub(super) const REQUEST_PROVIDERS: [Option<&str>; 3] = [None, Some("local"), Some("corp")];
pub(super) const SESSIONS: [u64; 4] = [1, 2, 60, 3600];
pub(super) const MFA_AGES: [Option<u64>; 3] = [None, Some(60), Some(3600)];
pub(super) const ZONES: [Option<&str>; 2] = [None, Some("Asia/Kolkata")];
/// How much of the last minute of an MFA or a posture report is left (in ms) when it is
/// made "aging": its limit of 60 s runs out that long after.
pub(super) const AGING_MS: [i64; 3] = [50, 150, 400];
/// How long the clock steps of one case sleep at most, in all.
pub(super) const SLEEP_BUDGET: Duration = Duration::from_millis(600);
/// Cases per backend unless `PROPTEST_CASES` says otherwise.
pub(super) const DEFAULT_CASES: u32 = 96;
/// Steps per case at most (after the baseline).
pub(super) const MAX_STEPS: usize = 60;

#[derive(Debug, Clone, Copy)]
pub(super) enum Mfa {
    None,
    Fresh,
    /// Made so that a 60 s limit runs out this many ms later.
    Aging(i64),
    Old,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Window {
    /// No time windows.
    Always,
    /// All of today (in the policy's zone).
    Today,
    /// All of tomorrow: closed now.
    Tomorrow,
    /// From today's midnight to the end of the current minute: closes within a minute.
    ToNextMinute,
}

#[derive(Debug, Clone)]
pub(super) struct PolicySpec {
    pub(super) group: usize,
    pub(super) resource: usize,
    pub(super) deny: bool,
    pub(super) cidrs: usize,
    pub(super) mfa: usize,
    pub(super) session: usize,
    pub(super) window: Window,
    pub(super) zone: usize,
    pub(super) profile: Option<usize>,
    pub(super) provider: usize,
    pub(super) disabled: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ProfileSpec {
    pub(super) firewall: bool,
    pub(super) max_age: bool,
    pub(super) min_os: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(super) struct ReportSpec {
    pub(super) firewall: bool,
    pub(super) os: &'static str,
    pub(super) aging: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    /// An access request: the admin's (for the device's owner or, `other_user`, someone
    /// else) with the given provider and MFA, or the device's own (`client`).
    Request {
        device: usize,
        resource: usize,
        other_user: bool,
        source: usize,
        provider: usize,
        mfa: Mfa,
        client: bool,
    },
    AddMember {
        group: usize,
        user: usize,
    },
    RemoveMember {
        group: usize,
        user: usize,
    },
    PutPolicy {
        slot: usize,
        spec: PolicySpec,
    },
    DeletePolicy {
        slot: usize,
    },
    PutProfile {
        slot: usize,
        spec: ProfileSpec,
    },
    DeleteProfile {
        slot: usize,
    },
    /// A posture report, signed by the device over its session (`client`) or recorded.
    Posture {
        device: usize,
        report: ReportSpec,
        client: bool,
    },
    DisableUser {
        user: usize,
        disabled: bool,
    },
    DisableDevice {
        device: usize,
        disabled: bool,
    },
    CreateUser {
        user: usize,
    },
    DeleteUser {
        user: usize,
    },
    CreateDevice {
        device: usize,
        owner: usize,
    },
    DeleteDevice {
        device: usize,
    },
    CreateGroup {
        group: usize,
    },
    DeleteGroup {
        group: usize,
    },
    CreateResource {
        resource: usize,
    },
    /// Renames it, or (`reach`) changes what it reaches.
    UpdateResource {
        resource: usize,
        reach: bool,
    },
    DeleteResource {
        resource: usize,
    },
    /// An admin revokes the `nth` grant issued so far (modulo their number).
    Revoke {
        nth: usize,
    },
    /// A clock step: sleeps `ms`, or (`past_expiry`) until `ms` past the next expiry of a
    /// live grant, within the case's budget; then ends the grants that are due.
    Sleep {
        ms: u64,
        past_expiry: bool,
    },
}

pub(super) fn mfa() -> impl Strategy<Value = Mfa> {
    prop_oneof![
        1 => Just(Mfa::None),
        1 => Just(Mfa::Fresh),
        4 => prop::sample::select(&AGING_MS[..]).prop_map(Mfa::Aging),
        1 => Just(Mfa::Old),
    ]
}

/// An index below `n`, `0` (no such condition) more often than not.
pub(super) fn mostly_none(n: usize) -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0), 1 => 1..n]
}

pub(super) fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    let window = prop_oneof![
        6 => Just(Window::Always),
        1 => Just(Window::Today),
        1 => Just(Window::Tomorrow),
        2 => Just(Window::ToNextMinute),
    ];
    (
        (0..GROUPS, 0..RESOURCES, prop::bool::weighted(0.25)),
        (
            mostly_none(CIDRS.len()),
            prop_oneof![2 => Just(0), 3 => Just(1), 1 => Just(2)],
            0..SESSIONS.len(),
        ),
        (window, 0..ZONES.len()),
        (
            prop::option::weighted(0.3, 0..PROFILES),
            mostly_none(POLICY_PROVIDERS.len()),
            prop::bool::weighted(0.1),
        ),
    )
        .prop_map(
            |(
                (group, resource, deny),
                (cidrs, mfa, session),
                (window, zone),
                (profile, provider, disabled),
            )| PolicySpec {
                group,
                resource,
                deny,
                cidrs,
                mfa,
                session,
                window,
                zone,
                profile,
                provider,
                disabled,
            },
        )
}

pub(super) fn profile_spec() -> impl Strategy<Value = ProfileSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(&["12", "13"][..])),
    )
        .prop_map(|(firewall, max_age, min_os)| ProfileSpec {
            firewall,
            max_age,
            min_os,
        })
}

pub(super) fn report_spec() -> impl Strategy<Value = ReportSpec> {
    (
        prop::bool::weighted(0.7),
        prop::sample::select(&["12", "13"][..]),
        prop::option::weighted(0.6, prop::sample::select(&AGING_MS[..])),
    )
        .prop_map(|(firewall, os, aging)| ReportSpec {
            firewall,
            os,
            aging,
        })
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let request = (
        (0..DEVICES, 0..RESOURCES, prop::bool::weighted(0.1)),
        (
            0..SOURCES.len(),
            0..REQUEST_PROVIDERS.len(),
            mfa(),
            prop::bool::weighted(0.3),
        ),
    )
        .prop_map(
            |((device, resource, other_user), (source, provider, mfa, client))| Op::Request {
                device,
                resource,
                other_user,
                source,
                provider,
                mfa,
                client,
            },
        );
    prop_oneof![
        20 => request.boxed(),
        2 => (0..GROUPS, 0..USERS).prop_map(|(group, user)| Op::AddMember { group, user }).boxed(),
        2 => (0..GROUPS, 0..USERS)
            .prop_map(|(group, user)| Op::RemoveMember { group, user })
            .boxed(),
        6 => (0..POLICIES, policy_spec()).prop_map(|(slot, spec)| Op::PutPolicy { slot, spec }).boxed(),
        1 => (0..POLICIES).prop_map(|slot| Op::DeletePolicy { slot }).boxed(),
        1 => (0..PROFILES, profile_spec())
            .prop_map(|(slot, spec)| Op::PutProfile { slot, spec })
            .boxed(),
        1 => (0..PROFILES).prop_map(|slot| Op::DeleteProfile { slot }).boxed(),
        4 => (0..DEVICES, report_spec(), any::<bool>())
            .prop_map(|(device, report, client)| Op::Posture { device, report, client })
            .boxed(),
        1 => (0..USERS, any::<bool>())
            .prop_map(|(user, disabled)| Op::DisableUser { user, disabled })
            .boxed(),
        1 => (0..DEVICES, any::<bool>())
            .prop_map(|(device, disabled)| Op::DisableDevice { device, disabled })
            .boxed(),
        1 => (0..USERS).prop_map(|user| Op::CreateUser { user }).boxed(),
        1 => (0..USERS).prop_map(|user| Op::DeleteUser { user }).boxed(),
        1 => (0..DEVICES, 0..USERS)
            .prop_map(|(device, owner)| Op::CreateDevice { device, owner })
            .boxed(),
        1 => (0..DEVICES).prop_map(|device| Op::DeleteDevice { device }).boxed(),
        1 => (0..GROUPS).prop_map(|group| Op::CreateGroup { group }).boxed(),
        1 => (0..GROUPS).prop_map(|group| Op::DeleteGroup { group }).boxed(),
        1 => (0..RESOURCES).prop_map(|resource| Op::CreateResource { resource }).boxed(),
        1 => (0..RESOURCES, any::<bool>())
            .prop_map(|(resource, reach)| Op::UpdateResource { resource, reach })
            .boxed(),
        1 => (0..RESOURCES).prop_map(|resource| Op::DeleteResource { resource }).boxed(),
        1 => any::<usize>().prop_map(|nth| Op::Revoke { nth }).boxed(),
        3 => prop::sample::select(&[0u64, 30, 100, 250][..])
            .prop_flat_map(|ms| any::<bool>().prop_map(move |past_expiry| Op::Sleep { ms, past_expiry }))
            .boxed(),
    ]
}

/// The world every case starts from: three users, three groups, two resources, four
/// devices (each enrolled with a key, so with a session, and with a passing posture
/// report), memberships, a posture profile, and policies of the random `policies`.
pub(super) fn baseline(policies: &[PolicySpec]) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend((0..USERS).map(|user| Op::CreateUser { user }));
    ops.extend((0..GROUPS).map(|group| Op::CreateGroup { group }));
    ops.extend((0..RESOURCES).map(|resource| Op::CreateResource { resource }));
    ops.extend(
        [(0, 0), (1, 0), (2, 1), (3, 2)].map(|(device, owner)| Op::CreateDevice { device, owner }),
    );
    ops.extend(
        [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 0)]
            .map(|(group, user)| Op::AddMember { group, user }),
    );
    ops.push(Op::PutProfile {
        slot: 0,
        spec: ProfileSpec {
            firewall: true,
            max_age: false,
            min_os: None,
        },
    });
    ops.extend((0..4).map(|device| Op::Posture {
        device,
        report: ReportSpec {
            firewall: true,
            os: "13",
            aging: None,
        },
        client: true,
    }));
    // Allow policies that cover every user and resource, under random conditions (a third
    // that may deny).
    let pairs = [(0, 0), (1, 1), (0, 1)];
    ops.extend(
        policies
            .iter()
            .zip(pairs)
            .enumerate()
            .map(|(slot, (spec, (group, resource)))| Op::PutPolicy {
                slot,
                spec: PolicySpec {
                    group,
                    resource,
                    deny: spec.deny && slot == 2,
                    profile: spec.profile.map(|_| 0),
                    ..spec.clone()
                },
            }),
    );
    ops
}
