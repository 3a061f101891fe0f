//! Secrets of the gateway control channel never reach the log: a whole enrollment, access
//! request and revocation run with every TRACE event captured, and the preshared key, the
//! gateway token and the gateway credential must be absent from it. This is the only test in
//! its binary, so the global subscriber sees every event.

// A test binary: its helpers may unwrap too.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use controller::*;
use proto::{ControllerMessage, GatewayMessage};
use rand::RngCore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    STANDARD.encode(b)
}

struct Link {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl Link {
    async fn send(&mut self, msg: &GatewayMessage) {
        let mut buf = Vec::new();
        proto::encode(msg, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }

    async fn recv(&mut self) -> ControllerMessage {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some((msg, used)) = proto::decode(&self.buf).unwrap() {
                    self.buf.drain(..used);
                    return msg;
                }
                let mut chunk = [0u8; 4096];
                let n = self.recv.read(&mut chunk).await.unwrap().unwrap();
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_log() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let identity = TlsIdentity {
        cert_path,
        key_path,
        fingerprint: fingerprint_of_der(certified.cert.der()),
        self_signed: true,
    };
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    let service = Service::new(store);
    let control = ControlEndpoint::start(
        service.clone(),
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        &identity,
    )
    .unwrap();

    let admin = Actor::cli();
    let site = service
        .create_site(&admin, SiteInput { name: "hq".into() })
        .await
        .unwrap();
    let resource = service
        .create_resource(
            &admin,
            ResourceInput {
                name: "web".into(),
                site_id: site.id,
                addresses: vec!["10.0.5.20".into()],
                ports: vec!["tcp/443".into()],
            },
        )
        .await
        .unwrap();
    let user = service
        .create_user(
            &admin,
            UserInput {
                email: "ann@example.com".into(),
                name: "Ann".into(),
                role: None,
            },
        )
        .await
        .unwrap();
    let group = service
        .create_group(
            &admin,
            GroupInput {
                name: "eng".into(),
                description: String::new(),
            },
        )
        .await
        .unwrap();
    service
        .add_member(&admin, group.id, MemberInput { user_id: user.id })
        .await
        .unwrap();
    let device = service
        .register_device(&admin, user.id, "laptop", &key())
        .await
        .unwrap();
    service
        .create_policy(
            &admin,
            PolicyInput {
                name: "eng-web".into(),
                group_id: group.id,
                resource_id: resource.id,
                action: model::PolicyAction::Allow,
                conditions: ConditionsInput::default(),
                max_session_secs: None,
                disabled: false,
            },
        )
        .await
        .unwrap();
    let token = service
        .create_gateway_token(&admin, site.id, GatewayTokenInput::default())
        .await
        .unwrap()
        .secret;

    // A gateway enrolls, says hello and acknowledges its first sync.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&identity.cert_path).unwrap();
    roots
        .add(
            CertificateDer::pem_slice_iter(&pem)
                .next()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(control.local_addr().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut link = Link {
        send,
        recv,
        buf: Vec::new(),
    };
    link.send(&GatewayMessage::Enroll {
        token: token.clone(),
        name: "gw1".into(),
    })
    .await;
    let ControllerMessage::Enrolled { credential, .. } = link.recv().await else {
        panic!("not enrolled");
    };
    link.send(&GatewayMessage::Hello {
        credential: credential.clone(),
        public_key: key(),
        endpoint: "gw1.example.com:51820".into(),
    })
    .await;
    let ControllerMessage::FullSync { seq, .. } = link.recv().await else {
        panic!("no full sync");
    };
    link.send(&GatewayMessage::Ack { seq }).await;

    // An access request is granted once the gateway acknowledged the push.
    let request = AccessRequest {
        user_id: user.id,
        device_id: device.id,
        resource_id: resource.id,
        source: "192.0.2.7".into(),
        public_key: key(),
        identity_provider: None,
        last_mfa_at: None,
    };
    let asking = {
        let service = service.clone();
        tokio::spawn(async move { service.request_access(&Actor::cli(), request).await })
    };
    let ControllerMessage::GrantAdded { seq, grant } = link.recv().await else {
        panic!("no grant pushed");
    };
    link.send(&GatewayMessage::Ack { seq }).await;
    let AccessOutcome::Granted(granted) = asking.await.unwrap().unwrap() else {
        panic!("denied");
    };
    assert_eq!(granted.preshared_key, grant.preshared_key);
    let psk = grant.preshared_key.to_base64();
    assert!(
        !format!("{granted:?}").contains(&psk),
        "Debug shows the key"
    );

    service.revoke_grant(&admin, grant.id).await.unwrap();
    let ControllerMessage::GrantRevoked { id, .. } = link.recv().await else {
        panic!("no revocation pushed");
    };
    assert_eq!(id, grant.id);
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    endpoint.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let audit = serde_json::to_string(
        &service
            .audit_log(
                &admin,
                AuditFilter {
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for expected in [
        "gateway enrolled",
        "gateway online",
        "grant issued",
        "gateway offline",
    ] {
        assert!(
            log.contains(expected),
            "`{expected}` missing: the capture is broken"
        );
    }
    for secret in [&psk, &credential, &token] {
        assert!(!log.contains(secret.as_str()), "a secret is in the log");
        assert!(
            !audit.contains(secret.as_str()),
            "a secret is in the audit log"
        );
    }
    control.shutdown().await;
}
