use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use jiff::Timestamp;
use model::{Admission, GrantId};
use packet::IpPacket;

use crate::filter::{self, Inbound};
use crate::output::{Transmit, TransmitQueue};
use crate::{DropReason, MIN_BUFFER, OVERHEAD, Stats, clock};

/// How often every peer's timers run and the handshake rate limiter is reset.
const TICK: Duration = Duration::from_secs(1);
/// Receiver indices are 24 bits; boringtun uses the low 8 bits of the 32-bit index for its
/// sessions.
const INDEX_SPACE: u32 = 1 << 24;
/// Large enough for any datagram boringtun produces from an IP packet.
const SCRATCH: usize = 65535 + OVERHEAD;
/// The largest ICMP error the gateway builds (the IPv6 minimum MTU).
const ICMP_SCRATCH: usize = 1280;
/// The most drop messages logged at DEBUG per second.
const DEBUG_LOGS_PER_TICK: u32 = 10;

/// The gateway's own settings.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The gateway's x25519 private key.
    pub private_key: [u8; 32],
    /// Handshake messages per second above which the gateway answers with cookies (WireGuard's
    /// "under load").
    pub handshake_rate_limit: u64,
    /// Spreads receiver indices; any value works, a random one hides how many grants exist.
    pub seed: u64,
}

impl GatewayConfig {
    /// Settings with the default rate limit (100 handshakes per second) and seed 0.
    pub fn new(private_key: [u8; 32]) -> Self {
        Self {
            private_key,
            handshake_rate_limit: 100,
            seed: 0,
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("handshake_rate_limit", &self.handshake_rate_limit)
            .finish_non_exhaustive()
    }
}

/// One grant as the gateway enforces it: the WireGuard peer and what it may reach.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantConfig {
    /// The grant's id.
    pub id: GrantId,
    /// The per-application x25519 public key made on the device.
    pub public_key: [u8; 32],
    /// The WireGuard preshared key of the grant.
    pub preshared_key: [u8; 32],
    /// The device's address inside the tunnel: the only source its packets may have.
    pub tunnel_address: IpAddr,
    /// What the grant reaches: the destinations, protocols and ports its packets may have.
    pub admission: Admission,
    /// When the grant ends (wall time).
    pub expires_at: Timestamp,
}

impl fmt::Debug for GrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantConfig")
            .field("id", &self.id)
            .field("tunnel_address", &self.tunnel_address)
            .field("admission", &self.admission)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a grant could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The grant's expiry is not after the current wall time.
    #[error("grant {0} has already expired")]
    AlreadyExpired(GrantId),
    /// Another current grant has the same public key; keys are per grant.
    #[error("grant {0} reuses the public key of grant {1}")]
    DuplicateKey(GrantId, GrantId),
    /// All 2^24 receiver indices are in use.
    #[error("no receiver index left for grant {0}")]
    IndicesExhausted(GrantId),
}

/// Something the IO shell may want to know or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A grant's peer sent a valid handshake initiation and was answered.
    HandshakeCompleted {
        /// The grant.
        grant: GrantId,
    },
    /// A grant reached its expiry and was removed.
    GrantExpired {
        /// The grant.
        grant: GrantId,
    },
}

struct Peer {
    config: GrantConfig,
    deadline: Instant,
    tunn: Box<Tunn>,
    endpoint: Option<SocketAddr>,
    /// When the peer last sent something authenticated (handshake, data, keepalive).
    last_rx: Option<Instant>,
}

/// Everything a packet handler writes to besides the peer it works on.
struct Outputs {
    transmits: TransmitQueue,
    events: VecDeque<Event>,
    stats: Stats,
    debug_logs: u32,
}

impl Outputs {
    fn drop(&mut self, reason: DropReason) {
        self.stats.drops.count(reason);
        tracing::trace!(reason = reason.as_str(), "dropped");
        if self.debug_logs < DEBUG_LOGS_PER_TICK {
            self.debug_logs += 1;
            tracing::debug!(reason = reason.as_str(), "dropped");
        }
    }

    fn transmit(&mut self, dst: SocketAddr, payload: &[u8]) {
        if !self.transmits.push(dst, payload) {
            self.drop(DropReason::QueueFull);
        }
    }

