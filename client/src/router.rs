//! The client's data-path core, without IO: it decides which resource each packet from the
//! TUN device belongs to, holds the first packets of a resource while access is requested,
//! runs one [`ClientTunnel`] per grant, routes datagrams from gateways back to their tunnel
//! by receiver index, and keeps the time-driven rules: held packets expire, idle tunnels
//! close, grants renew before they expire, a denied resource is not asked for again for a
//! while.
//!
//! Loop contract (as [`tunnel::GatewayTunnel`]): feed [`Router::handle_tun_input`],
//! [`Router::handle_network_input`], [`Router::handle_timeout`] and the controller's answers
//! ([`Router::granted`], [`Router::denied`], [`Router::revoked`]); then drain
//! [`Router::poll_transmit`] (datagrams), [`Router::poll_tun_write`] (packets for the local
//! applications: ICMP replies) and [`Router::poll_action`] (what to ask the controller), and
//! sleep until [`Router::poll_timeout`]. The core never reads the clock or makes keys.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use model::{Admission, GrantId, ResourceId};
use packet::{IpPacket, Transport};
use proto::client::ClientResource;
use tunnel::{ClientConfig, ClientEvent, ClientTunnel, Transmit};

/// Limits and timers of the core.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The most packets held per resource while access is requested.
    pub hold_packets: usize,
    /// The most bytes held per resource.
    pub hold_bytes: usize,
    /// How long held packets wait for an answer before they are dropped.
    pub hold_time: Duration,
    /// A tunnel with no traffic either way for this long is closed and its grant released.
    pub idle_timeout: Duration,
    /// After a denial, the resource is not asked for again for this long.
    pub deny_backoff: Duration,
    /// After a failed request (no gateway, controller unreachable), this long.
    pub failure_backoff: Duration,
    /// A request with no answer for this long is forgotten.
    pub request_timeout: Duration,
    /// Grants are renewed once this fraction of their lifetime has passed.
    pub renew_fraction: f64,
    /// WireGuard persistent keepalive, to keep NAT mappings open.
    pub keepalive: Option<u16>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            hold_packets: 64,
            hold_bytes: 256 * 1024,
            hold_time: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            deny_backoff: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            renew_fraction: 0.8,
            keepalive: Some(25),
        }
    }
}

/// What the core wants the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make a fresh key pair and ask the controller for access to the resource.
    RequestAccess {
        /// The resource.
        resource: ResourceId,
        /// Whether this renews a live grant (the tunnel keeps working meanwhile).
        renewal: bool,
    },
    /// Tell the controller the grant is no longer needed.
    Release {
        /// The grant.
        grant: GrantId,
    },
    /// The gateway refused traffic inside a fresh grant as well: tell the user.
    GatewayRefused {
        /// The resource.
        resource: ResourceId,
    },
}

/// A grant the controller issued, as the core needs it.
#[derive(Clone)]
pub struct NewTunnel {
    /// The grant.
    pub grant: GrantId,
    /// The per-application private key made for it.
    pub private_key: [u8; 32],
    /// The gateway's public key.
    pub gateway_public_key: [u8; 32],
    /// The preshared key.
    pub preshared_key: [u8; 32],
    /// The gateway's UDP endpoint.
    pub gateway: SocketAddr,
    /// How long from now until it expires.
    pub expires_in: Duration,
    /// When it expires, for status.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for NewTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTunnel")
            .field("grant", &self.grant)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Why the core refused a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The grant is for a resource the core does not know (any more).
    #[error("unknown resource {0}")]
    UnknownResource(ResourceId),
}

/// Counters of what the core did with packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets from the TUN device that matched no resource.
    pub unroutable: u64,
    /// Packets that could not be parsed.
    pub malformed: u64,
    /// Packets dropped because the hold queue was full.
    pub hold_overflow: u64,
    /// Held packets dropped because no answer came in time.
    pub hold_expired: u64,
    /// ICMP "administratively prohibited" replies written to the TUN device.
    pub icmp_sent: u64,
    /// Datagrams for no known tunnel.
    pub unknown_tunnel: u64,
}

/// Packets held for one resource.
#[derive(Debug, Default)]
struct Held {
    packets: VecDeque<Vec<u8>>,
    bytes: usize,
    since: Option<Instant>,
}

impl Held {
    /// Holds a copy of `packet`; false if a bound would be exceeded.
    fn push(&mut self, packet: &[u8], now: Instant, config: &RouterConfig) -> bool {
        if self.packets.len() >= config.hold_packets
            || self.bytes + packet.len() > config.hold_bytes
        {
            return false;
        }
        self.since.get_or_insert(now);
        self.bytes += packet.len();
        self.packets.push_back(packet.to_vec());
        true
    }

    fn take(&mut self) -> VecDeque<Vec<u8>> {
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.packets)
    }
}

#[derive(Debug)]
struct Slot {
    resource: ClientResource,
    /// What `resource` admits: which packets belong to it, by the rule the gateway enforces.
    admission: Admission,
    tunnel: Option<u32>,
    /// A renewed tunnel waiting for its handshake before it replaces `tunnel`.
    next: Option<u32>,
    requesting: Option<Instant>,
    held: Held,
    blocked_until: Option<Instant>,
    denied: bool,
    /// After a revocation, only a new flow asks for access again.
    revoked: bool,
    /// The gateway answered "administratively prohibited" once and we asked again.
    retried_prohibited: bool,
}

impl Slot {
    fn new(resource: ClientResource) -> Self {
        Self {
            admission: resource.admission(),
            resource,
            tunnel: None,
            next: None,
            requesting: None,
            held: Held::default(),
            blocked_until: None,
            denied: false,
            revoked: false,
            retried_prohibited: false,
        }
    }
}

