//! Two controller replicas on one PostgreSQL database (`POSTERN_TEST_POSTGRES_URL`, which
//! `scripts/test` provides), each with its own QUIC endpoint and HTTP API: what one replica
//! does must reach the gateways connected to the other, through PostgreSQL alone.

use std::time::{Duration, Instant};

use proto::ControllerMessage;
use serde_json::{Value, json};

use super::tests::{Harness, TestGateway, harness_on};
use crate::app::*;
use crate::bus::ControlEvent;
use store::Store;
use store::testing::{PgDb, postgres};

/// Replica `a` (which created the objects) and replica `b`, or `None` without PostgreSQL.
async fn two_replicas() -> Option<(Harness, Harness, PgDb)> {
    let db = postgres().await?;
    let a = Service::new(db.store.clone()).with_ack_timeout(Duration::from_secs(3));
    crate::cluster::start(&a).await.unwrap();
    let a = harness_on(a, tempfile::tempdir().unwrap()).await;
    let b = Service::new(Store::connect(&db.url()).await.unwrap())
        .with_ack_timeout(Duration::from_secs(3));
    crate::cluster::start(&b).await.unwrap();
    let b = a.replica(b).await;
    Some((a, b, db))
}

/// Waits until `h` reports the gateway online (or not).
async fn online_at(h: &Harness, gw: &TestGateway, online: bool) {
    h.wait_online(gw.id.unwrap(), online).await;
}

#[tokio::test]
async fn access_requested_at_one_replica_is_served_by_a_gateway_at_another() {
    let Some((a, b, _db)) = two_replicas().await else {
        return;
    };
    let mut gw = TestGateway::enroll(&b, &b.gateway_token().await).await;
    online_at(&a, &gw, true).await;

    // `a` has no connection to the gateway: `b` pushes the grant and relays the ack.
    let issued = a.issue(&mut gw).await;
    assert_eq!(gw.grants.len(), 1);
    assert!(
        gw.grants
            .contains_key(&issued["grant_id"].as_str().unwrap().parse().unwrap())
    );

    // A revocation at `a` reaches the gateway at `b` within a second.
    let started = Instant::now();
    let res = a
        .req(
            reqwest::Method::DELETE,
            &format!("/grants/{}", issued["grant_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg = gw.recv().await;
    let took = started.elapsed();
    assert!(
        matches!(&msg, ControllerMessage::GrantRevoked { id, .. } if json!(id) == issued["grant_id"]),
        "{msg:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let seq = gw.apply(msg).unwrap();
    gw.ack(seq).await;

    // So does disabling the device, at either replica, for grants issued at either.
    let at_b = b.issue(&mut gw).await;
    let at_a = a.issue(&mut gw).await;
    let started = Instant::now();
    let res = a
        .req(reqwest::Method::PATCH, &format!("/devices/{}", a.device))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    while !gw.grants.is_empty() {
        let msg = gw.recv().await;
        let seq = gw.apply(msg).unwrap();
        gw.ack(seq).await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let live: Value = a.get(&format!("/grants?device_id={}", a.device)).await;
    assert_eq!(live, json!([]));
    let all: Value = b
        .get(&format!("/grants?device_id={}&live=false", a.device))
        .await;
    for issued in [at_a, at_b] {
        let grant = all
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == issued["grant_id"])
            .unwrap();
        assert!(!grant["revoked_at"].is_null(), "{grant}");
    }
}

#[tokio::test]
async fn a_gateway_disabled_at_one_replica_is_closed_at_the_other() {
    let Some((a, b, _db)) = two_replicas().await else {
        return;
    };
    let mut gw = TestGateway::enroll(&b, &b.gateway_token().await).await;
    online_at(&a, &gw, true).await;
    let id = gw.id.unwrap();
    let res = a
        .req(reqwest::Method::PATCH, &format!("/gateways/{id}"))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg = gw.recv().await;
    let ControllerMessage::Refused { reason } = msg else {
        panic!("expected refused, got {msg:?}");
    };
    assert!(reason.contains("disabled"), "{reason}");
    assert!(gw.next().await.is_none());
    online_at(&a, &gw, false).await;
    online_at(&b, &gw, false).await;
}

#[tokio::test]
async fn a_gateway_that_reconnects_to_another_replica_leaves_the_first() {
    let Some((a, b, _db)) = two_replicas().await else {
        return;
    };
    let mut first = TestGateway::enroll(&a, &a.gateway_token().await).await;
    online_at(&b, &first, true).await;
    let (mut second, sync) = first.reconnect(&b).await;
    assert!(
        matches!(sync, ControllerMessage::FullSync { .. }),
        "{sync:?}"
    );
    let msg = first.recv().await;
    let ControllerMessage::Refused { reason } = msg else {
        panic!("expected refused, got {msg:?}");
    };
    assert!(reason.contains("another replica"), "{reason}");
    // `a` now reaches the gateway through `b`.
    let issued = a.issue(&mut second).await;
    assert_eq!(issued["gateway_id"], json!(second.id.unwrap()));
}

#[tokio::test]
async fn sessions_ended_at_one_replica_reach_the_other() {
    let Some((a, b, _db)) = two_replicas().await else {
        return;
    };
    let mut events = b.service.subscribe();
    a.service
        .announce_sessions_ended(Some(a.device), None, "device disabled");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(ControlEvent::SessionsEnded { device, reason, .. })) => {
                assert_eq!(device, Some(a.device));
                assert_eq!(reason, "device disabled");
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("replica b never heard of the ended sessions: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resync_sends_every_gateway_its_full_grant_set() {
    let Some((a, b, _db)) = two_replicas().await else {
        return;
    };
    let mut gw = TestGateway::enroll(&b, &b.gateway_token().await).await;
    online_at(&a, &gw, true).await;
    let issued = a.issue(&mut gw).await;
    // What the listener does after its connection to PostgreSQL dropped.
    b.service.bus().emit(ControlEvent::Resync);
    let msg = gw.recv().await;
    let ControllerMessage::FullSync { grants, .. } = &msg else {
        panic!("expected a full sync, got {msg:?}");
    };
    assert_eq!(grants.len(), 1);
    assert_eq!(json!(grants[0].id), issued["grant_id"]);
}

#[tokio::test]
async fn on_sqlite_there_is_no_bus() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Store::open_sqlite(dir.path()).await.unwrap());
    crate::cluster::start(&service).await.unwrap();
    assert!(!service.bus().replicas().is_running());
}