    fn drop_wireguard(&mut self, error: &WireGuardError) {
        let reason = match error {
            WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => {
                DropReason::Replayed
            }
            WireGuardError::UnderLoad => DropReason::UnderLoad,
            WireGuardError::DestinationBufferTooSmall => DropReason::BufferTooSmall,
            _ => DropReason::Rejected,
        };
        self.drop(reason);
    }
}

/// The gateway side of the tunnel core: one WireGuard peer per grant and the per-packet
/// entitlement filter. Sans-IO: it owns no socket, TUN device or clock.
///
/// # Loop contract
///
/// The IO shell owns a UDP socket and a TUN device and runs one loop:
///
/// - A datagram from the socket goes to [`handle_network_input`](Self::handle_network_input)
///   with a buffer at least as long as the datagram (and at least [`MIN_BUFFER`]); a packet it
///   returns is written to the TUN device.
/// - A packet from the TUN device goes to [`handle_tun_input`](Self::handle_tun_input) with a
///   buffer of `packet.len() + OVERHEAD` (at least [`MIN_BUFFER`]); a [`Transmit`] it returns
///   is sent.
/// - Grant changes from the controller go to [`add_grant`](Self::add_grant) and
///   [`remove_grant`](Self::remove_grant). Removal takes effect at once.
/// - After any input, the shell drains [`poll_transmit`](Self::poll_transmit) (handshake
///   responses, ICMP replies, keepalives, ...) and [`poll_event`](Self::poll_event) until they
///   return `None`, then sleeps until [`poll_timeout`](Self::poll_timeout) or the next input,
///   and calls [`handle_timeout`](Self::handle_timeout) when that instant has passed.
///
/// # Time
///
/// `now` is monotonic (`std::time::Instant`); the core never reads a clock, and feeds `now`
/// into boringtun's timers (see the crate's use of boringtun's `mock-instant` feature). Grant
/// expiries are wall time ([`Timestamp`]), converted once, when the grant is added, to a
/// monotonic deadline using the `wall_now` passed alongside `now`. A grant is enforced until
/// that deadline even if the wall clock jumps; renewals re-add the grant.
///
/// # Silence
///
/// Anything that is not a valid handshake initiation from a current grant's key, or a message
/// for a current grant's receiver index that boringtun accepts, gets no reply at all. Under
/// load (more than [`GatewayConfig::handshake_rate_limit`] handshakes in a second) an
/// initiation from a current grant's key without a valid cookie gets a cookie reply.
pub struct GatewayTunnel {
    private_key: StaticSecret,
    public_key: PublicKey,
    mac1_key: [u8; 32],
    rate_limiter: Arc<RateLimiter>,
    /// Peers by their receiver index (the upper 24 bits of boringtun's 32-bit index).
    peers: HashMap<u32, Peer>,
    /// Receiver indices by grant, for deterministic iteration.
    ids: BTreeMap<GrantId, u32>,
    by_key: HashMap<[u8; 32], u32>,
    /// Receiver indices by tunnel address, in insertion order.
    by_address: HashMap<IpAddr, Vec<u32>>,
    expiries: BTreeSet<(Instant, GrantId)>,
    next_index: u32,
    next_tick: Instant,
    scratch: Vec<u8>,
    icmp_scratch: Vec<u8>,
    out: Outputs,
}

impl fmt::Debug for GatewayTunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayTunnel")
            .field("grants", &self.ids.len())
            .field("stats", &self.out.stats)
            .finish_non_exhaustive()
    }
}

impl GatewayTunnel {
    /// A gateway with no grants.
    pub fn new(config: GatewayConfig, now: Instant) -> Self {
        clock::sync(now);
        let private_key = StaticSecret::from(config.private_key);
        let public_key = PublicKey::from(&private_key);
        let mac1_key: [u8; 32] = Blake2s256::new()
            .chain_update(b"mac1----")
            .chain_update(public_key.as_bytes())
            .finalize()
            .into();
        let rate_limiter = Arc::new(RateLimiter::new(&public_key, config.handshake_rate_limit));
        Self {
            private_key,
            public_key,
            mac1_key,
            rate_limiter,
            peers: HashMap::new(),
            ids: BTreeMap::new(),
            by_key: HashMap::new(),
            by_address: HashMap::new(),
            expiries: BTreeSet::new(),
            next_index: (config.seed % u64::from(INDEX_SPACE)) as u32,
            next_tick: now + TICK,
            scratch: vec![0; SCRATCH],
            icmp_scratch: vec![0; ICMP_SCRATCH],
            out: Outputs {
                transmits: TransmitQueue::default(),
                events: VecDeque::new(),
                stats: Stats::default(),
                debug_logs: 0,
            },
        }
    }

