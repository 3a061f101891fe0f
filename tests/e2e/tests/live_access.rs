//! Live access follows every change that changes a decision, end to end in namespaces these
//! tests create: the real controller, the real gateway and the real `postern` daemon, an
//! open TCP connection through the tunnel to an echo server on the resource host, and one
//! change per test that makes the policy deny what it allowed. The connection stops within
//! one second of the change, the grant is gone at the controller and at the gateway, and the
//! audit log says why: the revocation's (or expiry's) event names the change (`cause`), what
//! it changed (`changed`), who made it (`by`) and the denial's `reason_codes`.
//!
//! The changes: joining a group with a deny policy, the allowing policy deleted, its source
//! range narrowed, the user disabled, a group dropped from the identity provider's claim at
//! the next sign-in (the real `oidc-provider` in the controller's namespace), and a device
//! that stops reporting posture under a profile with a short report age (its control link
//! blocked while the tunnel keeps working): the grant ends at the report's freshness
//! deadline.

#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::ChildGuard;
use e2e::client::{Daemon, Ticker, echo, echo_server, routed_topology};
use e2e::deploy::{Api, Controller, Gateway};
use e2e::oidc::{self, Provider};
use e2e::topology::{CONTROLLER, RESOURCE_1, Topology};
use e2e::wait_for;
use serde_json::{Value, json};

/// The longest an open connection may keep working after the change that denies it.
const CUT_WITHIN: Duration = Duration::from_secs(1);
/// How long the connection is watched after the change.
const WATCH: Duration = Duration::from_secs(2);
/// The echo server's port on the resource host.
const PORT: u16 = 8080;
/// The posture profile's report age: short, but longer than the daemon's 2-second
/// collection period, so that a reporting device's renewals always carry a fresher report.
const MAX_REPORT_AGE: u64 = 5;

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// One deployment: the topology, the echo server, the controller with a site, its gateway,
/// the resource `app` on the echo server and the group `engineering`. The fields drop in
/// order: processes before their namespaces, the logs last, and then the next test's
/// deployment may start (the timing assertions want the machine's cores).
struct Live {
    gateway: Gateway,
    ctl: Controller,
    _echo: ChildGuard,
    t: Topology,
    dir: tempfile::TempDir,
    app: String,
    group: String,
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// Ann, a local user in `engineering` under the policy `policy`, with her enrolled device's
/// daemon and a connection open through it.
struct Ann {
    open: Open,
    daemon: Daemon,
    user: String,
    policy: String,
    live: Live,
}

impl Ann {
    /// Starts a deployment whose policy has the conditions `conditions` gives (it may make
    /// objects they name), enrolls Ann's device and opens the connection.
    fn connected(conditions: impl FnOnce(&Live) -> Value) -> Self {
        let live = Live::start();
        let policy = live.allow(conditions(&live));
        let user = live.member("ann@example.com");
        let daemon = live.daemon();
        daemon.login_with_key(&live.ctl, &user, "laptop").unwrap();
        let open = live.open(&daemon);
        Self {
            open,
            daemon,
            user,
            policy,
            live,
        }
    }

    /// [`Live::assert_cut_by`] for her connection.
    fn assert_cut_by(&self, change: &Change, make: impl FnOnce()) -> Duration {
        self.live.assert_cut_by(&self.open, change, make)
    }
}

/// An open connection through the tunnel and the grant it rides on.
struct Open {
    ticker: Ticker,
    grant: String,
}

/// A change an admin or a sign-in makes, and how the revocation's audit must name it.
struct Change<'a> {
    /// The `cause` the revocation names.
    cause: &'a str,
    /// The object the change changed (`changed`).
    changed: String,
    /// The audit event that records the change itself: its actor must be the revocation's
    /// `by`.
    recorded_as: &'a str,
    /// A reason code the denial must give.
    code: &'a str,
}

