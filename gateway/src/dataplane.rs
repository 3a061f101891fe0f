//! The data plane: one tokio task that owns the UDP socket, the TUN device and the
//! [`GatewayTunnel`], feeds it every datagram, packet, timeout and grant change, and writes
//! its outputs. Other tasks reach it only through a [`DataPlaneHandle`].
//!
//! Per packet nothing is allocated: receive and output buffers are made once, and queued
//! transmits recycle their buffers through `poll_transmit`. After each wake-up it drains up
//! to [`BURST`] more ready datagrams or packets without going back through the scheduler.
//! Real batching (`recvmmsg`/`sendmmsg`, UDP GSO/GRO, TUN offload) is a later optimisation.
//!
//! The data plane also keeps the controller grace ([`Grace`]): a full sync is contact with
//! the controller, the control link reports when it is lost, and when the grace runs out
//! without contact every grant is dropped the way a revocation drops it. Because the grants
//! and the grace clock live in this one task, a full sync and the drop never interleave.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;
use model::GrantId;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tun_rs::{AsyncDevice, DeviceBuilder};
use tunnel::{Event, GatewayTunnel, GrantConfig, GrantError, OVERHEAD, Stats};

use crate::grace::Grace;

/// The most extra datagrams or packets handled per wake-up before looking at other inputs.
const BURST: usize = 64;
/// Largest UDP payload and largest IP packet read from the TUN device.
const MAX_PACKET: usize = 65535;
/// The socket buffer size asked for, in each direction.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// The TUN device's MTU: WireGuard's usual 1420, so that a full packet still fits a 1500-byte
/// path once encapsulated.
pub(crate) const TUN_MTU: u16 = 1420;
/// Consecutive receive errors after which the data plane gives up.
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

/// Counters and the grant count of the data plane at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The core's counters.
    pub stats: Stats,
    /// The number of current grants (WireGuard peers).
    pub grants: usize,
    /// Grants dropped because the controller grace ran out, since start.
    pub dropped_offline: u64,
    /// Whether the grace of the current controller outage has run out (every grant was
    /// dropped and no full sync has come since).
    pub grace_expired: bool,
}

/// What converging to a full sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Grants added or updated.
    pub applied: usize,
    /// Grants removed because the controller no longer lists them.
    pub removed: usize,
    /// Grants the core refused (already expired, duplicate key, ...).
    pub failed: usize,
}

/// Why the data plane stopped or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The data plane task is gone.
    #[error("the data plane has stopped")]
    Stopped,
    /// The UDP socket or TUN device failed for good.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

enum Command {
    Sync {
        grants: Vec<GrantConfig>,
        done: oneshot::Sender<SyncReport>,
    },
    Add {
        grant: Box<GrantConfig>,
        done: oneshot::Sender<Result<(), GrantError>>,
    },
    Remove {
        id: GrantId,
        done: oneshot::Sender<bool>,
    },
    LinkLost(oneshot::Sender<()>),
    Snapshot(oneshot::Sender<Snapshot>),
}

/// Sends grant changes to the data plane and reads its counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DataPlaneHandle {
    tx: mpsc::Sender<Command>,
}

impl DataPlaneHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DataPlaneError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(make(done))
            .await
            .map_err(|_| DataPlaneError::Stopped)?;
        rx.await.map_err(|_| DataPlaneError::Stopped)
    }

    /// Converges to exactly `grants`; returns once applied. Only a full sync from the
    /// controller may call this: it is contact with the controller and stops the grace clock.
    pub async fn sync(&self, grants: Vec<GrantConfig>) -> Result<SyncReport, DataPlaneError> {
        self.call(|done| Command::Sync { grants, done }).await
    }

    /// Adds or renews a grant; returns once applied.
    pub async fn add(&self, grant: GrantConfig) -> Result<Result<(), GrantError>, DataPlaneError> {
        self.call(|done| Command::Add {
            grant: Box::new(grant),
            done,
        })
        .await
    }

    /// Removes a grant at once; returns whether it existed.
    pub async fn remove(&self, id: GrantId) -> Result<bool, DataPlaneError> {
        self.call(|done| Command::Remove { id, done }).await
    }

    /// The control link to the controller is gone, or a connection ended before its full
    /// sync: the grace clock runs (from now, unless an outage is already under way).
    pub async fn link_lost(&self) -> Result<(), DataPlaneError> {
        self.call(Command::LinkLost).await
    }

    /// The current counters.
    pub async fn snapshot(&self) -> Result<Snapshot, DataPlaneError> {
        self.call(Command::Snapshot).await
    }

    /// A data plane without sockets: a task that applies grant changes to `tunnel`, runs its
    /// timers and the controller grace, and answers snapshots. For tests of the control link.
    pub fn without_io(
        tunnel: GatewayTunnel,
        grace: Duration,
    ) -> (Self, tokio::task::JoinHandle<GatewayTunnel>) {
        let (tx, mut rx) = mpsc::channel(64);
        let mut core = Core::new(tunnel, grace, Instant::now());
        let task = tokio::spawn(async move {
            loop {
                let deadline = core.deadline();
                tokio::select! {
                    biased;
                    command = rx.recv() => match command {
                        Some(c) => core.apply(c, Instant::now()),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => core.handle_timeout(Instant::now()),
                }
                // No IO: nothing is sent, and events are only logged by the real data plane.
                while core.tunnel.poll_event().is_some() {}
            }
            core.tunnel
        });
        (Self { tx }, task)
    }
}

