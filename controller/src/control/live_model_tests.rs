//! Live access always equals what policy decides now.
//!
//! A stateful model-based test through the application services, on SQLite and on
//! PostgreSQL (`POSTERN_TEST_POSTGRES_URL`), with a gateway that acknowledges every message
//! in a task of its own: random sequences of admin changes (users, groups, memberships,
//! resources, allow and deny policies with every kind of condition, posture profiles,
//! devices, disables and deletions), posture reports (signed by the device, and recorded),
//! access requests (an admin's and a device's own), admin revocations and clock steps.
//! After each step the grants the service holds live must be those the model expects: the
//! ones it issued that every change since left allowed, per the independent reference
//! decision in `policy::reference` (never `policy::decide`), and not yet at their expiry,
//! which only ever moves earlier. Every live grant must also be one the reference allows
//! now for at least as long as it lasts, under the policy it is attributed to.
//!
//! The service reads the real clock, so time is real too: conditions are made to run out
//! within the case (MFA and posture report ages a few hundred milliseconds from their end,
//! sessions of a second or two, time windows that close at the next minute), clock steps
//! are short sleeps, and wherever a deadline falls inside the span of one service call the
//! model accepts either outcome and learns which one happened from the service.
//!
//! At the end of each case the gateway must hold exactly the grants not ended, with their
//! expiry, and every ended grant must be audited once with why, what caused it and who.
//! `controller/proptest-regressions/control/live_model_tests.txt` holds the seeds of the
//! failures found (they replay first; a change to the strategies changes what they replay).
//! `LIVE_MODEL_STATS=1` prints what each case did.
//!
//! Then focused tests, one per weakness the issue names, on both backends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use model::{
    CheckState, Conditions, DeviceId, Grant, GrantId, GroupId, Policy, PolicyAction, PolicyId,
    PostureProfile, PostureProfileId, PostureReport, ResourceId, Role, TimeWindow, UserId,
};
use policy::reference::{self, Expected};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use proto::ControllerMessage;
use proto::device::DeviceKey;
use serde_json::json;

use super::tests::{AutoGateway, Harness, TestGateway, harness_on, key};
use crate::app::*;
use store::Store;
use store::testing::{PgDb, postgres};

// ------------------------------------------------------------------ the fixture

/// A served controller with an online gateway that acknowledges everything, and an enabled
/// admin user (users can be disabled or deleted only while one remains).
struct Fixture {
    h: Harness,
    gw: AutoGateway,
    _db: Option<PgDb>,
}

fn admin() -> Actor {
    Actor::cli()
}

async fn fixture(db: Option<PgDb>) -> Fixture {
    let (store, dir) = match &db {
        Some(db) => (db.store.clone(), tempfile::tempdir().unwrap()),
        None => {
            let dir = tempfile::tempdir().unwrap();
            (Store::open_sqlite(dir.path()).await.unwrap(), dir)
        }
    };
    let service = Service::new(store).with_ack_timeout(Duration::from_secs(3));
    let h = harness_on(service, dir).await;
    h.service
        .create_user(
            &admin(),
            UserInput {
                email: "root@example.com".into(),
                name: "Root".into(),
                role: Some(Role::Admin),
            },
        )
        .await
        .unwrap();
    let gw = TestGateway::enroll(&h, &h.gateway_token().await)
        .await
        .auto_ack();
    Fixture { h, gw, _db: db }
}

/// The current time at the store's precision (milliseconds), as the service reads it.
fn ms_now() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap()
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

fn millis(ms: i64) -> SignedDuration {
    SignedDuration::from_millis(ms)
}

// ------------------------------------------------------------------ the operations

const USERS: usize = 3;
const GROUPS: usize = 3;
const RESOURCES: usize = 2;
const DEVICES: usize = 5;
const PROFILES: usize = 2;
const POLICIES: usize = 5;

/// Where requests come from.
const SOURCES: [&str; 4] = [
    "192.0.2.7",
    "198.51.100.9",
    "::ffff:192.0.2.8",
    "2001:db8::5",
];
/// The source ranges a policy may name.
const CIDRS: [&[&str]; 4] = [
    &[],
    &["192.0.2.0/24"],
    &["198.51.100.0/24"],
    &["192.0.2.0/24", "2001:db8::/32"],
];
/// The identity provider a policy may require (`enrollment_key` is what devices enrolled
/// with a key sign in with).
const POLICY_PROVIDERS: [Option<&str>; 4] =
    [None, Some("local"), Some("enrollment_key"), Some("corp")];