    /// The gateway's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key.to_bytes()
    }

    /// Counters of what the gateway did.
    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    /// The current grants, in id order.
    pub fn grants(&self) -> impl Iterator<Item = GrantId> + '_ {
        self.ids.keys().copied()
    }

    /// The number of current grants.
    pub fn grant_count(&self) -> usize {
        self.ids.len()
    }

    /// Adds a grant, or updates it if its id is known. An update with the same keys keeps the
    /// peer's session (e.g. a renewal that only moves the expiry); different keys replace the
    /// peer. `wall_now` is the wall time at `now`, used to turn the expiry into a deadline.
    pub fn add_grant(
        &mut self,
        grant: GrantConfig,
        now: Instant,
        wall_now: Timestamp,
    ) -> Result<(), GrantError> {
        clock::sync(now);
        let id = grant.id;
        let remaining = wall_now.duration_until(grant.expires_at);
        let remaining = match Duration::try_from(remaining) {
            Ok(d) if !d.is_zero() => d,
            _ => return Err(GrantError::AlreadyExpired(id)),
        };
        let deadline = now + remaining;
        if let Some(&index) = self.by_key.get(&grant.public_key) {
            let other = self.peers[&index].config.id;
            if other != id {
                return Err(GrantError::DuplicateKey(id, other));
            }
        }
        if let Some(&index) = self.ids.get(&id) {
            let same_keys = {
                let old = &self.peers[&index].config;
                old.public_key == grant.public_key && old.preshared_key == grant.preshared_key
            };
            if same_keys {
                self.unindex(index);
                let peer = self.peers.get_mut(&index).expect("indexed peer exists");
                peer.config = grant;
                peer.deadline = deadline;
                self.index(index);
                return Ok(());
            }
            self.remove_grant(id);
        }
        let index = self
            .allocate_index()
            .ok_or(GrantError::IndicesExhausted(id))?;
        let tunn = Tunn::new(
            self.private_key.clone(),
            PublicKey::from(grant.public_key),
            Some(grant.preshared_key),
            None,
            index,
            Some(self.rate_limiter.clone()),
        );
        tracing::debug!(grant = %id, addresses = ?grant.admission.addresses, "grant added");
        self.peers.insert(
            index,
            Peer {
                config: grant,
                deadline,
                tunn: Box::new(tunn),
                endpoint: None,
                last_rx: None,
            },
        );
        self.index(index);
        Ok(())
    }

    /// Removes a grant: its peer and sessions are gone at once and its traffic stops. Returns
    /// whether the grant existed.
    pub fn remove_grant(&mut self, id: GrantId) -> bool {
        let Some(&index) = self.ids.get(&id) else {
            return false;
        };
        self.unindex(index);
        self.peers.remove(&index);
        tracing::debug!(grant = %id, "grant removed");
        true
    }

    fn index(&mut self, index: u32) {
        let peer = &self.peers[&index];
        self.ids.insert(peer.config.id, index);
        self.by_key.insert(peer.config.public_key, index);
        self.by_address
            .entry(peer.config.tunnel_address)
            .or_default()
            .push(index);
        self.expiries.insert((peer.deadline, peer.config.id));
    }

    fn unindex(&mut self, index: u32) {
        let peer = &self.peers[&index];
        self.ids.remove(&peer.config.id);
        self.by_key.remove(&peer.config.public_key);
        if let Some(list) = self.by_address.get_mut(&peer.config.tunnel_address) {
            list.retain(|&i| i != index);
            if list.is_empty() {
                self.by_address.remove(&peer.config.tunnel_address);
            }
        }
        self.expiries.remove(&(peer.deadline, peer.config.id));
    }

    fn allocate_index(&mut self) -> Option<u32> {
        if self.peers.len() as u64 >= u64::from(INDEX_SPACE) {
            return None;
        }
        loop {
            let index = self.next_index;
            self.next_index = (self.next_index + 1) % INDEX_SPACE;
            if !self.peers.contains_key(&index) {
                return Some(index);
            }
        }
    }

    fn expire_due(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.expiries.first() {
            if deadline > now {
                break;
            }
            self.remove_grant(id);
            tracing::debug!(grant = %id, "grant expired");
            self.out.events.push_back(Event::GrantExpired { grant: id });
        }
    }

    /// Handles a datagram from the network. Returns the decrypted packet to write to the TUN
    /// device, if the datagram carried one that the grant admits. `buf` must be at least as
    /// long as the datagram and at least [`MIN_BUFFER`].
    pub fn handle_network_input<'b>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        clock::sync(now);
        self.expire_due(now);
        if buf.len() < datagram.len().max(MIN_BUFFER) {
            self.out.drop(DropReason::BufferTooSmall);
            return None;
        }
        let index = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => {
                self.out.drop(DropReason::MalformedDatagram);
                return None;
            }
            Ok(Packet::HandshakeInit(init)) => {
                if !self.mac1_valid(datagram) {
                    self.out.drop(DropReason::InvalidHandshake);
                    return None;
                }
                let half = match parse_handshake_anon(&self.private_key, &self.public_key, &init) {
                    Ok(half) => half,
                    Err(_) => {
                        self.out.drop(DropReason::InvalidHandshake);
                        return None;
                    }
                };
                match self.by_key.get(&half.peer_static_public) {
                    Some(&index) => index,
                    None => {
                        self.out.drop(DropReason::UnknownKey);
                        return None;
                    }
                }
            }
            Ok(Packet::HandshakeResponse(p)) => p.receiver_idx >> 8,
            Ok(Packet::PacketCookieReply(p)) => p.receiver_idx >> 8,
            Ok(Packet::PacketData(p)) => p.receiver_idx >> 8,
        };
        let Some(peer) = self.peers.get_mut(&index) else {
            self.out.drop(DropReason::UnknownIndex);
            return None;
        };
        let message_type = datagram[0];
        match peer.tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::Done => {
                if message_type == 4 {
                    // A keepalive: authenticated, so the peer may have roamed.
                    peer.endpoint = Some(from);
                    peer.last_rx = Some(now);
                }
                None
            }
            TunnResult::Err(e) => {
                self.out.drop_wireguard(&e);
                None
            }
            TunnResult::WriteToNetwork(reply) => {
                if reply.first() == Some(&3) {
                    self.out.stats.cookies_sent += 1;
                    self.out.transmit(from, reply);
                    return None;
                }
                peer.endpoint = Some(from);
                peer.last_rx = Some(now);
                self.out.transmit(from, reply);
                // Answering an initiation, or the keepalive after our own initiation's response.
                if message_type == 1 || message_type == 2 {
                    self.out.stats.handshakes += 1;
                    tracing::debug!(grant = %peer.config.id, "handshake");
                    self.out.events.push_back(Event::HandshakeCompleted {
                        grant: peer.config.id,
                    });
                }
                flush_queued(peer, from, &mut self.scratch, &mut self.out);
                None
            }
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                peer.endpoint = Some(from);
                peer.last_rx = Some(now);
                let Ok(parsed) = IpPacket::parse(packet) else {
                    self.out.drop(DropReason::MalformedPacket);
                    return None;
                };
                match filter::inbound(&parsed, peer.config.tunnel_address, &peer.config.admission) {
                    Inbound::Allow => {
                        self.out.stats.rx_packets += 1;
                        self.out.stats.rx_bytes += parsed.len() as u64;
                        Some(parsed.as_bytes())
                    }
                    Inbound::Deny(reason) => {
                        self.out.drop(reason);
                        None
                    }
                    Inbound::DenyWithIcmp(reason) => {
                        self.out.drop(reason);
                        if let Ok(n) =
                            packet::write_admin_prohibited(&parsed, &mut self.icmp_scratch)
                        {
                            let icmp = &self.icmp_scratch[..n];
                            if let TunnResult::WriteToNetwork(d) =
                                peer.tunn.encapsulate(icmp, &mut self.scratch)
                            {
                                self.out.stats.icmp_sent += 1;
                                self.out.transmit(from, d);
                            }
                        }
                        None
                    }
                }
            }
        }
    }

    /// Handles a packet from the TUN device: finds the grant whose device has the packet's
    /// destination as tunnel address and whose resource contains the packet's source address,
    /// protocol and source port, and encrypts the packet to that grant's peer. `buf` must hold
    /// `packet.len() + OVERHEAD` bytes and at least [`MIN_BUFFER`].
    ///
    /// When several grants of one device match (overlapping resources, or a renewal and the
    /// grant it replaces), the one whose peer was heard from last wins, so replies follow the
    /// tunnel the device uses now; among peers never heard from, the one added first.
    pub fn handle_tun_input<'b>(
        &mut self,
        packet: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<Transmit<'b>> {
        clock::sync(now);
        self.expire_due(now);
        if buf.len() < (packet.len() + OVERHEAD).max(MIN_BUFFER) {
            self.out.drop(DropReason::BufferTooSmall);
            return None;
        }
        let Ok(parsed) = IpPacket::parse(packet) else {
            self.out.drop(DropReason::TunMalformed);
            return None;
        };
        let candidates = self.by_address.get(&parsed.dst()).map(Vec::as_slice);
        let mut index = None;
        let mut newest = None;
        for &i in candidates.unwrap_or_default() {
            let p = &self.peers[&i];
            if (index.is_none() || p.last_rx > newest)
                && filter::outbound(&parsed, p.config.tunnel_address, &p.config.admission)
            {
                index = Some(i);
                newest = p.last_rx;
            }
        }
        let Some(peer) = index.and_then(|i| self.peers.get_mut(&i)) else {
            self.out.drop(DropReason::TunNoGrant);
            return None;
        };
        let Some(endpoint) = peer.endpoint else {
            self.out.drop(DropReason::NoEndpoint);
            return None;
        };
        match peer.tunn.encapsulate(parsed.as_bytes(), buf) {
            TunnResult::WriteToNetwork(d) => {
                self.out.stats.tx_packets += 1;
                self.out.stats.tx_bytes += parsed.len() as u64;
                Some(Transmit {
                    dst: endpoint,
                    payload: d,
                })
            }
            TunnResult::Err(e) => {
                self.out.drop_wireguard(&e);
                None
            }
            _ => None,
        }
    }

    /// Expires grants whose deadline passed and, once a second, runs every peer's WireGuard
    /// timers (keepalives, rekeying, session expiry) and resets the handshake rate limiter.
    pub fn handle_timeout(&mut self, now: Instant) {
        clock::sync(now);
        self.expire_due(now);
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        self.out.debug_logs = 0;
        self.rate_limiter.reset_count();
        for index in self.ids.values() {
            let Some(peer) = self.peers.get_mut(index) else {
                continue;
            };
            // A peer that never completed a handshake has nothing to send and nowhere to
            // send it.
            let Some(endpoint) = peer.endpoint else {
                continue;
            };
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(d) => self.out.transmit(endpoint, d),
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::trace!(?e, "timer error"),
                _ => {}
            }
        }
    }

    /// The next datagram to send: moves it into `buf` and returns where to send it.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        self.out.transmits.pop(buf)
    }

    /// The number of datagrams waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn pending_transmits(&self) -> usize {
        self.out.transmits.len()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called; `None` while there
    /// are no grants.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ids.is_empty() {
            return None;
        }
        let expiry = self.expiries.first().map(|&(deadline, _)| deadline);
        Some(expiry.map_or(self.next_tick, |e| e.min(self.next_tick)))
    }

    /// Whether `datagram` (a handshake initiation) carries a valid mac1 for this gateway.
    /// Checked before any Diffie-Hellman, so garbage costs one hash.
    fn mac1_valid(&self, datagram: &[u8]) -> bool {
        let Some((msg, macs)) = datagram.len().checked_sub(32).map(|n| datagram.split_at(n)) else {
            return false;
        };
        let Ok(mut mac) = <Blake2sMac<U16> as KeyInit>::new_from_slice(&self.mac1_key) else {
            return false;
        };
        mac.update(msg);
        let computed: [u8; 16] = mac.finalize_fixed().into();
        constant_time_eq(&computed, &macs[..16])
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sends the packets boringtun queued while it had no session.
fn flush_queued(peer: &mut Peer, to: SocketAddr, scratch: &mut [u8], out: &mut Outputs) {
    while let TunnResult::WriteToNetwork(d) = peer.tunn.decapsulate(None, &[], scratch) {
        out.transmit(to, d);
    }
}
