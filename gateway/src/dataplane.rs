//! The data plane: one tokio task that owns the UDP socket, the TUN device and the
//! [`GatewayTunnel`], feeds it every datagram, packet, timeout and grant change, and writes
//! its outputs. Other tasks reach it only through a [`DataPlaneHandle`].
//!
//! Per packet nothing is allocated: receive and output buffers are made once, and queued
//! transmits recycle their buffers through `poll_transmit`. After each wake-up it drains up
//! to [`BURST`] more ready datagrams or packets without going back through the scheduler.
//! Real batching (`recvmmsg`/`sendmmsg`, UDP GSO/GRO, TUN offload) is a later optimisation.

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

    /// Converges to exactly `grants`; returns once applied.
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

    /// The current counters.
    pub async fn snapshot(&self) -> Result<Snapshot, DataPlaneError> {
        self.call(Command::Snapshot).await
    }

    /// A data plane without sockets: a task that applies grant changes to `tunnel` and
    /// answers snapshots. For tests of the control link.
    pub fn without_io(mut tunnel: GatewayTunnel) -> (Self, tokio::task::JoinHandle<GatewayTunnel>) {
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                apply(&mut tunnel, command);
            }
            tunnel
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

fn apply(tunnel: &mut GatewayTunnel, command: Command) {
    let now = Instant::now();
    match command {
        Command::Sync { grants, done } => {
            let report = converge(tunnel, grants, now, Timestamp::now());
            let _ = done.send(report);
        }
        Command::Add { grant, done } => {
            let id = grant.id;
            let result = tunnel.add_grant(*grant, now, Timestamp::now());
            if let Err(e) = &result {
                log_grant_error(id, e);
            }
            let _ = done.send(result);
        }
        Command::Remove { id, done } => {
            let _ = done.send(tunnel.remove_grant(id));
        }
        Command::Snapshot(done) => {
            let _ = done.send(Snapshot {
                stats: tunnel.stats().clone(),
                grants: tunnel.grant_count(),
            });
        }
    }
}

/// The gateway's event loop over a UDP socket, a TUN device and the tunnel core.
pub struct DataPlane {
    tunnel: GatewayTunnel,
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
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// A data plane over an open socket and TUN device, and the handle to reach it.
    pub fn new(
        tunnel: GatewayTunnel,
        socket: UdpSocket,
        tun: AsyncDevice,
    ) -> (Self, DataPlaneHandle) {
        let (tx, commands) = mpsc::channel(1024);
        let plane = Self {
            tunnel,
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
            let deadline = self
                .tunnel
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(c) => apply(&mut self.tunnel, c),
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
                    self.tunnel.handle_timeout(Instant::now());
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
            self.tunnel
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
        if let Some(t) = self.tunnel.handle_tun_input(packet, now, &mut self.out_buf)
            && let Err(e) = self.socket.send_to(t.payload, t.dst).await
        {
            tracing::trace!(error = %e, "sending a datagram");
        }
        Ok(())
    }

    /// Sends everything the core queued and reports its events.
    async fn flush(&mut self) {
        while let Some(dst) = self.tunnel.poll_transmit(&mut self.tx_buf) {
            if let Err(e) = self.socket.send_to(&self.tx_buf, dst).await {
                tracing::trace!(error = %e, "sending a datagram");
            }
        }
        while let Some(event) = self.tunnel.poll_event() {
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

    #[tokio::test]
    async fn handle_without_io_applies_commands() {
        let t = GatewayTunnel::new(GatewayConfig::new([1; 32]), Instant::now());
        let (h, task) = DataPlaneHandle::without_io(t);
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
