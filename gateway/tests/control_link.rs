//! The control link against a stand-in controller: a quinn server on 127.0.0.1 that speaks
//! the control protocol from the controller's side, as scripted by each test.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::controller::{Controller, STEP};
use gateway::{
    ControlError, ControlLink, ControlLinkConfig, DataPlaneHandle, Fingerprint, StateDir, Status,
};
use model::{GatewayId, GrantId};
use proto::{ControllerMessage, GatewayMessage, GrantSpec};
use tunnel::{GatewayConfig, GatewayTunnel};

struct Gateway {
    status: Arc<Status>,
    dataplane: DataPlaneHandle,
    state: StateDir,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_gateway(controller: &Controller, pin: Fingerprint, token: Option<&str>) -> Gateway {
    start_gateway_in(controller, pin, token, tempfile::tempdir().unwrap())
}

fn start_gateway_in(
    controller: &Controller,
    pin: Fingerprint,
    token: Option<&str>,
    dir: tempfile::TempDir,
) -> Gateway {
    let state = StateDir::open(dir.path()).unwrap();
    let tunnel = GatewayTunnel::new(GatewayConfig::new([1; 32]), Instant::now());
    let public_key = tunnel.public_key();
    let (dataplane, _task) = DataPlaneHandle::without_io(tunnel, gateway::DEFAULT_CONTROLLER_GRACE);
    let status = Arc::new(Status::default());
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
    let gw = start_gateway_in(&ctl, ctl.fingerprint, None, dir);
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
