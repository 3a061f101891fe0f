//! Revocation latency per kind of change: from the admin's API call leaving the client to
//! the gateway having dropped the peer (its live `postern_gateway_peers` gauge, polled from
//! inside the gateway's namespace every 0.5 ms). The changes:
//!
//! - the user added to a group with a deny policy for the resource;
//! - the allowing policy deleted;
//! - the allowing policy's source CIDRs narrowed so that the client's address falls out;
//! - the user disabled;
//! - the user's membership of the allowing group removed;
//! - the device disabled;
//! - the grant itself revoked (`DELETE /api/v1/grants/{id}`, the baseline).
//!
//! Each runs in three deployments, one run:
//!
//! - one controller on SQLite (the embedded default);
//! - a controller on PostgreSQL, changing at the replica the gateway is connected to;
//! - two replicas on PostgreSQL, changing at the other one (the revocation travels through
//!   PostgreSQL's `NOTIFY` to the gateway's replica).
//!
//! Each run issues a grant (`POST /api/v1/access`, acknowledged by the gateway), times the
//! change, and undoes it outside the timing. Both the API client and the poller keep their
//! connections open, so the figures hold no TLS handshakes. Needs root and, for the
//! PostgreSQL rows, `POSTERN_TEST_POSTGRES_URL` and `POSTERN_TEST_POSTGRES_SOCKET` (as
//! `scripts/test` sets them):
//!
//! ```sh
//! cargo bench -p e2e --bench revocation
//! ```
//!
//! `POSTERN_BENCH_RUNS` sets the runs per row (default 30).

mod support;

use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::deploy::Ids;
use e2e::postgres::Database;
use e2e::topology::{CLIENT, Topology};
use serde_json::{Value, json};
use support::{Admin, Deployment, PeerWatch, id, ms, named, quantile, random_key};

/// The source range of the allowing policy (holds the client's address), and the narrower
/// one it is changed to (does not).
const WIDE: &str = "10.77.0.0/16";
const NARROW: &str = "10.77.2.0/24";

/// A change that ends the grant, and how it is undone.
#[derive(Debug, Clone, Copy)]
enum Change {
    DenyGroup,
    PolicyDeleted,
    SourceNarrowed,
    UserDisabled,
    MembershipRemoved,
    DeviceDisabled,
    GrantDeleted,
}

const CHANGES: [Change; 7] = [
    Change::DenyGroup,
    Change::PolicyDeleted,
    Change::SourceNarrowed,
    Change::UserDisabled,
    Change::MembershipRemoved,
    Change::DeviceDisabled,
    Change::GrantDeleted,
];

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::DenyGroup => "user added to a group with a deny policy",
            Change::PolicyDeleted => "allowing policy deleted",
            Change::SourceNarrowed => "policy's source CIDR narrowed",
            Change::UserDisabled => "user disabled",
            Change::MembershipRemoved => "membership removed",
            Change::DeviceDisabled => "device disabled",
            Change::GrantDeleted => "grant DELETE (baseline)",
        }
    }
}

/// The objects the changes touch.
struct Fixture {
    ids: Ids,
    /// The group whose allow policy admits the user.
    eng: String,
    /// A group with a deny policy for the resource; the user is not in it.
    blocked: String,
    /// The allowing policy (a new one after each deletion).
    policy: String,
}

impl Fixture {
    /// Looks up what `provision` made, gives its policy the wide source range, and adds the
    /// deny group.
    fn new(api: &Admin, ids: Ids) -> anyhow::Result<Self> {
        let blocked = api.call("POST", "/api/v1/groups", Some(json!({"name": "blocked"})))?;
        let f = Self {
            eng: named(api, "/api/v1/groups", "eng")?,
            blocked: id(&blocked)?,
            policy: named(api, "/api/v1/policies", "eng-app")?,
            ids,
        };
        api.call(
            "POST",
            "/api/v1/policies",
            Some(json!({"name": "blocked-app", "group_id": f.blocked, "resource_id": f.ids.app, "action": "deny"})),
        )?;
        api.call("PUT", &f.policy_path(), Some(f.policy_body(WIDE)))?;
        Ok(f)
    }

    fn policy_path(&self) -> String {
        format!("/api/v1/policies/{}", self.policy)
    }

    /// The allowing policy with `source` as its only source range.
    fn policy_body(&self, source: &str) -> Value {
        json!({
            "name": "eng-app", "group_id": self.eng, "resource_id": self.ids.app,
            "max_session_secs": 3600, "conditions": {"source_cidrs": [source]},
        })
    }

