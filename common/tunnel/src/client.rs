use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use model::GrantId;

use crate::output::{Transmit, TransmitQueue};
use crate::{DropReason, MIN_BUFFER, OVERHEAD, Stats, clock};

/// How often the peer's WireGuard timers run.
const TICK: Duration = Duration::from_millis(250);
const SCRATCH: usize = 65535 + OVERHEAD;

/// One grant as the client holds it: its own key and the gateway to reach.
#[derive(Clone)]
pub struct ClientConfig {
    /// The grant this tunnel belongs to.
    pub grant: GrantId,
    /// The per-application x25519 private key made on the device for this grant.
    pub private_key: [u8; 32],
    /// The gateway's public key.
    pub gateway_public_key: [u8; 32],
    /// The grant's preshared key.
    pub preshared_key: [u8; 32],
    /// The gateway's UDP endpoint.
    pub gateway: SocketAddr,
    /// Send a keepalive after this many idle seconds, to keep NAT mappings open.
    pub persistent_keepalive: Option<u16>,
    /// This tunnel's receiver index (24 bits); distinct per tunnel of one client.
    pub index: u32,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("grant", &self.grant)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Something the client's IO shell may want to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake with the gateway completed; held packets are on their way.
    HandshakeCompleted {
        /// The grant.
        grant: GrantId,
    },
}

/// The client side of one grant's tunnel: a WireGuard peer towards one gateway. Sans-IO,
/// with the same loop contract and time model as [`crate::GatewayTunnel`]: feed datagrams,
/// TUN packets and timeouts in, drain `poll_transmit` and `poll_event`, sleep until
/// `poll_timeout`. Which packets belong to which grant's tunnel is the caller's routing
/// decision; the first packet starts the handshake and is held until it completes.
pub struct ClientTunnel {
    grant: GrantId,
    gateway: SocketAddr,
    tunn: Box<Tunn>,
    next_tick: Instant,
    scratch: Vec<u8>,
    transmits: TransmitQueue,
    events: VecDeque<ClientEvent>,
    stats: Stats,
}

impl fmt::Debug for ClientTunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTunnel")
            .field("grant", &self.grant)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl ClientTunnel {
    /// A tunnel that has not yet started its handshake.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        clock::sync(now);
        let tunn = Tunn::new(
            StaticSecret::from(config.private_key),
            PublicKey::from(config.gateway_public_key),
            Some(config.preshared_key),
            config.persistent_keepalive,
            config.index % (1 << 24),
            None,
        );
        Self {
            grant: config.grant,
            gateway: config.gateway,
            tunn: Box::new(tunn),
            next_tick: now + TICK,
            scratch: vec![0; SCRATCH],
            transmits: TransmitQueue::default(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The grant this tunnel belongs to.
    pub fn grant(&self) -> GrantId {
        self.grant
    }

    /// Counters of what the tunnel did.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Starts a handshake now (even if one is in progress), e.g. to connect before the first
    /// packet.
    pub fn connect(&mut self, now: Instant) {
        clock::sync(now);
        if let TunnResult::WriteToNetwork(d) = self
            .tunn
            .format_handshake_initiation(&mut self.scratch, true)
        {
            push(&mut self.transmits, &mut self.stats, self.gateway, d);
        }
    }

    /// Encrypts a packet from the TUN device to the gateway. Without a session the packet is
    /// held and the returned datagram is a handshake initiation. `buf` must hold
    /// `packet.len() + OVERHEAD` bytes and at least [`MIN_BUFFER`].
    pub fn handle_tun_input<'b>(
        &mut self,
        packet: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<Transmit<'b>> {
        clock::sync(now);
        if buf.len() < (packet.len() + OVERHEAD).max(MIN_BUFFER) {
            self.stats.drops.count(DropReason::BufferTooSmall);
            return None;
        }
        match self.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(d) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += packet.len() as u64;
                Some(Transmit {
                    dst: self.gateway,
                    payload: d,
                })
            }
            TunnResult::Err(e) => {
                count_error(&mut self.stats, &e);
                None
            }
            _ => None,
        }
    }

    /// Handles a datagram from the network; returns a decrypted packet for the TUN device.
    /// `buf` must be at least as long as the datagram and at least [`MIN_BUFFER`].
    pub fn handle_network_input<'b>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        clock::sync(now);
        if buf.len() < datagram.len().max(MIN_BUFFER) {
            self.stats.drops.count(DropReason::BufferTooSmall);
            return None;
        }
        let message_type = datagram.first().copied();
        match self.tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::WriteToNetwork(d) => {
                push(&mut self.transmits, &mut self.stats, self.gateway, d);
                if message_type == Some(2) {
                    self.stats.handshakes += 1;
                    self.events
                        .push_back(ClientEvent::HandshakeCompleted { grant: self.grant });
                }
                while let TunnResult::WriteToNetwork(d) =
                    self.tunn.decapsulate(None, &[], &mut self.scratch)
                {
                    push(&mut self.transmits, &mut self.stats, self.gateway, d);
                }
                None
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += p.len() as u64;
                Some(p)
            }
            TunnResult::Err(e) => {
                count_error(&mut self.stats, &e);
                None
            }
            TunnResult::Done => None,
        }
    }

    /// Runs the WireGuard timers: handshake retries, keepalives, rekeying.
    pub fn handle_timeout(&mut self, now: Instant) {
        clock::sync(now);
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        match self.tunn.update_timers(&mut self.scratch) {
            TunnResult::WriteToNetwork(d) => {
                push(&mut self.transmits, &mut self.stats, self.gateway, d)
            }
            TunnResult::Err(e) => tracing::trace!(?e, "timer error"),
            _ => {}
        }
    }

    /// The next datagram to send: moves it into `buf` and returns where to send it.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.transmits.pop(buf)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }
}

fn push(queue: &mut TransmitQueue, stats: &mut Stats, to: SocketAddr, payload: &[u8]) {
    if !queue.push(to, payload) {
        stats.drops.count(DropReason::QueueFull);
    }
}

fn count_error(stats: &mut Stats, error: &WireGuardError) {
    let reason = match error {
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => DropReason::Replayed,
        WireGuardError::DestinationBufferTooSmall => DropReason::BufferTooSmall,
        _ => DropReason::Rejected,
    };
    stats.drops.count(reason);
}
