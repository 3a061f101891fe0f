//! A stand-in controller: a quinn server on loopback that speaks the control protocol from
//! the controller's side, as scripted by each test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::Fingerprint;
use proto::{ControllerMessage, GatewayMessage};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) const STEP: Duration = Duration::from_secs(10);

pub(crate) struct Controller {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) fingerprint: Fingerprint,
}

impl Controller {
    pub(crate) fn start() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::clone(&der)], key)
            .unwrap();
        tls.alpn_protocols = vec![proto::GATEWAY_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        Self {
            endpoint,
            fingerprint: Fingerprint::of(&der),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap()
    }

    /// Accepts the next gateway connection and its stream. Attempts that fail meanwhile
    /// (e.g. one the gateway gave up on while nobody accepted) are skipped.
    pub(crate) async fn accept(&self) -> Session {
        tokio::time::timeout(STEP, async {
            loop {
                let incoming = self.endpoint.accept().await.unwrap();
                let Ok(connection) = incoming.await else {
                    continue;
                };
                let Ok((send, recv)) = connection.accept_bi().await else {
                    continue;
                };
                return Session {
                    connection,
                    send,
                    recv,
                    buf: Vec::new(),
                };
            }
        })
        .await
        .expect("a gateway connects in time")
    }
}

pub(crate) struct Session {
    pub(crate) connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl Session {
    pub(crate) async fn receive(&mut self) -> GatewayMessage {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some((m, used)) = proto::decode::<GatewayMessage>(&self.buf).unwrap() {
                self.buf.drain(..used);
                return m;
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.recv.read(&mut chunk))
                .await
                .expect("the gateway answers in time")
                .unwrap()
                .expect("the stream stays open");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) async fn send(&mut self, m: &ControllerMessage) {
        let mut buf = Vec::new();
        proto::encode(m, &mut buf);
        self.send.write_all(&buf).await.unwrap();
    }
}
