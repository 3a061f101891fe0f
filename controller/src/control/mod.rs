//! The QUIC control endpoint for gateways (ALPN `postern-control/1`) and, in [`client`],
//! for client daemons (ALPN `postern-client/1`). Does IO.
//!
//! A gateway opens one bidirectional stream and speaks [`proto`] frames on it:
//!
//! 1. First frame `Enroll{token, name}` → the controller answers `Enrolled{gateway_id,
//!    credential}` and expects `Hello` next on the same stream; or first frame
//!    `Hello{credential, public_key, endpoint}`. A failure is answered with
//!    `Refused{reason}` and the connection is closed.
//! 2. After `Hello` the gateway is online: the controller sends `FullSync` with every live
//!    grant of the gateway, then `GrantAdded` and `GrantRevoked` as they happen, each with a
//!    sequence number one higher than the last. The gateway answers `Ack{seq}` once it has
//!    applied everything up to `seq` (acknowledgements are cumulative).
//! 3. When the controller's event stream lags, it sends a fresh `FullSync` instead of
//!    dropping events. A disabled or deleted gateway gets `Refused{reason}` and is closed.

mod client;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use model::{Gateway, GatewayId, GrantId};
use proto::{ControllerMessage, GatewayMessage, GrantSpec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::app::check_wireguard_key;
use crate::app::{Service, ServiceError};
use crate::bus::{Command, ControlEvent};
use crate::tls::TlsIdentity;

/// The ALPN protocol of the gateway control channel.
pub use proto::GATEWAY_ALPN as CONTROL_ALPN;

/// How long a gateway may take to open its stream and send its first frames.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to leave before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a revocation is remembered, so that a grant revoked before its push reached
/// the connection task is not pushed after all.
const REVOKED_MEMORY: Duration = Duration::from_secs(120);

/// The running control endpoint.
#[derive(Debug)]
pub struct ControlEndpoint {
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl ControlEndpoint {
    /// Listens on UDP `listen` with the controller's TLS identity and serves gateways.
    pub fn start(
        service: Service,
        listen: SocketAddr,
        identity: &TlsIdentity,
    ) -> anyhow::Result<Self> {
        let config = server_config(identity)?;
        let endpoint = quinn::Endpoint::server(config, listen)
            .with_context(|| format!("listening for gateways on udp/{listen}"))?;
        let accepting = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) if alpn(&conn).as_deref() == Some(proto::client::CLIENT_ALPN) => {
                            client::serve_client(service, conn).await;
                        }
                        Ok(conn) => serve_gateway(service, conn).await,
                        Err(e) => tracing::debug!(%remote, error = %e, "gateway handshake failed"),
                    }
                });
            }
        });
        Ok(Self { endpoint, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Closes every connection and stops listening.
    pub async fn shutdown(self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"controller shutting down");
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// A handle that closes the endpoint when asked.
    pub(crate) fn closer(&self) -> quinn::Endpoint {
        self.endpoint.clone()
    }
}

/// The ALPN protocol a connection agreed on.
fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

fn server_config(identity: &TlsIdentity) -> anyhow::Result<quinn::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&identity.cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", identity.cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&identity.key_path)
        .with_context(|| format!("reading {}", identity.key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("configuring TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the TLS certificate for QUIC")?;
    tls.alpn_protocols = vec![CONTROL_ALPN.to_vec(), proto::client::CLIENT_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
        .context("configuring QUIC's TLS")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(quinn::IdleTimeout::try_from(Duration::from_secs(20))?))
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(2))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

// ---------------------------------------------------------------- one connection

/// Reads frames from the peer's half of the stream.
struct FrameReader(proto::stream::FrameReader<quinn::RecvStream>);

/// Why reading a frame failed. The message's text is never logged: it may hold a secret.
#[derive(Debug)]
enum ReadFailure {
    Closed,
    Malformed,
}

impl FrameReader {
    fn new(recv: quinn::RecvStream) -> Self {
        Self(proto::stream::FrameReader::new(recv))
    }

    async fn next<M: serde::de::DeserializeOwned>(&mut self) -> Result<M, ReadFailure> {
        self.0.next().await.map_err(|e| match e {
            proto::stream::ReadError::Malformed(_) => ReadFailure::Malformed,
            proto::stream::ReadError::Closed | proto::stream::ReadError::Io(_) => {
                ReadFailure::Closed
            }
        })
    }
}

/// Writes frames to the peer.
struct FrameWriter {
    send: quinn::SendStream,
    buf: Vec<u8>,
}

impl FrameWriter {
    async fn write<M: serde::Serialize>(&mut self, msg: &M) -> anyhow::Result<()> {
        self.buf.clear();
        proto::encode(msg, &mut self.buf);
        tokio::time::timeout(WRITE_TIMEOUT, self.send.write_all(&self.buf))
            .await
            .context("the peer does not read")?
            .context("writing to the peer")?;
        Ok(())
    }

    /// Finishes the stream, waiting (bounded) until the peer received everything.
    async fn finish(&mut self) {
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.send.stopped()).await;
        }
    }

    /// Sends `Refused` and finishes the stream, waiting (bounded) until it was received.
    async fn refuse(&mut self, reason: &str) {
        let msg = ControllerMessage::Refused {
            reason: reason.to_owned(),
        };
        if self.write(&msg).await.is_ok() {
            self.finish().await;
        }
    }
}

