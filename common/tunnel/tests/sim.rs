//! A deterministic simulation of the tunnel core: one gateway, several clients (each with one
//! or more grant tunnels), resource servers that echo, and a lossy, reordering in-memory
//! network, all on a fake clock that is stepped to the next timeout or delivery. Every
//! packet the gateway hands to its TUN device is checked against a reference model of who
//! may reach what.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a test failure

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use model::{GrantId, Protocol, Resource, ResourceId, SiteId};
use packet::{IpPacket, PacketBuilder, Transport};
use tunnel::{
    ClientConfig, ClientEvent, ClientTunnel, DropReason, Event, GatewayConfig, GatewayTunnel,
    GrantConfig,
};

const GATEWAY: &str = "203.0.113.1:51820";
const GATEWAY_KEY: [u8; 32] = [200; 32];
const MAGIC: u8 = 0xa5;
const FLAG_SPOOFED: u8 = 1;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gateway_addr() -> SocketAddr {
    GATEWAY.parse().unwrap()
}

fn resource(addresses: &[&str], ports: &[&str]) -> Resource {
    Resource {
        id: ResourceId::new(),
        name: "r".into(),
        site_id: SiteId::new(),
        addresses: addresses
            .iter()
            .map(|a| model::parse_address(a).unwrap())
            .collect(),
        ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        created_at: Timestamp::UNIX_EPOCH,
    }
}

/// A tiny deterministic random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A network that loses and delays (and so reorders) datagrams, and records everything.
struct Net {
    rng: Rng,
    loss_per_mille: u64,
    max_delay_ms: u64,
    seq: u64,
    in_flight: BinaryHeap<Reverse<(Instant, u64, Datagram)>>,
    /// Every datagram ever sent, for replay attacks.
    log: Vec<Datagram>,
    /// Bytes the gateway sent to each address.
    gateway_sent: HashMap<SocketAddr, usize>,
}

impl Net {
    fn send(&mut self, now: Instant, d: Datagram) {
        if d.from == gateway_addr() {
            *self.gateway_sent.entry(d.to).or_default() += d.bytes.len();
        }
        self.log.push(d.clone());
        if self.rng.chance(self.loss_per_mille) {
            return;
        }
        let delay = Duration::from_millis(1 + self.rng.below(self.max_delay_ms));
        self.seq += 1;
        self.in_flight.push(Reverse((now + delay, self.seq, d)));
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Datagram> {
        if self.next_delivery()? <= now {
            self.in_flight.pop().map(|Reverse((_, _, d))| d)
        } else {
            None
        }
    }
}

/// What the reference model knows about a grant.
#[derive(Debug, Clone)]
struct RefGrant {
    client: usize,
    tunnel_address: IpAddr,
    resource: Resource,
    deadline: Instant,
    removed: bool,
    registered: bool,
}

impl RefGrant {
    fn live(&self, now: Instant) -> bool {
        !self.removed && now < self.deadline
    }
}

struct Client {
    addr: SocketAddr,
    tunnel_address: IpAddr,
    /// Tunnels by grant slot.
    tunnels: BTreeMap<usize, ClientTunnel>,
    /// Packets that came out of the tunnels: (grant slot, packet).
    received: Vec<(usize, Vec<u8>)>,
    events: Vec<ClientEvent>,
}

struct World {
    base: Instant,
    now: Instant,
    wall_base: Timestamp,
    net: Net,
    gateway: GatewayTunnel,
    gateway_events: Vec<Event>,
    clients: Vec<Client>,
    /// Grants by slot: id, private key and reference state.
    grants: Vec<(GrantId, [u8; 32], RefGrant)>,
    /// Tagged packets the gateway delivered to its TUN device: (client, slot, seq).
    delivered: Vec<(u8, u8, u32)>,
    /// Whether resource servers echo what they receive.
    echo: bool,
    seq: u32,
    buf: Vec<u8>,
}

impl World {
    fn new(seed: u64, loss_per_mille: u64, max_delay_ms: u64, rate_limit: u64) -> Self {
        let base = Instant::now();
        let mut config = GatewayConfig::new(GATEWAY_KEY);
        config.handshake_rate_limit = rate_limit;
        config.seed = seed;
        Self {
            base,
            now: base,
            wall_base: Timestamp::from_second(1_800_000_000).unwrap(),
            net: Net {
                rng: Rng(seed | 1),
                loss_per_mille,
                max_delay_ms,
                seq: 0,
                in_flight: BinaryHeap::new(),
                log: Vec::new(),
                gateway_sent: HashMap::new(),
            },
            gateway: GatewayTunnel::new(config, base),
            gateway_events: Vec::new(),
            clients: Vec::new(),
            grants: Vec::new(),
            delivered: Vec::new(),
            echo: true,
            seq: 0,
            buf: vec![0; 70_000],
        }
    }