/// Converges `tunnel` to exactly `grants`: removes every grant not listed, then adds or
/// updates each listed one (an update with the same keys keeps the WireGuard session).
pub fn converge(
    tunnel: &mut GatewayTunnel,
    grants: Vec<GrantConfig>,
    now: Instant,
    wall_now: Timestamp,
) -> SyncReport {
    let mut report = SyncReport::default();
    let wanted: std::collections::HashSet<GrantId> = grants.iter().map(|g| g.id).collect();
    let stale: Vec<GrantId> = tunnel.grants().filter(|id| !wanted.contains(id)).collect();
    for id in stale {
        tunnel.remove_grant(id);
        tracing::debug!(grant = %id, "grant removed by full sync");
        report.removed += 1;
    }
    for grant in grants {
        let id = grant.id;
        match tunnel.add_grant(grant, now, wall_now) {
            Ok(()) => report.applied += 1,
            Err(e) => {
                log_grant_error(id, &e);
                report.failed += 1;
            }
        }
    }
    report
}

fn log_grant_error(id: GrantId, e: &GrantError) {
    match e {
        GrantError::AlreadyExpired(_) => tracing::debug!(grant = %id, "grant already expired"),
        _ => tracing::warn!(grant = %id, error = %e, "grant refused"),
    }
}

/// The tunnel core with the controller grace: what the data plane task owns besides its IO.
struct Core {
    tunnel: GatewayTunnel,
    grace: Grace,
    dropped_offline: u64,
}

