//! Two controller replicas on one PostgreSQL database, end to end in namespaces this test
//! creates: the real gateway connects to replica B, the real client daemon signs in at
//! replica A. The client's on-demand access is decided at A and pushed to the gateway by B;
//! a revocation made at B reaches the client at A and the gateway at B, and stops an open
//! TCP connection within one second; disabling the gateway at A closes it at B.
//!
//! The replicas reach PostgreSQL through its Unix socket (see `e2e::postgres`).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::client::{Daemon, Ticker, echo, echo_server, route_to_controller};
use e2e::deploy::{Controller, Gateway};
use e2e::postgres::Database;
use e2e::topology::{GATEWAY_PUBLIC, RESOURCE_1, Topology};
use e2e::wait_for;
use serde_json::{Value, json};

fn gateway_online(ctl: &Controller, id: &str) -> Option<bool> {
    ctl.api
        .ok("GET", &format!("/api/v1/gateways/{id}"), None)
        .ok()?["online"]
        .as_bool()
}

#[test]
fn replicas_on_one_postgres_share_gateways_grants_and_revocations() {
    let Some(db) = Database::create().unwrap() else {
        return;
    };
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
    let a =
        Controller::start_with_env(&t, dir.path(), &[("POSTERN_DATABASE_URL", &db.url)]).unwrap();
    let b = a.start_replica(&t, dir.path(), "replica-b", 8444).unwrap();
    assert!(b.log().contains("storage: PostgreSQL"), "{}", b.log());

    // Objects made at A are B's too; the gateway connects to B, and A sees it online.
    let site = a
        .api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "hq"})))
        .unwrap();
    let gw = Gateway::start(&t, &b, site["id"].as_str().unwrap(), dir.path()).unwrap();
    wait_for(Duration::from_secs(5), || {
        gateway_online(&a, &gw.id).filter(|online| *online)
    })
    .unwrap_or_else(|| panic!("replica A never saw the gateway online\n{}", a.log()));
    let app = a.api.ok("POST", "/api/v1/resources", Some(json!({"name": "app", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": ["tcp/8080"]}))).unwrap();
    let user = a
        .api
        .ok(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "ann@example.com", "name": "Ann"})),
        )
        .unwrap();
    let group = b
        .api
        .ok("POST", "/api/v1/groups", Some(json!({"name": "eng"})))
        .unwrap();
    a.api
        .ok(
            "POST",
            &format!("/api/v1/groups/{}/members", group["id"].as_str().unwrap()),
            Some(json!({"user_id": user["id"]})),
        )
        .unwrap();
    b.api
        .ok(
            "POST",
            "/api/v1/policies",
            Some(json!({"name": "eng-app", "group_id": group["id"], "resource_id": app["id"]})),
        )
        .unwrap();

    // The client signs in at A and reaches the app through the gateway at B.
    let key = a
        .api
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
            a.api.base(),
            "--fingerprint",
            &a.fingerprint,
            "--enroll-key",
            key["secret"].as_str().unwrap(),
            "--name",
            "ann-laptop",
        ])
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", daemon.log());
    daemon
        .wait_state("connected", Duration::from_secs(15))
        .unwrap();
    echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5)).unwrap_or_else(|e| {
        panic!(
            "no access through the other replica's gateway: {e:#}\n{}\n{}\n{}",
            daemon.log(),
            a.log(),
            b.log()
        )
    });

    // A revocation at B stops the open connection of A's client within a second.
    let ticker = Ticker::start(&t.client, RESOURCE_1, 8080);
    ticker
        .next(Duration::from_secs(5))
        .expect("the open connection echoes");
    let grant_id = daemon.resource("app").unwrap()["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    b.api
        .ok("DELETE", &format!("/api/v1/grants/{grant_id}"), None)
        .unwrap();
    let returned = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let last = ticker.last().unwrap_or(started);
    drop(ticker);
    let cut = last.saturating_duration_since(returned);
    eprintln!(
        "revocation across replicas: API call took {:?}; last echo {cut:?} after it returned",
        returned - started
    );
    assert!(
        cut < Duration::from_secs(1),
        "traffic stopped {cut:?} after the revocation"
    );
    let live: Value = a
        .api
        .ok(
            "GET",
            &format!(
                "/api/v1/grants?device_id={}",
                daemon.status().unwrap()["device_id"].as_str().unwrap()
            ),
            None,
        )
        .unwrap();
    assert!(
        live.as_array()
            .unwrap()
            .iter()
            .all(|g| g["id"] != grant_id.as_str()),
        "{live}"
    );

    // Disabling the gateway at A closes its connection at B.
    a.api
        .ok(
            "PATCH",
            &format!("/api/v1/gateways/{}", gw.id),
            Some(json!({"disabled": true})),
        )
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        gw.log().contains("disabled").then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway was not told\n{}", gw.log()));
    assert_eq!(gateway_online(&b, &gw.id), Some(false));
}