    fn wall(&self) -> Timestamp {
        self.wall_base + (self.now - self.base)
    }

    fn add_client(&mut self) -> usize {
        let i = self.clients.len();
        self.clients.push(Client {
            addr: format!("198.51.100.{}:{}", i + 1, 40000 + i)
                .parse()
                .unwrap(),
            tunnel_address: format!("100.64.0.{}", i + 2).parse().unwrap(),
            tunnels: BTreeMap::new(),
            received: Vec::new(),
            events: Vec::new(),
        });
        i
    }

    /// Issues a grant to `client` for `resource`, lasting `ttl`: registers it at the gateway
    /// (unless `register` is false, to model a key the gateway does not know) and gives the
    /// client a tunnel for it. Returns the grant's slot.
    fn grant(&mut self, client: usize, resource: Resource, ttl: Duration, register: bool) -> usize {
        let slot = self.grants.len();
        let id = GrantId::new();
        let private_key = [(slot as u8).wrapping_mul(7).wrapping_add(1); 32];
        let psk = [slot as u8; 32];
        let tunnel_address = self.clients[client].tunnel_address;
        if register {
            self.gateway
                .add_grant(
                    GrantConfig {
                        id,
                        public_key: tunnel::public_key(&private_key),
                        preshared_key: psk,
                        tunnel_address,
                        admission: resource.admission(),
                        expires_at: self.wall() + ttl,
                    },
                    self.now,
                    self.wall(),
                )
                .unwrap();
        }
        let tunnel = ClientTunnel::new(
            ClientConfig {
                grant: id,
                private_key,
                gateway_public_key: tunnel::public_key(&GATEWAY_KEY),
                preshared_key: psk,
                gateway: gateway_addr(),
                persistent_keepalive: None,
                index: slot as u32 + 1,
            },
            self.now,
        );
        self.clients[client].tunnels.insert(slot, tunnel);
        self.grants.push((
            id,
            private_key,
            RefGrant {
                client,
                tunnel_address,
                resource,
                deadline: if register { self.now + ttl } else { self.now },
                removed: !register,
                registered: register,
            },
        ));
        slot
    }

    fn revoke(&mut self, slot: usize) {
        assert!(self.gateway.remove_grant(self.grants[slot].0));
        self.grants[slot].2.removed = true;
    }

    /// A tagged packet from `client` through `slot`'s tunnel.
    fn packet(
        &mut self,
        client: usize,
        slot: usize,
        proto: Protocol,
        dst: &str,
        port: u16,
        flags: u8,
    ) -> Vec<u8> {
        self.seq += 1;
        let src = if flags & FLAG_SPOOFED != 0 {
            ip("100.64.9.9")
        } else {
            self.clients[client].tunnel_address
        };
        let mut tag = vec![MAGIC, client as u8, slot as u8, flags];
        tag.extend_from_slice(&self.seq.to_be_bytes());
        let builder = match proto {
            Protocol::Tcp => PacketBuilder::tcp(src, ip(dst), 40000, port),
            Protocol::Udp => PacketBuilder::udp(src, ip(dst), 40000, port),
            Protocol::Icmp => PacketBuilder::icmp(src, ip(dst), 8, 0),
        };
        builder.build(&tag)
    }

