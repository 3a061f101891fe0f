//! The control link: an outbound QUIC connection to the controller that enrolls the gateway
//! once, then on every (re)connect says hello, converges to the full set of grants and
//! applies pushed additions and revocations, acknowledging each.
//!
//! On one bidirectional stream opened by the gateway:
//!
//! 1. Only while the state directory holds no credential: gateway → `Enroll{token, name}`,
//!    controller → `Enrolled{gateway_id, credential}` (kept in the state directory before
//!    anything else happens) or `Refused{reason}` (fatal: the process exits).
//! 2. gateway → `Hello{credential, public_key, endpoint}`.
//! 3. controller → `FullSync{seq, grants}`, `GrantAdded{seq, grant}` or
//!    `GrantRevoked{seq, id}`, in any number and order; the gateway applies each to the data
//!    plane and then answers `Ack{seq}`. `Refused{reason}` closes the session.
//!
//! Any failure closes the connection; the link reconnects after an exponential backoff with
//! jitter, capped at [`MAX_BACKOFF`]. Each time a connection ends the data plane is told
//! ([`DataPlaneHandle::link_lost`]): it keeps serving the grants it has for the controller
//! grace (`--controller-grace`) counted from the loss of the last connection that delivered
//! a full sync, then drops them all until the next full sync (see the `grace` module). Grants
//! reach the data plane only here, from messages of a live session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use model::WgKey;
use proto::stream::ReadError;
use proto::{ControllerMessage, GatewayMessage};
use quinn::crypto::rustls::QuicClientConfig;
use rand::Rng;

use crate::config::ControllerUrl;
use crate::dataplane::{DataPlaneError, DataPlaneHandle};
use crate::grant::grant_config;
use crate::state::{StateDir, StateError};

/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether the control link is up and synced, shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Status {
    connected: AtomicBool,
    synced: AtomicBool,
}

impl Status {
    /// Whether the gateway is connected to the controller and has said hello.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the last full sync of the current connection was applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Connected and synced.
    pub fn ready(&self) -> bool {
        self.connected() && self.synced()
    }

    fn set(&self, connected: bool, synced: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.synced.store(synced, Ordering::Relaxed);
    }
}