async fn serve_gateway(service: Service, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Ok(Ok((send, recv))) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await
    else {
        tracing::debug!(%remote, "a gateway connected but opened no stream");
        conn.close(quinn::VarInt::from_u32(1), b"no stream");
        return;
    };
    let mut reader = FrameReader::new(recv);
    let mut writer = FrameWriter {
        send,
        buf: Vec::new(),
    };
    let gateway = match handshake(&service, &mut reader, &mut writer, remote).await {
        Ok(g) => g,
        Err(reason) => {
            tracing::debug!(%remote, %reason, "gateway refused");
            writer.refuse(&reason).await;
            conn.close(quinn::VarInt::from_u32(2), b"refused");
            return;
        }
    };
    let id = gateway.id;
    let span = tracing::info_span!("gateway", gateway = %id);
    let (conn_id, commands) = service.bus().gateways().register(id);
    let events = service.subscribe();
    // Registered first, checked second: a gateway disabled or deleted in between is either
    // seen here or closed through the registry.
    match service.gateway_online(&gateway, remote).await {
        Ok(true) => {}
        Ok(false) => {
            service.bus().gateways().unregister(id, conn_id);
            writer.refuse("the gateway is disabled or deleted").await;
            conn.close(quinn::VarInt::from_u32(2), b"refused");
            return;
        }
        Err(e) => tracing::error!(gateway = %id, error = %e, "recording a gateway online"),
    }
    service.bus().gateway_connected_here(id);
    tracing::info!(gateway = %id, %remote, "gateway online");
    let (messages_tx, messages) = mpsc::channel(64);
    let read_task = tokio::spawn(async move {
        loop {
            let msg = reader.next::<GatewayMessage>().await;
            let end = msg.is_err();
            if messages_tx.send(msg).await.is_err() || end {
                break;
            }
        }
    });
    let mut link = Link {
        gateway: id,
        writer,
        seq: 0,
        pending: BTreeMap::new(),
        revoked: HashMap::new(),
    };
    let why =
        tracing::Instrument::instrument(link.run(&service, events, commands, messages), span).await;
    read_task.abort();
    let current = service.bus().gateways().unregister(id, conn_id);
    conn.close(quinn::VarInt::from_u32(0), b"closed");
    tracing::info!(gateway = %id, reason = %why, "gateway offline");
    if current {
        service.bus().gateway_disconnected_here(id);
        if let Err(e) = service.gateway_offline(id, &why).await {
            tracing::error!(gateway = %id, error = %e, "recording a gateway offline");
        }
    }
}

/// Reads `Enroll` and/or `Hello` and returns the authenticated gateway, or the reason to
/// refuse it.
async fn handshake(
    service: &Service,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    remote: SocketAddr,
) -> Result<Gateway, String> {
    let mut msg = next_in_time(reader).await?;
    if let GatewayMessage::Enroll { token, name } = msg {
        let issued = service
            .enroll_gateway(&token, &name)
            .await
            .map_err(refusal)?;
        tracing::info!(gateway = %issued.record.id, site = %issued.record.site_id, %remote, "gateway enrolled");
        writer
            .write(&ControllerMessage::Enrolled {
                gateway_id: issued.record.id,
                credential: issued.secret,
            })
            .await
            .map_err(|_| "the connection broke during enrollment".to_owned())?;
        msg = next_in_time(reader).await?;
    }
    let GatewayMessage::Hello {
        credential,
        public_key,
        endpoint,
    } = msg
    else {
        return Err("the first message must be enroll or hello".into());
    };
    let mut gateway = service
        .authenticate_gateway(&credential)
        .await
        .map_err(refusal)?;
    let public_key = check_wireguard_key("public_key", &public_key).map_err(refusal)?;
    let endpoint = check_endpoint(&endpoint)?;
    gateway.public_key = Some(public_key);
    gateway.endpoint = Some(endpoint);
    Ok(gateway)
}

async fn next_in_time(reader: &mut FrameReader) -> Result<GatewayMessage, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next::<GatewayMessage>()).await {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(ReadFailure::Malformed)) => Err("malformed message".into()),
        Ok(Err(ReadFailure::Closed)) => Err("the gateway closed the stream".into()),
        Err(_) => Err("the gateway sent nothing in time".into()),
    }
}