    /// Sends `packet` from `client` into `slot`'s tunnel.
    fn send(&mut self, client: usize, slot: usize, packet: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[client];
        let tunnel = c.tunnels.get_mut(&slot).unwrap();
        if let Some(t) = tunnel.handle_tun_input(packet, now, &mut self.buf) {
            let d = Datagram {
                from: c.addr,
                to: t.dst,
                bytes: t.payload.to_vec(),
            };
            self.net.send(now, d);
        }
        self.drain();
    }

    fn inject(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        self.net.send(
            now,
            Datagram {
                from,
                to: gateway_addr(),
                bytes,
            },
        );
    }

    /// Moves every queued output of every node onto the network.
    fn drain(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        while let Some(to) = self.gateway.poll_transmit(&mut out) {
            self.net.send(
                now,
                Datagram {
                    from: gateway_addr(),
                    to,
                    bytes: out.clone(),
                },
            );
        }
        while let Some(e) = self.gateway.poll_event() {
            self.gateway_events.push(e);
        }
        for c in &mut self.clients {
            for t in c.tunnels.values_mut() {
                while let Some(to) = t.poll_transmit(&mut out) {
                    self.net.send(
                        now,
                        Datagram {
                            from: c.addr,
                            to,
                            bytes: out.clone(),
                        },
                    );
                }
                while let Some(e) = t.poll_event() {
                    c.events.push(e);
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        let clients = self
            .clients
            .iter()
            .flat_map(|c| c.tunnels.values().filter_map(|t| t.poll_timeout()));
        [self.gateway.poll_timeout(), self.net.next_delivery()]
            .into_iter()
            .flatten()
            .chain(clients)
            .min()
    }

    /// Steps the world to `self.now + d`, one timeout or delivery at a time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(next) = self.next_timeout().filter(|&t| t <= end) {
            self.now = self.now.max(next);
            while let Some(d) = self.net.pop_due(self.now) {
                self.deliver(d);
                self.drain();
            }
            let now = self.now;
            if self.gateway.poll_timeout().is_some_and(|t| t <= now) {
                self.gateway.handle_timeout(now);
            }
            for c in &mut self.clients {
                for t in c.tunnels.values_mut() {
                    if t.poll_timeout().is_some_and(|t| t <= now) {
                        t.handle_timeout(now);
                    }
                }
            }
            self.drain();
        }
        self.now = end;
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        if d.to == gateway_addr() {
            let mut buf = std::mem::take(&mut self.buf);
            if let Some(p) = self
                .gateway
                .handle_network_input(d.from, &d.bytes, now, &mut buf)
            {
                let p = p.to_vec();
                self.on_gateway_tun(&p);
            }
            self.buf = buf;
            return;
        }
        let Some(c) = self.clients.iter_mut().find(|c| c.addr == d.to) else {
            return;
        };
        // Route by receiver index, as a client with several tunnels would.
        let at = if d.bytes[0] == 2 { 8 } else { 4 };
        let index = d
            .bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) >> 8);
        for (&slot, t) in c.tunnels.iter_mut() {
            if d.bytes[0] != 1 && index != Some(slot as u32 + 1) {
                continue;
            }
            if let Some(p) = t.handle_network_input(d.from, &d.bytes, now, &mut self.buf) {
                c.received.push((slot, p.to_vec()));
            }
        }
    }

