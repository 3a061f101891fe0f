//! The gateway control channel end to end on loopback: a real QUIC endpoint, the real HTTP
//! API, and a minimal gateway written here (quinn client pinning the self-signed
//! certificate).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use model::{DeviceId, GatewayId, GrantId, Role, SiteId, UserId};
use proto::{ControllerMessage, GatewayMessage, GrantSpec};
use rand::RngCore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::CONTROL_ALPN;
use crate::app::*;
use crate::{AppState, ControlEndpoint, router};
use store::Store;

pub(super) fn key() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    STANDARD.encode(b)
}

pub(super) struct Harness {
    pub(super) service: Service,
    pub(super) http: String,
    pub(super) quic: SocketAddr,
    pub(super) cert: CertificateDer<'static>,
    pub(super) token: String,
    pub(super) client: reqwest::Client,
    pub(super) site: SiteId,
    pub(super) resource: model::ResourceId,
    pub(super) user: UserId,
    pub(super) device: DeviceId,
    pub(super) _control: ControlEndpoint,
    pub(super) _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(Service::new).await
}

async fn harness_with(make: impl FnOnce(Store) -> Service) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    harness_on(make(store), dir).await
}

/// A controller's control endpoint and HTTP API on loopback.
pub(super) struct Served {
    pub(super) http: String,
    pub(super) quic: SocketAddr,
    pub(super) cert: CertificateDer<'static>,
    pub(super) control: ControlEndpoint,
}

/// Serves `service` on loopback with a certificate kept in `dir`.
pub(super) async fn serve(service: &Service, dir: &std::path::Path) -> Served {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = crate::tls::load_or_create(None, None, dir, &[]).unwrap();
    let pem = std::fs::read(&identity.cert_path).unwrap();
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let control =
        ControlEndpoint::start(service.clone(), "127.0.0.1:0".parse().unwrap(), &identity).unwrap();
    let quic = control.local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState {
        service: service.clone(),
        control_fingerprint: None,
    });
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Served {
        http,
        quic,
        cert,
        control,
    }
}

/// A served controller with a site, a resource, a user in a group with a device, and a
/// policy that lets the group reach the resource.
pub(super) async fn harness_on(service: Service, dir: tempfile::TempDir) -> Harness {
    let Served {
        http,
        quic,
        cert,
        control,
    } = serve(&service, dir.path()).await;
    let admin = Actor::cli();
    let token = service
        .create_token(
            &admin,
            TokenInput {
                name: "tests".into(),
                role: Role::Admin,
            },
        )
        .await
        .unwrap()
        .secret;
    let site = service
        .create_site(&admin, SiteInput { name: "hq".into() })
        .await
        .unwrap()
        .id;
    let resource = service
        .create_resource(
            &admin,
            ResourceInput {
                name: "ssh".into(),
                site_id: site,
                addresses: vec!["10.0.5.20".into()],
                ports: vec!["tcp/22".into()],
            },
        )
        .await
        .unwrap()
        .id;
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
        .unwrap()
        .id;
    let group = service
        .create_group(
            &admin,
            GroupInput {
                name: "eng".into(),
                description: String::new(),
            },
        )
        .await
        .unwrap()
        .id;
    service
        .add_member(&admin, group, MemberInput { user_id: user })
        .await
        .unwrap();
    let device = service
        .register_device(&admin, user, "laptop", &key())
        .await
        .unwrap()
        .id;
    service
        .create_policy(
            &admin,
            PolicyInput {
                name: "eng-ssh".into(),
                group_id: group,
                resource_id: resource,
                action: model::PolicyAction::Allow,
                conditions: ConditionsInput::default(),
                max_session_secs: None,
                disabled: false,
            },
        )
        .await
        .unwrap();
    Harness {
        service,
        http,
        quic,
        cert,
        token,
        client: reqwest::Client::new(),
        site,
        resource,
        user,
        device,
        _control: control,
        _dir: dir,
    }
}

