//! The control link against a stand-in controller: a quinn server on 127.0.0.1 that speaks
//! the control protocol from the controller's side, as scripted by each test. Each gateway
//! also serves its HTTP endpoints on loopback, so the controller-grace tests read what an
//! operator reads: `/metrics`.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::controller::{Controller, STEP};
use gateway::{
    ControlError, ControlLink, ControlLinkConfig, DEFAULT_CONTROLLER_GRACE, DataPlaneHandle,
    Fingerprint, StateDir, Status,
};
use model::{GatewayId, GrantId};
use proto::{ControllerMessage, GatewayMessage, GrantSpec};
use tunnel::{GatewayConfig, GatewayTunnel};

struct Gateway {
    status: Arc<Status>,
    dataplane: DataPlaneHandle,
    state: StateDir,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
    /// Where its `/healthz`, `/readyz` and `/metrics` answer.
    http: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
        self.http_task.abort();
    }
}

fn start_gateway(controller: &Controller, pin: Fingerprint, token: Option<&str>) -> Gateway {
    start_gateway_in(
        controller,
        pin,
        token,
        tempfile::tempdir().unwrap(),
        DEFAULT_CONTROLLER_GRACE,
    )
}

/// A gateway already enrolled (its state directory holds a credential) with `grace`.
fn start_enrolled_gateway(controller: &Controller, grace: Duration) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    StateDir::open(dir.path())
        .unwrap()
        .store_credential("kept")
        .unwrap();
    start_gateway_in(controller, controller.fingerprint, None, dir, grace)
}

fn start_gateway_in(
    controller: &Controller,
    pin: Fingerprint,
    token: Option<&str>,
    dir: tempfile::TempDir,
    grace: Duration,
) -> Gateway {
    let state = StateDir::open(dir.path()).unwrap();
    let tunnel = GatewayTunnel::new(GatewayConfig::new([1; 32]), Instant::now());
    let public_key = tunnel.public_key();
    let (dataplane, _task) = DataPlaneHandle::without_io(tunnel, grace);
    let status = Arc::new(Status::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let http = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app = gateway::http::router(status.clone(), dataplane.clone());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = ControlLinkConfig {
        controller: format!("https://localhost:{}", controller.addr().port())
            .parse()
            .unwrap(),
        tls: gateway::client_config(Some(pin)).unwrap(),
        token: token.map(str::to_owned),
        name: "gw-test".into(),
        public_key,
        endpoint: "192.0.2.1:51820".into(),
    };
    let link = ControlLink::new(config, state.clone(), dataplane.clone(), status.clone()).unwrap();
    Gateway {
        status,
        dataplane,
        state,
        task: tokio::spawn(link.run()),
        http,
        http_task,
        _dir: dir,
    }
}

fn spec(key: u8) -> GrantSpec {
    GrantSpec {
        id: GrantId::new(),
        public_key: tunnel::public_key(&[key; 32]).into(),
        preshared_key: [key; 32].into(),
        tunnel_address: "100.64.0.2".parse().unwrap(),
        addresses: vec!["10.0.5.20/32".parse().unwrap()],
        ports: vec!["tcp/22".parse().unwrap()],
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
    }
}

async fn grants(g: &Gateway) -> usize {
    g.dataplane.snapshot().await.unwrap().grants
}

#[tokio::test]
async fn enrolls_then_syncs_and_applies_pushes() {
    let ctl = Controller::start();
    let gw = start_gateway(&ctl, ctl.fingerprint, Some("one-time-token"));
    let mut s = ctl.accept().await;

    // Enrollment on a fresh state directory.
    let GatewayMessage::Enroll { token, name } = s.receive().await else {
        panic!("expected enroll first");
    };
    assert_eq!(
        (token.as_str(), name.as_str()),
        ("one-time-token", "gw-test")
    );
    assert!(!gw.status.connected());
    s.send(&ControllerMessage::Enrolled {
        gateway_id: GatewayId::new(),
        credential: "durable-credential".into(),
    })
    .await;

    // Hello on the same stream, with the stored credential.
    let GatewayMessage::Hello {
        credential,
        public_key,
        endpoint,
    } = s.receive().await
    else {
        panic!("expected hello after enrolled");
    };
    assert_eq!(credential, "durable-credential");
    assert_eq!(
        gw.state.credential().unwrap().as_deref(),
        Some("durable-credential")
    );
    assert_eq!(public_key.len(), 44);
    assert_eq!(endpoint, "192.0.2.1:51820");
    assert!(gw.status.connected());
    assert!(!gw.status.ready());

    // Full sync, then pushes; each acknowledged after it is applied.
    let (a, b, c) = (spec(2), spec(3), spec(4));
    s.send(&ControllerMessage::FullSync {
        seq: 1,
        grants: vec![a.clone(), b.clone()],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 1 });
    assert!(gw.status.ready());
    assert_eq!(grants(&gw).await, 2);

    s.send(&ControllerMessage::GrantAdded {
        seq: 2,
        grant: c.clone(),
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 2 });
    assert_eq!(grants(&gw).await, 3);

    s.send(&ControllerMessage::GrantRevoked { seq: 3, id: a.id })
        .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 3 });
    assert_eq!(grants(&gw).await, 2);

    // A full sync converges: c stays, b goes.
    s.send(&ControllerMessage::FullSync {
        seq: 4,
        grants: vec![c.clone()],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 4 });
    assert_eq!(grants(&gw).await, 1);

    // A malformed grant is acknowledged (it was processed) but not applied. (A malformed
    // key no longer gets this far: it is a malformed message, see proto's tests.)
    let mut bad = spec(5);
    bad.addresses.clear();
    s.send(&ControllerMessage::GrantAdded { seq: 5, grant: bad })
        .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 5 });
    assert_eq!(grants(&gw).await, 1);

    // The controller goes away: the gateway keeps its grants and reconnects with hello.
    s.connection.close(0u32.into(), b"restart");
    drop(s);
    let mut s = ctl.accept().await;
    let GatewayMessage::Hello { credential, .. } = s.receive().await else {
        panic!("expected hello on reconnect");
    };
    assert_eq!(credential, "durable-credential");
    assert!(!gw.status.ready());
    assert_eq!(grants(&gw).await, 1);
    s.send(&ControllerMessage::FullSync {
        seq: 1,
        grants: vec![],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 1 });
    assert_eq!(grants(&gw).await, 0);
    assert!(gw.status.ready());
}