#[derive(Debug)]
struct TunnelSlot {
    resource: ResourceId,
    tunnel: ClientTunnel,
    gateway: SocketAddr,
    expires: Instant,
    expires_at: Timestamp,
    renew_at: Instant,
    last_activity: Instant,
    established: bool,
}

/// A resource's tunnel as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The resource.
    pub resource: ClientResource,
    /// `idle`, `requesting`, `connecting`, `connected`, `denied` or `revoked`.
    pub state: &'static str,
    /// The current grant.
    pub grant: Option<GrantId>,
    /// The gateway.
    pub gateway: Option<SocketAddr>,
    /// When the grant expires.
    pub expires_at: Option<Timestamp>,
}

/// The data-path core. See the module documentation for the loop contract.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    slots: BTreeMap<ResourceId, Slot>,
    /// Resource ids in the order the controller listed them: the first that admits a packet
    /// wins.
    order: Vec<ResourceId>,
    tunnels: BTreeMap<u32, TunnelSlot>,
    next_index: u32,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    to_tun: VecDeque<Vec<u8>>,
    actions: VecDeque<Action>,
    scratch: Vec<u8>,
    counters: Counters,
}

/// The most ICMP replies queued for the TUN device.
const MAX_TUN_QUEUE: usize = 256;

impl Router {
    /// A core with no resources.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            slots: BTreeMap::new(),
            order: Vec::new(),
            tunnels: BTreeMap::new(),
            next_index: 1,
            transmits: VecDeque::new(),
            to_tun: VecDeque::new(),
            actions: VecDeque::new(),
            scratch: vec![0; 65535 + tunnel::OVERHEAD],
            counters: Counters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Replaces the set of resources. Tunnels of resources still listed keep running;
    /// those of resources no longer listed are closed and their grants released.
    pub fn set_resources(&mut self, resources: Vec<ClientResource>) {
        let mut slots = BTreeMap::new();
        self.order = resources.iter().map(|r| r.id).collect();
        for r in resources {
            let slot = match self.slots.remove(&r.id) {
                Some(mut s) => {
                    s.admission = r.admission();
                    s.resource = r;
                    s
                }
                None => Slot::new(r),
            };
            slots.insert(slot.resource.id, slot);
        }
        let gone: Vec<Slot> = std::mem::replace(&mut self.slots, slots)
            .into_values()
            .collect();
        for slot in gone {
            for index in [slot.tunnel, slot.next].into_iter().flatten() {
                self.close_tunnel(index, true);
            }
        }
    }

    /// Every resource with the state of its tunnel.
    pub fn status(&self, now: Instant) -> Vec<SlotStatus> {
        self.order
            .iter()
            .filter_map(|id| self.slots.get(id))
            .map(|s| {
                let t = s.tunnel.and_then(|i| self.tunnels.get(&i));
                let state = match t {
                    Some(t) if t.established => "connected",
                    Some(_) => "connecting",
                    None if s.requesting.is_some() => "requesting",
                    None if s.revoked => "revoked",
                    None if s.denied && s.blocked_until.is_some_and(|b| b > now) => "denied",
                    None => "idle",
                };
                SlotStatus {
                    resource: s.resource.clone(),
                    state,
                    grant: t.map(|t| t.tunnel.grant()),
                    gateway: t.map(|t| t.gateway),
                    expires_at: t.map(|t| t.expires_at),
                }
            })
            .collect()
    }

    /// The resource a name or id refers to.
    pub fn find(&self, name_or_id: &str) -> Option<&ClientResource> {
        self.order
            .iter()
            .filter_map(|id| self.slots.get(id))
            .map(|s| &s.resource)
            .find(|r| r.name == name_or_id || r.id.to_string() == name_or_id)
    }

    /// Asks for access to a resource now, without a packet (`postern connect`). Returns
    /// false if it already has a working tunnel.
    pub fn request(&mut self, resource: ResourceId, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(&resource) else {
            return false;
        };
        if slot.tunnel.is_some() {
            return false;
        }
        slot.revoked = false;
        slot.blocked_until = None;
        if slot.requesting.is_none() {
            slot.requesting = Some(now);
            self.actions.push_back(Action::RequestAccess {
                resource,
                renewal: false,
            });
        }
        true
    }

    /// Whether the resource has a tunnel whose handshake completed.
    pub fn is_connected(&self, resource: ResourceId) -> bool {
        self.slots
            .get(&resource)
            .and_then(|s| s.tunnel)
            .and_then(|i| self.tunnels.get(&i))
            .is_some_and(|t| t.established)
    }