/// Why the control link gave up for good.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// There is no credential yet and no token to enroll with.
    #[error(
        "the state directory {0} holds no credential and no enrollment token was given (--token / POSTERN_TOKEN)"
    )]
    NoCredential(String),
    /// The controller refused the enrollment token.
    #[error("the controller refused enrollment: {0}")]
    EnrollmentRefused(String),
    /// The credential could not be read or kept.
    #[error(transparent)]
    State(#[from] StateError),
    /// The TLS configuration cannot be used for QUIC.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Tls(String),
    /// The data plane has stopped.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("resolving the controller: {0}")]
    Resolve(std::io::Error),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("sending: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("receiving: {0}")]
    Read(std::io::Error),
    #[error("bad message from the controller: {0}")]
    Decode(#[from] proto::DecodeError),
    #[error("the controller closed the stream")]
    Closed,
    #[error("the controller refused the connection: {0}")]
    Refused(String),
    #[error("unexpected message from the controller: {0}")]
    Unexpected(&'static str),
    #[error(transparent)]
    Fatal(#[from] ControlError),
}

impl From<ReadError> for SessionError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Malformed(e) => Self::Decode(e),
            ReadError::Closed => Self::Closed,
            ReadError::Io(e) => Self::Read(e),
        }
    }
}

impl From<StateError> for SessionError {
    fn from(e: StateError) -> Self {
        Self::Fatal(e.into())
    }
}

impl From<DataPlaneError> for SessionError {
    fn from(e: DataPlaneError) -> Self {
        Self::Fatal(e.into())
    }
}

/// What the control link needs to know about the gateway.
#[derive(Clone)]
pub struct ControlLinkConfig {
    /// Where the controller is.
    pub controller: ControllerUrl,
    /// TLS client settings (see [`client_config`](crate::client_config)).
    pub tls: rustls::ClientConfig,
    /// The one-time enrollment token, used only without a credential. Never logged.
    pub token: Option<String>,
    /// The gateway's name, sent when enrolling.
    pub name: String,
    /// The gateway's WireGuard public key.
    pub public_key: [u8; 32],
    /// The `host:port` clients should use.
    pub endpoint: String,
}

/// The gateway's side of the control protocol. See the module documentation.
pub struct ControlLink {
    controller: ControllerUrl,
    quic: quinn::ClientConfig,
    token: Option<String>,
    name: String,
    public_key: String,
    endpoint: String,
    state: StateDir,
    dataplane: DataPlaneHandle,
    status: Arc<Status>,
}

impl std::fmt::Debug for ControlLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLink")
            .field("controller", &self.controller)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ControlLink {
    /// A control link that applies grants to `dataplane` and reports through `status`.
    pub fn new(
        config: ControlLinkConfig,
        state: StateDir,
        dataplane: DataPlaneHandle,
        status: Arc<Status>,
    ) -> Result<Self, ControlError> {
        let crypto =
            QuicClientConfig::try_from(config.tls).map_err(|e| ControlError::Tls(e.to_string()))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
        quic.transport_config(Arc::new(transport));
        Ok(Self {
            controller: config.controller,
            quic,
            token: config.token,
            name: config.name,
            public_key: WgKey::from(config.public_key).to_string(),
            endpoint: config.endpoint,
            state,
            dataplane,
            status,
        })
    }

    /// Keeps the link up until a fatal error: no credential and no token, a refused
    /// enrollment, an unusable state directory or a stopped data plane.
    pub async fn run(self) -> Result<(), ControlError> {
        let mut backoff = Backoff::default();
        loop {
            let mut synced = false;
            let result = self.session(&mut synced).await;
            self.status.set(false, false);
            if let Err(SessionError::Fatal(e)) = result {
                return Err(e);
            }
            // The grace clock runs from here (or keeps running if this connection never
            // synced); with a grace of zero the grants are gone when this returns.
            self.dataplane.link_lost().await?;
            if synced {
                backoff.reset();
            }
            let delay = backoff.next();
            match result {
                Err(SessionError::Refused(reason)) => tracing::warn!(
                    controller = %self.controller,
                    reason,
                    retry_in_ms = delay.as_millis() as u64,
                    "the controller refused the gateway"
                ),
                Err(e) if synced => tracing::info!(
                    controller = %self.controller,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "control link lost; serving current grants for the controller grace"
                ),
                Err(e) => tracing::warn!(
                    controller = %self.controller,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot reach the controller"
                ),
                Ok(()) => {}
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn session(&self, synced: &mut bool) -> Result<(), SessionError> {
        if self.token.is_none() && self.state.credential()?.is_none() {
            return Err(ControlError::NoCredential(self.state.path().display().to_string()).into());
        }
        let addr = tokio::net::lookup_host((self.controller.host.as_str(), self.controller.port))
            .await
            .map_err(SessionError::Resolve)?
            .next()
            .ok_or_else(|| {
                SessionError::Resolve(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                ))
            })?;
        let bind = match addr {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let endpoint =
            quinn::Endpoint::client(bind).map_err(|e| SessionError::Connect(e.to_string()))?;
        let connecting = endpoint
            .connect_with(self.quic.clone(), addr, &self.controller.host)
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(c) => c?,
            Err(_) => return Err(SessionError::Connect("timed out".into())),
        };
        tracing::debug!(controller = %self.controller, %addr, "QUIC connection established");
        let result = self.converse(&connection, synced).await;
        connection.close(0u32.into(), b"");
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        result
    }

    async fn converse(
        &self,
        connection: &quinn::Connection,
        synced: &mut bool,
    ) -> Result<(), SessionError> {
        let (mut send, recv) = connection.open_bi().await?;
        let mut reader = FrameReader::new(recv);
        let credential = match self.state.credential()? {
            Some(c) => c,
            None => self.enroll(&mut send, &mut reader).await?,
        };
        send_message(
            &mut send,
            &GatewayMessage::Hello {
                credential,
                public_key: self.public_key.clone(),
                endpoint: self.endpoint.clone(),
            },
        )
        .await?;
        self.status.set(true, false);
        tracing::info!(controller = %self.controller, "connected to the controller");
        loop {
            let seq = match reader.next().await? {
                ControllerMessage::FullSync { seq, grants } => {
                    let total = grants.len();
                    let configs: Vec<_> = grants
                        .iter()
                        .filter_map(|spec| {
                            grant_config(spec)
                                .inspect_err(|e| tracing::warn!(error = %e, "grant ignored"))
                                .ok()
                        })
                        .collect();
                    let invalid = total - configs.len();
                    let report = self.dataplane.sync(configs).await?;
                    tracing::info!(
                        seq,
                        grants = total,
                        applied = report.applied,
                        removed = report.removed,
                        failed = report.failed + invalid,
                        "full sync applied"
                    );
                    self.status.set(true, true);
                    *synced = true;
                    seq
                }
                ControllerMessage::GrantAdded { seq, grant } => {
                    match grant_config(&grant) {
                        Ok(config) => {
                            if self.dataplane.add(config).await?.is_ok() {
                                tracing::debug!(seq, grant = %grant.id, "grant added");
                            }
                        }
                        Err(e) => tracing::warn!(seq, error = %e, "grant ignored"),
                    }
                    seq
                }
                ControllerMessage::GrantRevoked { seq, id } => {
                    let existed = self.dataplane.remove(id).await?;
                    tracing::debug!(seq, grant = %id, existed, "grant revoked");
                    seq
                }
                ControllerMessage::Refused { reason } => return Err(SessionError::Refused(reason)),
                ControllerMessage::Enrolled { .. } => {
                    return Err(SessionError::Unexpected("enrolled after hello"));
                }
            };
            send_message(&mut send, &GatewayMessage::Ack { seq }).await?;
        }
    }

    /// Exchanges the one-time token for the durable credential and keeps it.
    async fn enroll(
        &self,
        send: &mut quinn::SendStream,
        reader: &mut FrameReader,
    ) -> Result<String, SessionError> {
        let token = self
            .token
            .clone()
            .ok_or_else(|| ControlError::NoCredential(self.state.path().display().to_string()))?;
        send_message(
            send,
            &GatewayMessage::Enroll {
                token,
                name: self.name.clone(),
            },
        )
        .await?;
        match reader.next().await? {
            ControllerMessage::Enrolled {
                gateway_id,
                credential,
            } => {
                self.state.store_credential(&credential)?;
                tracing::info!(%gateway_id, name = %self.name, "enrolled with the controller");
                Ok(credential)
            }
            ControllerMessage::Refused { reason } => {
                Err(ControlError::EnrollmentRefused(reason).into())
            }
            _ => Err(SessionError::Unexpected("expected enrolled or refused")),
        }
    }
}

async fn send_message(
    send: &mut quinn::SendStream,
    message: &GatewayMessage,
) -> Result<(), SessionError> {
    let mut buf = Vec::new();
    proto::encode(message, &mut buf);
    send.write_all(&buf).await?;
    Ok(())
}

type FrameReader = proto::stream::FrameReader<quinn::RecvStream>;

/// Exponential backoff with jitter: each delay is drawn from the upper half of a window that
/// doubles from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff {
    window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            window: MIN_BACKOFF,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(MAX_BACKOFF);
        let half = window / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    fn reset(&mut self) {
        self.window = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::default();
        let mut last_window = Duration::ZERO;
        for _ in 0..20 {
            let w = b.window;
            let d = b.next();
            assert!(d >= w / 2 && d <= w, "{d:?} outside {w:?}");
            assert!(w >= last_window);
            last_window = w;
        }
        assert_eq!(b.window, MAX_BACKOFF);
        b.reset();
        assert!(b.next() <= MIN_BACKOFF);
    }

    #[test]
    fn status_ready_needs_both() {
        let s = Status::default();
        assert!(!s.ready());
        s.set(true, false);
        assert!(s.connected() && !s.ready());
        s.set(true, true);
        assert!(s.ready());
    }
}