    /// The gateway's TUN device: check the packet against the reference model, record it and
    /// let the resource echo it.
    fn on_gateway_tun(&mut self, p: &[u8]) {
        let parsed = IpPacket::parse(p).expect("gateway delivered an unparsable packet");
        let tag = parsed.payload();
        let tag = &tag[tag.len() - 8..];
        assert_eq!(tag[0], MAGIC, "untagged packet delivered");
        let (client, slot, flags) = (tag[1], tag[2], tag[3]);
        let seq = u32::from_be_bytes(tag[4..8].try_into().unwrap());
        let g = &self.grants[usize::from(slot)].2;
        assert!(
            g.live(self.now),
            "packet of a dead grant delivered: slot {slot}"
        );
        assert_eq!(flags & FLAG_SPOOFED, 0, "spoofed packet delivered");
        assert_eq!(usize::from(client), g.client);
        assert_eq!(
            parsed.src(),
            g.tunnel_address,
            "wrong inner source delivered"
        );
        let (proto, port) = match parsed.transport() {
            Transport::Tcp { dst_port, .. } => (Protocol::Tcp, dst_port),
            Transport::Udp { dst_port, .. } => (Protocol::Udp, dst_port),
            Transport::Icmp { .. } => (Protocol::Icmp, 0),
            Transport::Other => panic!("unexpected protocol delivered"),
        };
        assert!(
            g.resource.admits(parsed.dst(), proto, port),
            "packet outside the resource delivered"
        );
        self.delivered.push((client, slot, seq));
        if self.echo {
            let reply = match parsed.transport() {
                Transport::Tcp { src_port, dst_port } => {
                    PacketBuilder::tcp(parsed.dst(), parsed.src(), dst_port, src_port)
                }
                Transport::Udp { src_port, dst_port } => {
                    PacketBuilder::udp(parsed.dst(), parsed.src(), dst_port, src_port)
                }
                _ => PacketBuilder::icmp(parsed.dst(), parsed.src(), 0, 0),
            }
            .build(tag);
            let now = self.now;
            let mut buf = vec![0; reply.len() + 200];
            if let Some(t) = self.gateway.handle_tun_input(&reply, now, &mut buf) {
                let d = Datagram {
                    from: gateway_addr(),
                    to: t.dst,
                    bytes: t.payload.to_vec(),
                };
                self.net.send(now, d);
            }
        }
    }

    fn delivered_seq(&self, seq: u32) -> bool {
        self.delivered.iter().any(|&(_, _, s)| s == seq)
    }

    /// Echo replies a client received on `slot`'s tunnel for `seq`.
    fn replies(&self, client: usize, slot: usize, seq: u32) -> usize {
        self.clients[client]
            .received
            .iter()
            .filter(|(s, p)| {
                *s == slot
                    && p.len() >= 8
                    && p[p.len() - 4..] == seq.to_be_bytes()
                    && p[p.len() - 8] == MAGIC
            })
            .count()
    }

    fn sent_to(&self, addr: SocketAddr) -> usize {
        self.net.gateway_sent.get(&addr).copied().unwrap_or(0)
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.gateway.stats().drops.get(reason)
    }
}

fn ssh_resource() -> Resource {
    resource(&["10.0.5.20"], &["tcp/22"])
}

/// A world with one client holding one registered grant to 10.0.5.20 tcp/22, handshake done.
fn connected(seed: u64) -> (World, usize, usize) {
    let mut w = World::new(seed, 0, 5, 100);
    let c = w.add_client();
    let g = w.grant(c, ssh_resource(), Duration::from_secs(3600), true);
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, g, &p);
    w.run(Duration::from_secs(1));
    assert_eq!(w.delivered.len(), 1, "first packet not delivered");
    (w, c, g)
}

#[test]
fn allowed_flow_round_trips_and_reports_the_handshake() {
    let (mut w, c, g) = connected(1);
    let grant = w.grants[g].0;
    assert!(
        w.gateway_events
            .contains(&Event::HandshakeCompleted { grant })
    );
    assert!(
        w.clients[c]
            .events
            .contains(&ClientEvent::HandshakeCompleted { grant })
    );
    assert_eq!(w.replies(c, g, w.delivered[0].2), 1);

    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, g, &p);
    w.run(Duration::from_millis(100));
    assert!(w.delivered_seq(w.seq));
    assert_eq!(w.replies(c, g, w.seq), 1);
    assert_eq!(w.gateway.stats().drops.total(), 0);
}

