//! Device posture end to end, in namespaces this test creates: the real controller asks for
//! posture reports every 2 seconds, a policy requires a posture profile with a firewall, and
//! the real `postern` daemon in the client namespace probes that namespace's nftables rule
//! set with the real `nft`. With the rules loaded the device gets access; when the rule set
//! is flushed the grant is revoked within the reporting interval plus one second and the
//! client shows why; when the rules come back, access is granted again.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::client::{Daemon, echo, echo_server, route_to_controller};
use e2e::deploy::{Controller, Gateway};
use e2e::topology::{GATEWAY_PUBLIC, RESOURCE_1, Topology};
use e2e::{Netns, wait_for};
use serde_json::{Value, json};

/// The posture reporting interval the controller asks for, in seconds.
const INTERVAL: u64 = 2;

/// A rule set that filters incoming traffic (and still lets replies in).
const FIREWALL: &str = "table inet postern_test {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iif lo accept
    }
}
";

fn nft(ns: &Netns, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "nft {args:?} failed");
}

fn check<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["posture"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == name))
        .unwrap_or(&Value::Null)
}

fn live_grants(ctl: &Controller, device: &str) -> usize {
    ctl.api
        .ok("GET", &format!("/api/v1/grants?device_id={device}"), None)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_failing_posture_check_revokes_access_and_a_fixed_one_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::new().unwrap();
    route_to_controller(
        &t.client,
        GATEWAY_PUBLIC,
        &t.controller,
        "10.77.4.1",
        "10.77.1.0/24",
    )
    .unwrap();
    let _server = echo_server(&t.resource1, RESOURCE_1, 8080, dir.path()).unwrap();
    let interval = INTERVAL.to_string();
    let ctl = Controller::start_with_env(
        &t,
        dir.path(),
        &[("POSTERN_POSTURE_INTERVAL", interval.as_str())],
    )
    .unwrap();
    let api = ctl.api.clone();
    let site = api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "hq"})))
        .unwrap();
    let _gw = Gateway::start(&t, &ctl, site["id"].as_str().unwrap(), dir.path()).unwrap();
    let app = api.ok("POST", "/api/v1/resources", Some(json!({"name": "payroll", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/8080"]}))).unwrap();
    let user = api
        .ok(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "ann@example.com", "name": "Ann"})),
        )
        .unwrap();
    let group = api
        .ok("POST", "/api/v1/groups", Some(json!({"name": "finance"})))
        .unwrap();
    api.ok(
        "POST",
        &format!("/api/v1/groups/{}/members", group["id"].as_str().unwrap()),
        Some(json!({"user_id": user["id"]})),
    )
    .unwrap();
    let profile = api
        .ok(
            "POST",
            "/api/v1/posture-profiles",
            Some(json!({"name": "firewalled", "require_firewall": true})),
        )
        .unwrap();
    api.ok("POST", "/api/v1/policies", Some(json!({"name": "finance-payroll", "group_id": group["id"], "resource_id": app["id"], "conditions": {"posture_profile_id": profile["id"]}}))).unwrap();

    // The client namespace has a firewall; the daemon signs in with an enrollment key.
    nft(&t.client, &["-f", "-"], Some(FIREWALL));
    let key = api
        .ok(
            "POST",
            "/api/v1/enrollment-keys",
            Some(json!({"user_id": user["id"]})),
        )
        .unwrap();
    let daemon = Daemon::start(&t.client, dir.path(), "ann", "pst0", &[]).unwrap();
    let out = daemon
        .cli(&[
            "login",
            api.base(),
            "--fingerprint",
            &ctl.fingerprint,
            "--enroll-key",
            key["secret"].as_str().unwrap(),
            "--name",
            "ann-laptop",
        ])
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", daemon.log());
    let status = daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    let device = status["device_id"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(10), || {
        daemon
            .status()
            .ok()
            .filter(|s| check(s, "firewall")["state"] == "pass")
    })
    .unwrap_or_else(|| {
        panic!(
            "the firewall never showed as passing: {:?}\n{}",
            daemon.status().ok(),
            daemon.log()
        )
    });

    // A passing device gets access.
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no access with the firewall on: {e:#}\n{}", daemon.log()));
    assert_eq!(live_grants(&ctl, &device), 1);
    let human = daemon.cli(&["status"]).unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("Posture:") && human.contains("firewall"),
        "{human}"
    );

    // The rule set is flushed: the grant is revoked within the interval plus one second.
    nft(&t.client, &["flush", "ruleset"], None);
    let flushed = Instant::now();
    let limit = Duration::from_secs(INTERVAL + 1);
    let revoked = wait_for(limit + Duration::from_secs(5), || {
        (live_grants(&ctl, &device) == 0).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the grant was not revoked: {}", daemon.log()));
    let took = revoked.duration_since(flushed);
    println!("posture failure to revocation: {} ms", took.as_millis());
    assert!(
        took <= limit,
        "revocation took {took:?}, more than {limit:?}"
    );
    // The client shows why: the status has the failing check, and a new connection is
    // denied with the reason and how to fix it.
    let s = daemon.status().unwrap();
    assert_eq!(check(&s, "firewall")["state"], "fail", "{s}");
    assert!(echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(3)).is_err());
    let denial = wait_for(Duration::from_secs(5), || {
        daemon
            .status()
            .ok()
            .and_then(|s| s.get("last_denial").cloned())
            .filter(|d| !d.is_null())
    })
    .unwrap_or_else(|| panic!("no denial shown: {}", daemon.log()));
    let reasons = denial["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r["code"] == "firewall_off"
                && r["message"].as_str().unwrap().contains("firewall")),
        "{denial}"
    );
    let human = daemon.cli(&["status"]).unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("FAIL"), "{human}");

    // The rules come back: access is granted again.
    nft(&t.client, &["-f", "-"], Some(FIREWALL));
    wait_for(Duration::from_secs(10), || {
        daemon
            .status()
            .ok()
            .filter(|s| check(s, "firewall")["state"] == "pass")
    })
    .unwrap();
    // The denial back-off may hold the first attempt; a few tries within seconds succeed.
    let again = wait_for(Duration::from_secs(15), || {
        echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(2)).ok()
    });
    assert!(again.is_some(), "no access after the fix: {}", daemon.log());
    assert_eq!(live_grants(&ctl, &device), 1);
    nft(&t.client, &["flush", "ruleset"], None);
}