    /// A packet from the TUN device: encrypted towards its grant's gateway when its resource
    /// has a tunnel (returned), otherwise held while access is requested, or answered with
    /// ICMP "administratively prohibited" when the resource was denied or does not admit it.
    pub fn handle_tun_input<'b>(
        &mut self,
        packet: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<Transmit<'b>> {
        let Ok(parsed) = IpPacket::parse(packet) else {
            self.counters.malformed += 1;
            return None;
        };
        let Some(id) = self.matching(&parsed) else {
            self.counters.unroutable += 1;
            // Inside a resource's addresses but not admitted (another port or protocol): the
            // gateway would drop it, so fail fast.
            if self
                .slots
                .values()
                .any(|s| s.admission.contains(parsed.dst()))
            {
                self.prohibit(&parsed);
            }
            return None;
        };
        let slot = self.slots.get_mut(&id)?;
        if slot.revoked {
            if is_new_flow(&parsed) {
                slot.revoked = false;
            } else {
                self.prohibit(&parsed);
                return None;
            }
        }
        if let Some(index) = slot.tunnel {
            let t = self.tunnels.get_mut(&index)?;
            t.last_activity = now;
            return t.tunnel.handle_tun_input(packet, now, buf);
        }
        if slot.blocked_until.is_some_and(|b| b > now) {
            self.prohibit(&parsed);
            return None;
        }
        slot.blocked_until = None;
        if !slot.held.push(packet, now, &self.config) {
            self.counters.hold_overflow += 1;
        }
        if slot.requesting.is_none() {
            slot.requesting = Some(now);
            tracing::debug!(resource = %id, "first packet: asking for access");
            self.actions.push_back(Action::RequestAccess {
                resource: id,
                renewal: false,
            });
        }
        None
    }

    /// A datagram from the network: decrypted into a packet for the TUN device (returned)
    /// when it belongs to one of the tunnels.
    pub fn handle_network_input<'b>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        let Some(index) = receiver_index(datagram) else {
            self.counters.unknown_tunnel += 1;
            return None;
        };
        let Some(t) = self.tunnels.get_mut(&index) else {
            self.counters.unknown_tunnel += 1;
            return None;
        };
        let out = t.tunnel.handle_network_input(from, datagram, now, buf);
        let resource = t.resource;
        let mut completed = false;
        while let Some(ClientEvent::HandshakeCompleted { .. }) = t.tunnel.poll_event() {
            completed = true;
        }
        if completed {
            t.established = true;
            self.on_handshake(resource, index);
        }
        let packet = out?;
        if let Some(t) = self.tunnels.get_mut(&index) {
            t.last_activity = now;
        }
        if is_admin_prohibited(packet) {
            self.on_prohibited(resource, index, now);
        } else if let Some(slot) = self.slots.get_mut(&resource) {
            slot.retried_prohibited = false;
        }
        Some(packet)
    }

    /// Runs timers: WireGuard's, held-packet expiry, idle tunnels, renewals, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.tunnels.values_mut() {
            t.tunnel.handle_timeout(now);
        }
        let mut close = Vec::new();
        for (id, slot) in &mut self.slots {
            if slot
                .held
                .since
                .is_some_and(|s| now.saturating_duration_since(s) >= self.config.hold_time)
            {
                self.counters.hold_expired += slot.held.packets.len() as u64;
                slot.held.take();
            }
            if slot
                .requesting
                .is_some_and(|s| now.saturating_duration_since(s) >= self.config.request_timeout)
            {
                slot.requesting = None;
            }
            if slot.blocked_until.is_some_and(|b| b <= now) {
                slot.blocked_until = None;
            }
            let Some(index) = slot.tunnel else { continue };
            let Some(t) = self.tunnels.get(&index) else {
                continue;
            };
            if now >= t.expires {
                tracing::debug!(resource = %id, "grant expired");
                close.push((*id, index, true));
            } else if now.saturating_duration_since(t.last_activity) >= self.config.idle_timeout {
                tracing::debug!(resource = %id, "tunnel idle: closing");
                close.push((*id, index, true));
            } else if now >= t.renew_at && slot.requesting.is_none() && slot.next.is_none() {
                slot.requesting = Some(now);
                self.actions.push_back(Action::RequestAccess {
                    resource: *id,
                    renewal: true,
                });
            }
        }
        for (id, index, release) in close {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.tunnel = slot.next.take();
            }
            self.close_tunnel(index, release);
        }
    }

    /// The controller granted access to `resource`: sets up the tunnel and sends the held
    /// packets into it (they leave once the handshake completes). A renewal's tunnel
    /// handshakes at once and replaces the old one when done.
    pub fn granted(
        &mut self,
        resource: ResourceId,
        grant: NewTunnel,
        now: Instant,
    ) -> Result<(), RouterError> {
        let index = self.allocate_index();
        let slot = self
            .slots
            .get_mut(&resource)
            .ok_or(RouterError::UnknownResource(resource))?;
        slot.requesting = None;
        slot.denied = false;
        slot.blocked_until = None;
        slot.revoked = false;
        let lifetime = grant.expires_in;
        let mut tunnel = ClientTunnel::new(
            ClientConfig {
                grant: grant.grant,
                private_key: grant.private_key,
                gateway_public_key: grant.gateway_public_key,
                preshared_key: grant.preshared_key,
                gateway: grant.gateway,
                persistent_keepalive: self.config.keepalive,
                index,
            },
            now,
        );
        let renewal = slot.tunnel.is_some();
        let held = slot.held.take();
        if held.is_empty() || renewal {
            tunnel.connect(now);
        }
        for p in &held {
            if let Some(t) = tunnel.handle_tun_input(p, now, &mut self.scratch) {
                self.transmits.push_back((t.dst, t.payload.to_vec()));
            }
        }
        while let Some(dst) = {
            let mut b = Vec::new();
            tunnel.poll_transmit(&mut b).map(|d| (d, b))
        } {
            self.transmits.push_back(dst);
        }
        let renew_after = lifetime.mul_f64(self.config.renew_fraction.clamp(0.1, 0.95));
        let t = TunnelSlot {
            resource,
            tunnel,
            gateway: grant.gateway,
            expires: now + lifetime,
            expires_at: grant.expires_at,
            renew_at: now + renew_after,
            last_activity: now,
            established: false,
        };
        self.tunnels.insert(index, t);
        if renewal {
            if let Some(old_next) = slot.next.replace(index) {
                self.close_tunnel(old_next, true);
            }
        } else {
            slot.tunnel = Some(index);
        }
        Ok(())
    }

    /// The controller denied access: held packets are answered with ICMP "administratively
    /// prohibited" and the resource is not asked for again until the back-off passes.
    pub fn denied(&mut self, resource: ResourceId, now: Instant) {
        let backoff = self.config.deny_backoff;
        self.refuse(resource, now, backoff, true);
    }

    /// A request failed (no gateway, the controller went away): like a denial with a
    /// shorter back-off, and a renewal keeps the current tunnel.
    pub fn failed(&mut self, resource: ResourceId, now: Instant) {
        let backoff = self.config.failure_backoff;
        self.refuse(resource, now, backoff, false);
    }

    fn refuse(&mut self, resource: ResourceId, now: Instant, backoff: Duration, denied: bool) {
        let Some(slot) = self.slots.get_mut(&resource) else {
            return;
        };
        slot.requesting = None;
        if slot.tunnel.is_some() {
            // A failed renewal: the current grant runs until it expires.
            return;
        }
        slot.denied = denied;
        slot.blocked_until = Some(now + backoff);
        let held = slot.held.take();
        for p in held {
            if let Ok(p) = IpPacket::parse(&p) {
                self.prohibit(&p);
            }
        }
    }

    /// The controller revoked a grant: its tunnel closes at once; the next packets of open
    /// connections get ICMP "administratively prohibited" and only a new flow asks again.
    /// Returns the resource it belonged to.
    pub fn revoked(&mut self, grant: GrantId) -> Option<ResourceId> {
        let (&index, t) = self
            .tunnels
            .iter()
            .find(|(_, t)| t.tunnel.grant() == grant)?;
        let resource = t.resource;
        if let Some(slot) = self.slots.get_mut(&resource) {
            // A renewal in flight belongs to the revoked grant: its answer is dropped.
            slot.requesting = None;
            if slot.tunnel == Some(index) {
                slot.tunnel = slot.next.take();
                slot.revoked = slot.tunnel.is_none();
            } else if slot.next == Some(index) {
                slot.next = None;
            }
        }
        self.close_tunnel(index, false);
        Some(resource)
    }

    /// Closes every tunnel (releasing the grants) and forgets held packets: `down`, logout.
    pub fn close_all(&mut self) {
        let indices: Vec<u32> = self.tunnels.keys().copied().collect();
        for i in indices {
            self.close_tunnel(i, true);
        }
        for slot in self.slots.values_mut() {
            *slot = Slot::new(slot.resource.clone());
        }
    }

    /// Forgets every request in flight (the control link went away).
    pub fn abandon_requests(&mut self, now: Instant) {
        let ids: Vec<ResourceId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.requesting.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.failed(id, now);
        }
    }

    /// The next datagram to send: moves it into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((dst, payload)) = self.transmits.pop_front() {
            *buf = payload;
            return Some(dst);
        }
        self.tunnels
            .values_mut()
            .find_map(|t| t.tunnel.poll_transmit(buf))
    }

    /// The next packet to write to the TUN device (an ICMP reply).
    pub fn poll_tun_write(&mut self) -> Option<Vec<u8>> {
        self.to_tun.pop_front()
    }

    /// The next thing to tell the controller.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Router::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tunnels = self
            .tunnels
            .values()
            .filter_map(|t| t.tunnel.poll_timeout())
            .min();
        let pending = self
            .slots
            .values()
            .filter_map(|s| {
                [
                    s.held.since.map(|t| t + self.config.hold_time),
                    s.requesting.map(|t| t + self.config.request_timeout),
                    s.blocked_until,
                ]
                .into_iter()
                .flatten()
                .min()
            })
            .min();
        [tunnels, pending].into_iter().flatten().min()
    }

    /// The first listed resource that admits the packet, by the gateway's own rule
    /// ([`tunnel::admits`], [`model::Admission`]).
    fn matching(&self, p: &IpPacket<'_>) -> Option<ResourceId> {
        self.order.iter().copied().find(|id| {
            self.slots
                .get(id)
                .is_some_and(|s| tunnel::admits(&s.admission, p))
        })
    }

    fn prohibit(&mut self, offending: &IpPacket<'_>) {
        if self.to_tun.len() >= MAX_TUN_QUEUE {
            return;
        }
        let mut out = vec![0u8; 1280];
        if let Ok(n) = packet::write_admin_prohibited(offending, &mut out) {
            out.truncate(n);
            self.to_tun.push_back(out);
            self.counters.icmp_sent += 1;
        }
    }

    fn on_handshake(&mut self, resource: ResourceId, index: u32) {
        let Some(slot) = self.slots.get_mut(&resource) else {
            return;
        };
        if slot.next == Some(index) {
            slot.next = None;
            if let Some(old) = slot.tunnel.replace(index) {
                self.close_tunnel(old, true);
            }
            tracing::debug!(%resource, "renewed tunnel took over");
        } else {
            tracing::debug!(%resource, "tunnel up");
        }
    }

    fn on_prohibited(&mut self, resource: ResourceId, index: u32, now: Instant) {
        let Some(slot) = self.slots.get_mut(&resource) else {
            return;
        };
        if slot.tunnel != Some(index) {
            return;
        }
        if slot.retried_prohibited {
            slot.blocked_until = Some(now + self.config.deny_backoff);
            slot.denied = true;
            slot.tunnel = slot.next.take();
            self.actions.push_back(Action::GatewayRefused { resource });
        } else {
            tracing::debug!(%resource, "gateway refused traffic: asking again");
            slot.retried_prohibited = true;
            slot.tunnel = slot.next.take();
        }
        if slot.tunnel.is_none() {
            self.close_tunnel(index, true);
        }
    }

    fn close_tunnel(&mut self, index: u32, release: bool) {
        if let Some(t) = self.tunnels.remove(&index)
            && release
        {
            self.actions.push_back(Action::Release {
                grant: t.tunnel.grant(),
            });
        }
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index % ((1 << 24) - 1)) + 1;
            if !self.tunnels.contains_key(&i) {
                return i;
            }
        }
    }
}