#[tokio::test]
async fn an_enrolled_gateway_says_hello_and_retries_after_refusal() {
    let ctl = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    StateDir::open(dir.path())
        .unwrap()
        .store_credential("kept")
        .unwrap();
    let gw = start_gateway_in(&ctl, ctl.fingerprint, None, dir, DEFAULT_CONTROLLER_GRACE);
    let mut s = ctl.accept().await;
    let GatewayMessage::Hello { credential, .. } = s.receive().await else {
        panic!("expected hello");
    };
    assert_eq!(credential, "kept");
    s.send(&ControllerMessage::Refused {
        reason: "gateway deleted".into(),
    })
    .await;
    // Refused after hello is not fatal: the gateway comes back.
    let mut s = ctl.accept().await;
    assert!(matches!(s.receive().await, GatewayMessage::Hello { .. }));
    assert!(!gw.task.is_finished());
}

#[tokio::test]
async fn a_refused_enrollment_is_fatal() {
    let ctl = Controller::start();
    let mut gw = start_gateway(&ctl, ctl.fingerprint, Some("used-token"));
    let mut s = ctl.accept().await;
    assert!(matches!(s.receive().await, GatewayMessage::Enroll { .. }));
    s.send(&ControllerMessage::Refused {
        reason: "token already used".into(),
    })
    .await;
    let result = tokio::time::timeout(STEP, &mut gw.task)
        .await
        .expect("the link gives up")
        .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, ControlError::EnrollmentRefused(ref r) if r == "token already used"));
}