#[test]
fn port_outside_the_resource_gets_icmp_admin_prohibited_inside_the_tunnel() {
    let (mut w, c, g) = connected(2);
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 23, 0);
    w.send(c, g, &p);
    w.run(Duration::from_millis(100));
    assert!(!w.delivered_seq(w.seq));
    assert_eq!(w.drops(DropReason::OutsideResource), 1);
    assert_eq!(w.gateway.stats().icmp_sent, 1);
    let (slot, icmp) = w.clients[c].received.last().unwrap().clone();
    assert_eq!(slot, g);
    let icmp = IpPacket::parse(&icmp).unwrap();
    assert_eq!(icmp.transport(), Transport::Icmp { kind: 3, code: 13 });
    assert_eq!(
        (icmp.src(), icmp.dst()),
        (ip("10.0.5.20"), w.clients[c].tunnel_address)
    );
    assert_eq!(&icmp.payload()[8..], &p[..]);
    assert!(PacketBuilder::checksums_valid(icmp.as_bytes()));

    // ICMP to an address outside the resource is dropped without a reply.
    let before = w.clients[c].received.len();
    let p = w.packet(c, g, Protocol::Icmp, "10.0.5.99", 0, 0);
    w.send(c, g, &p);
    w.run(Duration::from_millis(100));
    assert_eq!(w.drops(DropReason::OutsideResource), 2);
    assert_eq!(w.clients[c].received.len(), before);
}

#[test]
fn spoofed_inner_source_is_dropped_silently() {
    let (mut w, c, g) = connected(3);
    let before = w.clients[c].received.len();
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, FLAG_SPOOFED);
    w.send(c, g, &p);
    w.run(Duration::from_millis(100));
    assert_eq!(w.drops(DropReason::SpoofedSource), 1);
    assert_eq!(w.gateway.stats().icmp_sent, 0);
    assert_eq!(w.clients[c].received.len(), before);
}

#[test]
fn handshake_from_an_unknown_key_gets_zero_bytes() {
    let mut w = World::new(4, 0, 5, 100);
    let c = w.add_client();
    let g = w.grant(c, ssh_resource(), Duration::from_secs(3600), false);
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, g, &p);
    // boringtun retries for 90 seconds.
    w.run(Duration::from_secs(120));
    assert!(w.drops(DropReason::UnknownKey) >= 2);
    assert_eq!(w.sent_to(w.clients[c].addr), 0);
    assert!(w.delivered.is_empty());
}

#[test]
fn random_udp_garbage_gets_zero_bytes() {
    let (mut w, _, _) = connected(5);
    let attacker: SocketAddr = "192.0.2.66:1234".parse().unwrap();
    let mut rng = Rng(55);
    for i in 0..400 {
        let len = match i % 5 {
            0 => 148,
            1 => 92,
            2 => 64,
            3 => 32 + rng.below(100) as usize,
            _ => rng.below(1500) as usize,
        };
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 5 < 4 && len >= 4 {
            // A valid message type and zero reserved bytes, so boringtun's parser accepts it.
            bytes[..4].copy_from_slice(&[[1, 2, 3, 4][i % 5], 0, 0, 0]);
        }
        w.inject(attacker, bytes);
    }
    w.run(Duration::from_secs(2));
    assert_eq!(w.sent_to(attacker), 0);
    let s = w.gateway.stats();
    assert!(s.drops.invalid_handshake > 0, "{s:?}");
    assert!(s.drops.malformed_datagram > 0, "{s:?}");
}