/// The tunnel index (upper 24 bits of boringtun's receiver index) a datagram is for.
fn receiver_index(d: &[u8]) -> Option<u32> {
    let at = match *d.first()? {
        2 => 8,
        3 | 4 => 4,
        _ => return None,
    };
    let bytes: [u8; 4] = d.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes) >> 8)
}

/// Whether the packet is an ICMP "communication administratively prohibited" error.
fn is_admin_prohibited(packet: &[u8]) -> bool {
    let Ok(p) = IpPacket::parse(packet) else {
        return false;
    };
    match p.transport() {
        Transport::Icmp { kind, code } => {
            if p.is_ipv6() {
                kind == 1 && code == 1
            } else {
                kind == 3 && code == 13
            }
        }
        _ => false,
    }
}

/// Whether a packet starts a new flow: a TCP SYN without ACK, or anything not TCP.
fn is_new_flow(p: &IpPacket<'_>) -> bool {
    match p.transport() {
        Transport::Tcp { .. } => p.payload().get(13).is_some_and(|f| f & 0x12 == 0x02),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Protocol;
    use packet::PacketBuilder;
    use std::net::IpAddr;
    use test_case::test_case;

    fn resource(name: &str, addr: &str, ports: &[&str]) -> ClientResource {
        ClientResource {
            id: ResourceId::new(),
            name: name.into(),
            addresses: vec![addr.parse().unwrap()],
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn syn(dst: &str, port: u16) -> Vec<u8> {
        let mut p = PacketBuilder::tcp(ip("100.64.0.2"), ip(dst), 40000, port).build(b"");
        // The builder makes an ACK-less segment with no flags; make it a SYN.
        let ihl = usize::from(p[0] & 0x0f) * 4;
        p[ihl + 13] = 0x02;
        fix_tcp_checksum(&mut p);
        p
    }

    fn fix_tcp_checksum(p: &mut [u8]) {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        p[ihl + 16] = 0;
        p[ihl + 17] = 0;
        let c = packet::Checksum::new()
            .add_pseudo_header(
                IpAddr::from([p[12], p[13], p[14], p[15]]),
                IpAddr::from([p[16], p[17], p[18], p[19]]),
                6,
                (p.len() - ihl) as u32,
            )
            .add(&p[ihl..])
            .finish();
        p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    }

    fn tunnel_for(_now: Instant, secs: u64) -> NewTunnel {
        let gw = [7u8; 32];
        NewTunnel {
            grant: GrantId::new(),
            private_key: [9; 32],
            gateway_public_key: tunnel::public_key(&gw),
            preshared_key: [3; 32],
            gateway: "10.0.0.1:51820".parse().unwrap(),
            expires_in: Duration::from_secs(secs),
            expires_at: Timestamp::now() + jiff::SignedDuration::from_secs(secs as i64),
        }
    }

    #[test_case("10.1.0.5", Some(Protocol::Tcp), 443, true; "inside")]
    #[test_case("10.1.0.5", Some(Protocol::Tcp), 22, false; "other port")]
    #[test_case("10.1.0.5", Some(Protocol::Udp), 443, false; "other protocol")]
    #[test_case("10.2.0.5", Some(Protocol::Tcp), 443, false; "other address")]
    #[test_case("10.1.0.5", None, 0, false; "unknown protocol with ports")]
    fn resources_match_address_protocol_and_port(
        dst: &str,
        proto: Option<Protocol>,
        port: u16,
        want: bool,
    ) {
        let r = resource("app", "10.1.0.0/24", &["tcp/443", "tcp/8000-8080"]);
        assert_eq!(r.admission().admits(ip(dst), proto, port), want);
        // An empty port list admits every TCP and UDP port and ICMP inside the addresses,
        // but no other IP protocol (`proto: None`), as the gateway enforces.
        let all = resource("all", "10.1.0.0/24", &[]);
        assert_eq!(
            all.admission().admits(ip(dst), proto, port),
            !dst.starts_with("10.2") && proto.is_some()
        );
    }

    /// A packet of IP protocol `protocol` (neither TCP, UDP nor ICMP) to `dst`.
    fn other_protocol(dst: &str, protocol: u8) -> Vec<u8> {
        let mut p = PacketBuilder::udp(ip("100.64.0.2"), ip(dst), 1, 2).build(b"");
        p[9] = protocol;
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = packet::checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// The client half of the agreement with the gateway (see the tunnel filter's test
    /// `empty_ports_do_not_admit_protocol_253_or_gre`): a resource with an empty port list
    /// does not take protocol 253 or GRE, so they are not held, do not ask for access and are
    /// answered with ICMP "administratively prohibited" at once, as for a port outside it.
    #[test]
    fn empty_ports_do_not_tunnel_other_protocols() {
        let mut r = Router::new(RouterConfig::default());
        r.set_resources(vec![resource("all", "10.1.0.0/24", &[])]);
        let now = Instant::now();
        let mut buf = vec![0; 2048];
        for protocol in [253, 47] {
            let p = other_protocol("10.1.0.5", protocol);
            assert!(r.handle_tun_input(&p, now, &mut buf).is_none());
            assert_eq!(
                r.poll_action(),
                None,
                "protocol {protocol} asked for access"
            );
            let icmp = r.poll_tun_write().expect("an ICMP answer");
            assert!(is_admin_prohibited(&icmp), "protocol {protocol}");
        }
        assert_eq!(r.counters().unroutable, 2);
        assert_eq!(r.status(now)[0].state, "idle");
        // TCP to the same address is the resource's.
        r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        assert!(matches!(
            r.poll_action(),
            Some(Action::RequestAccess { .. })
        ));
    }

    /// Through a real gateway core holding the same grant, the router tunnels exactly what
    /// the gateway lets through, for every kind of packet to a resource with empty ports.
    #[test]
    fn the_router_tunnels_exactly_what_the_gateway_admits() {
        let app = resource("all", "10.1.0.0/24", &[]);
        let mut w = World::new(&app);
        w.send(&syn("10.1.0.5", 443));
        w.router.poll_action();
        w.grant(&app, 9, &[]);
        w.pump();
        assert_eq!(w.delivered.len(), 1, "the held SYN flows");
        let packets = [
            (
                "udp",
                PacketBuilder::udp(ip("100.64.0.2"), ip("10.1.0.7"), 5000, 53).build(b"q"),
            ),
            (
                "icmp",
                PacketBuilder::icmp(ip("100.64.0.2"), ip("10.1.0.7"), 8, 0).build(b""),
            ),
            ("protocol 253", other_protocol("10.1.0.7", 253)),
            ("gre", other_protocol("10.1.0.7", 47)),
        ];
        for (what, p) in packets {
            w.delivered.clear();
            w.to_apps.clear();
            let mut buf = vec![0; 2048];
            let sent = w
                .router
                .handle_tun_input(&p, w.now, &mut buf)
                .map(|t| t.payload.to_vec());
            let tunnelled = sent.is_some();
            if let Some(d) = sent {
                w.deliver_to_gateway(&d);
            }
            w.pump();
            let delivered = !w.delivered.is_empty();
            assert_eq!(tunnelled, delivered, "{what}: router and gateway disagree");
            if !tunnelled {
                assert!(
                    w.to_apps.iter().any(|p| is_admin_prohibited(p)),
                    "{what}: the application hears why"
                );
            }
        }
        assert_eq!(w.gateway.stats().drops.unsupported_protocol, 0);
        assert!(w.router.is_connected(app.id));
    }

    #[test]
    fn the_first_packet_is_held_and_asks_once() {
        let mut r = Router::new(RouterConfig::default());
        let app = resource("app", "10.1.0.5/32", &["tcp/443"]);
        r.set_resources(vec![app.clone()]);
        let now = Instant::now();
        let mut buf = vec![0; 2048];
        assert!(
            r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf)
                .is_none()
        );
        assert!(
            r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf)
                .is_none()
        );
        assert_eq!(
            r.poll_action(),
            Some(Action::RequestAccess {
                resource: app.id,
                renewal: false
            })
        );
        assert_eq!(r.poll_action(), None);
        assert_eq!(r.status(now)[0].state, "requesting");
    }

    #[test]
    fn held_packets_are_bounded_in_count_bytes_and_time() {
        let config = RouterConfig {
            hold_packets: 3,
            hold_bytes: 10_000,
            ..RouterConfig::default()
        };
        let mut r = Router::new(config);
        let app = resource("app", "10.1.0.5/32", &[]);
        r.set_resources(vec![app.clone()]);
        let now = Instant::now();
        let mut buf = vec![0; 70000];
        for _ in 0..5 {
            r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        }
        assert_eq!(r.counters().hold_overflow, 2);
        let big = PacketBuilder::udp(ip("100.64.0.2"), ip("10.1.0.5"), 1, 2).build(&[0; 20000]);
        let mut r2 = Router::new(RouterConfig {
            hold_packets: 64,
            hold_bytes: 30_000,
            ..RouterConfig::default()
        });
        r2.set_resources(vec![app.clone()]);
        r2.handle_tun_input(&big, now, &mut buf);
        r2.handle_tun_input(&big, now, &mut buf);
        assert_eq!(r2.counters().hold_overflow, 1, "byte bound");
        // Time bound.
        r.handle_timeout(now + Duration::from_secs(11));
        assert_eq!(r.counters().hold_expired, 3);
    }

    #[test]
    fn a_denial_answers_held_packets_and_backs_off() {
        let mut r = Router::new(RouterConfig::default());
        let app = resource("app", "10.1.0.5/32", &["tcp/443"]);
        r.set_resources(vec![app.clone()]);
        let now = Instant::now();
        let mut buf = vec![0; 2048];
        r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        r.poll_action();
        r.denied(app.id, now);
        for _ in 0..2 {
            let icmp = r.poll_tun_write().expect("an ICMP reply");
            let p = IpPacket::parse(&icmp).unwrap();
            assert_eq!(p.transport(), Transport::Icmp { kind: 3, code: 13 });
            assert_eq!(p.dst(), ip("100.64.0.2"));
        }
        assert_eq!(r.status(now)[0].state, "denied");
        // Within the back-off: answered at once, no new request.
        r.handle_tun_input(
            &syn("10.1.0.5", 443),
            now + Duration::from_secs(1),
            &mut buf,
        );
        assert!(r.poll_tun_write().is_some());
        assert_eq!(r.poll_action(), None);
        // After it: asks again.
        r.handle_timeout(now + Duration::from_secs(6));
        r.handle_tun_input(
            &syn("10.1.0.5", 443),
            now + Duration::from_secs(6),
            &mut buf,
        );
        assert!(matches!(
            r.poll_action(),
            Some(Action::RequestAccess { .. })
        ));
    }

    #[test]
    fn packets_outside_a_resource_port_get_icmp_and_others_are_dropped() {
        let mut r = Router::new(RouterConfig::default());
        r.set_resources(vec![resource("app", "10.1.0.5/32", &["tcp/443"])]);
        let now = Instant::now();
        let mut buf = vec![0; 2048];
        r.handle_tun_input(&syn("10.1.0.5", 22), now, &mut buf);
        assert!(r.poll_tun_write().is_some());
        r.handle_tun_input(&syn("10.9.9.9", 443), now, &mut buf);
        assert!(r.poll_tun_write().is_none());
        assert_eq!(r.poll_action(), None);
        assert_eq!(r.counters().unroutable, 2);
        r.handle_tun_input(b"garbage", now, &mut buf);
        assert_eq!(r.counters().malformed, 1);
    }

    #[test]
    fn a_grant_sends_a_handshake_and_revocation_closes_it() {
        let mut r = Router::new(RouterConfig::default());
        let app = resource("app", "10.1.0.5/32", &["tcp/443"]);
        r.set_resources(vec![app.clone()]);
        let now = Instant::now();
        let mut buf = vec![0; 2048];
        r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        r.poll_action();
        let grant = tunnel_for(now, 100);
        let id = grant.grant;
        r.granted(app.id, grant, now).unwrap();
        let mut out = Vec::new();
        let dst = r.poll_transmit(&mut out).expect("a handshake initiation");
        assert_eq!(dst, "10.0.0.1:51820".parse().unwrap());
        assert_eq!(out[0], 1);
        assert_eq!(out.len(), 148);
        assert_eq!(r.status(now)[0].state, "connecting");
        assert_eq!(r.status(now)[0].grant, Some(id));
        // Renewal at 80%.
        r.handle_timeout(now + Duration::from_secs(81));
        assert_eq!(
            r.poll_action(),
            Some(Action::RequestAccess {
                resource: app.id,
                renewal: true
            })
        );
        // Revocation: closed, the open flow gets ICMP, a new flow asks again.
        assert_eq!(r.revoked(id), Some(app.id));
        assert_eq!(r.status(now)[0].state, "revoked");
        let mut ack = syn("10.1.0.5", 443);
        let ihl = usize::from(ack[0] & 0x0f) * 4;
        ack[ihl + 13] = 0x10;
        fix_tcp_checksum(&mut ack);
        r.handle_tun_input(&ack, now, &mut buf);
        assert!(r.poll_tun_write().is_some());
        r.handle_tun_input(&syn("10.1.0.5", 443), now, &mut buf);
        assert!(matches!(
            r.poll_action(),
            Some(Action::RequestAccess { renewal: false, .. })
        ));
    }

    #[test]
    fn idle_and_expired_tunnels_close_and_release() {
        let mut r = Router::new(RouterConfig {
            idle_timeout: Duration::from_secs(30),
            ..RouterConfig::default()
        });
        let app = resource("app", "10.1.0.5/32", &[]);
        r.set_resources(vec![app.clone()]);
        let now = Instant::now();
        let grant = tunnel_for(now, 1000);
        let id = grant.grant;
        assert!(r.request(app.id, now));
        r.poll_action();
        r.granted(app.id, grant, now).unwrap();
        assert!(!r.request(app.id, now), "already has a tunnel");
        r.handle_timeout(now + Duration::from_secs(31));
        assert_eq!(r.poll_action(), Some(Action::Release { grant: id }));
        assert_eq!(r.status(now)[0].state, "idle");
        // Removing the resource releases its tunnel too.
        let grant = tunnel_for(now, 1000);
        let id = grant.grant;
        r.granted(app.id, grant, now).unwrap();
        r.set_resources(vec![]);
        assert_eq!(r.poll_action(), Some(Action::Release { grant: id }));
        assert!(r.status(now).is_empty());
        assert_eq!(
            r.granted(app.id, tunnel_for(now, 10), now),
            Err(RouterError::UnknownResource(app.id))
        );
    }

    /// A client router and a real gateway core exchanging datagrams on a perfect link.
    struct World {
        router: Router,
        gateway: tunnel::GatewayTunnel,
        now: Instant,
        /// Packets the gateway let through towards the resource.
        delivered: Vec<Vec<u8>>,
        /// Packets the router wrote back to the local applications.
        to_apps: Vec<Vec<u8>>,
    }

    const CLIENT_ADDR: &str = "10.0.0.2:40000";
    const GATEWAY_ADDR: &str = "10.0.0.1:51820";

    impl World {
        fn new(app: &ClientResource) -> Self {
            let now = Instant::now();
            let mut router = Router::new(RouterConfig::default());
            router.set_resources(vec![app.clone()]);
            let gateway = tunnel::GatewayTunnel::new(tunnel::GatewayConfig::new([7; 32]), now);
            Self {
                router,
                gateway,
                now,
                delivered: Vec::new(),
                to_apps: Vec::new(),
            }
        }

        /// The controller's part: a grant on the gateway (admitting `ports`) and its answer
        /// to the router.
        fn grant(&mut self, app: &ClientResource, key: u8, ports: &[&str]) -> GrantId {
            let id = GrantId::new();
            let grant = tunnel::GrantConfig {
                id,
                public_key: tunnel::public_key(&[key; 32]),
                preshared_key: [3; 32],
                tunnel_address: ip("100.64.0.2"),
                admission: model::Admission::new(
                    app.addresses.clone(),
                    ports.iter().map(|p| p.parse().unwrap()).collect(),
                ),
                expires_at: Timestamp::now() + jiff::SignedDuration::from_secs(600),
            };
            self.gateway
                .add_grant(grant, self.now, Timestamp::now())
                .unwrap();
            let mut t = tunnel_for(self.now, 600);
            t.grant = id;
            t.private_key = [key; 32];
            self.router.granted(app.id, t, self.now).unwrap();
            id
        }

        fn send(&mut self, packet: &[u8]) {
            let mut buf = vec![0; 2048];
            if let Some(t) = self.router.handle_tun_input(packet, self.now, &mut buf) {
                let d = t.payload.to_vec();
                self.deliver_to_gateway(&d);
            }
            self.pump();
        }

        fn deliver_to_gateway(&mut self, d: &[u8]) {
            let mut buf = vec![0; 2048];
            if let Some(p) = self.gateway.handle_network_input(
                CLIENT_ADDR.parse().unwrap(),
                d,
                self.now,
                &mut buf,
            ) {
                self.delivered.push(p.to_vec());
            }
        }

        /// Moves datagrams both ways until the link is quiet.
        fn pump(&mut self) {
            for _ in 0..100 {
                self.now += Duration::from_millis(1);
                let mut moved = false;
                let mut d = Vec::new();
                while self.router.poll_transmit(&mut d).is_some() {
                    let copy = d.clone();
                    self.deliver_to_gateway(&copy);
                    moved = true;
                }
                while self.gateway.poll_transmit(&mut d).is_some() {
                    let mut buf = vec![0; 2048];
                    if let Some(p) = self.router.handle_network_input(
                        GATEWAY_ADDR.parse().unwrap(),
                        &d,
                        self.now,
                        &mut buf,
                    ) {
                        self.to_apps.push(p.to_vec());
                    }
                    moved = true;
                }
                while let Some(p) = self.router.poll_tun_write() {
                    self.to_apps.push(p);
                }
                if !moved {
                    return;
                }
            }
            panic!("the link never went quiet");
        }
    }

    #[test]
    fn held_packets_reach_the_resource_through_a_real_gateway() {
        let app = resource("app", "10.1.0.5/32", &["tcp/443"]);
        let mut w = World::new(&app);
        let first = syn("10.1.0.5", 443);
        w.send(&first);
        w.send(&first);
        assert!(matches!(
            w.router.poll_action(),
            Some(Action::RequestAccess { renewal: false, .. })
        ));
        w.grant(&app, 9, &["tcp/443"]);
        w.pump();
        assert_eq!(
            w.delivered,
            vec![first.clone(), first.clone()],
            "held packets flow"
        );
        assert!(w.router.is_connected(app.id));
        // Warm: straight through.
        w.send(&first);
        assert_eq!(w.delivered.len(), 3);
        // And back: a reply from the resource reaches the application.
        let reply = PacketBuilder::tcp(ip("10.1.0.5"), ip("100.64.0.2"), 443, 40000).build(b"hi");
        let mut buf = vec![0; 2048];
        let t = w.gateway.handle_tun_input(&reply, w.now, &mut buf).unwrap();
        let d = t.payload.to_vec();
        let mut out = vec![0; 2048];
        let got = w
            .router
            .handle_network_input(GATEWAY_ADDR.parse().unwrap(), &d, w.now, &mut out)
            .unwrap();
        assert_eq!(got, &reply[..]);
    }

    #[test]
    fn the_gateway_refusing_makes_the_client_ask_once_then_report() {
        let app = resource("app", "10.1.0.5/32", &["tcp/443"]);
        let mut w = World::new(&app);
        w.send(&syn("10.1.0.5", 443));
        w.router.poll_action();
        // The gateway's idea of the grant disagrees with the client's (another port).
        let first = w.grant(&app, 9, &["tcp/80"]);
        w.pump();
        assert!(
            w.delivered.is_empty(),
            "nothing passes the gateway's filter"
        );
        assert!(
            w.to_apps.iter().any(|p| is_admin_prohibited(p)),
            "the application hears why"
        );
        assert_eq!(
            w.router.poll_action(),
            Some(Action::Release { grant: first })
        );
        // The next packet asks again...
        w.send(&syn("10.1.0.5", 443));
        assert!(matches!(
            w.router.poll_action(),
            Some(Action::RequestAccess { renewal: false, .. })
        ));
        let second = w.grant(&app, 10, &["tcp/80"]);
        w.pump();
        // ...and a second refusal is reported instead of asking again.
        assert_eq!(
            w.router.poll_action(),
            Some(Action::GatewayRefused { resource: app.id })
        );
        assert_eq!(
            w.router.poll_action(),
            Some(Action::Release { grant: second })
        );
        w.send(&syn("10.1.0.5", 443));
        assert_eq!(w.router.poll_action(), None, "backing off");
        assert_eq!(w.router.status(w.now)[0].state, "denied");
    }

    #[test]
    fn receiver_indices_and_prohibited_replies_are_recognised() {
        let mut d = vec![4u8, 0, 0, 0];
        d.extend_from_slice(&((5u32 << 8) | 3).to_le_bytes());
        d.extend_from_slice(&[0; 24]);
        assert_eq!(receiver_index(&d), Some(5));
        assert_eq!(receiver_index(&[1, 0, 0, 0, 1, 2, 3, 4]), None);
        assert_eq!(receiver_index(&[]), None);
        let offending = syn("10.1.0.5", 443);
        let mut out = vec![0; 600];
        let n = packet::write_admin_prohibited(&IpPacket::parse(&offending).unwrap(), &mut out)
            .unwrap();
        assert!(is_admin_prohibited(&out[..n]));
        assert!(!is_admin_prohibited(&offending));
    }
}
