//! A gateway cut off from its controller, end to end in namespaces this test creates: the
//! real controller, the real gateway with `POSTERN_CONTROLLER_GRACE=2s`, and the real client
//! daemon with an open TCP connection through the tunnel. When the gateway's control link is
//! blocked (nftables in the gateway namespace drops everything to and from the controller),
//! the gateway keeps serving the live grant until it notices the link is gone plus the grace,
//! then drops it (the connection is cut within one second of that), and counts it; once the
//! link is back, the controller's full sync restores access.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::client::{Daemon, Ticker, echo, echo_server, routed_topology};
use e2e::deploy::{Controller, Gateway};
use e2e::topology::{CONTROLLER, RESOURCE_1};
use e2e::wait_for;
use serde_json::json;

const GRACE: Duration = Duration::from_secs(2);

#[test]
fn a_gateway_cut_off_from_its_controller_drops_its_grants_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let t = routed_topology().unwrap();
    let _server = echo_server(&t.resource1, RESOURCE_1, 8080, dir.path()).unwrap();
    let ctl = Controller::start(&t, dir.path()).unwrap();
    let api = ctl.api.clone();
    let site = api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "hq"})))
        .unwrap();
    let gw = Gateway::start_with_env(
        &t,
        &ctl,
        site["id"].as_str().unwrap(),
        dir.path(),
        &[("POSTERN_CONTROLLER_GRACE", "2s")],
    )
    .unwrap();
    let app = api.ok("POST", "/api/v1/resources", Some(json!({"name": "wiki", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/8080"]}))).unwrap();
    let user = api
        .ok(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "ann@example.com", "name": "Ann"})),
        )
        .unwrap();
    let group = api
        .ok("POST", "/api/v1/groups", Some(json!({"name": "staff"})))
        .unwrap();
    api.ok(
        "POST",
        &format!("/api/v1/groups/{}/members", group["id"].as_str().unwrap()),
        Some(json!({"user_id": user["id"]})),
    )
    .unwrap();
    api.ok(
        "POST",
        "/api/v1/policies",
        Some(json!({"name": "staff-wiki", "group_id": group["id"], "resource_id": app["id"]})),
    )
    .unwrap();
    let daemon = Daemon::start(&t.client, dir.path(), "ann", "pst0", &[]).unwrap();
    daemon
        .login_with_key(&ctl, user["id"].as_str().unwrap(), "ann-laptop")
        .unwrap();
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no access: {e:#}\n{}", daemon.log()));
    let ticker = Ticker::start(&t.client, RESOURCE_1, 8080);
    ticker
        .next(Duration::from_secs(5))
        .expect("the open connection echoes");

    // Block the control link in both directions.
    t.gateway
        .sh(&format!(
            "nft add table inet postern_block && \
             nft add chain inet postern_block out '{{ type filter hook output priority 0; }}' && \
             nft add chain inet postern_block in '{{ type filter hook input priority 0; }}' && \
             nft add rule inet postern_block out ip daddr {CONTROLLER} drop && \
             nft add rule inet postern_block in ip saddr {CONTROLLER} drop"
        ))
        .unwrap();
    let blocked = Instant::now();
    // The gateway notices through QUIC's idle timeout, then waits for the grace.
    let lost = wait_for(Duration::from_secs(40), || {
        (gw.metric(&t, "postern_gateway_controller_connected").ok()? == 0.0).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the gateway never noticed the blocked link"));
    println!(
        "blocked link noticed after {} ms",
        lost.duration_since(blocked).as_millis()
    );
    // Within the grace the grant still serves.
    assert!(
        ticker.next(Duration::from_millis(500)).is_some(),
        "the grant stopped serving before the grace ended"
    );
    let dropped = wait_for(GRACE + Duration::from_secs(5), || {
        (gw.metric(&t, "postern_gateway_peers").ok()? == 0.0).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the gateway kept its grants after the grace"));
    let after = dropped.duration_since(lost);
    println!(
        "grants dropped {} ms after the link was lost",
        after.as_millis()
    );
    assert!(
        after + Duration::from_millis(200) >= GRACE,
        "dropped before the grace: {after:?}"
    );
    assert!(
        after <= GRACE + Duration::from_secs(1),
        "dropped {after:?} after the loss, more than the grace plus one second"
    );
    assert_eq!(
        gw.metric(&t, "postern_gateway_grants_dropped_offline_total")
            .unwrap(),
        1.0
    );
    // The open connection is cut: no echo later than a second after the drop.
    std::thread::sleep(Duration::from_secs(1));
    let _ = ticker.last();
    assert!(
        ticker.next(Duration::from_secs(1)).is_none(),
        "the connection still echoes after the grants were dropped"
    );

    // The link comes back: the full sync restores the grant and access works again.
    t.gateway.sh("nft delete table inet postern_block").unwrap();
    wait_for(Duration::from_secs(40), || {
        (gw.metric(&t, "postern_gateway_peers").ok()? >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the full sync did not restore the grant"));
    let again = wait_for(Duration::from_secs(15), || {
        echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(2)).ok()
    });
    assert!(
        again.is_some(),
        "no access after the link came back: {}",
        daemon.log()
    );
}