/// The identity provider an admin's access request may name (none: `local`).
const REQUEST_PROVIDERS: [Option<&str>; 3] = [None, Some("local"), Some("corp")];
const SESSIONS: [u64; 4] = [1, 2, 60, 3600];
const MFA_AGES: [Option<u64>; 3] = [None, Some(60), Some(3600)];
const ZONES: [Option<&str>; 2] = [None, Some("Asia/Kolkata")];
/// How much of the last minute of an MFA or a posture report is left (in ms) when it is
/// made "aging": its limit of 60 s runs out that long after.
const AGING_MS: [i64; 3] = [50, 150, 400];
/// How long the clock steps of one case sleep at most, in all.
const SLEEP_BUDGET: Duration = Duration::from_millis(600);
/// Cases per backend unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 96;
/// Steps per case at most (after the baseline).
const MAX_STEPS: usize = 60;

#[derive(Debug, Clone, Copy)]
enum Mfa {
    None,
    Fresh,
    /// Made so that a 60 s limit runs out this many ms later.
    Aging(i64),
    Old,
}

#[derive(Debug, Clone, Copy)]
enum Window {
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
struct PolicySpec {
    group: usize,
    resource: usize,
    deny: bool,
    cidrs: usize,
    mfa: usize,
    session: usize,
    window: Window,
    zone: usize,
    profile: Option<usize>,
    provider: usize,
    disabled: bool,
}

#[derive(Debug, Clone)]
struct ProfileSpec {
    firewall: bool,
    max_age: bool,
    min_os: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct ReportSpec {
    firewall: bool,
    os: &'static str,
    aging: Option<i64>,
}

#[derive(Debug, Clone)]
enum Op {
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

fn mfa() -> impl Strategy<Value = Mfa> {
    prop_oneof![
        1 => Just(Mfa::None),
        1 => Just(Mfa::Fresh),
        4 => prop::sample::select(&AGING_MS[..]).prop_map(Mfa::Aging),
        1 => Just(Mfa::Old),
    ]
}

/// An index below `n`, `0` (no such condition) more often than not.
fn mostly_none(n: usize) -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0), 1 => 1..n]
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
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

fn profile_spec() -> impl Strategy<Value = ProfileSpec> {
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

fn report_spec() -> impl Strategy<Value = ReportSpec> {
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

fn op() -> impl Strategy<Value = Op> {
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
fn baseline(policies: &[PolicySpec]) -> Vec<Op> {
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

// ------------------------------------------------------------------ the model

struct MUser {
    id: UserId,
    disabled: bool,
}

struct MDevice {
    id: DeviceId,
    owner: usize,
    owner_id: UserId,
    disabled: bool,
    key: DeviceKey,
    /// The device session's secret while it lasts (disabling the device or its user ends
    /// it for good).
    session: Option<String>,
    seq: u64,
    posture: Option<PostureReport>,
}

struct MResource {
    id: ResourceId,
    name: String,
    /// Which of its two addresses it reaches.
    moved: bool,
}

/// What a decision is made on besides the objects.
#[derive(Debug, Clone)]
struct Facts {
    user: UserId,
    device: DeviceId,
    resource: ResourceId,
    source: IpAddr,
    provider: String,
    mfa: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alive {
    /// Not revoked: live until its expiry.
    Yes,
    /// A change met a deadline within one call: revoked or not, the service tells.
    Maybe,
    /// Revoked or expired: never live again.
    No,
}

#[derive(Debug)]
struct MGrant {
    id: GrantId,
    facts: Facts,
    /// The earliest and the latest its expiry may be.
    lower: Timestamp,
    upper: Timestamp,
    alive: Alive,
}

fn is_allow(e: &Expected) -> bool {
    matches!(e, Expected::Allow { .. })
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// What a case did, for `LIVE_MODEL_STATS=1`.
#[derive(Debug, Default)]
struct Stats {
    granted: usize,
    denied: usize,
    revoked: usize,
    shortened: usize,
    ambiguous: usize,
    /// Grants seen to expire.
    expired: usize,
    /// Grants issued for less than 600 ms.
    short: usize,
    /// Revocations by posture reports, by the device's own and by recorded ones.
    posture_revoked: (usize, usize),
    /// The service's reasons for its denials.
    denials: BTreeMap<String, usize>,
}

/// The reference's state of the world, kept from the operations alone.
struct Model<'a> {
    stats: Stats,
    f: &'a Fixture,
    case: u64,
    serial: u64,
    started: Timestamp,
    slept: Duration,
    users: [Option<MUser>; USERS],
    groups: [Option<GroupId>; GROUPS],
    /// (group slot, user slot).
    members: BTreeSet<(usize, usize)>,
    resources: [Option<MResource>; RESOURCES],
    devices: [Option<MDevice>; DEVICES],
    profiles: [Option<PostureProfile>; PROFILES],
    policies: [Option<Policy>; POLICIES],
    grants: Vec<MGrant>,
    /// Every user of this case, to tell its grants from other cases'.
    case_users: BTreeSet<UserId>,
}

impl<'a> Model<'a> {
    fn new(f: &'a Fixture, case: u64) -> Self {
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

    fn service(&self) -> &Service {
        &self.f.h.service
    }

    fn name(&mut self, kind: &str, slot: usize) -> String {
        self.serial += 1;
        format!("c{}-{kind}{slot}-{}", self.case, self.serial)
    }

    /// The reference decision for `facts` at `now`; with `only`, as if the allow policies
    /// were that one alone (the deny policies all stay).
    fn expected(&self, facts: &Facts, now: Timestamp, only: Option<PolicyId>) -> Expected {
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
    fn changed(&mut self, t0: Timestamp, t1: Timestamp) {
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
    async fn stored_grants(&self, live: bool) -> Result<HashMap<GrantId, Grant>, TestCaseError> {
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
    async fn check(&mut self, step: &str) -> Result<(), TestCaseError> {
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
    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
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

    fn user_id(&self, slot: usize) -> Option<UserId> {
        self.users[slot].as_ref().map(|u| u.id)
    }

    fn resource_input(&self, slot: usize, name: &str, moved: bool) -> ResourceInput {
        ResourceInput {
            name: name.to_owned(),
            site_id: self.f.h.site,
            addresses: vec![format!("10.9.{slot}.{}", if moved { 2 } else { 1 })],
            ports: vec!["tcp/22".into()],
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn request(
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

    async fn put_policy(&mut self, slot: usize, spec: &PolicySpec) -> Result<(), TestCaseError> {
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

    async fn put_profile(&mut self, slot: usize, spec: &ProfileSpec) -> Result<(), TestCaseError> {
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

    async fn posture(
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
                .accept_posture(&ctx, &signed, SOURCES[0].parse().unwrap())
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
    async fn finish(&mut self) -> Result<(), TestCaseError> {
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

/// Time windows of `kind` as of `now` in `zone`.
fn windows(kind: Window, zone: Option<&str>, now: Timestamp) -> Vec<TimeWindow> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let local = now.to_zoned(TimeZone::get(zone.unwrap_or("UTC")).unwrap());
    let day = |d: jiff::civil::Date| DAYS[d.weekday().to_monday_zero_offset() as usize];
    let clock = |m: i32| format!("{:02}:{:02}", m / 60, m % 60);
    let window = |d: &str, start: i32, end: i32| -> TimeWindow {
        serde_json::from_value(json!({"days": [d], "start": clock(start), "end": clock(end)}))
            .unwrap()
    };
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    match kind {
        Window::Always => Vec::new(),
        Window::Today => vec![window(day(local.date()), 0, 1440)],
        Window::Tomorrow => vec![window(day(local.date().tomorrow().unwrap()), 0, 1440)],
        Window::ToNextMinute => vec![window(day(local.date()), 0, minute + 1)],
    }
}

async fn run_case(
    f: &Fixture,
    case: u64,
    (policies, ops): (Vec<PolicySpec>, Vec<Op>),
) -> Result<(), TestCaseError> {
    let mut m = Model::new(f, case);
    for (i, op) in baseline(&policies).iter().enumerate() {
        m.apply(op).await?;
        m.check(&format!("baseline step {i} {op:?}")).await?;
    }
    for (i, op) in ops.iter().enumerate() {
        m.apply(op).await?;
        m.check(&format!("step {i} {op:?}")).await?;
    }
    // Runs out the clock: past each expiry the budget reaches.
    loop {
        let now = ms_now();
        let next = m
            .grants
            .iter()
            .filter(|g| g.alive == Alive::Yes && g.upper > now)
            .map(|g| g.upper)
            .min();
        match next {
            Some(at)
                if m.slept + (at.duration_since(now) + millis(10)).unsigned_abs()
                    <= SLEEP_BUDGET => {}
            _ => break,
        }
        let op = Op::Sleep {
            ms: 100,
            past_expiry: true,
        };
        m.apply(&op).await?;
        m.check("running out the clock").await?;
    }
    m.finish().await?;
    if std::env::var_os("LIVE_MODEL_STATS").is_some() {
        eprintln!(
            "case {case}: {} policies, {} steps, {:?}",
            policies.len(),
            ops.len(),
            m.stats
        );
    }
    Ok(())
}

fn model_config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        // A case takes about a second: bound the shrinking.
        max_shrink_iters: 300,
        max_shrink_time: 180_000,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// Runs the model on SQLite or (when `POSTERN_TEST_POSTGRES_URL` names a server) on
/// PostgreSQL.
fn run_model(on_postgres: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = if on_postgres {
        let Some(db) = rt.block_on(postgres()) else {
            return;
        };
        Some(db)
    } else {
        None
    };
    let f = rt.block_on(fixture(db));
    let case = AtomicU64::new(0);
    let started = Instant::now();
    let mut runner = TestRunner::new(model_config());
    let strategy = (
        prop::collection::vec(policy_spec(), 3),
        prop::collection::vec(op(), 1..=MAX_STEPS),
    );
    let result = runner.run(&strategy, |input| {
        rt.block_on(run_case(&f, case.fetch_add(1, Ordering::Relaxed), input))
    });
    eprintln!(
        "{} cases in {:.1} s",
        case.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    rt.block_on(async move { drop(f) });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn live_grants_equal_the_reference_on_sqlite() {
    run_model(false);
}

#[test]
fn live_grants_equal_the_reference_on_postgres() {
    run_model(true);
}

// ------------------------------------------------------------------ focused tests

/// The fixture on SQLite and, when configured, on PostgreSQL.
async fn backends() -> Vec<Fixture> {
    let mut out = vec![fixture(None).await];
    if let Some(db) = postgres().await {
        out.push(fixture(Some(db)).await);
    }
    out
}

/// A policy as its input, to change a field of it.
fn input_of(p: &Policy) -> PolicyInput {
    PolicyInput {
        name: p.name.clone(),
        group_id: p.group_id,
        resource_id: p.resource_id,
        action: p.action,
        conditions: ConditionsInput {
            posture_profile_id: p.conditions.posture_profile_id,
            time_windows: p.conditions.time_windows.clone(),
            time_zone: p.conditions.time_zone.clone(),
            source_cidrs: p
                .conditions
                .source_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            max_mfa_age_secs: p.conditions.max_mfa_age_secs,
            identity_provider: p.conditions.identity_provider.clone(),
        },
        max_session_secs: Some(p.max_session_secs),
        disabled: p.disabled,
    }
}

impl Fixture {
    fn service(&self) -> &Service {
        &self.h.service
    }

    /// The harness's group `eng` (Ann's) and its policy `eng-ssh`, which lets it reach the
    /// harness's resource.
    async fn eng(&self) -> (GroupId, Policy) {
        let group = self
            .service()
            .list_groups(&admin())
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == "eng")
            .unwrap()
            .id;
        let policy = self
            .service()
            .list_policies(&admin())
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "eng-ssh")
            .unwrap();
        (group, policy)
    }

    /// A group with Ann in it (or not) and a policy of `action` for it to the resource.
    async fn group_with_policy(
        &self,
        name: &str,
        with_ann: bool,
        action: PolicyAction,
    ) -> (GroupId, Policy) {
        let a = admin();
        let group = self
            .service()
            .create_group(
                &a,
                GroupInput {
                    name: name.into(),
                    description: String::new(),
                },
            )
            .await
            .unwrap()
            .id;
        if with_ann {
            self.service()
                .add_member(
                    &a,
                    group,
                    MemberInput {
                        user_id: self.h.user,
                    },
                )
                .await
                .unwrap();
        }
        let policy = self
            .service()
            .create_policy(
                &a,
                PolicyInput {
                    name: format!("{name}-ssh"),
                    group_id: group,
                    resource_id: self.h.resource,
                    action,
                    conditions: ConditionsInput::default(),
                    max_session_secs: None,
                    disabled: false,
                },
            )
            .await
            .unwrap();
        (group, policy)
    }

    /// Ann's access to the resource from `source`, granted.
    async fn issue(&self, source: &str, last_mfa_at: Option<Timestamp>) -> AccessGrant {
        let outcome = self
            .service()
            .request_access(
                &admin(),
                AccessRequest {
                    user_id: self.h.user,
                    device_id: self.h.device,
                    resource_id: self.h.resource,
                    source: source.into(),
                    public_key: key(),
                    identity_provider: None,
                    last_mfa_at,
                },
            )
            .await
            .unwrap();
        let AccessOutcome::Granted(g) = outcome else {
            panic!("denied: {outcome:?}");
        };
        g
    }

    /// The grant as stored.
    async fn grant(&self, id: GrantId) -> Grant {
        self.service()
            .list_grants(&admin(), GrantFilter::for_grant(id), false)
            .await
            .unwrap()
            .pop()
            .unwrap()
    }

    async fn is_live(&self, id: GrantId) -> bool {
        !self
            .service()
            .list_grants(&admin(), GrantFilter::for_grant(id), true)
            .await
            .unwrap()
            .is_empty()
    }

    /// Forgets the messages the gateway got so far.
    fn drain(&mut self) {
        while self.gw.messages.try_recv().is_ok() {}
    }

    /// The first message the gateway gets that `wanted` picks, within 1 s of `since`.
    async fn gateway_gets(
        &mut self,
        since: Instant,
        wanted: impl Fn(&ControllerMessage) -> bool,
    ) -> ControllerMessage {
        let deadline = since + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.gw.messages.recv()).await {
                Ok(Some(msg)) if wanted(&msg) => return msg,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the gateway's connection ended"),
                Err(_) => panic!("the gateway was not told within 1 s"),
            }
        }
    }

    /// The one audit event of `kind` about grant `id`.
    async fn audited(&self, kind: &str, id: GrantId) -> store::AuditEvent {
        let mut events = self
            .service()
            .audit_log(
                &admin(),
                AuditFilter {
                    kind: Some(kind.into()),
                    subject: Some(format!("grant:{id}")),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{kind} of grant {id}: {events:?}");
        events.pop().unwrap()
    }

    /// Asserts that `g` was revoked after the change made at `since` (`cause`, made to
    /// `changed` by `by`): not live, its gateway told within 1 s, and audited with the
    /// cause, the reason code `code`, and the grant's device, resource and gateway.
    async fn assert_revoked(
        &mut self,
        g: &AccessGrant,
        since: Instant,
        (cause, changed, by): (&str, &str, &str),
        code: &str,
    ) {
        assert!(!self.is_live(g.grant_id).await, "grant still live");
        let id = g.grant_id;
        self.gateway_gets(
            since,
            |m| matches!(m, ControllerMessage::GrantRevoked { id: r, .. } if *r == id),
        )
        .await;
        let stored = self.grant(id).await;
        let e = self.audited("grant.revoked", id).await;
        let d = &e.details;
        assert_eq!(e.actor, by, "{e:?}");
        assert_eq!(d["cause"], json!(cause), "{e:?}");
        assert_eq!(d["changed"], json!(changed), "{e:?}");
        assert_eq!(d["by"], json!(by), "{e:?}");
        assert_eq!(d["device"], json!(stored.device_id), "{e:?}");
        assert_eq!(d["user"], json!(stored.user_id), "{e:?}");
        assert_eq!(d["resource"], json!(stored.resource_id), "{e:?}");
        assert_eq!(d["gateway"], json!(g.gateway_id), "{e:?}");
        assert_eq!(d["policy"], json!(stored.policy_id), "{e:?}");
        let codes: Vec<&str> = d["reason_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{code} not in {codes:?}");
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains(cause), "{reason}");
        assert_eq!(
            self.service()
                .grant_revoke_reason(id)
                .await
                .unwrap()
                .as_deref(),
            Some(reason)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_joining_a_group_with_a_deny_policy_revokes_the_grant() {
    for mut f in backends().await {
        let g = f.issue("192.0.2.7", None).await;
        let (contractors, _) = f
            .group_with_policy("contractors", false, PolicyAction::Deny)
            .await;
        // The deny policy does not cover Ann yet.
        assert!(f.is_live(g.grant_id).await);
        f.drain();
        let since = Instant::now();
        f.service()
            .add_member(&admin(), contractors, MemberInput { user_id: f.h.user })
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("group.member_added", &format!("group:{contractors}"), "cli"),
            "denied_by_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_leaving_the_group_revokes_the_grant() {
    for mut f in backends().await {
        let (eng, _) = f.eng().await;
        let g = f.issue("192.0.2.7", None).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .remove_member(&admin(), eng, f.h.user)
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("group.member_removed", &format!("group:{eng}"), "cli"),
            "no_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_deleting_a_policy_revokes_unless_another_allow_covers_the_grant() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let (_, ops_ssh) = f.group_with_policy("ops", true, PolicyAction::Allow).await;
        let g = f.issue("192.0.2.7", None).await;
        // Both allow it as long; the older policy has the smaller id and is chosen.
        assert_eq!(f.grant(g.grant_id).await.policy_id, eng_ssh.id);

        // Another allow still covers it: it stays, attributed to that one.
        f.service()
            .delete_policy(&admin(), eng_ssh.id)
            .await
            .unwrap();
        assert!(
            f.is_live(g.grant_id).await,
            "revoked while ops-ssh allows it"
        );
        let stored = f.grant(g.grant_id).await;
        assert_eq!(stored.policy_id, ops_ssh.id, "not re-attributed");
        assert_eq!(stored.expires_at, g.expires_at);

        // Nothing covers it any more: revoked.
        f.drain();
        let since = Instant::now();
        f.service()
            .delete_policy(&admin(), ops_ssh.id)
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            ("policy.deleted", &format!("policy:{}", ops_ssh.id), "cli"),
            "no_policy",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_narrowing_a_policys_source_ranges_revokes_grants_from_outside() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let inside = f.issue("192.0.2.7", None).await;
        let outside = f.issue("198.51.100.9", None).await;
        let changed = format!("policy:{}", eng_ssh.id);

        let mut input = input_of(&eng_ssh);
        input.conditions.source_cidrs = vec!["192.0.2.0/24".into()];
        f.drain();
        let since = Instant::now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input.clone())
            .await
            .unwrap();
        f.assert_revoked(
            &outside,
            since,
            ("policy.updated", &changed, "cli"),
            "source_not_allowed",
        )
        .await;
        assert!(
            f.is_live(inside.grant_id).await,
            "192.0.2.7 is still inside"
        );

        input.conditions.source_cidrs = vec!["192.0.2.128/25".into()];
        f.drain();
        let since = Instant::now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        f.assert_revoked(
            &inside,
            since,
            ("policy.updated", &changed, "cli"),
            "source_not_allowed",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_lowering_max_session_shortens_the_grant_and_tells_its_gateway() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        let g = f.issue("192.0.2.7", None).await;
        assert!(g.expires_at > ms_now() + secs(7 * 3600), "{g:?}");
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(60);
        f.drain();
        let since = Instant::now();
        let t0 = ms_now();
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        let t1 = ms_now();
        let stored = f.grant(g.grant_id).await;
        assert!(f.is_live(g.grant_id).await);
        assert!(
            t0 + secs(60) <= stored.expires_at && stored.expires_at <= t1 + secs(60),
            "{stored:?}"
        );
        assert_eq!(stored.policy_id, eng_ssh.id);
        let id = g.grant_id;
        let msg = f
            .gateway_gets(
                since,
                |m| matches!(m, ControllerMessage::GrantAdded { grant, .. } if grant.id == id),
            )
            .await;
        let ControllerMessage::GrantAdded { grant, .. } = msg else {
            unreachable!()
        };
        assert_eq!(grant.expires_at, stored.expires_at);
        assert_eq!(grant.tunnel_address, g.tunnel_address);
        assert_eq!(grant.preshared_key, g.preshared_key);
        assert_eq!(f.gw.grants()[&id].expires_at, stored.expires_at);
        let e = f.audited("grant.shortened", id).await;
        assert_eq!(e.details["expires_at"], json!(stored.expires_at), "{e:?}");
        assert_eq!(e.details["was"], json!(g.expires_at), "{e:?}");
        assert_eq!(e.details["cause"], json!("policy.updated"), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_grants_end_at_their_expiry_with_the_reasons() {
    for mut f in backends().await {
        let (_, eng_ssh) = f.eng().await;
        // A session of one second.
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(1);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input.clone())
            .await
            .unwrap();
        let session = f.issue("192.0.2.7", None).await;
        // And MFA that is 60 s old a second from now.
        input.max_session_secs = Some(3600);
        input.conditions.max_mfa_age_secs = Some(60);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        assert!(!f.is_live(session.grant_id).await, "no MFA: revoked");
        f.service().end_due_grants(100).await.unwrap();
        let mfa = f
            .issue("192.0.2.7", Some(ms_now() - secs(60) + millis(1000)))
            .await;
        assert_eq!(
            f.service().next_grant_end().await.unwrap(),
            Some(mfa.expires_at)
        );
        // Not due yet: nothing ends.
        f.service().end_due_grants(100).await.unwrap();
        assert!(f.is_live(mfa.grant_id).await);
        assert!(f.grant(mfa.grant_id).await.revoked_at.is_none());

        let wait = mfa.expires_at.duration_since(Timestamp::now());
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(5)).await;
        assert!(!f.is_live(mfa.grant_id).await, "past its expiry");
        f.drain();
        let since = Instant::now();
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 1);
        let id = mfa.grant_id;
        f.gateway_gets(
            since,
            |m| matches!(m, ControllerMessage::GrantRevoked { id: r, .. } if *r == id),
        )
        .await;
        let stored = f.grant(id).await;
        assert_eq!(stored.revoked_at, Some(stored.expires_at));
        let e = f.audited("grant.expired", id).await;
        assert_eq!(e.actor, "system");
        assert_eq!(e.details["cause"], json!("time"), "{e:?}");
        assert_eq!(e.details["reason_codes"], json!(["mfa_too_old"]), "{e:?}");
        assert_eq!(e.details["gateway"], json!(mfa.gateway_id), "{e:?}");
        assert_eq!(e.details["expires_at"], json!(mfa.expires_at), "{e:?}");

        // The one-second session, ended at its expiry.
        let mut input = input_of(&eng_ssh);
        input.max_session_secs = Some(1);
        f.service()
            .update_policy(&admin(), eng_ssh.id, input)
            .await
            .unwrap();
        let short = f.issue("192.0.2.7", None).await;
        let wait = short.expires_at.duration_since(Timestamp::now());
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(5)).await;
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 1);
        let e = f.audited("grant.expired", short.grant_id).await;
        assert_eq!(e.details["reason_codes"], json!(["session_ended"]), "{e:?}");
        let stored = f.grant(short.grant_id).await;
        assert_eq!(stored.revoked_at, Some(short.expires_at));
        assert_eq!(
            f.service()
                .grant_revoke_reason(short.grant_id)
                .await
                .unwrap()
                .as_deref(),
            e.details["reason"].as_str()
        );
        // Ended once: nothing is due any more.
        assert_eq!(f.service().end_due_grants(100).await.unwrap(), 0);
        assert_eq!(f.service().next_grant_end().await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_revocations_by_posture_are_audited_with_their_cause() {
    for mut f in backends().await {
        let a = admin();
        let (_, eng_ssh) = f.eng().await;
        let profile = f
            .service()
            .create_profile(
                &a,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        let mut input = input_of(&eng_ssh);
        input.conditions.posture_profile_id = Some(profile.id);
        f.service()
            .update_policy(&a, eng_ssh.id, input)
            .await
            .unwrap();
        // Ann's second device, enrolled with a key: a session and a posture signing key.
        let enrollment = f
            .service()
            .create_enrollment_key(
                &a,
                EnrollmentKeyInput {
                    user_id: f.h.user,
                    reusable: false,
                    expires_in_secs: None,
                },
            )
            .await
            .unwrap();
        let device_key = DeviceKey::generate();
        let enrolled = f
            .service()
            .enroll_with_key(&enrollment.secret, "ann-desktop", &device_key.public_key())
            .await
            .unwrap();
        let device = enrolled.device_id;
        let ctx = f
            .service()
            .device_session(device, &enrolled.session)
            .await
            .unwrap()
            .unwrap();
        let report = |firewall, os: &str| PostureReport {
            collected_at: ms_now(),
            os_name: Some("debian".into()),
            os_version: Some(os.into()),
            kernel_version: None,
            disk_encryption: CheckState::Pass,
            firewall,
            secure_boot: CheckState::Unknown,
            screen_lock: CheckState::Unknown,
            processes: Vec::new(),
            client_version: Some("0.1.0".into()),
            hostname: None,
            serial: None,
        };
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let request = async |f: &Fixture, seq| {
            let signed = device_key.sign_report(device, seq, report(CheckState::Pass, "12"));
            let outcome = f
                .service()
                .client_request_access(&ctx, f.h.resource, &key(), Some(&signed), source)
                .await
                .unwrap();
            let AccessOutcome::Granted(g) = outcome else {
                panic!("denied: {outcome:?}");
            };
            g
        };

        // The device's own report: its firewall went off.
        let g = request(&f, 1).await;
        f.drain();
        let since = Instant::now();
        let off = device_key.sign_report(device, 2, report(CheckState::Fail, "12"));
        f.service()
            .accept_posture(&ctx, &off, source)
            .await
            .unwrap();
        let by = format!("device:{device}");
        f.assert_revoked(
            &g,
            since,
            ("posture.reported", &format!("device:{device}"), &by),
            "firewall_off",
        )
        .await;
        assert_eq!(f.grant(g.grant_id).await.device_id, device);

        // The profile now wants a newer OS than the device runs.
        let g = request(&f, 3).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .update_profile(
                &a,
                profile.id,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    min_os_versions: [("debian".to_owned(), "13".to_owned())].into(),
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        f.assert_revoked(
            &g,
            since,
            (
                "posture_profile.updated",
                &format!("posture_profile:{}", profile.id),
                "cli",
            ),
            "os_outdated",
        )
        .await;
    }
}

/// Found by the model: a report stored through `Service::record_posture` (not signed by
/// the device) did not re-evaluate the device's grants (it does since `posture.recorded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_recorded_posture_reports_revoke_like_signed_ones() {
    for mut f in backends().await {
        let a = admin();
        let (_, eng_ssh) = f.eng().await;
        let profile = f
            .service()
            .create_profile(
                &a,
                PostureProfileInput {
                    name: "firewalled".into(),
                    require_firewall: true,
                    ..serde_json::from_value(json!({"name": "x"})).unwrap()
                },
            )
            .await
            .unwrap();
        let mut input = input_of(&eng_ssh);
        input.conditions.posture_profile_id = Some(profile.id);
        f.service()
            .update_policy(&a, eng_ssh.id, input)
            .await
            .unwrap();
        let report = |firewall| PostureReport {
            collected_at: ms_now(),
            firewall,
            ..serde_json::from_value(json!({"collected_at": ms_now()})).unwrap()
        };
        f.service()
            .record_posture(f.h.device, &report(CheckState::Pass))
            .await
            .unwrap();
        let g = f.issue("192.0.2.7", None).await;
        f.drain();
        let since = Instant::now();
        f.service()
            .record_posture(f.h.device, &report(CheckState::Fail))
            .await
            .unwrap();
        let device = format!("device:{}", f.h.device);
        f.assert_revoked(
            &g,
            since,
            ("posture.recorded", &device, "system"),
            "firewall_off",
        )
        .await;
    }
}

/// Found while writing the model, and not fixed here: a deny policy whose time window opens
/// while a grant is live does not end the grant. The decision bounds a grant's expiry by the
/// limits of the allow policy only, and nothing re-evaluates when the window opens, so the
/// grant stays live against a decision that now denies. Waits for the next whole minute
/// (up to a minute), hence ignored; run it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap: a deny policy's window opening does not bound or end live grants"]
async fn live_a_deny_window_that_opens_ends_the_grant() {
    let f = fixture(None).await;
    let a = admin();
    let (eng, _) = f.eng().await;
    // Denied from the next whole minute to the end of the day (UTC).
    let now = ms_now();
    let local = now.to_zoned(TimeZone::UTC);
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    assert!(
        minute < 1438,
        "too close to midnight for this test: run it again"
    );
    let opens = now + secs(60 - i64::from(local.second())) - millis(i64::from(local.millisecond()));
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [local.weekday().to_monday_zero_offset() as usize];
    let window: TimeWindow = serde_json::from_value(json!({
        "days": [day],
        "start": format!("{:02}:{:02}", (minute + 1) / 60, (minute + 1) % 60),
        "end": "24:00",
    }))
    .unwrap();
    f.service()
        .create_policy(
            &a,
            PolicyInput {
                name: "after-hours".into(),
                group_id: eng,
                resource_id: f.h.resource,
                action: PolicyAction::Deny,
                conditions: ConditionsInput {
                    time_windows: vec![window],
                    ..Default::default()
                },
                max_session_secs: None,
                disabled: false,
            },
        )
        .await
        .unwrap();
    let g = f.issue("192.0.2.7", None).await;
    tokio::time::sleep(
        opens.duration_since(Timestamp::now()).unsigned_abs() + Duration::from_millis(200),
    )
    .await;
    f.service().end_due_grants(100).await.unwrap();
    // The decision now denies ...
    let decision = f
        .service()
        .decide(
            &a,
            DecisionRequest {
                user_id: f.h.user,
                device_id: f.h.device,
                resource_id: f.h.resource,
                source: "192.0.2.7".into(),
                identity_provider: None,
                last_mfa_at: None,
            },
        )
        .await
        .unwrap();
    assert!(!decision.is_allow(), "{decision:?}");
    // ... so the grant must not be live.
    assert!(
        !f.is_live(g.grant_id).await,
        "granted until {} across the deny window opening at {opens}",
        g.expires_at
    );
}
