//! The client end to end, in namespaces this test creates: the real controller, the real
//! gateway, two applications on one resource host, and the real `postern` daemon in the
//! client namespace (a second one, for another user, in a second client namespace). Sign-in
//! goes through the device authorization flow, with a local account approving through the
//! API where a person would use the browser, and through an enrollment key.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::client::{
    Daemon, Ticker, create_local_user, echo, echo_server, has_link, route_to_controller, routes_via,
};
use e2e::deploy::{Controller, Gateway};
use e2e::topology::{CONTROLLER, GATEWAY_PUBLIC, RESOURCE_1, Topology};
use e2e::wg::{KeyPair, Peer, WireguardGo};
use e2e::{Netns, link, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn client_signs_in_connects_on_demand_and_cleans_up() {
    // POSTERN_E2E_KEEP=1 keeps the logs for a look after a failure.
    let keep = std::env::var_os("POSTERN_E2E_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("logs in {}", dir.path().display());
    }
    let t = Topology::new().unwrap();
    // The client reaches the controller through the gateway host, like over the internet.
    route_to_controller(
        &t.client,
        GATEWAY_PUBLIC,
        &t.controller,
        "10.77.4.1",
        "10.77.1.0/24",
    )
    .unwrap();
    let _servers = [
        echo_server(&t.resource1, RESOURCE_1, 8080, dir.path()).unwrap(),
        echo_server(&t.resource1, RESOURCE_1, 9090, dir.path()).unwrap(),
        echo_server(&t.resource1, RESOURCE_1, 7070, dir.path()).unwrap(),
    ];
    let mut ctl = Controller::start(&t, dir.path()).unwrap();
    let api = ctl.api.clone();
    let site = api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "hq"})))
        .unwrap();
    let _gw = Gateway::start(&t, &ctl, site["id"].as_str().unwrap(), dir.path()).unwrap();

    // App A and app B on the same host behind the same gateway. Group A may use app A; a
    // policy for app B lets group A in only from an address range the client is not in.
    let app_a = api.ok("POST", "/api/v1/resources", Some(json!({"name": "app-a", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/8080"]}))).unwrap();
    let app_b = api.ok("POST", "/api/v1/resources", Some(json!({"name": "app-b", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/9090"]}))).unwrap();
    // App C's grants last 6 seconds, so that renewal happens during the test.
    let app_c = api.ok("POST", "/api/v1/resources", Some(json!({"name": "app-c", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/7070"]}))).unwrap();
    let group_a = api
        .ok("POST", "/api/v1/groups", Some(json!({"name": "group-a"})))
        .unwrap();
    let group_b = api
        .ok("POST", "/api/v1/groups", Some(json!({"name": "group-b"})))
        .unwrap();
    api.ok("POST", "/api/v1/policies", Some(json!({"name": "a-to-app-a", "group_id": group_a["id"], "resource_id": app_a["id"], "max_session_secs": 3600}))).unwrap();
    api.ok("POST", "/api/v1/policies", Some(json!({"name": "a-to-app-c", "group_id": group_a["id"], "resource_id": app_c["id"], "max_session_secs": 6}))).unwrap();
    api.ok("POST", "/api/v1/policies", Some(json!({"name": "a-to-app-b-from-hq", "group_id": group_a["id"], "resource_id": app_b["id"], "conditions": {"source_cidrs": ["192.0.2.0/24"]}}))).unwrap();
    api.ok(
        "POST",
        "/api/v1/policies",
        Some(json!({"name": "b-to-app-b", "group_id": group_b["id"], "resource_id": app_b["id"]})),
    )
    .unwrap();
    let ann = create_local_user(&api, "ann@example.com", "Ann", PASSWORD).unwrap();
    let bob = create_local_user(&api, "bob@example.com", "Bob", PASSWORD).unwrap();
    api.ok(
        "POST",
        &format!("/api/v1/groups/{}/members", id(&group_a)),
        Some(json!({"user_id": ann})),
    )
    .unwrap();
    api.ok(
        "POST",
        &format!("/api/v1/groups/{}/members", id(&group_b)),
        Some(json!({"user_id": bob})),
    )
    .unwrap();

    // --- Ann signs in with the device authorization flow.
    let mut daemon = Daemon::start(&t.client, dir.path(), "ann", "pst0", &[]).unwrap();
    let s = daemon.status().unwrap();
    assert_eq!(s["state"], "signed_out", "{s}");
    assert!(!has_link(&t.client, "pst0"), "no TUN device before sign-in");
    let done = daemon
        .login_with_browser(&ctl, "ann@example.com", PASSWORD, "ann-laptop")
        .unwrap();
    assert_eq!(done["result"], "signed_in", "{done}\n{}", daemon.log());
    let s = daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    assert_eq!(s["user"], "ann@example.com");
    assert_eq!(s["device_name"], "ann-laptop");
    assert_eq!(s["interface"], "pst0");
    let names: Vec<&str> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{s}");
    assert!(
        names.contains(&"app-a") && names.contains(&"app-b") && names.contains(&"app-c"),
        "{s}"
    );
    assert!(
        s["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tunnel"] == "idle")
    );
    // Secrets are 0600 in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    for f in ["device.key", "session.json"] {
        let mode = std::fs::metadata(daemon.state_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(has_link(&t.client, "pst0"), "the TUN device exists");
    assert!(
        routes_via(&t.client, "pst0").contains(RESOURCE_1),
        "the resource is routed into it: {}",
        routes_via(&t.client, "pst0")
    );

    // --- On demand: the first connection to app A asks for access and gets through.
    let started = Instant::now();
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("app A answers: {e}\n{}", daemon.log()));
    eprintln!(
        "first connection to app A (grant included): {:?}",
        started.elapsed()
    );
    let a = daemon.resource("app-a").unwrap();
    assert_eq!(a["tunnel"], "connected", "{a}");
    let grant_id = a["grant_id"].as_str().unwrap().to_owned();

    // --- App B is denied: the connection fails fast and the reasons are reported.
    let started = Instant::now();
    let err = echo(&t.client, RESOURCE_1, 9090, Duration::from_secs(5)).unwrap_err();
    let took = started.elapsed();
    eprintln!("denied connection to app B failed after {took:?}: {err}");
    assert!(
        took < Duration::from_secs(3),
        "a denial fails fast: {took:?}"
    );
    let s = daemon.status().unwrap();
    assert_eq!(s["last_denial"]["resource"], "app-b", "{s}");
    assert!(
        !s["last_denial"]["reasons"].as_array().unwrap().is_empty(),
        "{s}"
    );
    std::thread::sleep(Duration::from_secs(6)); // past the back-off
    let out = daemon.cli(&["connect", "app-b"]).unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Access to app-b denied"), "{stderr}");
    let out = daemon.cli(&["--json", "connect", "app-a"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let human = String::from_utf8(daemon.cli(&["status"]).unwrap().stdout).unwrap();
    assert!(human.contains("Last denial: app-b"), "{human}");
    assert!(human.contains("app-a"), "{human}");

    // --- Another local user may read the status (without details) but not control it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(e2e::workspace_binary("postern"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["--json", "status"]);
    assert!(out.status.success(), "{out:?}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["state"], "connected", "{seen}");
    assert!(
        seen["user"].is_null() && seen["resources"].as_array().unwrap().is_empty(),
        "{seen}"
    );
    let out = as_nobody(&["down"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed in by another user"),
        "{out:?}"
    );
    assert_eq!(daemon.status().unwrap()["state"], "connected");

    // --- Grants are renewed with fresh keys before they expire; open connections go on.
    let ticker = Ticker::start(&t.client, RESOURCE_1, 7070);
    ticker.next(Duration::from_secs(5)).expect("app C echoes");
    let first_grant = daemon.resource("app-c").unwrap()["grant_id"].clone();
    let renewed = wait_for(Duration::from_secs(10), || {
        let g = daemon.resource("app-c").ok()?["grant_id"].clone();
        (g.is_string() && g != first_grant).then_some(g)
    })
    .unwrap_or_else(|| panic!("app C's grant was renewed: {}", daemon.log()));
    let after = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        ticker.last().is_some_and(|t| t > after),
        "the open connection survives the renewal ({first_grant} -> {renewed})"
    );
    drop(ticker);

    // --- Bob enrolls with a key in another namespace: his own resources and grants only.
    let c2 = Netns::new("cl2").unwrap();
    link(&c2, "10.77.5.1/24", &t.gateway, "10.77.5.2/24").unwrap();
    c2.ip(&["route", "replace", "10.77.1.0/24", "via", "10.77.5.2"])
        .unwrap();
    route_to_controller(&c2, "10.77.5.2", &t.controller, "10.77.4.1", "10.77.5.0/24").unwrap();
    let key = api
        .ok(
            "POST",
            "/api/v1/enrollment-keys",
            Some(json!({"user_id": bob})),
        )
        .unwrap();
    let bob_daemon = Daemon::start(&c2, dir.path(), "bob", "pst1", &[]).unwrap();
    let out = bob_daemon
        .cli(&[
            "login",
            api.base(),
            "--fingerprint",
            &ctl.fingerprint,
            "--enroll-key",
            key["secret"].as_str().unwrap(),
            "--name",
            "bob-server",
        ])
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", bob_daemon.log());
    let s = bob_daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    let names: Vec<&str> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-b"], "{s}");
    echo(&c2, RESOURCE_1, 9090, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("Bob reaches app B: {e}\n{}", bob_daemon.log()));
    assert!(
        echo(&c2, RESOURCE_1, 8080, Duration::from_secs(2)).is_err(),
        "Bob does not reach app A"
    );
    let out = bob_daemon.cli(&["connect", "app-a"]).unwrap();
    assert!(!out.status.success(), "app A is not Bob's to ask for");
    // Bob's machine presenting itself to the gateway for Ann's application, with the
    // gateway's public key and endpoint from Ann's grant but a key of its own (Ann's
    // per-application private key never left her daemon), gets nothing back at all.
    let grants = api.ok("GET", "/api/v1/grants", None).unwrap();
    let anns = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("Ann's grant is listed: {grants}"));
    assert_ne!(
        anns["device_id"], s["device_id"],
        "the grant is Ann's device's"
    );
    let gateway_key = wait_for(Duration::from_secs(1), || {
        api.ok("GET", "/api/v1/gateways", None)
            .ok()?
            .as_array()?
            .first()?["public_key"]
            .as_str()
            .map(str::to_owned)
    })
    .expect("the gateway's public key");
    let stranger = KeyPair::generate().unwrap();
    let _wg = WireguardGo::start(
        &c2,
        "wgx",
        &stranger.private,
        None,
        anns["tunnel_address"]
            .as_str()
            .map(|a| format!("{a}/32"))
            .as_deref()
            .unwrap_or("100.64.250.1/32"),
        &[Peer {
            public_key: gateway_key,
            preshared_key: None,
            endpoint: Some(format!("{GATEWAY_PUBLIC}:51820")),
            allowed_ips: vec!["10.77.99.0/24".into()],
        }],
        dir.path(),
    )
    .unwrap();
    c2.ip(&["route", "replace", "10.77.99.0/24", "dev", "wgx"])
        .unwrap();
    let _ = c2.sh("ping -c 3 -i 0.3 -W 1 10.77.99.1");
    let rx = c2.sh("wg show wgx transfer").unwrap();
    assert!(
        rx.split_whitespace().nth(1).is_none_or(|n| n == "0"),
        "zero bytes back to a key that is not a grant's: {rx}"
    );
    drop(bob_daemon);

    // --- Revocation through the API stops an open connection within one second.
    let ticker = Ticker::start(&t.client, RESOURCE_1, 8080);
    ticker
        .next(Duration::from_secs(5))
        .expect("the open connection echoes");
    let grant_id = daemon.resource("app-a").unwrap()["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke_started = Instant::now();
    api.ok("DELETE", &format!("/api/v1/grants/{grant_id}"), None)
        .unwrap();
    let revoked_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let last = ticker.last().unwrap_or(revoke_started);
    let cut = last.saturating_duration_since(revoked_at);
    eprintln!(
        "revocation: API call took {:?}; last echo {:?} after the call returned",
        revoked_at - revoke_started,
        cut
    );
    assert!(
        cut < Duration::from_secs(1),
        "traffic stopped {cut:?} after revocation"
    );
    drop(ticker);
    let a = daemon.resource("app-a").unwrap();
    assert!(a["grant_id"].as_str() != Some(grant_id.as_str()), "{a}");
    // A new connection asks again (the policy still allows it).
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("a new flow asks again: {e}\n{}", daemon.log()));

    // --- Restarting the daemon: the TUN device goes and comes back, no new sign-in.
    daemon.stop().unwrap();
    assert!(
        !has_link(&t.client, "pst0"),
        "a stopped daemon leaves no TUN device"
    );
    assert!(routes_via(&t.client, "pst0").is_empty());
    daemon.restart(&t.client).unwrap();
    daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("works after a daemon restart: {e}\n{}", daemon.log()));

    // --- Restarting the controller does not break open tunnels.
    let ticker = Ticker::start(&t.client, RESOURCE_1, 8080);
    ticker.next(Duration::from_secs(5)).expect("echoing");
    ctl.stop().unwrap();
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ticker.last().is_some_and(|l| l > down_at),
        "the open connection works while the controller is down"
    );
    ctl.restart(&t).unwrap();
    daemon
        .wait_state("connected", Duration::from_secs(30))
        .unwrap();
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ticker.last().is_some_and(|t| t >= before),
        "the open connection still works after the controller restarted"
    );
    drop(ticker);

    // --- down / up.
    let out = daemon.cli(&["down"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(daemon.status().unwrap()["state"], "paused");
    assert!(!has_link(&t.client, "pst0"), "down removes the TUN device");
    let out = daemon.cli(&["up"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    assert!(has_link(&t.client, "pst0"));

    // --- Logout removes routes and the TUN device, and the session.
    let out = daemon.cli(&["logout"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = daemon.status().unwrap();
    assert_eq!(s["state"], "signed_out", "{s}");
    assert!(
        !has_link(&t.client, "pst0"),
        "logout removes the TUN device"
    );
    assert!(routes_via(&t.client, "pst0").is_empty(), "and its routes");
    assert!(!daemon.state_dir.join("session.json").exists());
    assert!(
        echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(1)).is_err(),
        "nothing reaches app A after logout"
    );

    // --- A wrong fingerprint is refused with advice.
    let out = daemon
        .cli(&[
            "login",
            &format!("https://{CONTROLLER}:8443"),
            "--fingerprint",
            &"00".repeat(32),
            "--no-browser",
        ])
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fingerprint"), "{stderr}");
    assert!(
        !daemon.log().contains("ERROR"),
        "no errors logged:\n{}",
        daemon.log()
    );
}