impl<'a> Change<'a> {
    /// A change recorded as `cause` about `changed`, whose denial gives `code`.
    fn new(cause: &'a str, changed: String, code: &'a str) -> Self {
        Self {
            cause,
            changed,
            recorded_as: cause,
            code,
        }
    }
}

impl Live {
    fn start() -> Self {
        static SERIAL: Mutex<()> = Mutex::new(());
        let one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let t = routed_topology().unwrap();
        let echo = echo_server(&t.resource1, RESOURCE_1, PORT, dir.path()).unwrap();
        let ctl = Controller::start(&t, dir.path()).unwrap();
        let call = |path: &str, body: Value| ctl.api.ok("POST", path, Some(body)).unwrap();
        let site = call("/api/v1/sites", json!({"name": "hq"}));
        let gateway = Gateway::start(&t, &ctl, site["id"].as_str().unwrap(), dir.path()).unwrap();
        let app = call(
            "/api/v1/resources",
            json!({"name": "app", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": [format!("tcp/{PORT}")]}),
        );
        let group = call("/api/v1/groups", json!({"name": "engineering"}));
        Self {
            gateway,
            app: id(&app),
            group: id(&group),
            ctl,
            _echo: echo,
            t,
            dir,
            _one_at_a_time: one_at_a_time,
        }
    }

    fn api(&self) -> &Api {
        &self.ctl.api
    }

    /// An admin API request that must succeed (`body` null: none); the answer.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (!body.is_null()).then_some(body);
        self.api().ok(method, path, body).unwrap()
    }

    /// Lets `engineering` reach `app` under `conditions`; returns the policy's id.
    fn allow(&self, conditions: Value) -> String {
        id(&self.call("POST", "/api/v1/policies", json!({"name": "engineering-app", "group_id": self.group, "resource_id": self.app, "conditions": conditions})))
    }

    /// A local user in `engineering`; returns their id.
    fn member(&self, email: &str) -> String {
        let user = id(&self.call(
            "POST",
            "/api/v1/users",
            json!({"email": email, "name": email}),
        ));
        self.add_to(&self.group, &user);
        user
    }

    fn add_to(&self, group: &str, user: &str) {
        let path = format!("/api/v1/groups/{group}/members");
        self.call("POST", &path, json!({"user_id": user}));
    }

    /// The daemon in the client namespace, signed out.
    fn daemon(&self) -> Daemon {
        Daemon::start(&self.t.client, self.dir.path(), "client", "pst0", &[]).unwrap()
    }

    /// Opens a connection to `app` (the first one asks for access on demand) and keeps one
    /// echoing.
    fn open(&self, daemon: &Daemon) -> Open {
        // Access requests carry the latest posture collection: wait for the first.
        wait_for(Duration::from_secs(10), || {
            daemon.status().ok()?["posture"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("no posture collected\n{}", daemon.log()));
        echo(&self.t.client, RESOURCE_1, PORT, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("no access to app: {e:#}\n{}", daemon.log()));
        let ticker = Ticker::start(&self.t.client, RESOURCE_1, PORT);
        ticker
            .next(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("the open connection never echoed\n{}", daemon.log()));
        let grant = daemon.resource("app").unwrap()["grant_id"]
            .as_str()
            .unwrap()
            .to_owned();
        Open { ticker, grant }
    }

    /// Makes `change` while the connection echoes and asserts it stops within
    /// [`CUT_WITHIN`] of the change's return, the grant ended at the controller and the
    /// gateway, and its `grant.revoked` event names the change; returns the cut time.
    fn assert_cut_by(&self, open: &Open, change: &Change, make: impl FnOnce()) -> Duration {
        open.ticker.last();
        open.ticker
            .next(Duration::from_secs(2))
            .expect("the connection echoes before the change");
        let started = Instant::now();
        make();
        let changed = Instant::now();
        std::thread::sleep(WATCH);
        let last = open.ticker.last().unwrap_or(started);
        let cut = last.saturating_duration_since(changed);
        eprintln!(
            "{} of {}: the change took {:?}; last echo {:?} after it started, {cut:?} after \
             it returned",
            change.cause,
            change.changed,
            changed - started,
            last.saturating_duration_since(started)
        );
        assert!(
            cut < CUT_WITHIN,
            "{} of {}: the connection went on for {cut:?} after the change",
            change.cause,
            change.changed
        );
        self.assert_ended(&open.grant);
        let by = self.actor_of(change.recorded_as, &change.changed);
        self.assert_audited(
            &open.grant,
            "grant.revoked",
            change.cause,
            &change.changed,
            &by,
            change.code,
        );
        cut
    }

    /// The grant is no longer live at the controller, and the gateway holds no peer.
    fn assert_ended(&self, grant: &str) {
        let live = self.call(
            "GET",
            &format!("/api/v1/grants?resource_id={}", self.app),
            Value::Null,
        );
        assert!(
            live.as_array().unwrap().iter().all(|g| g["id"] != grant),
            "grant {grant} is still live: {live}"
        );
        let peers = wait_for(Duration::from_secs(2), || {
            let n = self.gateway.metric(&self.t, "postern_gateway_peers").ok()?;
            (n == 0.0).then_some(n)
        });
        assert!(
            peers.is_some(),
            "the gateway still has peers\n{}",
            self.gateway.log()
        );
    }

    /// The actor of the newest `kind` event about `subject`.
    fn actor_of(&self, kind: &str, subject: &str) -> String {
        let path = format!("/api/v1/audit?kind={kind}&subject={subject}");
        let events = self.call("GET", &path, Value::Null);
        events[0]["actor"]
            .as_str()
            .unwrap_or_else(|| panic!("no {kind} event about {subject}: {events}"))
            .to_owned()
    }

    /// The grant's `kind` event has `cause`, `changed` and `by` as given and `code` among
    /// its `reason_codes`; the failure names every field that differs.
    fn assert_audited(
        &self,
        grant: &str,
        kind: &str,
        cause: &str,
        changed: &str,
        by: &str,
        code: &str,
    ) {
        let subject = format!("grant:{grant}");
        let path = format!("/api/v1/audit?kind={kind}&subject={subject}");
        let event = wait_for(Duration::from_secs(5), || {
            let events = self.call("GET", &path, Value::Null);
            events.as_array()?.first().cloned()
        })
        .unwrap_or_else(|| {
            let path = format!("/api/v1/audit?subject={subject}");
            let all = self.call("GET", &path, Value::Null);
            panic!("no {kind} event for {subject}; its events: {all:#}")
        });
        let details = &event["details"];
        let mut wrong = Vec::new();
        for (field, want) in [("cause", cause), ("changed", changed), ("by", by)] {
            if details[field] != want {
                wrong.push(format!("`{field}` is {} (want {want:?})", details[field]));
            }
        }
        let codes = details["reason_codes"].as_array();
        if !codes.is_some_and(|c| c.iter().any(|c| c == code)) {
            wrong.push(format!(
                "`reason_codes` is {} (want it to hold {code:?})",
                details["reason_codes"]
            ));
        }
        assert!(
            wrong.is_empty(),
            "the {kind} event of {subject}: {}\n{event:#}",
            wrong.join("; ")
        );
    }
}

#[test]
fn joining_a_group_with_a_deny_policy_cuts_an_open_connection() {
    let ann = Ann::connected(|_| json!({}));
    let live = &ann.live;
    let contractors = live.call("POST", "/api/v1/groups", json!({"name": "contractors"}));
    let group = id(&contractors);
    live.call("POST", "/api/v1/policies", json!({"name": "contractors-not-app", "group_id": group, "resource_id": live.app, "action": "deny"}));
    let change = Change::new(
        "group.member_added",
        format!("group:{group}"),
        "denied_by_policy",
    );
    ann.assert_cut_by(&change, || live.add_to(&group, &ann.user));
}

#[test]
fn deleting_the_allowing_policy_cuts_an_open_connection() {
    let ann = Ann::connected(|_| json!({}));
    let (policy, live) = (&ann.policy, &ann.live);
    let change = Change::new("policy.deleted", format!("policy:{policy}"), "no_policy");
    ann.assert_cut_by(&change, || {
        live.call("DELETE", &format!("/api/v1/policies/{policy}"), Value::Null);
    });
}

#[test]
fn narrowing_the_policy_source_range_away_from_the_client_cuts_an_open_connection() {
    // The client's address, as the controller sees it, is 10.77.1.1.
    let ann = Ann::connected(|_| json!({"source_cidrs": ["10.77.1.0/24"]}));
    let (policy, live) = (&ann.policy, &ann.live);
    let narrowed = json!({"name": "engineering-app", "group_id": live.group, "resource_id": live.app, "conditions": {"source_cidrs": ["10.77.1.128/25"]}});
    let change = Change::new(
        "policy.updated",
        format!("policy:{policy}"),
        "source_not_allowed",
    );
    ann.assert_cut_by(&change, || {
        live.call("PUT", &format!("/api/v1/policies/{policy}"), narrowed);
    });
}

#[test]
fn disabling_the_user_cuts_an_open_connection() {
    let ann = Ann::connected(|_| json!({}));
    let (user, live) = (&ann.user, &ann.live);
    let change = Change::new("user.updated", format!("user:{user}"), "user_disabled");
    let disabled = json!({"disabled": true});
    ann.assert_cut_by(&change, || {
        live.call("PATCH", &format!("/api/v1/users/{user}"), disabled);
    });
}

#[test]
fn signing_in_again_without_the_group_in_the_providers_claim_cuts_an_open_connection() {
    let live = Live::start();
    live.allow(json!({}));
    let idp = Provider::start(&live.t.controller, live.api(), "corp", live.dir.path()).unwrap();
    // Alice's groups claim holds `engineering`: her first sign-in makes her a member.
    let session = idp.sign_in(live.api(), "alice").unwrap();
    let me = oidc::me(live.api(), &session).unwrap();
    assert_eq!(me["identity_provider"], "corp", "{me}");
    let alice = me["user"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/groups/{}/members", live.group);
    let members = live.call("GET", &path, Value::Null);
    assert!(
        members.as_array().unwrap().iter().any(|m| m["id"] == alice),
        "{members}"
    );
    // She approves her laptop's sign-in from that web session.
    let daemon = live.daemon();
    let done = daemon
        .login_approved_by(&live.ctl, &session, "alice-laptop")
        .unwrap();
    assert_eq!(done["result"], "signed_in", "{done}\n{}", daemon.log());
    daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    let open = live.open(&daemon);
    // The provider drops the group; her next sign-in syncs the membership away.
    idp.set_groups("alice", &["everyone"]).unwrap();
    let change = Change {
        recorded_as: "auth.login_succeeded",
        ..Change::new("group.synced", format!("user:{alice}"), "no_policy")
    };
    live.assert_cut_by(&open, &change, || {
        idp.sign_in(live.api(), "alice").unwrap();
    });
}

/// The client namespace's rule set that cuts the daemon's control link to the controller
/// (and nothing else: its WireGuard traffic goes to the gateway's public address).
fn block_controller() -> String {
    format!(
        "table inet postern_e2e_block {{
    chain out {{ type filter hook output priority 0; ip daddr {CONTROLLER} drop; }}
    chain in {{ type filter hook input priority 0; ip saddr {CONTROLLER} drop; }}
}}"
    )
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time such as `2026-12-04T19:20:49.5Z`.
fn unix_time(s: &str) -> f64 {
    let (date, time) = s
        .strip_suffix('Z')
        .and_then(|s| s.split_once('T'))
        .unwrap_or_else(|| panic!("not a UTC time: {s}"));
    let ymd: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let hms: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (H. Hinnant's algorithm).
    let (m, d) = (ymd[1], ymd[2]);
    let y = if m <= 2 { ymd[0] - 1 } else { ymd[0] };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + hms[0] * 3_600.0 + hms[1] * 60.0 + hms[2]
}

/// When `expires_at` (RFC 3339) is on this machine's monotonic clock.
fn instant_of(expires_at: &str) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = unix_time(expires_at) - now.as_secs_f64();
    Instant::now() + Duration::from_secs_f64(left.max(0.0))
}

/// The device stops reporting without stopping its tunnel: the test blocks its control link
/// (a posture interval of 0 would not do: the daemon then collects and sends no report at
/// all, not even with access requests, so it never gets access under a profile; stopping the
/// daemon would stop the tunnel too). The grant's expiry is its report's freshness deadline:
/// the daemon, the gateway and the controller's timer all end it then.
#[test]
fn a_device_that_stops_reporting_posture_loses_access_when_its_report_goes_stale() {
    let ann = Ann::connected(|live| {
        let profile = json!({"name": "fresh-reports", "max_report_age_secs": MAX_REPORT_AGE});
        let profile = live.call("POST", "/api/v1/posture-profiles", profile);
        json!({"posture_profile_id": profile["id"]})
    });
    let (live, daemon, open) = (&ann.live, &ann.daemon, &ann.open);
    let device = daemon.status().unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // While the device reports, its renewals carry fresh reports: the connection outlives
    // any one report's age.
    std::thread::sleep(Duration::from_secs(MAX_REPORT_AGE + 2));
    open.ticker.last();
    assert!(
        open.ticker.next(Duration::from_secs(1)).is_some(),
        "a reporting device keeps access\n{}",
        daemon.log()
    );
    assert_ne!(
        daemon.resource("app").unwrap()["grant_id"],
        open.grant.as_str(),
        "the grant was renewed"
    );

    // The device stops reporting: its control link is blocked, its tunnel is not. Its live
    // grants end at their report's freshness deadline, at the latest MAX_REPORT_AGE away.
    live.t
        .client
        .sh(&format!("nft -f - <<'EOF'\n{}\nEOF", block_controller()))
        .unwrap();
    let blocked = Instant::now();
    let grants = live.call(
        "GET",
        &format!("/api/v1/grants?device_id={device}"),
        Value::Null,
    );
    let grants = grants.as_array().unwrap();
    assert!(!grants.is_empty(), "a live grant when the link is blocked");
    let deadlines: Vec<Instant> = grants
        .iter()
        .map(|g| instant_of(g["expires_at"].as_str().unwrap()))
        .collect();
    let earliest = *deadlines.iter().min().unwrap();
    let latest = *deadlines.iter().max().unwrap();
    assert!(
        latest <= blocked + Duration::from_millis(MAX_REPORT_AGE * 1000 + 100),
        "the grants end at their report's freshness deadline: {grants:?}"
    );
    std::thread::sleep((latest + WATCH).saturating_duration_since(Instant::now()));
    let last = open.ticker.last().filter(|l| *l > blocked);
    let last = last.unwrap_or_else(|| panic!("the tunnel stopped with the control link"));
    let after = last.saturating_duration_since(latest);
    eprintln!(
        "stale posture: deadline {:?} after the link was blocked; last echo {after:?} after \
         it ({:?} before the earliest of {} live grants' deadlines)",
        latest - blocked,
        earliest.saturating_duration_since(last),
        grants.len()
    );
    assert!(
        after < CUT_WITHIN,
        "the connection went on for {after:?} after the report went stale"
    );
    assert!(
        last + Duration::from_millis(500) >= earliest,
        "the connection was cut {:?} before the report went stale",
        earliest - last
    );
    for g in grants {
        let grant = id(g);
        live.assert_ended(&grant);
        live.assert_audited(
            &grant,
            "grant.expired",
            "time",
            "clock",
            "system",
            "posture_stale",
        );
    }
}
