//! The cost of re-evaluating many live grants: 10,000 devices (enrolled through the API,
//! one user) each hold a live grant to one resource under one policy on one gateway; then
//! the policy is deleted, and the time from the `DELETE /api/v1/policies/{id}` leaving the
//! client to the gateway's `postern_gateway_peers` gauge reaching 0 is measured (and when
//! the API answered, that is when the controller's transaction, which re-decides and
//! revokes every grant, committed). On the way it measures how fast the grants were issued
//! end to end (`POST /api/v1/access`, each acknowledged by the real gateway) with many
//! requests in flight, overall and in the first and the last tenth. One controller on
//! SQLite, then one on PostgreSQL. Needs root and, for the PostgreSQL row,
//! `POSTERN_TEST_POSTGRES_URL` and `POSTERN_TEST_POSTGRES_SOCKET`:
//!
//! ```sh
//! cargo bench -p e2e --bench reevaluation
//! ```
//!
//! `POSTERN_BENCH_GRANTS` sets the number of grants (default 10000),
//! `POSTERN_BENCH_CONCURRENCY` the requests in flight while issuing (default 32).

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::postgres::Database;
use e2e::topology::CLIENT;
use serde_json::json;
use support::{Admin, Deployment, PeerWatch, ms, named, random_key};

fn env_number(name: &str, default: usize, max: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

struct Row {
    database: &'static str,
    enrolled_per_s: f64,
    issued_per_s: f64,
    first_tenth_per_s: f64,
    last_tenth_per_s: f64,
    answered: Duration,
    dropped: Duration,
}

/// Sends `calls` through `api` and fails on the first error; the time they took.
fn all_ok(
    api: &Admin,
    what: &str,
    calls: Vec<(String, String, Option<serde_json::Value>)>,
) -> anyhow::Result<(Vec<serde_json::Value>, Duration)> {
    let started = Instant::now();
    let answers = api.call_all(calls)?;
    let took = started.elapsed();
    let n = answers.len();
    let mut ok = Vec::with_capacity(n);
    for a in answers {
        ok.push(a.with_context(|| format!("{what}: one of {n} failed"))?);
    }
    Ok((ok, took))
}

fn row(
    database: &'static str,
    url: Option<&str>,
    grants: usize,
    concurrency: usize,
) -> anyhow::Result<Row> {
    let d = Deployment::start(url, false)?;
    let (t, ids) = (&d.topology, &d.ids);
    let api = Admin::with_concurrency(&d.controller.api, concurrency);
    let policy = named(&api, "/api/v1/policies", "eng-app")?;
    let key = api.call(
        "POST",
        "/api/v1/enrollment-keys",
        Some(json!({"user_id": ids.user, "reusable": true})),
    )?;
    let secret = key["secret"].as_str().context("no enrollment key")?;

    let enrolls = (0..grants)
        .map(|i| {
            let body = json!({"enrollment_key": secret, "name": format!("device-{i}"), "public_key": random_key()});
            ("POST".to_owned(), "/api/v1/devices/enroll".to_owned(), Some(body))
        })
        .collect();
    let (devices, enroll_time) = all_ok(&api, "enrolling", enrolls)?;
    let watch = PeerWatch::start(t, Duration::from_secs(1800));
    watch.until(0, Duration::from_secs(10))?;
    let mut requests = Vec::with_capacity(grants);
    for d in &devices {
        let device = d["device_id"].as_str().context("no device id")?;
        let body = json!({"user_id": ids.user, "device_id": device, "resource_id": ids.app, "source": CLIENT, "public_key": random_key()});
        requests.push(("POST".to_owned(), "/api/v1/access".to_owned(), Some(body)));
    }
    // In tenths, to see whether issuing slows down as live grants pile up.
    let tenth = grants.div_ceil(10);
    let mut tenths = Vec::new();
    while !requests.is_empty() {
        let rest = requests.split_off(tenth.min(requests.len()));
        let chunk = std::mem::replace(&mut requests, rest);
        let n = chunk.len();
        let (_, took) = all_ok(&api, "issuing grants", chunk)?;
        tenths.push((n, took));
    }
    let issue_time: Duration = tenths.iter().map(|(_, t)| *t).sum();
    let rate = |(n, t): &(usize, Duration)| *n as f64 / t.as_secs_f64();
    let n = u64::try_from(grants)?;
    watch.until(n, Duration::from_secs(60))?;

    let started = Instant::now();
    api.call("DELETE", &format!("/api/v1/policies/{policy}"), None)?;
    let answered = started.elapsed();
    let dropped = watch
        .until(0, Duration::from_secs(600))?
        .saturating_duration_since(started);
    let live = api.call("GET", "/api/v1/grants", None)?;
    if live.as_array().is_none_or(|g| !g.is_empty()) {
        bail!("grants still live after the policy was deleted: {live}");
    }
    Ok(Row {
        database,
        enrolled_per_s: grants as f64 / enroll_time.as_secs_f64(),
        issued_per_s: grants as f64 / issue_time.as_secs_f64(),
        first_tenth_per_s: tenths.first().map(rate).unwrap_or_default(),
        last_tenth_per_s: tenths.last().map(rate).unwrap_or_default(),
        answered,
        dropped,
    })
}

fn main() -> anyhow::Result<()> {
    let grants = env_number("POSTERN_BENCH_GRANTS", 10_000, 100_000);
    let concurrency = env_number("POSTERN_BENCH_CONCURRENCY", 32, 256);
    let mut rows = vec![row("SQLite", None, grants, concurrency)?];
    match Database::create()? {
        Some(db) => rows.push(row("PostgreSQL", Some(&db.url), grants, concurrency)?),
        None => eprintln!("the PostgreSQL row needs a test server (see above)"),
    }
    println!(
        "\nre-evaluation: {grants} live grants (one per device) under one policy on one gateway; the policy deleted (load average {})\n",
        support::load()
    );
    println!(
        "| database | devices enrolled/s | grants issued/s ({concurrency} in flight) | first tenth /s | last tenth /s | DELETE answered ms | gateway at 0 peers ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.database,
            r.enrolled_per_s,
            r.issued_per_s,
            r.first_tenth_per_s,
            r.last_tenth_per_s,
            ms(r.answered),
            ms(r.dropped),
        );
    }
    Ok(())
}