#[tokio::test]
async fn no_token_and_no_credential_is_fatal() {
    let ctl = Controller::start();
    let mut gw = start_gateway(&ctl, ctl.fingerprint, None);
    let result = tokio::time::timeout(STEP, &mut gw.task)
        .await
        .expect("the link gives up")
        .unwrap();
    assert!(matches!(result, Err(ControlError::NoCredential(_))));
}

#[tokio::test]
async fn a_wrong_pin_never_gets_a_session() {
    let ctl = Controller::start();
    let gw = start_gateway(&ctl, Fingerprint([0xAB; 32]), Some("token"));
    // The handshake fails on the gateway's side; the controller sees no stream.
    let accepted = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let Some(incoming) = ctl.endpoint.accept().await else {
                return false;
            };
            if let Ok(conn) = incoming.await
                && conn.accept_bi().await.is_ok()
            {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(!accepted);
    assert!(!gw.status.connected());
    assert!(gw.state.credential().unwrap().is_none());
}

/// The gateway's `/metrics`, read over HTTP as Prometheus would.
async fn metrics(g: &Gateway) -> String {
    let addr = g.http.to_string();
    let (status, body) = tokio::task::spawn_blocking(move || common::http_get(&addr, "/metrics"))
        .await
        .unwrap()
        .expect("/metrics answers");
    assert_eq!(status, 200);
    body
}

/// One sample of `/metrics`.
async fn metric(g: &Gateway, series: &str) -> u64 {
    let text = metrics(g).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in {text}"))
}

/// Polls `/metrics` until `series` reads `want`, for at most `limit`; returns when it did.
async fn wait_for_metric(g: &Gateway, series: &str, want: u64, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let value = metric(g, series).await;
        if value == want {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Says the controller's part of a (re)connect: expects hello, sends a full sync of `grants`
/// and waits for its acknowledgement.
async fn hello_and_sync(s: &mut common::controller::Session, seq: u64, grants: Vec<GrantSpec>) {
    assert!(matches!(s.receive().await, GatewayMessage::Hello { .. }));
    s.send(&ControllerMessage::FullSync { seq, grants }).await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq });
}

const PEERS: &str = "postern_gateway_peers";
const DROPPED: &str = "postern_gateway_grants_dropped_offline_total";
const EXPIRED: &str = "postern_gateway_controller_grace_expired";
const CONNECTED: &str = "postern_gateway_controller_connected";

#[tokio::test]
async fn without_its_controller_the_gateway_drops_its_grants_after_the_grace() {
    let grace = Duration::from_secs(2);
    let ctl = Controller::start();
    let gw = start_enrolled_gateway(&ctl, grace);
    let mut s = ctl.accept().await;
    hello_and_sync(&mut s, 1, vec![spec(2), spec(3)]).await;
    assert_eq!(metric(&gw, PEERS).await, 2);
    assert_eq!(metric(&gw, CONNECTED).await, 1);
    assert_eq!(metric(&gw, DROPPED).await, 0);

    // The controller goes away: it closes the connection and accepts no other.
    let gone = Instant::now();
    s.connection.close(0u32.into(), b"gone");
    drop(s);
    // Just before the grace ends the grants are still served (the gateway noticed the loss
    // after `gone`, so its clock started later still).
    assert_eq!(metric(&gw, PEERS).await, 2);
    assert!(
        gone.elapsed() < grace,
        "too slow to look before the grace ended"
    );
    wait_for_metric(&gw, CONNECTED, 0, STEP).await;

    // Then every grant is dropped and counted, within a generous bound.
    let dropped_at = wait_for_metric(&gw, PEERS, 0, grace + STEP).await;
    assert!(
        dropped_at - gone >= grace,
        "dropped {:?} after the loss, before the grace of {grace:?}",
        dropped_at - gone
    );
    assert_eq!(metric(&gw, DROPPED).await, 2);
    assert_eq!(metric(&gw, EXPIRED).await, 1);

    // The controller is back: the gateway reconnects, accepts its full sync and serves
    // exactly that set again.
    let mut s = ctl.accept().await;
    hello_and_sync(&mut s, 1, vec![spec(4)]).await;
    assert_eq!(metric(&gw, PEERS).await, 1);
    assert_eq!(metric(&gw, EXPIRED).await, 0);
    assert_eq!(metric(&gw, CONNECTED).await, 1);
    assert_eq!(metric(&gw, DROPPED).await, 2);
    assert!(gw.status.ready());
    // Pushes apply again as usual.
    s.send(&ControllerMessage::GrantAdded {
        seq: 2,
        grant: spec(5),
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 2 });
    assert_eq!(metric(&gw, PEERS).await, 2);
}

#[tokio::test]
async fn a_grace_of_zero_drops_the_grants_as_soon_as_the_link_is_lost() {
    let ctl = Controller::start();
    // The clock runs from start, so a grace of zero has already run out (with nothing to
    // drop) when the first full sync comes: it is accepted all the same.
    let gw = start_enrolled_gateway(&ctl, Duration::ZERO);
    let mut s = ctl.accept().await;
    hello_and_sync(&mut s, 1, vec![spec(2), spec(3), spec(4)]).await;
    assert_eq!(grants(&gw).await, 3);
    assert_eq!(metric(&gw, EXPIRED).await, 0);

    s.connection.close(0u32.into(), b"gone");
    drop(s);
    wait_for_metric(&gw, PEERS, 0, STEP).await;
    assert_eq!(metric(&gw, DROPPED).await, 3);
    assert_eq!(metric(&gw, EXPIRED).await, 1);

    let mut s = ctl.accept().await;
    hello_and_sync(&mut s, 1, vec![spec(3)]).await;
    assert_eq!(metric(&gw, PEERS).await, 1);
    assert_eq!(metric(&gw, EXPIRED).await, 0);
}

#[tokio::test]
async fn a_controller_that_answers_hello_but_never_syncs_is_no_contact() {
    let grace = Duration::from_secs(1);
    let ctl = Controller::start();
    let gw = start_enrolled_gateway(&ctl, grace);
    let mut s = ctl.accept().await;
    hello_and_sync(&mut s, 1, vec![spec(2)]).await;
    s.connection.close(0u32.into(), b"restart");
    drop(s);

    // The gateway reconnects and says hello, but no full sync comes: connected is not in
    // contact, so the grace clock keeps running from the loss.
    let mut s = ctl.accept().await;
    assert!(matches!(s.receive().await, GatewayMessage::Hello { .. }));
    wait_for_metric(&gw, CONNECTED, 1, STEP).await;
    wait_for_metric(&gw, PEERS, 0, grace + STEP).await;
    assert_eq!(metric(&gw, DROPPED).await, 1);
    assert_eq!(metric(&gw, CONNECTED).await, 1);
    assert!(!gw.status.ready());

    // The late full sync on that same connection restores the controller's set.
    let (a, b) = (spec(2), spec(3));
    s.send(&ControllerMessage::FullSync {
        seq: 1,
        grants: vec![a, b],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 1 });
    assert_eq!(metric(&gw, PEERS).await, 2);
    assert_eq!(metric(&gw, EXPIRED).await, 0);
    assert!(gw.status.ready());
}

#[tokio::test]
async fn a_short_outage_within_the_grace_keeps_the_grants() {
    let grace = Duration::from_secs(30);
    let ctl = Controller::start();
    let gw = start_enrolled_gateway(&ctl, grace);
    let mut s = ctl.accept().await;
    let (a, b) = (spec(2), spec(3));
    hello_and_sync(&mut s, 1, vec![a.clone(), b.clone()]).await;
    s.connection.close(0u32.into(), b"restart");
    drop(s);
    let mut s = ctl.accept().await;
    assert!(matches!(s.receive().await, GatewayMessage::Hello { .. }));
    assert_eq!(metric(&gw, PEERS).await, 2);
    // The controller revoked `a` meanwhile: its full sync removes it.
    s.send(&ControllerMessage::FullSync {
        seq: 1,
        grants: vec![b],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 1 });
    assert_eq!(metric(&gw, PEERS).await, 1);
    assert_eq!(metric(&gw, DROPPED).await, 0);
    assert_eq!(metric(&gw, EXPIRED).await, 0);
}