fn refusal(e: ServiceError) -> String {
    describe(&e)
}

/// The one mapping of a service error to what a gateway or client is told over QUIC: the
/// error's own words, except for a database failure, whose text stays in the log.
pub(crate) fn describe(e: &ServiceError) -> String {
    match e {
        ServiceError::Store(e) => {
            tracing::error!(error = %e, "store failure serving a control connection");
            "internal error; see the controller's log".into()
        }
        e => e.to_string(),
    }
}

/// Checks a `host:port` endpoint.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let ok = endpoint.parse::<SocketAddr>().is_ok()
        || endpoint.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if ok {
        Ok(endpoint.to_owned())
    } else {
        Err(format!(
            "endpoint `{endpoint}` is not host:port (e.g. gw1.example.com:51820)"
        ))
    }
}

/// The controller's side of one gateway's stream after `Hello`.
struct Link {
    gateway: GatewayId,
    writer: FrameWriter,
    seq: u64,
    /// Waiters for acknowledgements, by the sequence number that resolves them.
    pending: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    /// Grants of this gateway revoked recently.
    revoked: HashMap<GrantId, Instant>,
}

impl Link {
    /// Serves the gateway until it goes away or is closed; returns why it ended.
    async fn run(
        &mut self,
        service: &Service,
        mut events: broadcast::Receiver<ControlEvent>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut messages: mpsc::Receiver<Result<GatewayMessage, ReadFailure>>,
    ) -> String {
        if let Err(e) = self.full_sync(service).await {
            return format!("{e:#}");
        }
        loop {
            let step = tokio::select! {
                // Revocations first: they must never wait behind anything.
                biased;
                event = events.recv() => match event {
                    Ok(ControlEvent::GrantRevoked(g)) if g.gateway_id == self.gateway => {
                        self.revoke(g.id).await
                    }
                    Ok(ControlEvent::Resync) => self.full_sync(service).await,
                    Ok(_) => Ok(()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "control events lagged; sending a full sync");
                        self.full_sync(service).await
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return "the controller is shutting down".into();
                    }
                },
                command = commands.recv() => match command {
                    Some(Command::Add { grant, ack }) => self.add(grant, ack).await,
                    Some(Command::Close { reason }) => {
                        self.writer.refuse(&reason).await;
                        return reason;
                    }
                    None => return "closed".into(),
                },
                message = messages.recv() => match message {
                    Some(Ok(GatewayMessage::Ack { seq })) => {
                        self.ack(seq);
                        Ok(())
                    }
                    Some(Ok(_)) => {
                        self.writer.refuse("only ack is expected after hello").await;
                        return "protocol violation".into();
                    }
                    Some(Err(ReadFailure::Malformed)) => {
                        self.writer.refuse("malformed message").await;
                        return "malformed message".into();
                    }
                    Some(Err(ReadFailure::Closed)) | None => {
                        return "the gateway closed the connection".into();
                    }
                },
            };
            if let Err(e) = step {
                return format!("{e:#}");
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    async fn full_sync(&mut self, service: &Service) -> anyhow::Result<()> {
        let grants = service
            .gateway_grants(self.gateway)
            .await
            .context("reading the gateway's grants")?;
        let seq = self.next_seq();
        let count = grants.len();
        self.writer
            .write(&ControllerMessage::FullSync { seq, grants })
            .await?;
        tracing::debug!(seq, grants = count, "full sync sent");
        Ok(())
    }

    async fn add(&mut self, grant: GrantSpec, ack: oneshot::Sender<()>) -> anyhow::Result<()> {
        if self.revoked.contains_key(&grant.id) {
            // Revoked before it could be pushed: dropping `ack` fails the request.
            return Ok(());
        }
        let seq = self.next_seq();
        let id = grant.id;
        self.writer
            .write(&ControllerMessage::GrantAdded { seq, grant })
            .await?;
        self.pending.entry(seq).or_default().push(ack);
        tracing::debug!(seq, grant = %id, "grant pushed");
        Ok(())
    }

    async fn revoke(&mut self, id: GrantId) -> anyhow::Result<()> {
        let now = Instant::now();
        self.revoked
            .retain(|_, at| now.duration_since(*at) < REVOKED_MEMORY);
        self.revoked.insert(id, now);
        let seq = self.next_seq();
        self.writer
            .write(&ControllerMessage::GrantRevoked { seq, id })
            .await?;
        tracing::debug!(seq, grant = %id, "revocation pushed");
        Ok(())
    }

    fn ack(&mut self, seq: u64) {
        let later = self.pending.split_off(&(seq.saturating_add(1)));
        for waiter in std::mem::replace(&mut self.pending, later)
            .into_values()
            .flatten()
        {
            let _ = waiter.send(());
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod live_model_tests;