impl Core {
    fn new(tunnel: GatewayTunnel, grace: Duration, now: Instant) -> Self {
        Self {
            tunnel,
            grace: Grace::new(grace, now),
            dropped_offline: 0,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run: the tunnel's next
    /// timer or the end of the grace, whichever comes first (an hour from now if neither).
    fn deadline(&self) -> tokio::time::Instant {
        let next = match (self.tunnel.poll_timeout(), self.grace.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.tunnel.handle_timeout(now);
        self.check_grace(now);
    }

    /// Drops every grant, once, when the grace has run out without contact.
    fn check_grace(&mut self, now: Instant) {
        if !self.grace.poll(now) {
            return;
        }
        let ids: Vec<GrantId> = self.tunnel.grants().collect();
        for &id in &ids {
            // The same path as a revocation: the peer and its sessions go at once.
            self.tunnel.remove_grant(id);
        }
        self.dropped_offline += ids.len() as u64;
        let grace_s = self.grace.grace().as_secs_f64();
        if ids.is_empty() {
            tracing::info!(
                grace_s,
                "no contact with the controller for the whole grace; holding no grants until it is back"
            );
        } else {
            tracing::warn!(
                dropped = ids.len(),
                grace_s,
                "no contact with the controller for the whole grace: dropped every grant until it is back"
            );
        }
    }

    fn apply(&mut self, command: Command, now: Instant) {
        match command {
            Command::Sync { grants, done } => {
                let report = converge(&mut self.tunnel, grants, now, Timestamp::now());
                if self.grace.contact() {
                    tracing::info!(
                        grants = self.tunnel.grant_count(),
                        "in contact with the controller again: the full sync restored its grants"
                    );
                }
                let _ = done.send(report);
            }
            Command::Add { grant, done } => {
                let id = grant.id;
                let result = self.tunnel.add_grant(*grant, now, Timestamp::now());
                if let Err(e) = &result {
                    log_grant_error(id, e);
                }
                let _ = done.send(result);
            }
            Command::Remove { id, done } => {
                let _ = done.send(self.tunnel.remove_grant(id));
            }
            Command::LinkLost(done) => {
                self.grace.lost(now);
                // A grace of zero drops at once, before the link is told it is done.
                self.check_grace(now);
                let _ = done.send(());
            }
            Command::Snapshot(done) => {
                let _ = done.send(Snapshot {
                    stats: self.tunnel.stats().clone(),
                    grants: self.tunnel.grant_count(),
                    dropped_offline: self.dropped_offline,
                    grace_expired: self.grace.expired(),
                });
            }
        }
    }
}

/// The gateway's event loop over a UDP socket, a TUN device and the tunnel core.
pub struct DataPlane {
    core: Core,
    socket: UdpSocket,
    tun: AsyncDevice,
    commands: mpsc::Receiver<Command>,
    net_buf: Vec<u8>,
    tun_buf: Vec<u8>,
    out_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    net_errors: u32,
    tun_errors: u32,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("tunnel", &self.core.tunnel)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// A data plane over an open socket and TUN device, and the handle to reach it. `grace`
    /// is the controller grace (`--controller-grace`); its clock starts now, out of contact.
    pub fn new(
        tunnel: GatewayTunnel,
        socket: UdpSocket,
        tun: AsyncDevice,
        grace: Duration,
    ) -> (Self, DataPlaneHandle) {
        let (tx, commands) = mpsc::channel(1024);
        let plane = Self {
            core: Core::new(tunnel, grace, Instant::now()),
            socket,
            tun,
            commands,
            net_buf: vec![0; MAX_PACKET],
            tun_buf: vec![0; MAX_PACKET],
            out_buf: vec![0; MAX_PACKET + OVERHEAD],
            tx_buf: Vec::with_capacity(MAX_PACKET + OVERHEAD),
            net_errors: 0,
            tun_errors: 0,
        };
        (plane, DataPlaneHandle { tx })
    }

    /// Runs until every handle is dropped or the socket or TUN device fails for good.
    pub async fn run(mut self) -> Result<(), DataPlaneError> {
        loop {
            let deadline = self.core.deadline();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(c) => self.core.apply(c, Instant::now()),
                    None => return Ok(()),
                },
                received = self.socket.recv_from(&mut self.net_buf) => {
                    self.on_datagram(received).await?;
                    for _ in 0..BURST {
                        let received = self.socket.try_recv_from(&mut self.net_buf);
                        if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                            break;
                        }
                        self.on_datagram(received).await?;
                    }
                }
                received = self.tun.recv(&mut self.tun_buf) => {
                    self.on_tun_packet(received).await?;
                    for _ in 0..BURST {
                        let received = self.tun.try_recv(&mut self.tun_buf);
                        if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                            break;
                        }
                        self.on_tun_packet(received).await?;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.core.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }

    async fn on_datagram(
        &mut self,
        received: io::Result<(usize, SocketAddr)>,
    ) -> Result<(), DataPlaneError> {
        let (n, from) = match received {
            Ok(r) => {
                self.net_errors = 0;
                r
            }
            Err(e) => {
                return count_error(&mut self.net_errors, e, "receiving from the UDP socket");
            }
        };
        let now = Instant::now();
        let datagram = &self.net_buf[..n];
        if let Some(packet) =
            self.core
                .tunnel
                .handle_network_input(from, datagram, now, &mut self.out_buf)
            && let Err(e) = self.tun.send(packet).await
        {
            tracing::trace!(error = %e, "writing to the TUN device");
        }
        Ok(())
    }

    async fn on_tun_packet(&mut self, received: io::Result<usize>) -> Result<(), DataPlaneError> {
        let n = match received {
            Ok(n) => {
                self.tun_errors = 0;
                n
            }
            Err(e) => {
                return count_error(&mut self.tun_errors, e, "reading from the TUN device");
            }
        };
        let now = Instant::now();
        let packet = &self.tun_buf[..n];
        if let Some(t) = self
            .core
            .tunnel
            .handle_tun_input(packet, now, &mut self.out_buf)
            && let Err(e) = self.socket.send_to(t.payload, t.dst).await
        {
            tracing::trace!(error = %e, "sending a datagram");
        }
        Ok(())
    }

    /// Sends everything the core queued and reports its events.
    async fn flush(&mut self) {
        while let Some(dst) = self.core.tunnel.poll_transmit(&mut self.tx_buf) {
            if let Err(e) = self.socket.send_to(&self.tx_buf, dst).await {
                tracing::trace!(error = %e, "sending a datagram");
            }
        }
        while let Some(event) = self.core.tunnel.poll_event() {
            match event {
                Event::HandshakeCompleted { grant } => {
                    tracing::debug!(%grant, "handshake completed")
                }
                Event::GrantExpired { grant } => tracing::info!(%grant, "grant expired"),
            }
        }
    }
}

/// Ignores a transient receive error, or gives up after too many in a row.
fn count_error(count: &mut u32, e: io::Error, what: &'static str) -> Result<(), DataPlaneError> {
    *count += 1;
    if *count >= MAX_CONSECUTIVE_ERRORS {
        return Err(DataPlaneError::Io { what, source: e });
    }
    // ICMP errors for earlier sends surface as receive errors on UDP sockets; harmless.
    tracing::trace!(error = %e, what, "receive error");
    Ok(())
}

/// Opens the WireGuard UDP socket on `port` (dual-stack where IPv6 is available) with
/// socket buffers of several MiB.
pub fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    let v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    });
    let socket = match v6 {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no IPv6 socket; listening on IPv4 only");
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
            s
        }
    };
    set_buffers(&socket);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Asks for [`SOCKET_BUFFER`] bytes each way, past `rmem_max`/`wmem_max` when the process has