    /// Makes the change that ends `grant`.
    fn change(&self, api: &Admin, change: Change, grant: &str) -> anyhow::Result<()> {
        let user = &self.ids.user;
        match change {
            Change::DenyGroup => api.call(
                "POST",
                &format!("/api/v1/groups/{}/members", self.blocked),
                Some(json!({"user_id": user})),
            ),
            Change::PolicyDeleted => api.call("DELETE", &self.policy_path(), None),
            Change::SourceNarrowed => {
                api.call("PUT", &self.policy_path(), Some(self.policy_body(NARROW)))
            }
            Change::UserDisabled => api.call(
                "PATCH",
                &format!("/api/v1/users/{user}"),
                Some(json!({"disabled": true})),
            ),
            Change::MembershipRemoved => api.call(
                "DELETE",
                &format!("/api/v1/groups/{}/members/{user}", self.eng),
                None,
            ),
            Change::DeviceDisabled => api.call(
                "PATCH",
                &format!("/api/v1/devices/{}", self.ids.device),
                Some(json!({"disabled": true})),
            ),
            Change::GrantDeleted => api.call("DELETE", &format!("/api/v1/grants/{grant}"), None),
        }?;
        Ok(())
    }

    /// Undoes `change`, so that the next grant is allowed again.
    fn undo(&mut self, api: &Admin, change: Change) -> anyhow::Result<()> {
        let user = &self.ids.user;
        match change {
            Change::DenyGroup => {
                api.call(
                    "DELETE",
                    &format!("/api/v1/groups/{}/members/{user}", self.blocked),
                    None,
                )?;
            }
            Change::PolicyDeleted => {
                let p = api.call("POST", "/api/v1/policies", Some(self.policy_body(WIDE)))?;
                self.policy = id(&p)?;
            }
            Change::SourceNarrowed => {
                api.call("PUT", &self.policy_path(), Some(self.policy_body(WIDE)))?;
            }
            Change::UserDisabled => {
                api.call(
                    "PATCH",
                    &format!("/api/v1/users/{user}"),
                    Some(json!({"disabled": false})),
                )?;
            }
            Change::MembershipRemoved => {
                api.call(
                    "POST",
                    &format!("/api/v1/groups/{}/members", self.eng),
                    Some(json!({"user_id": user})),
                )?;
            }
            Change::DeviceDisabled => {
                api.call(
                    "PATCH",
                    &format!("/api/v1/devices/{}", self.ids.device),
                    Some(json!({"disabled": false})),
                )?;
            }
            Change::GrantDeleted => {}
        }
        Ok(())
    }
}

struct Row {
    deployment: &'static str,
    change: Change,
    times: Vec<Duration>,
}

/// Issues a grant through `issuer`, ends it with `change` through `changer` and undoes the
/// change, `runs` times; the times from the change's request to the gateway dropping the
/// peer.
fn revocations(
    t: &Topology,
    f: &mut Fixture,
    issuer: &Admin,
    changer: &Admin,
    change: Change,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let watch = PeerWatch::start(t, Duration::from_secs(600));
    watch.until(0, Duration::from_secs(10))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let grant = issuer.call(
            "POST",
            "/api/v1/access",
            Some(json!({"user_id": f.ids.user, "device_id": f.ids.device, "resource_id": f.ids.app, "source": CLIENT, "public_key": random_key()})),
        )?;
        let grant = grant["grant_id"].as_str().context("no grant id")?;
        watch.until(1, Duration::from_secs(10))?;
        let started = Instant::now();
        f.change(changer, change, grant)?;
        let dropped = watch
            .until(0, Duration::from_secs(10))
            .with_context(|| format!("after: {}", change.name()))?;
        times.push(dropped.saturating_duration_since(started));
        f.undo(changer, change)?;
    }
    Ok(times)
}

/// One deployment: a fresh topology, the controller(s), a gateway, the objects, then every
/// change's runs.
fn deployment(
    name: &'static str,
    database: Option<&str>,
    across: bool,
    runs: usize,
) -> anyhow::Result<Vec<Row>> {
    let d = Deployment::start(database, across)?;
    let issuer = Admin::start(&d.controller.api);
    let changer = Admin::start(&d.other.as_ref().unwrap_or(&d.controller).api);
    let mut f = Fixture::new(&issuer, d.ids.clone())?;
    let mut rows = Vec::new();
    for change in CHANGES {
        let times = revocations(&d.topology, &mut f, &issuer, &changer, change, runs)?;
        rows.push(Row {
            deployment: name,
            change,
            times,
        });
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let runs = support::runs(30);
    let mut rows = deployment("SQLite, one controller", None, false, runs)?;
    match Database::create()? {
        Some(db) => {
            rows.extend(deployment(
                "PostgreSQL, at the gateway's replica",
                Some(&db.url),
                false,
                runs,
            )?);
            let db2 = Database::create()?.context("a second database")?;
            rows.extend(deployment(
                "PostgreSQL, at another replica",
                Some(&db2.url),
                true,
                runs,
            )?);
        }
        None => eprintln!("the PostgreSQL rows need a test server (see above)"),
    }
    println!(
        "\nrevocation latency: the change's API call sent -> the gateway's peer gone ({runs} runs per row; goal: p99 under 10 ms; load average {})\n",
        support::load()
    );
    println!("| deployment | change | median ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            r.deployment,
            r.change.name(),
            ms(quantile(&r.times, 0.5)),
            ms(quantile(&r.times, 0.99)),
            ms(quantile(&r.times, 1.0)),
        );
    }
    Ok(())
}
