//! The daemon: the IO shell around the [`Router`] core. One task (the engine) owns the TUN
//! device, the WireGuard UDP socket, the router, the control link's channels and the
//! session, and serves the local socket's requests. Connecting to the controller, signing
//! in and each local client run in their own tasks and talk to the engine through channels,
//! so the data path never waits on them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use model::{ResourceId, WgKey};
use proto::client::{ClientGrant, ClientMessage, DenyReason, ServerMessage, Welcome};
use proto::device::DeviceKey;
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::control::{self, Link, LinkError, LinkEvent};
use crate::http::{self, DeviceAuth, DeviceSession, Poll};
use crate::ipc::{
    self, Denial, LoginRequest, PendingLogin, Request, ResourceStatus, Response, Status,
};
use crate::router::{Action, NewTunnel, Router, RouterConfig};
use crate::state::{Session, StateDir};
use crate::system::Interface;
use crate::tls::{Fingerprint, Trust};

/// The most extra datagrams or packets handled per wake-up.
const BURST: usize = 64;
const MAX_PACKET: usize = 65535;
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the periodic work runs (session expiry and renewal, reconnects, posture).
const TICK: Duration = Duration::from_secs(1);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the device key and session live.
    pub state_dir: PathBuf,
    /// The local control socket.
    pub socket: PathBuf,
    /// The TUN device's name.
    pub tun_name: String,
    /// The data path's limits and timers.
    pub router: RouterConfig,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let state = StateDir::open(&config.state_dir)
        .with_context(|| format!("opening the state directory {}", config.state_dir.display()))?;
    let key = state.device_key().context("reading the device key")?;
    let session = match state.session() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stored session");
            None
        }
    };
    let listener = bind_socket(&config.socket)?;
    let udp = bind_udp().context("opening the WireGuard UDP socket")?;
    let (calls_tx, calls) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, calls_tx));
    let mut engine = Engine::new(config.clone(), state, key, session, udp, calls);
    tracing::info!(socket = %config.socket.display(), "postern daemon started");
    let result = engine.run().await;
    engine.teardown("the daemon stopped");
    engine.flush().await;
    for h in std::mem::take(&mut engine.closing) {
        let _ = h.await;
    }
    let _ = std::fs::remove_file(&config.socket);
    result
}

fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another postern daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    // Any local user may connect; every request is checked against the peer's credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

fn bind_udp() -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// One request from a local client, with the peer's uid and where to answer.
struct Call {
    uid: u32,
    request: Request,
    reply: oneshot::Sender<Response>,
}