/// `CAP_NET_ADMIN`.
fn set_buffers(socket: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = socket.as_fd();
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
}

/// Creates the TUN device `name` with `address` and the tunnel network's prefix, so that the
/// kernel routes the whole tunnel network into it, and brings it up.
pub fn open_tun(name: &str, address: IpAddr, network: IpNet) -> io::Result<AsyncDevice> {
    let builder = DeviceBuilder::new().name(name).mtu(TUN_MTU);
    let builder = match address {
        IpAddr::V4(a) => builder.ipv4(a, network.prefix_len(), None),
        IpAddr::V6(a) => builder.ipv6(a, network.prefix_len()),
    };
    builder.build_async()
}

/// The first non-loopback, non-link-local address of an interface that is up, IPv4 first:
/// the default for the endpoint announced to clients.
pub fn first_address() -> Option<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|i| {
            i.flags.contains(InterfaceFlags::IFF_UP)
                && !i.flags.contains(InterfaceFlags::IFF_LOOPBACK)
                && !i.flags.contains(InterfaceFlags::IFF_POINTOPOINT)
        })
        .filter_map(|i| {
            let a = i.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Admission;
    use tunnel::GatewayConfig;

    fn grant(key: u8, expires_in_s: i64) -> GrantConfig {
        GrantConfig {
            id: GrantId::new(),
            public_key: tunnel::public_key(&[key; 32]),
            preshared_key: [key; 32],
            tunnel_address: "100.64.0.2".parse().unwrap(),
            admission: Admission::new(vec!["10.0.0.1/32".parse().unwrap()], vec![]),
            expires_at: Timestamp::now() + jiff::SignedDuration::from_secs(expires_in_s),
        }
    }

    #[test]
    fn converge_adds_removes_and_renews() {
        let now = Instant::now();
        let mut t = GatewayTunnel::new(GatewayConfig::new([1; 32]), now);
        let (a, b, c) = (grant(2, 60), grant(3, 60), grant(4, 60));
        let r = converge(&mut t, vec![a.clone(), b.clone()], now, Timestamp::now());
        assert_eq!(
            r,
            SyncReport {
                applied: 2,
                removed: 0,
                failed: 0
            }
        );
        let mut renewed = b.clone();
        renewed.expires_at += jiff::SignedDuration::from_secs(60);
        let expired = grant(5, -1);
        let r = converge(
            &mut t,
            vec![renewed, c.clone(), expired],
            now,
            Timestamp::now(),
        );
        assert_eq!(
            r,
            SyncReport {
                applied: 2,
                removed: 1,
                failed: 1
            }
        );
        let mut ids: Vec<_> = t.grants().collect();
        ids.sort();
        let mut want = vec![b.id, c.id];
        want.sort();
        assert_eq!(ids, want);
        let r = converge(&mut t, vec![], now, Timestamp::now());
        assert_eq!(r.removed, 2);
        assert_eq!(t.grant_count(), 0);
    }

    /// Runs one command on `core` at `now` and returns its answer.
    fn call<T>(
        core: &mut Core,
        now: Instant,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> T {
        let (done, mut rx) = oneshot::channel();
        core.apply(make(done), now);
        rx.try_recv().unwrap()
    }

    fn snapshot(core: &mut Core, now: Instant) -> Snapshot {
        call(core, now, Command::Snapshot)
    }

    #[test]
    fn the_grace_drops_every_grant_once_and_a_full_sync_restores_them() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let tunnel = GatewayTunnel::new(GatewayConfig::new([1; 32]), t0);
        let mut core = Core::new(tunnel, 10 * s, t0);
        let (a, b) = (grant(2, 600), grant(3, 600));
        let grants = vec![a.clone(), b.clone()];
        call(&mut core, t0, |done| Command::Sync { grants, done });
        // In contact: no grace deadline, only the tunnel's own timers.
        assert!(core.grace.in_contact());
        core.handle_timeout(t0 + 100 * s);
        assert_eq!(snapshot(&mut core, t0 + 100 * s).grants, 2);

        let lost = t0 + 100 * s;
        call(&mut core, lost, Command::LinkLost);
        assert!(core.deadline() <= tokio::time::Instant::from_std(lost + 10 * s));
        // A reconnect that fails before its full sync keeps the outage's start.
        call(&mut core, lost + 5 * s, Command::LinkLost);
        core.handle_timeout(lost + 10 * s - Duration::from_millis(1));
        let before = snapshot(&mut core, lost + 10 * s - Duration::from_millis(1));
        assert_eq!((before.grants, before.dropped_offline), (2, 0));
        assert!(!before.grace_expired);

        core.handle_timeout(lost + 10 * s);
        let after = snapshot(&mut core, lost + 10 * s);
        assert_eq!((after.grants, after.dropped_offline), (0, 2));
        assert!(after.grace_expired);
        // Once per outage.
        core.handle_timeout(lost + 20 * s);
        assert_eq!(snapshot(&mut core, lost + 20 * s).dropped_offline, 2);

        // The controller is back: its full sync is accepted and restores exactly its set.
        let back = lost + 30 * s;
        let grants = vec![b.clone()];
        let report = call(&mut core, back, |done| Command::Sync { grants, done });
        assert_eq!((report.applied, report.removed), (1, 0));
        let restored = snapshot(&mut core, back);
        assert_eq!((restored.grants, restored.dropped_offline), (1, 2));
        assert!(!restored.grace_expired);
        assert_eq!(core.tunnel.grants().collect::<Vec<_>>(), vec![b.id]);
    }

    #[test]
    fn a_grace_of_zero_drops_when_the_link_is_lost() {
        let t0 = Instant::now();
        let tunnel = GatewayTunnel::new(GatewayConfig::new([1; 32]), t0);
        let mut core = Core::new(tunnel, Duration::ZERO, t0);
        let grants = vec![grant(2, 600)];
        call(&mut core, t0, |done| Command::Sync { grants, done });
        assert_eq!(snapshot(&mut core, t0).grants, 1);
        let lost = t0 + Duration::from_secs(1);
        call(&mut core, lost, Command::LinkLost);
        let s = snapshot(&mut core, lost);
        assert_eq!((s.grants, s.dropped_offline), (0, 1));
    }

    #[test]
    fn a_gateway_that_never_syncs_drops_after_the_grace_from_start() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let tunnel = GatewayTunnel::new(GatewayConfig::new([1; 32]), t0);
        let mut core = Core::new(tunnel, 10 * s, t0);
        // Whatever the gateway holds without ever having synced (nothing reaches it that
        // way today; grants are not persisted) is dropped after the grace from start.
        call(&mut core, t0, |done| Command::Add {
            grant: Box::new(grant(2, 600)),
            done,
        })
        .unwrap();
        assert!(core.deadline() <= tokio::time::Instant::from_std(t0 + 10 * s));
        core.handle_timeout(t0 + 9 * s);
        assert_eq!(snapshot(&mut core, t0 + 9 * s).grants, 1);
        core.handle_timeout(t0 + 10 * s);
        assert_eq!(snapshot(&mut core, t0 + 10 * s).dropped_offline, 1);
    }

    #[tokio::test]
    async fn handle_without_io_applies_commands() {
        let t = GatewayTunnel::new(GatewayConfig::new([1; 32]), Instant::now());
        let (h, task) = DataPlaneHandle::without_io(t, crate::DEFAULT_CONTROLLER_GRACE);
        let g = grant(2, 60);
        assert_eq!(h.add(g.clone()).await.unwrap(), Ok(()));
        assert_eq!(h.snapshot().await.unwrap().grants, 1);
        assert!(h.remove(g.id).await.unwrap());
        assert!(!h.remove(g.id).await.unwrap());
        assert_eq!(h.snapshot().await.unwrap().grants, 0);
        drop(h);
        assert_eq!(task.await.unwrap().grant_count(), 0);
    }
}