#[test]
fn replayed_packets_are_dropped() {
    let (mut w, c, _) = connected(6);
    let client_addr = w.clients[c].addr;
    let from_client: Vec<Datagram> = w
        .net
        .log
        .iter()
        .filter(|d| d.from == client_addr)
        .cloned()
        .collect();
    let init = from_client
        .iter()
        .find(|d| d.bytes[0] == 1)
        .unwrap()
        .clone();
    let data = from_client
        .iter()
        .rev()
        .find(|d| d.bytes[0] == 4 && d.bytes.len() > 32)
        .unwrap()
        .clone();
    let delivered = w.delivered.len();
    let sent_before = w.sent_to(client_addr);

    w.inject(client_addr, data.bytes.clone());
    w.run(Duration::from_millis(100));
    assert_eq!(w.delivered.len(), delivered, "replayed data delivered");
    assert_eq!(w.drops(DropReason::Replayed), 1);

    // A replayed initiation, even from the peer's own address, gets nothing back.
    let attacker: SocketAddr = "192.0.2.77:999".parse().unwrap();
    w.inject(attacker, init.bytes.clone());
    w.inject(client_addr, init.bytes);
    w.run(Duration::from_millis(100));
    assert_eq!(w.sent_to(attacker), 0);
    assert_eq!(w.sent_to(client_addr), sent_before);
    assert_eq!(w.drops(DropReason::Rejected), 2);
}

#[test]
fn expiry_stops_traffic() {
    let mut w = World::new(7, 0, 5, 100);
    let c = w.add_client();
    let g = w.grant(c, ssh_resource(), Duration::from_secs(30), true);
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, g, &p);
    w.run(Duration::from_secs(29));
    assert_eq!(w.delivered.len(), 1);
    w.run(Duration::from_secs(2));
    let grant = w.grants[g].0;
    assert!(w.gateway_events.contains(&Event::GrantExpired { grant }));
    assert_eq!(w.gateway.grant_count(), 0);
    let sent = w.sent_to(w.clients[c].addr);
    for _ in 0..3 {
        let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
        w.send(c, g, &p);
        w.run(Duration::from_secs(40));
    }
    assert_eq!(w.delivered.len(), 1);
    assert_eq!(
        w.sent_to(w.clients[c].addr),
        sent,
        "gateway answered an expired grant"
    );
    assert!(w.drops(DropReason::UnknownIndex) + w.drops(DropReason::UnknownKey) > 0);
}

#[test]
fn revocation_stops_traffic_immediately() {
    let (mut w, c, g) = connected(8);
    let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, g, &p);
    // Revoke while the packet is in flight.
    w.revoke(g);
    w.run(Duration::from_secs(1));
    assert!(!w.delivered_seq(w.seq));
    let sent = w.sent_to(w.clients[c].addr);
    // The resource keeps sending to the device: nothing goes out.
    let reply =
        PacketBuilder::tcp(ip("10.0.5.20"), w.clients[c].tunnel_address, 22, 40000).build(b"x");
    assert!(
        w.gateway
            .handle_tun_input(&reply, w.now, &mut [0; 200])
            .is_none()
    );
    assert_eq!(w.drops(DropReason::TunNoGrant), 1);
    w.run(Duration::from_secs(60));
    assert_eq!(w.sent_to(w.clients[c].addr), sent);
}

