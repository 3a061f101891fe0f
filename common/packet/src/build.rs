use std::net::IpAddr;

use crate::{Checksum, IpPacket, Transport, checksum, proto};

/// Builds simple, valid TCP, UDP and ICMP packets over IPv4 or IPv6 with correct checksums,
/// for tests and simulations.
#[derive(Debug, Clone, Copy)]
pub struct PacketBuilder {
    src: IpAddr,
    dst: IpAddr,
    kind: Kind,
    ttl: u8,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp { src_port: u16, dst_port: u16 },
    Udp { src_port: u16, dst_port: u16 },
    Icmp { kind: u8, code: u8 },
}

impl PacketBuilder {
    /// A TCP segment (flags PSH+ACK) from `src:src_port` to `dst:dst_port`.
    pub fn tcp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Self::new(src, dst, Kind::Tcp { src_port, dst_port })
    }

    /// A UDP datagram from `src:src_port` to `dst:dst_port`.
    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Self::new(src, dst, Kind::Udp { src_port, dst_port })
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message of `kind` and `code`, with a zero
    /// rest-of-header (identifier and sequence for echoes).
    pub fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8) -> Self {
        Self::new(src, dst, Kind::Icmp { kind, code })
    }

    fn new(src: IpAddr, dst: IpAddr, kind: Kind) -> Self {
        Self {
            src,
            dst,
            kind,
            ttl: 64,
        }
    }

    /// Sets the TTL or hop limit (64 by default).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// The packet with `payload` after the transport header.
    ///
    /// # Panics
    /// If `src` and `dst` are of different address families, or the packet would exceed
    /// 65535 bytes.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(
            self.src.is_ipv4(),
            self.dst.is_ipv4(),
            "mixed address families"
        );
        let ipv6 = self.src.is_ipv6();
        let (protocol, mut transport) = match self.kind {
            Kind::Tcp { src_port, dst_port } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&src_port.to_be_bytes());
                h[2..4].copy_from_slice(&dst_port.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = 0x18;
                h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
                (proto::TCP, h)
            }
            Kind::Udp { src_port, dst_port } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&src_port.to_be_bytes());
                h[2..4].copy_from_slice(&dst_port.to_be_bytes());
                let len = u16::try_from(8 + payload.len()).expect("UDP datagram too long");
                h[4..6].copy_from_slice(&len.to_be_bytes());
                (proto::UDP, h)
            }
            Kind::Icmp { kind, code } => {
                let protocol = if ipv6 { proto::ICMPV6 } else { proto::ICMP };
                (protocol, vec![kind, code, 0, 0, 0, 0, 0, 0])
            }
        };
        let checksum_at = match self.kind {
            Kind::Tcp { .. } => 16,
            Kind::Udp { .. } => 6,
            Kind::Icmp { .. } => 2,
        };
        transport.extend_from_slice(payload);
        let transport_len = u32::try_from(transport.len()).expect("packet too long");
        let mut sum = Checksum::new();
        if protocol != proto::ICMP {
            sum.add_pseudo_header(self.src, self.dst, protocol, transport_len);
        }
        let mut value = sum.add(&transport).finish();
        if protocol == proto::UDP && value == 0 {
            value = 0xffff;
        }
        transport[checksum_at..checksum_at + 2].copy_from_slice(&value.to_be_bytes());

        let mut out = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + transport.len()).expect("packet too long");
                let mut h = vec![0x45, 0];
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0x40, 0, self.ttl, protocol, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h
            }
            (src, dst) => {
                let plen = u16::try_from(transport.len()).expect("packet too long");
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&plen.to_be_bytes());
                h.extend_from_slice(&[protocol, self.ttl]);
                h.extend_from_slice(&v6(src));
                h.extend_from_slice(&v6(dst));
                h
            }
        };
        out.extend_from_slice(&transport);
        out
    }

    /// Whether `bytes` parses and its IPv4 header checksum and TCP, UDP or ICMP checksum are
    /// correct (a zero UDP checksum over IPv4 means "none" and counts as correct).
    pub fn checksums_valid(bytes: &[u8]) -> bool {
        let Ok(p) = IpPacket::parse(bytes) else {
            return false;
        };
        if !p.is_ipv6() {
            let header_len = usize::from(bytes[0] & 0x0f) * 4;
            if checksum(&bytes[..header_len]) != 0 {
                return false;
            }
        }
        let payload = p.payload();
        let Ok(len) = u32::try_from(payload.len()) else {
            return false;
        };
        match p.transport() {
            Transport::Udp { .. } if !p.is_ipv6() && payload[6..8] == [0, 0] => true,
            Transport::Icmp { .. } if !p.is_ipv6() => checksum(payload) == 0,
            Transport::Tcp { .. } | Transport::Udp { .. } | Transport::Icmp { .. } => {
                Checksum::new()
                    .add_pseudo_header(p.src(), p.dst(), p.protocol(), len)
                    .add(payload)
                    .finish()
                    == 0
            }
            Transport::Other => true,
        }
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}
