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

mod focused;
mod ops;
mod world;
mod world_ops;

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

use self::ops::*;
use self::world::*;

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