#[test]
fn one_device_with_two_grants() {
    let mut w = World::new(9, 0, 5, 100);
    let c = w.add_client();
    let ssh = w.grant(c, ssh_resource(), Duration::from_secs(3600), true);
    let dns = w.grant(
        c,
        resource(&["10.0.6.0/24"], &["udp/53"]),
        Duration::from_secs(3600),
        true,
    );

    let a = w.packet(c, ssh, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, ssh, &a);
    let seq_a = w.seq;
    let b = w.packet(c, dns, Protocol::Udp, "10.0.6.53", 53, 0);
    w.send(c, dns, &b);
    let seq_b = w.seq;
    w.run(Duration::from_secs(1));
    assert!(w.delivered_seq(seq_a) && w.delivered_seq(seq_b));
    // Replies come back through the tunnel of the grant they belong to.
    assert_eq!(w.replies(c, ssh, seq_a), 1);
    assert_eq!(w.replies(c, dns, seq_b), 1);
    assert_eq!(w.replies(c, dns, seq_a) + w.replies(c, ssh, seq_b), 0);

    // One grant's tunnel cannot reach the other grant's resource.
    let cross = w.packet(c, ssh, Protocol::Udp, "10.0.6.53", 53, 0);
    w.send(c, ssh, &cross);
    w.run(Duration::from_millis(100));
    assert!(!w.delivered_seq(w.seq));
    assert_eq!(w.drops(DropReason::OutsideResource), 1);

    // Revoking one leaves the other working.
    w.revoke(ssh);
    let b = w.packet(c, dns, Protocol::Udp, "10.0.6.53", 53, 0);
    w.send(c, dns, &b);
    w.run(Duration::from_millis(100));
    assert!(w.delivered_seq(w.seq));
    assert_eq!(w.replies(c, dns, w.seq), 1);
}