impl Harness {
    /// Another controller replica on `store` (the same database), serving the same
    /// objects, with its own endpoints.
    pub(super) async fn replica(&self, service: Service) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let Served {
            http,
            quic,
            cert,
            control,
        } = serve(&service, dir.path()).await;
        Harness {
            service,
            http,
            quic,
            cert,
            token: self.token.clone(),
            client: reqwest::Client::new(),
            site: self.site,
            resource: self.resource,
            user: self.user,
            device: self.device,
            _control: control,
            _dir: dir,
        }
    }

    pub(super) async fn gateway_token(&self) -> String {
        self.service
            .create_gateway_token(&Actor::cli(), self.site, GatewayTokenInput::default())
            .await
            .unwrap()
            .secret
    }

    pub(super) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.http))
            .bearer_auth(&self.token)
    }

    pub(super) async fn get(&self, path: &str) -> Value {
        let res = self.req(reqwest::Method::GET, path).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// Starts an access request for the harness's device with a fresh key.
    pub(super) fn access(
        &self,
        device: DeviceId,
        public_key: &str,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let req = self.req(reqwest::Method::POST, "/access").json(&json!({
            "user_id": self.user, "device_id": device, "resource_id": self.resource,
            "source": "192.0.2.7", "public_key": public_key,
        }));
        tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json().await.unwrap())
        })
    }

    /// Asks for access and lets `gw` acknowledge the push; returns the peer configuration.
    pub(super) async fn issue(&self, gw: &mut TestGateway) -> Value {
        let pending = self.access(self.device, &key());
        let msg = gw.recv().await;
        let ControllerMessage::GrantAdded { seq, .. } = &msg else {
            panic!("expected grant_added, got {msg:?}");
        };
        let seq = *seq;
        gw.apply(msg);
        gw.ack(seq).await;
        let (status, body) = pending.await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    pub(super) async fn gateway_json(&self, id: GatewayId) -> Value {
        self.get(&format!("/gateways/{id}")).await
    }

    pub(super) async fn wait_online(&self, id: GatewayId, online: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.gateway_json(id).await["online"] != json!(online) {
            assert!(
                Instant::now() < deadline,
                "gateway never became online={online}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A [`TestGateway`] acknowledging in a task of its own: the grants it holds, and every
/// message it got, in order. Dropping it drops the connection.
pub(super) struct AutoGateway {
    /// The grants as the gateway applied them.
    pub(super) grants: Arc<std::sync::Mutex<BTreeMap<GrantId, GrantSpec>>>,
    /// Every message, after it was applied and before it was acknowledged.
    pub(super) messages: tokio::sync::mpsc::UnboundedReceiver<ControllerMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl AutoGateway {
    /// The grants it holds now.
    pub(super) fn grants(&self) -> BTreeMap<GrantId, GrantSpec> {
        self.grants.lock().unwrap().clone()
    }
}

impl Drop for AutoGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal gateway: one connection, one stream, the grants it was told about.
pub(super) struct TestGateway {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
    pub(super) grants: BTreeMap<GrantId, GrantSpec>,
    pub(super) id: Option<GatewayId>,
    credential: String,
    public_key: String,
}

impl TestGateway {
    pub(super) async fn connect(h: &Harness) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(h.cert.clone()).unwrap();
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
            .connect(h.quic, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Self {
            _endpoint: endpoint,
            conn,
            send,
            recv,
            buf: Vec::new(),
            grants: BTreeMap::new(),
            id: None,
            credential: String::new(),
            public_key: key(),
        }
    }

    pub(super) async fn send(&mut self, msg: &GatewayMessage) {
        let mut buf = Vec::new();
        proto::encode(msg, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }

    /// The next message, or `None` when the stream ended.
    pub(super) async fn next(&mut self) -> Option<ControllerMessage> {
        tokio::time::timeout(Duration::from_secs(5), self.read())
            .await
            .expect("no message from the controller within 5 s")
    }

    /// The next message however long it takes, or `None` when the stream ended.
    async fn read(&mut self) -> Option<ControllerMessage> {
        loop {
            if let Some((msg, used)) = proto::decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Hands the gateway to a task of its own that applies and acknowledges every message
    /// at once, as a real gateway does, while the test goes on.
    pub(super) fn auto_ack(mut self) -> AutoGateway {
        let grants = Arc::new(std::sync::Mutex::new(self.grants.clone()));
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let shared = grants.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = self.read().await {
                let seq = self.apply(msg.clone());
                *shared.lock().unwrap() = self.grants.clone();
                let _ = tx.send(msg);
                if let Some(seq) = seq {
                    self.ack(seq).await;
                }
            }
        });
        AutoGateway {
            grants,
            messages,
            task,
        }
    }

    pub(super) async fn recv(&mut self) -> ControllerMessage {
        self.next().await.expect("the stream ended")
    }

    pub(super) async fn ack(&mut self, seq: u64) {
        self.send(&GatewayMessage::Ack { seq }).await;
    }

    /// Applies a message to the grant set and returns its sequence number.
    pub(super) fn apply(&mut self, msg: ControllerMessage) -> Option<u64> {
        match msg {
            ControllerMessage::FullSync { seq, grants } => {
                self.grants = grants.into_iter().map(|g| (g.id, g)).collect();
                Some(seq)
            }
            ControllerMessage::GrantAdded { seq, grant } => {
                self.grants.insert(grant.id, grant);
                Some(seq)
            }
            ControllerMessage::GrantRevoked { seq, id } => {
                self.grants.remove(&id);
                Some(seq)
            }
            _ => None,
        }
    }

    pub(super) async fn hello(&mut self) -> ControllerMessage {
        let msg = GatewayMessage::Hello {
            credential: self.credential.clone(),
            public_key: self.public_key.clone(),
            endpoint: "gw1.example.com:51820".into(),
        };
        self.send(&msg).await;
        self.recv().await
    }

    /// Enrolls with `token`, says hello and applies the first full sync.
    pub(super) async fn enroll(h: &Harness, token: &str) -> Self {
        let mut gw = Self::connect(h).await;
        gw.send(&GatewayMessage::Enroll {
            token: token.into(),
            name: "gw1".into(),
        })
        .await;
        let ControllerMessage::Enrolled {
            gateway_id,
            credential,
        } = gw.recv().await
        else {
            panic!("not enrolled");
        };
        gw.id = Some(gateway_id);
        gw.credential = credential;
        let sync = gw.hello().await;
        assert!(
            matches!(sync, ControllerMessage::FullSync { .. }),
            "{sync:?}"
        );
        let seq = gw.apply(sync).unwrap();
        gw.ack(seq).await;
        gw
    }

    /// Connects again with the stored credential; returns the full sync.
    pub(super) async fn reconnect(&self, h: &Harness) -> (Self, ControllerMessage) {
        let mut gw = Self::connect(h).await;
        gw.id = self.id;
        gw.credential = self.credential.clone();
        gw.public_key = self.public_key.clone();
        let sync = gw.hello().await;
        (gw, sync)
    }
}

#[tokio::test]
async fn enrollment_is_one_time_and_hello_brings_the_gateway_online() {
    let h = harness().await;
    let token = h.gateway_token().await;
    let gw = TestGateway::enroll(&h, &token).await;
    let id = gw.id.unwrap();
    assert!(gw.grants.is_empty());
    let json = h.gateway_json(id).await;
    assert_eq!(json["online"], json!(true));
    assert_eq!(json["public_key"], json!(gw.public_key));
    assert_eq!(json["endpoint"], json!("gw1.example.com:51820"));
    let listed = h.get(&format!("/gateways?site_id={}", h.site)).await;
    assert_eq!(listed[0]["online"], json!(true));

    // The token is spent.
    let mut again = TestGateway::connect(&h).await;
    again
        .send(&GatewayMessage::Enroll {
            token: token.clone(),
            name: "gw2".into(),
        })
        .await;
    let ControllerMessage::Refused { reason } = again.recv().await else {
        panic!("a used token was accepted");
    };
    assert!(reason.contains("unknown, used or expired"), "{reason}");
    assert!(again.next().await.is_none(), "the stream stays open");

    gw.conn.close(quinn::VarInt::from_u32(0), b"bye");
    h.wait_online(id, false).await;
    // The offline event is written just after the registry forgets the connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let kinds: Vec<String> = h
            .get("/audit?kind=gateway.")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<&str> = ["gateway.enrolled", "gateway.online", "gateway.offline"]
            .into_iter()
            .filter(|kind| !kinds.iter().any(|k| k == kind))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{missing:?} not in {kinds:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wrong_credentials_keys_and_first_messages_are_refused() {
    let h = harness().await;
    let cases = [
        (
            GatewayMessage::Hello {
                credential: "pgc_wrong".into(),
                public_key: key(),
                endpoint: "gw:51820".into(),
            },
            "credential is unknown",
        ),
        (GatewayMessage::Ack { seq: 1 }, "must be enroll or hello"),
    ];
    for (msg, expected) in cases {
        let mut gw = TestGateway::connect(&h).await;
        gw.send(&msg).await;
        let ControllerMessage::Refused { reason } = gw.recv().await else {
            panic!("accepted {msg:?}");
        };
        assert!(reason.contains(expected), "{reason}");
    }
    // A good credential with a bad key or endpoint is refused too.
    let gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    for (public_key, endpoint, expected) in [
        ("short".to_owned(), "gw:51820", "public_key"),
        (key(), "no-port", "endpoint"),
    ] {
        let mut again = TestGateway::connect(&h).await;
        again
            .send(&GatewayMessage::Hello {
                credential: gw.credential.clone(),
                public_key,
                endpoint: endpoint.into(),
            })
            .await;
        let ControllerMessage::Refused { reason } = again.recv().await else {
            panic!("accepted a bad hello");
        };
        assert!(reason.contains(expected), "{reason}");
    }
}

#[tokio::test]
async fn access_waits_for_the_ack_and_the_full_sync_repeats_the_grant() {
    let h = harness().await;
    let token = h.gateway_token().await;
    let mut gw = TestGateway::enroll(&h, &token).await;
    let device_key = key();
    let pending = h.access(h.device, &device_key);
    let msg = gw.recv().await;
    let ControllerMessage::GrantAdded { seq, grant } = msg.clone() else {
        panic!("expected grant_added, got {msg:?}");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "answered before the gateway acknowledged"
    );
    gw.apply(msg);
    gw.ack(seq).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 201, "{body}");

    assert_eq!(body["grant_id"], json!(grant.id));
    assert_eq!(body["gateway_id"], json!(gw.id.unwrap()));
    assert_eq!(body["gateway_public_key"], json!(gw.public_key));
    assert_eq!(body["gateway_endpoint"], json!("gw1.example.com:51820"));
    assert_eq!(body["preshared_key"], json!(grant.preshared_key));
    assert_eq!(
        STANDARD
            .decode(grant.preshared_key.to_base64())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(body["tunnel_address"], json!(grant.tunnel_address));
    let tunnel: ipnet::IpNet = DEFAULT_TUNNEL_NETWORK.parse().unwrap();
    assert!(tunnel.contains(&grant.tunnel_address));
    assert_eq!(body["addresses"], json!(["10.0.5.20/32"]));
    assert_eq!(body["ports"], json!(["tcp/22"]));
    assert_eq!(body["expires_at"], json!(grant.expires_at));
    assert_eq!(grant.public_key.to_string(), device_key);

    // The decision is audited with the gateway it chose.
    let allow = h.get("/audit?kind=decision.allow").await;
    assert_eq!(allow[0]["details"]["gateway"], json!(gw.id.unwrap()));
    let issued = h.get("/audit?kind=grant.issued").await;
    assert_eq!(issued[0]["subject"], json!(format!("grant:{}", grant.id)));

    // A reconnecting gateway gets the same grant in its full sync.
    gw.conn.close(quinn::VarInt::from_u32(0), b"restart");
    let (_gw2, sync) = gw.reconnect(&h).await;
    let ControllerMessage::FullSync { grants, .. } = sync else {
        panic!("expected a full sync");
    };
    assert_eq!(grants, vec![grant.clone()]);

    // The preshared key is in no audit event and no other API answer, and neither are the
    // gateway's secrets (tests/control_secrets.rs checks the log).
    let audit = h
        .req(reqwest::Method::GET, "/audit?limit=10000&format=jsonl")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let grants_json = h.get("/grants").await.to_string();
    let gateways_json = h.get("/gateways").await.to_string();
    for secret in [&grant.preshared_key.to_base64(), &gw.credential, &token] {
        assert!(!audit.contains(secret.as_str()), "secret in the audit log");
        assert!(!grants_json.contains(secret.as_str()), "secret in /grants");
        assert!(
            !gateways_json.contains(secret.as_str()),
            "secret in /gateways"
        );
    }
}

#[tokio::test]
async fn revocations_reach_the_gateway_at_once() {
    let h = harness().await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let first = h.issue(&mut gw).await;
    let second = h.issue(&mut gw).await;
    // One device keeps one tunnel address across its grants.
    assert_eq!(first["tunnel_address"], second["tunnel_address"]);
    assert_ne!(first["preshared_key"], second["preshared_key"]);
    assert_eq!(gw.grants.len(), 2);

    let started = Instant::now();
    let res = h
        .req(
            reqwest::Method::DELETE,
            &format!("/grants/{}", first["grant_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg = gw.recv().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&msg, ControllerMessage::GrantRevoked { id, .. } if json!(id) == first["grant_id"]),
        "{msg:?}"
    );
    let seq = gw.apply(msg).unwrap();
    gw.ack(seq).await;

    let started = Instant::now();
    let res = h
        .req(reqwest::Method::PATCH, &format!("/devices/{}", h.device))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg = gw.recv().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&msg, ControllerMessage::GrantRevoked { id, .. } if json!(id) == second["grant_id"]),
        "{msg:?}"
    );
    gw.apply(msg);
    assert!(gw.grants.is_empty());
}

#[tokio::test]
async fn a_lagging_link_resyncs_instead_of_losing_revocations() {
    // Two events of room: revoking six grants at once overruns the link's receiver.
    let h = harness_with(|store| Service::with_event_capacity(store, 2)).await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    for _ in 0..6 {
        h.issue(&mut gw).await;
    }
    assert_eq!(gw.grants.len(), 6);
    h.service
        .update_device(
            &Actor::cli(),
            h.device,
            DevicePatch {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut resynced = false;
    while !gw.grants.is_empty() {
        let msg = gw.recv().await;
        resynced |= matches!(msg, ControllerMessage::FullSync { .. });
        let seq = gw.apply(msg).unwrap();
        gw.ack(seq).await;
    }
    assert!(
        resynced,
        "the receiver did not lag; the test proves nothing"
    );
}

#[tokio::test]
async fn a_broken_connection_loses_no_revocations() {
    let h = harness().await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let kept = h.issue(&mut gw).await;
    let dropped = h.issue(&mut gw).await;
    let id = gw.id.unwrap();
    // The link breaks without a goodbye; the revocation happens while it is down.
    gw._endpoint.close(quinn::VarInt::from_u32(0), b"");
    h.wait_online(id, false).await;
    let res = h
        .req(
            reqwest::Method::DELETE,
            &format!("/grants/{}", dropped["grant_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_gw2, sync) = gw.reconnect(&h).await;
    let ControllerMessage::FullSync { grants, .. } = sync else {
        panic!("expected a full sync");
    };
    let ids: Vec<Value> = grants.iter().map(|g| json!(g.id)).collect();
    assert_eq!(ids, vec![kept["grant_id"].clone()]);
}

#[tokio::test]
async fn denied_access_gives_the_reasons() {
    let h = harness().await;
    let _gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    // Bob is in no group: no policy lets him in.
    let bob = h
        .service
        .create_user(
            &Actor::cli(),
            UserInput {
                email: "bob@example.com".into(),
                name: "Bob".into(),
                role: None,
            },
        )
        .await
        .unwrap();
    let device = h
        .service
        .register_device(&Actor::cli(), bob.id, "bobs-laptop", &key())
        .await
        .unwrap();
    let res = h
        .req(reqwest::Method::POST, "/access")
        .json(&json!({
            "user_id": bob.id, "device_id": device.id, "resource_id": h.resource,
            "source": "192.0.2.7", "public_key": key(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("denied"));
    assert_eq!(body["error"]["reasons"][0]["code"], json!("no_policy"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access denied")
    );
    let deny = h.get("/audit?kind=decision.deny").await;
    assert_eq!(deny[0]["details"]["gateway"], Value::Null);
    assert!(h.get("/grants").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn no_gateway_online_is_a_clear_error() {
    let h = harness().await;
    let (status, body) = h.access(h.device, &key()).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], json!("unavailable"));
    assert_eq!(
        body["error"]["message"],
        json!("no gateway of site hq is online")
    );
    assert!(h.get("/grants").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_unacknowledged_grant_is_revoked() {
    let h = harness_with(|store| Service::new(store).with_ack_timeout(Duration::from_millis(300)))
        .await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let pending = h.access(h.device, &key());
    let ControllerMessage::GrantAdded { grant, .. } = gw.recv().await else {
        panic!("expected grant_added");
    };
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not acknowledge"),
        "{body}"
    );
    let ControllerMessage::GrantRevoked { id, .. } = gw.recv().await else {
        panic!("expected the revocation");
    };
    assert_eq!(id, grant.id);
    assert!(h.get("/grants").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn disabling_a_gateway_revokes_its_grants_and_closes_it() {
    let h = harness().await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let issued = h.issue(&mut gw).await;
    let id = gw.id.unwrap();
    let res = h
        .req(reqwest::Method::PATCH, &format!("/gateways/{id}"))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["online"], json!(false));
    let msg = gw.recv().await;
    assert!(
        matches!(&msg, ControllerMessage::GrantRevoked { id, .. } if json!(id) == issued["grant_id"]),
        "{msg:?}"
    );
    let ControllerMessage::Refused { reason } = gw.recv().await else {
        panic!("expected refused");
    };
    assert!(reason.contains("disabled"), "{reason}");
    assert!(gw.next().await.is_none());
    // It cannot come back while disabled.
    let (_again, msg) = gw.reconnect(&h).await;
    assert!(matches!(msg, ControllerMessage::Refused { .. }), "{msg:?}");
    h.service.delete_gateway(&Actor::cli(), id).await.unwrap();
}

#[tokio::test]
async fn serve_listens_for_gateways_on_the_https_port() {
    serve_and_probe(false).await;
}

#[tokio::test]
async fn plain_http_still_serves_gateways_over_quic_with_tls() {
    serve_and_probe(true).await;
}

/// Runs `serve` on a free port and checks that HTTP(S) and the QUIC endpoint share it.
async fn serve_and_probe(insecure_http: bool) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = crate::ServeConfig {
        insecure_http,
        ..crate::ServeConfig::new(listen, dir.path().to_owned())
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(config, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let scheme = if insecure_http { "http" } else { "https" };
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{scheme}://{listen}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let probe = Harness {
        quic: listen,
        cert,
        ..harness().await
    };
    let mut gw = TestGateway::connect(&probe).await;
    gw.send(&GatewayMessage::Hello {
        credential: "pgc_nobody".into(),
        public_key: key(),
        endpoint: "gw:51820".into(),
    })
    .await;
    assert!(matches!(gw.recv().await, ControllerMessage::Refused { .. }));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn tunnel_addresses_are_unique_per_device_and_run_out_clearly() {
    let h = harness_with(|store| {
        Service::new(store)
            .with_tunnel_network("10.99.0.0/30".parse().unwrap())
            .unwrap()
    })
    .await;
    let mut gw = TestGateway::enroll(&h, &h.gateway_token().await).await;
    let first = h.issue(&mut gw).await;
    // Reusing a live grant's key is refused: every grant has its own key pair.
    let reused = h
        .req(reqwest::Method::POST, "/access")
        .json(&json!({
            "user_id": h.user, "device_id": h.device, "resource_id": h.resource,
            "source": "192.0.2.7",
            "public_key": gw.grants.values().next().unwrap().public_key,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 409);

    let mut addresses = vec![first["tunnel_address"].clone()];
    for name in ["second", "third"] {
        let device = h
            .service
            .register_device(&Actor::cli(), h.user, name, &key())
            .await
            .unwrap();
        let pending = h.access(device.id, &key());
        if name == "third" {
            let (status, body) = pending.await.unwrap();
            assert_eq!(status, 503, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("no free address"),
                "{body}"
            );
            break;
        }
        let ControllerMessage::GrantAdded { seq, grant } = gw.recv().await else {
            panic!("expected grant_added");
        };
        gw.ack(seq).await;
        let (status, body) = pending.await.unwrap();
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["tunnel_address"], json!(grant.tunnel_address));
        addresses.push(body["tunnel_address"].clone());
    }
    addresses.sort_by_key(|a| a.to_string());
    assert_eq!(addresses, vec![json!("10.99.0.1"), json!("10.99.0.2")]);
}

#[path = "client_tests.rs"]
mod client;