async fn accept_loop(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, calls.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a local connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_client(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::debug!(error = %e, "no peer credentials");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(ipc::MAX_LINE as u64)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                if calls
                    .send(Call {
                        uid,
                        request,
                        reply,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                rx.await.unwrap_or(Response::Error {
                    message: "the daemon is stopping".into(),
                })
            }
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
        };
        let mut text = serde_json::to_string(&response).unwrap_or_default();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What the sign-in task reports.
enum LoginEvent {
    /// The user must approve in a browser.
    Started(DeviceAuth),
    /// The sign-in ended.
    Finished(Result<DeviceSession, String>),
}

struct LoginState {
    uid: u32,
    controller: String,
    trust: Trust,
    fingerprint: Option<String>,
    started: Option<oneshot::Sender<Response>>,
    pending: Option<PendingLogin>,
    waiters: Vec<oneshot::Sender<Response>>,
    task: tokio::task::JoinHandle<()>,
}

/// The outcome of one connection attempt, with its generation.
type Connected = (u64, Result<(Link, Welcome), LinkError>);

struct PendingRequest {
    resource: ResourceId,
    private_key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Down,
    Connecting,
    Up,
}

struct Engine {
    config: DaemonConfig,
    state: StateDir,
    key: DeviceKey,
    session: Option<Session>,
    signed_out_reason: Option<String>,
    paused: bool,
    link: Option<Link>,
    link_state: LinkState,
    link_error: Option<String>,
    link_generation: u64,
    connects: mpsc::Receiver<Connected>,
    connects_tx: mpsc::Sender<Connected>,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    welcome: Option<Welcome>,
    interface: Option<Interface>,
    udp: UdpSocket,
    router: Router,
    next_request: u64,
    pending: HashMap<u64, PendingRequest>,
    renew_request: Option<u64>,
    waiters: HashMap<ResourceId, Vec<oneshot::Sender<Response>>>,
    last_denial: Option<Denial>,
    /// Grants this daemon holds, remembered in the state dir.
    issued: std::collections::BTreeSet<model::GrantId>,
    /// Grants a previous run left behind, released at the next connection.
    leftover: Vec<model::GrantId>,
    closing: Vec<tokio::task::JoinHandle<()>>,
    login: Option<LoginState>,
    logins: mpsc::Receiver<LoginEvent>,
    logins_tx: mpsc::Sender<LoginEvent>,
    calls: mpsc::Receiver<Call>,
    /// Posture collection and reports, when the controller asks for them.
    reporter: Option<crate::posture::Reporter>,
    postures: mpsc::Receiver<crate::posture::Collected>,
    postures_tx: mpsc::Sender<crate::posture::Collected>,
    collecting: bool,
    next_collect: Instant,
    /// When the periodic work runs next.
    tick_at: Instant,
    tun_buf: Vec<u8>,
    net_buf: Vec<u8>,
    out_buf: Vec<u8>,
    tx_buf: Vec<u8>,
}

impl Engine {
    fn new(
        config: DaemonConfig,
        state: StateDir,
        key: DeviceKey,
        session: Option<Session>,
        udp: UdpSocket,
        calls: mpsc::Receiver<Call>,
    ) -> Self {
        let (connects_tx, connects) = mpsc::channel(4);
        let (logins_tx, logins) = mpsc::channel(8);
        let (postures_tx, postures) = mpsc::channel(2);
        let paused = state.paused();
        let leftover = state.grants();
        let router = Router::new(config.router.clone());
        Self {
            config,
            state,
            key,
            session,
            signed_out_reason: None,
            paused,
            link: None,
            link_state: LinkState::Down,
            link_error: None,
            link_generation: 0,
            connects,
            connects_tx,
            reconnect_at: Some(Instant::now()),
            backoff: MIN_BACKOFF,
            welcome: None,
            interface: None,
            udp,
            router,
            next_request: 1,
            pending: HashMap::new(),
            renew_request: None,
            waiters: HashMap::new(),
            last_denial: None,
            issued: Default::default(),
            leftover,
            closing: Vec::new(),
            login: None,
            logins,
            logins_tx,
            calls,
            reporter: None,
            postures,
            postures_tx,
            collecting: false,
            next_collect: Instant::now(),
            tick_at: Instant::now(),
            tun_buf: vec![0; MAX_PACKET],
            net_buf: vec![0; MAX_PACKET],
            out_buf: vec![0; MAX_PACKET + tunnel::OVERHEAD],
            tx_buf: Vec::with_capacity(MAX_PACKET + tunnel::OVERHEAD),
        }
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                call = self.calls.recv() => match call {
                    Some(call) => self.on_call(call).await,
                    None => return Ok(()),
                },
                event = recv_link(self.link.as_mut()) => self.on_link_event(event).await,
                Some((generation, result)) = self.connects.recv() => {
                    self.on_connected(generation, result).await
                }
                Some(event) = self.logins.recv() => self.on_login_event(event),
                Some(collected) = self.postures.recv() => self.on_posture(collected),
                received = self.udp.recv_from(&mut self.net_buf) => {
                    self.on_datagram(received).await;
                    for _ in 0..BURST {
                        let received = self.udp.try_recv_from(&mut self.net_buf);
                        if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                            break;
                        }
                        self.on_datagram(received).await;
                    }
                }
                received = recv_tun(self.interface.as_ref(), &mut self.tun_buf) => {
                    self.on_tun_packet(received).await;
                    for _ in 0..BURST {
                        let Some(i) = self.interface.as_ref() else { break };
                        let received = i.device.try_recv(&mut self.tun_buf);
                        if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                            break;
                        }
                        self.on_tun_packet(received).await;
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Checked after every wake-up, so that a busy data path cannot starve the timers.
            if Instant::now() >= deadline {
                self.on_timer().await;
            }
            self.flush().await;
        }
    }

    fn next_deadline(&self) -> Instant {
        // The once-a-second tick is a fixed point in time, not "a second from now": wake-ups
        // from local requests or traffic must not keep pushing it away.
        let mut d = self.tick_at;
        if let Some(t) = self.router.poll_timeout() {
            d = d.min(t);
        }
        if let Some(t) = self.reconnect_at {
            d = d.min(t);
        }
        d
    }

    // ---- data path ----

    async fn on_datagram(&mut self, received: io::Result<(usize, SocketAddr)>) {
        let Ok((n, from)) = received else { return };
        let now = Instant::now();
        if let Some(packet) =
            self.router
                .handle_network_input(from, &self.net_buf[..n], now, &mut self.out_buf)
            && let Some(i) = &self.interface
            && let Err(e) = i.device.send(packet).await
        {
            tracing::trace!(error = %e, "writing to the TUN device");
        }
    }

    async fn on_tun_packet(&mut self, received: io::Result<usize>) {
        let Ok(n) = received else { return };
        let now = Instant::now();
        if let Some(t) = self
            .router
            .handle_tun_input(&self.tun_buf[..n], now, &mut self.out_buf)
            && let Err(e) = self.udp.send_to(t.payload, t.dst).await
        {
            tracing::trace!(error = %e, "sending a datagram");
        }
    }

    /// Sends what the router queued and acts on what it asks for.
    async fn flush(&mut self) {
        while let Some(dst) = self.router.poll_transmit(&mut self.tx_buf) {
            if let Err(e) = self.udp.send_to(&self.tx_buf, dst).await {
                tracing::trace!(error = %e, "sending a datagram");
            }
        }
        while let Some(p) = self.router.poll_tun_write() {
            if let Some(i) = &self.interface {
                let _ = i.device.send(&p).await;
            }
        }
        while let Some(action) = self.router.poll_action() {
            self.on_action(action);
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::RequestAccess { resource, renewal } => {
                let posture = self.posture_report();
                let Some(link) = &self.link else {
                    self.router.failed(resource, Instant::now());
                    self.answer_waiters(
                        resource,
                        Response::Error {
                            message: "not connected to the controller".into(),
                        },
                    );
                    return;
                };
                let mut private_key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut private_key);
                let public_key = WgKey::from(tunnel::public_key(&private_key)).to_string();
                let request = self.next_request;
                self.next_request += 1;
                tracing::debug!(%resource, renewal, request, "asking for access");
                let _ = link.tx.send(ClientMessage::RequestAccess {
                    request,
                    resource_id: resource,
                    public_key,
                    posture,
                });
                self.pending.insert(
                    request,
                    PendingRequest {
                        resource,
                        private_key,
                    },
                );
            }
            Action::Release { grant } => {
                tracing::debug!(%grant, "releasing grant");
                if let Some(link) = &self.link
                    && link
                        .tx
                        .send(ClientMessage::Release { grant_id: grant })
                        .is_ok()
                {
                    self.issued.remove(&grant);
                    self.save_grants();
                }
            }
            Action::GatewayRefused { resource } => {
                let reasons = vec![DenyReason {
                    code: "gateway_refused".into(),
                    message: "the gateway refused the traffic although access was granted; try again or ask an admin".into(),
                }];
                self.record_denial(resource, reasons.clone());
                self.answer_waiters(
                    resource,
                    Response::Denied {
                        resource: self.resource_name(resource),
                        reasons,
                    },
                );
            }
        }
    }

    // ---- controller ----

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if now >= self.tick_at {
            self.tick_at = now + TICK;
        }
        self.router.handle_timeout(now);
        self.collect_posture(now);
        let wall = Timestamp::now();
        if let Some(s) = &self.session
            && s.expired(wall)
        {
            self.sign_out("the device session ended".into());
            return;
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            self.start_connect();
        }
        if let (Some(link), Some(s)) = (&self.link, &self.session)
            && self.renew_request.is_none()
            && wall >= s.renew_at()
        {
            let request = self.next_request;
            self.next_request += 1;
            self.renew_request = Some(request);
            tracing::debug!("renewing the device session");
            let _ = link.tx.send(ClientMessage::RenewSession { request });
        }
    }

    fn start_connect(&mut self) {
        let Some(session) = self.session.clone() else {
            return;
        };
        if self.paused || self.link.is_some() || self.link_state == LinkState::Connecting {
            return;
        }
        self.link_state = LinkState::Connecting;
        self.link_generation += 1;
        let generation = self.link_generation;
        let trust = trust_of(&session);
        let key = self.key.clone();
        let tx = self.connects_tx.clone();
        tokio::spawn(async move {
            let result = control::connect(&session, &trust, &key).await;
            let _ = tx.send((generation, result)).await;
        });
    }

    fn schedule_reconnect(&mut self) {
        let jitter = rand::random::<f64>() * 0.5 + 0.5;
        let delay = self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.reconnect_at = Some(Instant::now() + delay);
        tracing::debug!(?delay, "reconnecting later");
    }

    async fn on_connected(&mut self, generation: u64, result: Result<(Link, Welcome), LinkError>) {
        if generation != self.link_generation || self.session.is_none() || self.paused {
            return;
        }
        self.link_state = LinkState::Down;
        match result {
            Ok((link, welcome)) => {
                tracing::info!(
                    user = %welcome.user_name,
                    device = %welcome.device_id,
                    resources = welcome.resources.len(),
                    "connected to the controller"
                );
                for grant_id in std::mem::take(&mut self.leftover) {
                    tracing::debug!(grant = %grant_id, "releasing a grant left by an earlier run");
                    let _ = link.tx.send(ClientMessage::Release { grant_id });
                }
                self.save_grants();
                self.link = Some(link);
                self.link_state = LinkState::Up;
                self.link_error = None;
                self.backoff = MIN_BACKOFF;
                if let Some(s) = &mut self.session
                    && (s.user_name != welcome.user_name
                        || s.expires_at != welcome.session_expires_at)
                {
                    s.user_name = welcome.user_name.clone();
                    s.expires_at = welcome.session_expires_at;
                    if let Err(e) = self.state.save_session(s) {
                        tracing::warn!(error = %e, "storing the session");
                    }
                }
                if welcome.posture_interval_secs > 0 {
                    let interval = Duration::from_secs(welcome.posture_interval_secs);
                    let mut reporter = crate::posture::Reporter::new(
                        self.key.clone(),
                        welcome.device_id,
                        welcome.posture_processes.clone(),
                        interval,
                    );
                    // Keep what is known, so the first request after a reconnect has a report.
                    if let Some(old) = self.reporter.take()
                        && let Some(latest) = old.latest()
                    {
                        let _ = reporter.observe(latest.clone(), Instant::now());
                    }
                    self.reporter = Some(reporter);
                    self.next_collect = Instant::now();
                    tracing::info!(
                        interval_secs = welcome.posture_interval_secs,
                        "reporting posture"
                    );
                } else {
                    self.reporter = None;
                }
                self.apply_welcome(welcome).await;
            }
            Err(LinkError::Refused { code, reason }) if code.needs_login() => {
                tracing::warn!(%reason, "the controller ended the device session");
                self.sign_out(reason);
            }
            Err(e) => {
                let first = self.link_error.is_none();
                if first {
                    tracing::warn!(error = %e, "cannot connect to the controller; retrying");
                } else {
                    tracing::debug!(error = %e, "cannot connect to the controller; retrying");
                }
                self.link_error = Some(e.to_string());
                self.schedule_reconnect();
            }
        }
    }

    async fn apply_welcome(&mut self, welcome: Welcome) {
        let recreate = self
            .interface
            .as_ref()
            .is_none_or(|i| i.address != welcome.tunnel_address);
        if recreate {
            self.interface = None;
            match Interface::open(&self.config.tun_name, welcome.tunnel_address) {
                Ok(i) => {
                    tracing::info!(interface = %i.name, "TUN device up");
                    self.interface = Some(i);
                }
                Err(e) => {
                    tracing::error!(error = %e, name = %self.config.tun_name, "cannot create the TUN device (needs CAP_NET_ADMIN)");
                    self.link_error = Some(format!("cannot create the TUN device: {e}"));
                }
            }
        }
        self.router.set_resources(welcome.resources.clone());
        self.welcome = Some(welcome);
        self.update_routes().await;
    }

    async fn update_routes(&mut self) {
        let Some(i) = &mut self.interface else { return };
        let nets: Vec<ipnet::IpNet> = self
            .welcome
            .iter()
            .flat_map(|w| w.resources.iter())
            .flat_map(|r| r.addresses.iter().copied())
            .collect();
        if let Err(e) = i.set_routes(&nets).await {
            tracing::error!(error = %e, "routing the resources into the TUN device");
        }
    }

    async fn on_link_event(&mut self, event: Option<LinkEvent>) {
        match event {
            Some(LinkEvent::Message(m)) => self.on_message(*m).await,
            Some(LinkEvent::Closed(reason)) => self.link_lost(reason),
            None => self.link_lost("the control link ended".into()),
        }
    }

    fn link_lost(&mut self, reason: String) {
        tracing::warn!(%reason, "lost the controller; open tunnels keep working");
        self.link = None;
        self.link_state = LinkState::Down;
        self.link_error = Some(reason);
        self.renew_request = None;
        self.pending.clear();
        self.router.abandon_requests(Instant::now());
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.send(Response::Error {
                    message: "lost the connection to the controller".into(),
                });
            }
        }
        self.schedule_reconnect();
    }

    async fn on_message(&mut self, m: ServerMessage) {
        let now = Instant::now();
        match m {
            ServerMessage::Granted { request, grant } => {
                let Some(p) = self.pending.remove(&request) else {
                    return;
                };
                self.on_granted(p, grant, now).await;
            }
            ServerMessage::Denied { request, reasons } => {
                let Some(p) = self.pending.remove(&request) else {
                    return;
                };
                self.router.denied(p.resource, now);
                self.record_denial(p.resource, reasons.clone());
                self.answer_waiters(
                    p.resource,
                    Response::Denied {
                        resource: self.resource_name(p.resource),
                        reasons,
                    },
                );
            }
            ServerMessage::Failed { request, message } => {
                let Some(p) = self.pending.remove(&request) else {
                    return;
                };
                tracing::warn!(resource = %p.resource, %message, "access request failed");
                self.router.failed(p.resource, now);
                self.answer_waiters(p.resource, Response::Error { message });
            }
            ServerMessage::SessionRenewed {
                request,
                session,
                expires_at,
            } => {
                if self.renew_request != Some(request) {
                    return;
                }
                self.renew_request = None;
                if let Some(s) = &mut self.session {
                    s.session = session;
                    s.issued_at = Timestamp::now();
                    s.expires_at = expires_at;
                    match self.state.save_session(s) {
                        Ok(()) => tracing::debug!(%expires_at, "device session renewed"),
                        Err(e) => tracing::warn!(error = %e, "storing the renewed session"),
                    }
                }
            }
            ServerMessage::Revoked { grant_id, reason } => {
                if self.issued.remove(&grant_id) {
                    self.save_grants();
                }
                if let Some(resource) = self.router.revoked(grant_id) {
                    self.pending.retain(|_, p| p.resource != resource);
                    tracing::info!(%resource, grant = %grant_id, %reason, "grant revoked");
                }
            }
            ServerMessage::Resources { resources } => {
                self.router.set_resources(resources.clone());
                if let Some(w) = &mut self.welcome {
                    w.resources = resources;
                }
                self.update_routes().await;
            }
            ServerMessage::PostureAck { seq, error } => {
                if let Some(error) = error {
                    tracing::warn!(seq, %error, "posture report refused");
                }
            }
            ServerMessage::Refused { code, reason } => {
                if code.needs_login() {
                    self.sign_out(reason);
                } else {
                    self.link_lost(reason);
                }
            }
            ServerMessage::Challenge { .. } | ServerMessage::Welcome(_) => {
                tracing::debug!("unexpected handshake message after the handshake");
            }
        }
    }

    async fn on_granted(&mut self, p: PendingRequest, grant: ClientGrant, now: Instant) {
        let name = self.resource_name(p.resource);
        let tunnel = match new_tunnel(&grant, p.private_key).await {
            Ok(t) => t,
            Err(message) => {
                tracing::warn!(resource = %name, %message, "unusable grant");
                self.router.failed(p.resource, now);
                if let Some(link) = &self.link {
                    let _ = link.tx.send(ClientMessage::Release {
                        grant_id: grant.grant_id,
                    });
                }
                self.answer_waiters(p.resource, Response::Error { message });
                return;
            }
        };
        tracing::info!(resource = %name, grant = %grant.grant_id, gateway = %grant.gateway_endpoint, "access granted");
        if let Err(e) = self.router.granted(p.resource, tunnel, now) {
            tracing::debug!(error = %e, "grant for a resource no longer listed");
            if let Some(link) = &self.link {
                let _ = link.tx.send(ClientMessage::Release {
                    grant_id: grant.grant_id,
                });
            }
            return;
        }
        self.issued.insert(grant.grant_id);
        self.save_grants();
        self.answer_waiters(
            p.resource,
            Response::Granted {
                resource: name,
                expires_at: grant.expires_at,
            },
        );
    }

    /// The latest posture report signed afresh, sent with every access request (reports also
    /// go out on change and every `Welcome::posture_interval_secs` as
    /// `ClientMessage::Posture`).
    fn posture_report(&mut self) -> Option<proto::device::SignedReport> {
        self.reporter.as_mut()?.for_request()
    }

    /// Starts a posture collection on a blocking thread when one is due.
    fn collect_posture(&mut self, now: Instant) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        if self.collecting || now < self.next_collect {
            return;
        }
        self.collecting = true;
        self.next_collect = now + crate::posture::COLLECT_EVERY;
        tracing::trace!("collecting posture");
        let probe = reporter.probe();
        let tx = self.postures_tx.clone();
        tokio::spawn(async move {
            if let Some(c) = crate::posture::collect(probe).await {
                let _ = tx.send(c).await;
            }
        });
    }

    /// A collection finished: sends a report when the posture changed or is due.
    fn on_posture(&mut self, collected: crate::posture::Collected) {
        self.collecting = false;
        tracing::trace!(firewall = ?collected.report.firewall, "posture collected");
        let Some(reporter) = &mut self.reporter else {
            return;
        };
        if let (Some(report), Some(link)) =
            (reporter.observe(collected, Instant::now()), &self.link)
        {
            tracing::debug!(seq = report.seq, "sending a posture report");
            let _ = link.tx.send(ClientMessage::Posture { report });
        }
    }

    fn save_grants(&self) {
        let ids: Vec<model::GrantId> = self.issued.iter().chain(&self.leftover).copied().collect();
        if let Err(e) = self.state.save_grants(&ids) {
            tracing::warn!(error = %e, "remembering grants");
        }
    }

    fn record_denial(&mut self, resource: ResourceId, reasons: Vec<DenyReason>) {
        let name = self.resource_name(resource);
        let text: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
        tracing::warn!(resource = %name, reasons = %text.join("; "), "access denied");
        self.last_denial = Some(Denial {
            resource: name,
            reasons,
            at: Timestamp::now(),
        });
    }

    fn answer_waiters(&mut self, resource: ResourceId, response: Response) {
        for w in self.waiters.remove(&resource).unwrap_or_default() {
            let _ = w.send(response.clone());
        }
    }

    fn resource_name(&self, id: ResourceId) -> String {
        self.welcome
            .iter()
            .flat_map(|w| w.resources.iter())
            .find(|r| r.id == id)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Removes tunnels, routes and the TUN device, and drops the control link (after the
    /// releases are flushed by the caller's next `flush`).
    fn teardown(&mut self, why: &str) {
        tracing::info!(why, "tearing down tunnels, routes and the TUN device");
        self.router.close_all();
        while let Some(action) = self.router.poll_action() {
            self.on_action(action);
        }
        self.router.set_resources(Vec::new());
        if let Some(link) = self.link.take() {
            self.closing.retain(|h| !h.is_finished());
            self.closing.push(tokio::spawn(link.close()));
        }
        self.link_state = LinkState::Down;
        self.link_generation += 1;
        self.reconnect_at = None;
        self.welcome = None;
        self.interface = None;
        self.pending.clear();
        self.renew_request = None;
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.send(Response::Error {
                    message: why.to_owned(),
                });
            }
        }
    }

    fn sign_out(&mut self, reason: String) {
        self.teardown(&reason);
        self.session = None;
        // Grants of an ended session cannot be released any more; they expire.
        self.issued.clear();
        self.leftover.clear();
        self.save_grants();
        if let Err(e) = self.state.clear_session() {
            tracing::warn!(error = %e, "removing the session");
        }
        self.signed_out_reason = Some(reason);
    }

    // ---- local requests ----

    fn owner(&self) -> Option<u32> {
        self.session
            .as_ref()
            .map(|s| s.uid)
            .or_else(|| self.login.as_ref().map(|l| l.uid))
    }

    async fn on_call(&mut self, call: Call) {
        let Call {
            uid,
            request,
            reply,
        } = call;
        if let Err(refusal) = ipc::authorize(uid, self.owner(), &request) {
            let _ = reply.send(Response::Error {
                message: refusal.to_string(),
            });
            return;
        }
        let response = match request {
            Request::Status => {
                let status = self.status();
                let privileged = uid == 0 || self.owner().is_none_or(|o| o == uid);
                Response::Status(Box::new(if privileged {
                    status
                } else {
                    ipc::redact(&status)
                }))
            }
            Request::Login(l) => {
                if let Some(answer) = self.start_login(uid, l) {
                    let _ = reply.send(answer);
                } else if let Some(login) = &mut self.login {
                    login.started = Some(reply);
                }
                return;
            }
            Request::LoginWait => {
                if let Some(login) = &mut self.login {
                    login.waiters.push(reply);
                    return;
                }
                match &self.session {
                    Some(s) => Response::SignedIn {
                        user_name: s.user_name.clone(),
                        controller: s.controller.clone(),
                    },
                    None => Response::Error {
                        message: "no sign-in is in progress".into(),
                    },
                }
            }
            Request::Logout => {
                if let Some(l) = self.login.take() {
                    l.task.abort();
                }
                if self.session.is_some() {
                    self.sign_out("signed out".into());
                    self.signed_out_reason = None;
                    tracing::info!("signed out");
                }
                Response::Ok
            }
            Request::Up => {
                self.paused = false;
                if let Err(e) = self.state.set_paused(false) {
                    tracing::warn!(error = %e, "storing the paused flag");
                }
                self.backoff = MIN_BACKOFF;
                self.start_connect();
                Response::Ok
            }
            Request::Down => {
                if self.session.is_none() {
                    Response::Error {
                        message: "nobody is signed in".into(),
                    }
                } else {
                    self.teardown("paused");
                    self.paused = true;
                    if let Err(e) = self.state.set_paused(true) {
                        tracing::warn!(error = %e, "storing the paused flag");
                    }
                    Response::Ok
                }
            }
            Request::Connect { resource } => {
                if self.link.is_none() {
                    Response::Error {
                        message: format!(
                            "not connected to the controller ({})",
                            self.status().state
                        ),
                    }
                } else {
                    match self.router.find(&resource).map(|r| (r.id, r.name.clone())) {
                        None => Response::Error {
                            message: format!(
                                "no resource named `{resource}`: `postern resources` lists them"
                            ),
                        },
                        Some((id, name)) => {
                            if self.router.request(id, Instant::now()) {
                                self.waiters.entry(id).or_default().push(reply);
                                return;
                            }
                            let expires_at = self
                                .router
                                .status(Instant::now())
                                .into_iter()
                                .find(|s| s.resource.id == id)
                                .and_then(|s| s.expires_at)
                                .unwrap_or_else(Timestamp::now);
                            Response::Granted {
                                resource: name,
                                expires_at,
                            }
                        }
                    }
                }
            }
        };
        let _ = reply.send(response);
    }

    /// Starts a sign-in; returns the immediate answer, or `None` when the answer comes once
    /// the controller has answered.
    fn start_login(&mut self, uid: u32, l: LoginRequest) -> Option<Response> {
        let error = |message: String| Some(Response::Error { message });
        if let Some(s) = &self.session {
            return error(format!(
                "already signed in as {} to {}; run `postern logout` first",
                s.user_name, s.controller
            ));
        }
        if let Some(login) = &self.login {
            return match &login.pending {
                Some(p) if login.uid == uid => Some(Response::LoginStarted {
                    verification_uri: p.verification_uri.clone(),
                    user_code: p.user_code.clone(),
                    verification_uri_complete: p.verification_uri.clone(),
                }),
                _ => error("a sign-in is already in progress".into()),
            };
        }
        let Some(controller) = l.controller.map(|c| c.trim_end_matches('/').to_owned()) else {
            return error(
                "give the controller's URL: postern login https://controller.example.com".into(),
            );
        };
        if let Err(e) = control::host_port(&controller) {
            return error(e.to_string());
        }
        let pin = match l.fingerprint.as_deref().map(str::parse::<Fingerprint>) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => return error(e.to_string()),
            None => None,
        };
        let trust = Trust {
            pin,
            ca_pem: l.ca_pem.clone(),
        };
        let http = match http::Controller::new(&controller, &trust) {
            Ok(h) => h,
            Err(e) => return error(e.to_string()),
        };
        let public_key = self.key.public_key();
        let events = self.logins_tx.clone();
        let name = l.name.clone();
        let enroll_key = l.enroll_key.clone();
        let task = tokio::spawn(async move {
            let result = match enroll_key {
                Some(k) => http
                    .enroll(&k, &name, &public_key)
                    .await
                    .map_err(|e| e.to_string()),
                None => device_auth(&http, &public_key, &name, &events).await,
            };
            let _ = events.send(LoginEvent::Finished(result)).await;
        });
        tracing::info!(%controller, "signing in");
        self.signed_out_reason = None;
        self.login = Some(LoginState {
            uid,
            controller,
            trust,
            fingerprint: pin.map(|f| f.to_string()),
            started: None,
            pending: None,
            waiters: Vec::new(),
            task,
        });
        None
    }

    fn on_login_event(&mut self, event: LoginEvent) {
        let Some(login) = &mut self.login else { return };
        match event {
            LoginEvent::Started(auth) => {
                let complete = auth
                    .verification_uri_complete
                    .clone()
                    .unwrap_or_else(|| auth.verification_uri.clone());
                login.pending = Some(PendingLogin {
                    verification_uri: auth.verification_uri.clone(),
                    user_code: auth.user_code.clone(),
                });
                if let Some(r) = login.started.take() {
                    let _ = r.send(Response::LoginStarted {
                        verification_uri: auth.verification_uri,
                        user_code: auth.user_code,
                        verification_uri_complete: complete,
                    });
                }
            }
            LoginEvent::Finished(result) => {
                let Some(login) = self.login.take() else {
                    return;
                };
                let response = match result {
                    Ok(ds) => {
                        let session = Session {
                            controller: login.controller.clone(),
                            fingerprint: login.fingerprint.clone(),
                            ca_pem: login.trust.ca_pem.clone(),
                            device_id: ds.device_id,
                            user_id: ds.user_id,
                            user_name: ds.user_name.clone(),
                            session: ds.session,
                            issued_at: Timestamp::now(),
                            expires_at: ds.session_expires_at,
                            uid: login.uid,
                        };
                        match self.state.save_session(&session) {
                            Ok(()) => {
                                tracing::info!(user = %session.user_name, device = %session.device_id, "signed in");
                                self.session = Some(session);
                                self.backoff = MIN_BACKOFF;
                                self.reconnect_at = None;
                                self.start_connect();
                                Response::SignedIn {
                                    user_name: ds.user_name,
                                    controller: login.controller,
                                }
                            }
                            Err(e) => Response::Error {
                                message: format!("storing the session: {e}"),
                            },
                        }
                    }
                    Err(message) => {
                        tracing::warn!(%message, "sign-in failed");
                        Response::Error { message }
                    }
                };
                if let Some(r) = login.started {
                    let _ = r.send(response.clone());
                }
                for w in login.waiters {
                    let _ = w.send(response.clone());
                }
            }
        }
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let state = match (&self.session, &self.login) {
            (None, Some(_)) => "signing_in",
            (None, None) => "signed_out",
            (Some(_), _) if self.paused => "paused",
            (Some(_), _) => match self.link_state {
                LinkState::Up => "connected",
                _ if self.link_error.is_some() => "disconnected",
                _ => "connecting",
            },
        };
        let reason = match state {
            "signed_out" => self.signed_out_reason.clone(),
            "disconnected" => self.link_error.clone(),
            _ => None,
        };
        let resources = self
            .router
            .status(now)
            .into_iter()
            .map(|s| ResourceStatus {
                id: s.resource.id.to_string(),
                name: s.resource.name.clone(),
                addresses: s.resource.addresses.clone(),
                ports: s.resource.ports.iter().map(port_text).collect(),
                tunnel: s.state.into(),
                grant_id: s.grant.map(|g| g.to_string()),
                gateway: s.gateway.map(|g| g.to_string()),
                expires_at: s.expires_at,
            })
            .collect();
        Status {
            state: state.into(),
            reason,
            controller: self
                .session
                .as_ref()
                .map(|s| s.controller.clone())
                .or_else(|| self.login.as_ref().map(|l| l.controller.clone())),
            user: self.session.as_ref().map(|s| s.user_name.clone()),
            uid: self.owner(),
            device_id: self.session.as_ref().map(|s| s.device_id.to_string()),
            device_name: self.welcome.as_ref().map(|w| w.device_name.clone()),
            interface: self.interface.as_ref().map(|i| i.name.clone()),
            tunnel_address: self.welcome.as_ref().map(|w| w.tunnel_address),
            session_expires_at: self.session.as_ref().map(|s| s.expires_at),
            resources,
            last_denial: self.last_denial.clone(),
            login: self.login.as_ref().and_then(|l| l.pending.clone()),
            posture: self
                .reporter
                .as_ref()
                .and_then(|r| r.latest())
                .map(|c| {
                    let f = &c.findings;
                    [
                        ("disk_encryption", &f.disk_encryption),
                        ("firewall", &f.firewall),
                        ("secure_boot", &f.secure_boot),
                        ("screen_lock", &f.screen_lock),
                    ]
                    .into_iter()
                    .map(|(check, finding)| crate::ipc::PostureCheck {
                        check: check.into(),
                        state: finding.state,
                        detail: format!("{} ({})", finding.detail, finding.source),
                    })
                    .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn port_text(p: &model::PortRule) -> String {
    match p.protocol {
        model::Protocol::Icmp => "icmp".into(),
        proto if p.first == 1 && p.last == u16::MAX => proto.as_str().into(),
        proto if p.first == p.last => format!("{}/{}", proto.as_str(), p.first),
        proto => format!("{}/{}-{}", proto.as_str(), p.first, p.last),
    }
}

fn trust_of(s: &Session) -> Trust {
    Trust {
        pin: s.fingerprint.as_deref().and_then(|f| f.parse().ok()),
        ca_pem: s.ca_pem.clone(),
    }
}

async fn recv_link(link: Option<&mut Link>) -> Option<LinkEvent> {
    match link {
        Some(l) => l.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_tun(interface: Option<&Interface>, buf: &mut [u8]) -> io::Result<usize> {
    match interface {
        Some(i) => i.device.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Runs the device authorization flow until approval, refusal or expiry.
async fn device_auth(
    http: &http::Controller,
    public_key: &str,
    name: &str,
    events: &mpsc::Sender<LoginEvent>,
) -> Result<DeviceSession, String> {
    let auth = http
        .device_auth(public_key, name)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(auth.expires_in.max(1));
    let mut interval = Duration::from_secs(auth.interval.clamp(1, 60));
    let code = auth.device_code.clone();
    let _ = events.send(LoginEvent::Started(auth)).await;
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() >= deadline {
            return Err(
                "the code expired before it was approved; run `postern login` again".into(),
            );
        }
        match http.poll_token(&code).await {
            Ok(Poll::Approved(s)) => return Ok(*s),
            Ok(Poll::Pending) => {}
            Ok(Poll::SlowDown) => interval += Duration::from_secs(5),
            Ok(Poll::Denied) => return Err("the sign-in was refused in the browser".into()),
            Ok(Poll::Expired) => {
                return Err(
                    "the code expired before it was approved; run `postern login` again".into(),
                );
            }
            Err(e @ http::HttpError::Unreachable { .. }) => {
                tracing::debug!(error = %e, "polling for approval");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Turns a grant into what the router needs (its keys were decoded with the message).
async fn new_tunnel(grant: &ClientGrant, private_key: [u8; 32]) -> Result<NewTunnel, String> {
    let gateway_public_key = grant.gateway_public_key.to_bytes();
    let preshared_key = grant.preshared_key.to_bytes();
    let gateway = match grant.gateway_endpoint.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(grant.gateway_endpoint.as_str())
            .await
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4))
            .ok_or_else(|| format!("cannot resolve the gateway {}", grant.gateway_endpoint))?,
    };
    let wall = Timestamp::now();
    let left = grant.expires_at.duration_since(wall);
    let expires_in = Duration::try_from(left).unwrap_or(Duration::ZERO);
    if expires_in.is_zero() {
        return Err("the grant has already expired (is the clock right?)".into());
    }
    Ok(NewTunnel {
        grant: grant.grant_id,
        private_key,
        gateway_public_key,
        preshared_key,
        gateway,
        expires_in,
        expires_at: grant.expires_at,
    })
}