#[test]
fn replies_follow_the_grant_the_device_used_last() {
    // A stale grant (e.g. left by a crashed client) and its replacement share the device's
    // tunnel address and resource; replies must reach the tunnel in use, not the older one.
    let mut w = World::new(11, 0, 5, 100);
    let c = w.add_client();
    let old = w.grant(c, ssh_resource(), Duration::from_secs(3600), true);
    let p = w.packet(c, old, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, old, &p);
    w.run(Duration::from_secs(1));
    assert_eq!(w.replies(c, old, w.seq), 1);

    let new = w.grant(c, ssh_resource(), Duration::from_secs(3600), true);
    let p = w.packet(c, new, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, new, &p);
    let seq = w.seq;
    w.run(Duration::from_secs(1));
    assert!(w.delivered_seq(seq));
    assert_eq!(
        w.replies(c, new, seq),
        1,
        "the reply went to the stale grant"
    );
    assert_eq!(w.replies(c, old, seq), 0);

    // And back: the old tunnel speaks again, so its replies go to it.
    let p = w.packet(c, old, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(c, old, &p);
    let seq = w.seq;
    w.run(Duration::from_millis(200));
    assert_eq!(w.replies(c, old, seq), 1);
}

#[test]
fn handshakes_under_load_get_cookies_and_still_complete() {
    let mut w = World::new(10, 0, 5, 2);
    let mut slots = Vec::new();
    for _ in 0..6 {
        let c = w.add_client();
        slots.push((
            c,
            w.grant(c, ssh_resource(), Duration::from_secs(3600), true),
        ));
    }
    let stranger = w.add_client();
    let unknown = w.grant(stranger, ssh_resource(), Duration::from_secs(3600), false);
    for &(c, g) in &slots {
        let p = w.packet(c, g, Protocol::Tcp, "10.0.5.20", 22, 0);
        w.send(c, g, &p);
    }
    let p = w.packet(stranger, unknown, Protocol::Tcp, "10.0.5.20", 22, 0);
    w.send(stranger, unknown, &p);
    w.run(Duration::from_secs(30));
    assert!(w.gateway.stats().cookies_sent > 0);
    assert_eq!(w.sent_to(w.clients[stranger].addr), 0);
    for &(c, g) in &slots {
        let grant = w.grants[g].0;
        assert!(
            w.clients[c]
                .events
                .contains(&ClientEvent::HandshakeCompleted { grant }),
            "client {c} never completed its handshake"
        );
    }
}

#[test]
fn readding_a_grant_with_the_same_keys_keeps_the_session() {
    let (mut w, c, g) = connected(11);
    let (id, private_key, _) = w.grants[g].clone();
    let wide = resource(&["10.0.5.0/24"], &[]);
    w.gateway
        .add_grant(
            GrantConfig {
                id,
                public_key: tunnel::public_key(&private_key),
                preshared_key: [g as u8; 32],
                tunnel_address: w.clients[c].tunnel_address,
                admission: wide.admission(),
                expires_at: w.wall() + Duration::from_secs(7200),
            },
            w.now,
            w.wall(),
        )
        .unwrap();
    w.grants[g].2.resource = wide;
    let p = w.packet(c, g, Protocol::Udp, "10.0.5.77", 5000, 0);
    w.send(c, g, &p);
    w.run(Duration::from_millis(100));
    assert!(w.delivered_seq(w.seq));
}

/// Random grants, revocations, expiries and traffic (allowed, denied, spoofed) on a lossy,
/// reordering network; every delivery is checked against the reference model in
/// `on_gateway_tun`, and every live grant must get traffic through.
#[test]
fn randomized_against_the_reference_model() {
    for seed in 1..=4u64 {
        let mut w = World::new(seed * 7919, 100, 30, 100);
        let mut rng = Rng(seed * 104_729);
        let resources = [
            ssh_resource(),
            resource(&["10.0.6.0/24"], &["udp/53", "tcp/443"]),
            resource(&["10.0.7.1", "10.0.7.2"], &[]),
        ];
        let targets: [(Protocol, &str, u16); 6] = [
            (Protocol::Tcp, "10.0.5.20", 22),
            (Protocol::Tcp, "10.0.5.20", 80),
            (Protocol::Udp, "10.0.6.9", 53),
            (Protocol::Tcp, "10.0.6.9", 443),
            (Protocol::Icmp, "10.0.7.2", 0),
            (Protocol::Udp, "10.0.7.1", 9999),
        ];
        for _ in 0..4 {
            w.add_client();
        }
        for _ in 0..300 {
            match rng.below(12) {
                0 => {
                    let c = rng.below(4) as usize;
                    let r = resources[rng.below(3) as usize].clone();
                    let ttl = Duration::from_secs(5 + rng.below(60));
                    w.grant(c, r, ttl, rng.below(10) != 0);
                }
                1 => {
                    let live: Vec<usize> = (0..w.grants.len())
                        .filter(|&s| w.grants[s].2.live(w.now))
                        .collect();
                    if !live.is_empty() {
                        let s = live[rng.below(live.len() as u64) as usize];
                        w.revoke(s);
                    }
                }
                _ if !w.grants.is_empty() => {
                    let live: Vec<usize> = (0..w.grants.len())
                        .filter(|&s| w.grants[s].2.live(w.now))
                        .collect();
                    // Mostly live grants; sometimes dead or never registered ones.
                    let s = if !live.is_empty() && rng.chance(800) {
                        live[rng.below(live.len() as u64) as usize]
                    } else {
                        rng.below(w.grants.len() as u64) as usize
                    };
                    let c = w.grants[s].2.client;
                    let admitted: Vec<_> = targets
                        .iter()
                        .filter(|(p, d, port)| w.grants[s].2.resource.admits(ip(d), *p, *port))
                        .collect();
                    let (proto, dst, port) = if rng.chance(700) {
                        *admitted[rng.below(admitted.len() as u64) as usize]
                    } else {
                        targets[rng.below(6) as usize]
                    };
                    let flags = if rng.chance(100) { FLAG_SPOOFED } else { 0 };
                    let p = w.packet(c, s, proto, dst, port, flags);
                    w.send(c, s, &p);
                }
                _ => {}
            }
            w.run(Duration::from_millis(rng.below(800)));
        }
        w.run(Duration::from_secs(5));

        let s = w.gateway.stats();
        assert!(
            w.delivered.len() > 20,
            "seed {seed}: too little got through: {s:?}"
        );
        assert!(
            s.drops.outside_resource > 0 && s.drops.spoofed_source > 0,
            "{s:?}"
        );
        // Nothing was ever sent to a client that holds only unregistered grants.
        for (i, c) in w.clients.iter().enumerate() {
            let registered = w
                .grants
                .iter()
                .any(|(_, _, g)| g.client == i && g.registered);
            if !registered {
                assert_eq!(w.sent_to(c.addr), 0);
            }
        }
    }
}
