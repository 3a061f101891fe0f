//! The control link to the controller: QUIC (ALPN `postern-client/1`), one bidirectional
//! stream, the handshake (Hello → Challenge → Proof → Welcome), then messages both ways
//! through channels. A reader task turns frames into [`LinkEvent`]s; a writer task sends
//! what the daemon queues. Dropping the [`Link`] closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proto::CLIENT_ALPN;
use proto::client::{ClientMessage, RefusalCode, ServerMessage, Welcome};
use proto::device::DeviceKey;
use proto::stream::ReadError;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::mpsc;

use crate::state::Session;
use crate::tls::{self, Trust};

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC keep-alives, so that a dead controller is noticed within [`IDLE_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection silent for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);

/// Why the control link could not be set up or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller URL is not `https://host[:port]`.
    #[error("`{0}` is not a controller URL: use https://host[:port]")]
    BadUrl(String),
    /// The host name did not resolve or the controller did not answer.
    #[error("cannot reach the controller: {0}")]
    Unreachable(String),
    /// The controller's certificate is not trusted.
    #[error("{0}")]
    Untrusted(&'static str),
    /// The controller refused the device.
    #[error("the controller refused this device: {reason}")]
    Refused {
        /// Why, for programs.
        code: RefusalCode,
        /// Why, for people.
        reason: String,
    },
    /// The controller did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Something the controller said, or the end of the link.
#[derive(Debug)]
pub enum LinkEvent {
    /// A message.
    Message(Box<ServerMessage>),
    /// The link ended; why.
    Closed(String),
}

/// A connected, authenticated control link.
#[derive(Debug)]
pub struct Link {
    /// Messages to the controller.
    pub tx: mpsc::UnboundedSender<ClientMessage>,
    /// What the controller says.
    pub rx: mpsc::Receiver<LinkEvent>,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"bye");
    }
}

impl Link {
    /// Closes the link after what was queued has been written (at most about a second).
    pub async fn close(mut self) {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(w) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_millis(800), w).await;
        }
        self.connection.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_millis(300), self.endpoint.wait_idle()).await;
    }
}

/// `host` and `port` of an `https://host[:port]/...` URL.
pub fn host_port(url: &str) -> Result<(String, u16), LinkError> {
    let bad = || LinkError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 443,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_owned(), p.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None => Ok((authority.to_owned(), 443)),
    }
}

/// Connects to the controller in `session` and authenticates the device with `key`.
pub async fn connect(
    session: &Session,
    trust: &Trust,
    key: &DeviceKey,
) -> Result<(Link, Welcome), LinkError> {
    let (host, port) = host_port(&session.controller)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| LinkError::Unreachable(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| LinkError::Unreachable(format!("{host} has no address")))?;
    let crypto = QuicClientConfig::try_from(tls::client_config(trust, &[CLIENT_ALPN])?)
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    quic.transport_config(Arc::new(transport));
    let bind = match addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| LinkError::Unreachable(e.to_string()))?;
    let server_name = if host.parse::<IpAddr>().is_ok() {
        host.clone()
    } else {
        host.to_ascii_lowercase()
    };
    let connecting = endpoint
        .connect_with(quic, addr, &server_name)
        .map_err(|e| LinkError::Unreachable(e.to_string()))?;
    let handshake = async {
        let connection = connecting.await.map_err(|e| {
            tls::explain(&e)
                .map(LinkError::Untrusted)
                .unwrap_or_else(|| LinkError::Unreachable(format!("{addr}: {e}")))
        })?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let mut reader = FrameReader::new(recv);
        write(
            &mut send,
            &ClientMessage::Hello {
                device_id: session.device_id,
                session: session.session.clone(),
                client_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        )
        .await?;
        let nonce = match next_message(&mut reader).await? {
            ServerMessage::Challenge { nonce } => STANDARD
                .decode(nonce.trim())
                .map_err(|_| LinkError::Protocol("the challenge is not base64".into()))?,
            ServerMessage::Refused { code, reason } => {
                return Err(LinkError::Refused { code, reason });
            }
            other => return Err(unexpected(&other)),
        };
        let signature = key.sign_challenge(session.device_id, &nonce);
        write(&mut send, &ClientMessage::Proof { signature }).await?;
        let welcome = match next_message(&mut reader).await? {
            ServerMessage::Welcome(w) => w,
            ServerMessage::Refused { code, reason } => {
                return Err(LinkError::Refused { code, reason });
            }
            other => return Err(unexpected(&other)),
        };
        Ok::<_, LinkError>((connection, send, reader, welcome))
    };
    let (connection, send, reader, welcome) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| LinkError::Unreachable(format!("{addr}: timed out")))??;
    let (tx, out) = mpsc::unbounded_channel();
    let (events, rx) = mpsc::channel(256);
    let writer = tokio::spawn(write_loop(send, out));
    tokio::spawn(read_loop(reader, events));
    Ok((
        Link {
            tx,
            rx,
            connection,
            endpoint,
            writer: Some(writer),
        },
        welcome,
    ))
}

fn unexpected(m: &ServerMessage) -> LinkError {
    let kind = serde_json::to_value(m)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    LinkError::Protocol(format!("unexpected `{kind}` during the handshake"))
}

async fn write(send: &mut quinn::SendStream, m: &ClientMessage) -> Result<(), LinkError> {
    let mut buf = Vec::new();
    proto::encode(m, &mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| LinkError::Unreachable(e.to_string()))
}

async fn write_loop(mut send: quinn::SendStream, mut out: mpsc::UnboundedReceiver<ClientMessage>) {
    let mut buf = Vec::new();
    while let Some(m) = out.recv().await {
        buf.clear();
        proto::encode(&m, &mut buf);
        if let Err(e) = send.write_all(&buf).await {
            tracing::debug!(error = %e, "control link write failed");
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn read_loop(mut reader: FrameReader, events: mpsc::Sender<LinkEvent>) {
    loop {
        match next_message(&mut reader).await {
            Ok(m) => {
                if events.send(LinkEvent::Message(Box::new(m))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = events.send(LinkEvent::Closed(e.to_string())).await;
                return;
            }
        }
    }
}

type FrameReader = proto::stream::FrameReader<quinn::RecvStream>;

/// The next message from the controller.
async fn next_message(reader: &mut FrameReader) -> Result<ServerMessage, LinkError> {
    reader.next().await.map_err(|e| match e {
        ReadError::Malformed(e) => LinkError::Protocol(e.to_string()),
        ReadError::Closed => LinkError::Unreachable("the controller closed the link".into()),
        ReadError::Io(e) => LinkError::Unreachable(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("https://ctl.example.com", "ctl.example.com", 443)]
    #[test_case("https://10.0.0.1:8443", "10.0.0.1", 8443)]
    #[test_case("https://10.0.0.1:8443/some/path", "10.0.0.1", 8443)]
    #[test_case("https://[fd00::1]:8443", "fd00::1", 8443)]
    #[test_case("https://[fd00::1]", "fd00::1", 443)]
    fn urls_parse(url: &str, host: &str, port: u16) {
        assert_eq!(host_port(url).unwrap(), (host.to_owned(), port));
    }

    #[test_case("http://ctl"; "plain http")]
    #[test_case("https://"; "empty")]
    #[test_case("https://user@ctl"; "userinfo")]
    #[test_case("https://ctl:port"; "bad port")]
    #[test_case("ctl.example.com"; "no scheme")]
    fn bad_urls_are_refused(url: &str) {
        let e = host_port(url).unwrap_err().to_string();
        assert!(e.contains("https://host[:port]"), "{e}");
    }
}
