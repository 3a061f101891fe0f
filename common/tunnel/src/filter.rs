//! The per-packet entitlement checks. Which packets a grant admits is decided by
//! [`Admission::admits`] alone; this module only reads the protocol and port out of a packet
//! and adds the gateway's own checks (the source address, fragments).

use std::net::IpAddr;

use model::{Admission, Protocol};
use packet::{Fragment, IpPacket, Transport};

use crate::DropReason;

/// What happens to a packet that came out of a grant's tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Forward it.
    Allow,
    /// Drop it, and tell the client with ICMP "administratively prohibited".
    DenyWithIcmp(DropReason),
    /// Drop it silently.
    Deny(DropReason),
}

/// Whether `admission` admits `packet` on its way to a resource: its destination address,
/// protocol and destination port. The gateway checks every packet out of a grant's tunnel
/// with it, and the client's router picks the resource a packet belongs to with it, so the
/// two agree on every packet.
pub fn admits(admission: &Admission, packet: &IpPacket<'_>) -> bool {
    let (protocol, port) = protocol_and_port(packet, Side::Destination);
    admission.admits(packet.dst(), protocol, port)
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// The packet's protocol as [`Admission::admits`] takes it (`None` for protocols other than
/// TCP, UDP and ICMP) and its source or destination port (0 for ICMP and others).
fn protocol_and_port(packet: &IpPacket<'_>, side: Side) -> (Option<Protocol>, u16) {
    let pick = |src: u16, dst: u16| match side {
        Side::Source => src,
        Side::Destination => dst,
    };
    match packet.transport() {
        Transport::Tcp { src_port, dst_port } => (Some(Protocol::Tcp), pick(src_port, dst_port)),
        Transport::Udp { src_port, dst_port } => (Some(Protocol::Udp), pick(src_port, dst_port)),
        Transport::Icmp { .. } => (Some(Protocol::Icmp), 0),
        Transport::Other => (None, 0),
    }
}

/// Checks a decrypted packet against its grant: the source must be `tunnel_address`; the
/// destination, protocol and destination port must be admitted by `admission`. A packet of
/// a protocol no port rule can name is dropped silently as unsupported.
pub(crate) fn inbound(
    packet: &IpPacket<'_>,
    tunnel_address: IpAddr,
    admission: &Admission,
) -> Inbound {
    if packet.src() != tunnel_address {
        return Inbound::Deny(DropReason::SpoofedSource);
    }
    if packet.fragment() != Fragment::None {
        return Inbound::Deny(DropReason::Fragment);
    }
    if admits(admission, packet) {
        return Inbound::Allow;
    }
    match protocol_and_port(packet, Side::Destination).0 {
        None => Inbound::Deny(DropReason::UnsupportedProtocol),
        Some(Protocol::Icmp) => Inbound::Deny(DropReason::OutsideResource),
        Some(_) => Inbound::DenyWithIcmp(DropReason::OutsideResource),
    }
}

/// Whether a packet from the TUN device is the resource side of a flow of this grant: sent to
/// `tunnel_address`, from an address, protocol and source port that `admission` admits.
pub(crate) fn outbound(
    packet: &IpPacket<'_>,
    tunnel_address: IpAddr,
    admission: &Admission,
) -> bool {
    if packet.dst() != tunnel_address || packet.fragment() != Fragment::None {
        return false;
    }
    let (protocol, port) = protocol_and_port(packet, Side::Source);
    admission.admits(packet.src(), protocol, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::PacketBuilder;
    use test_case::test_case;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resource(addresses: &[&str], ports: &[&str]) -> Admission {
        Admission::new(
            addresses
                .iter()
                .map(|a| model::parse_address(a).unwrap())
                .collect(),
            ports.iter().map(|p| p.parse().unwrap()).collect(),
        )
    }

    const ME: &str = "100.64.0.2";

    #[test_case(PacketBuilder::tcp(ip(ME), ip("10.0.5.20"), 40000, 22), Inbound::Allow; "allowed tcp")]
    #[test_case(PacketBuilder::tcp(ip(ME), ip("10.0.5.20"), 40000, 23), Inbound::DenyWithIcmp(DropReason::OutsideResource); "other port")]
    #[test_case(PacketBuilder::udp(ip(ME), ip("10.0.5.20"), 40000, 22), Inbound::DenyWithIcmp(DropReason::OutsideResource); "other protocol")]
    #[test_case(PacketBuilder::tcp(ip(ME), ip("10.0.5.21"), 40000, 22), Inbound::DenyWithIcmp(DropReason::OutsideResource); "other host")]
    #[test_case(PacketBuilder::tcp(ip("100.64.0.3"), ip("10.0.5.20"), 40000, 22), Inbound::Deny(DropReason::SpoofedSource); "spoofed")]
    #[test_case(PacketBuilder::icmp(ip(ME), ip("10.0.5.20"), 8, 0), Inbound::Deny(DropReason::OutsideResource); "icmp not granted")]
    #[test_case(PacketBuilder::udp(ip(ME), ip("10.0.5.20"), 1, 53), Inbound::Allow; "allowed udp")]
    fn inbound_table(builder: PacketBuilder, expected: Inbound) {
        let r = resource(&["10.0.5.20"], &["tcp/22", "udp/53"]);
        let bytes = builder.build(b"x");
        let p = IpPacket::parse(&bytes).unwrap();
        assert_eq!(inbound(&p, ip(ME), &r), expected);
    }

    #[test]
    fn empty_ports_admit_icmp_but_not_other_protocols() {
        let r = resource(&["10.0.5.0/24"], &[]);
        let ping = PacketBuilder::icmp(ip(ME), ip("10.0.5.9"), 8, 0).build(b"");
        assert_eq!(
            inbound(&IpPacket::parse(&ping).unwrap(), ip(ME), &r),
            Inbound::Allow
        );
        let mut gre = PacketBuilder::udp(ip(ME), ip("10.0.5.9"), 1, 2).build(b"");
        gre[9] = 47;
        gre[10..12].copy_from_slice(&[0, 0]);
        let sum = packet::checksum(&gre[..20]);
        gre[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            inbound(&IpPacket::parse(&gre).unwrap(), ip(ME), &r),
            Inbound::Deny(DropReason::UnsupportedProtocol)
        );
    }

    /// A packet of IP protocol `protocol` (neither TCP, UDP nor ICMP) from `src` to `dst`.
    fn other_protocol(src: &str, dst: &str, protocol: u8) -> Vec<u8> {
        let mut p = PacketBuilder::udp(ip(src), ip(dst), 1, 2).build(b"");
        if p[0] >> 4 == 6 {
            p[6] = protocol;
        } else {
            p[9] = protocol;
            p[10..12].copy_from_slice(&[0, 0]);
            let sum = packet::checksum(&p[..20]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// The gateway half of the agreement with the client's router (see its test
    /// `empty_ports_do_not_tunnel_other_protocols`): with an empty port list, protocol 253
    /// and GRE are not admitted, over IPv4 and IPv6, while TCP, UDP and ICMP are.
    #[test]
    fn empty_ports_do_not_admit_protocol_253_or_gre() {
        let r = resource(&["10.0.5.0/24", "fd00:5::/64"], &[]);
        for (me, dst) in [(ME, "10.0.5.9"), ("fd00:64::2", "fd00:5::9")] {
            for protocol in [253, 47] {
                let bytes = other_protocol(me, dst, protocol);
                let p = IpPacket::parse(&bytes).unwrap();
                assert_eq!(p.transport(), Transport::Other);
                assert!(!admits(&r, &p), "protocol {protocol} to {dst}");
                assert_eq!(
                    inbound(&p, ip(me), &r),
                    Inbound::Deny(DropReason::UnsupportedProtocol)
                );
            }
            for b in [
                PacketBuilder::tcp(ip(me), ip(dst), 40000, 22),
                PacketBuilder::udp(ip(me), ip(dst), 40000, 65535),
                PacketBuilder::icmp(ip(me), ip(dst), if dst.contains(':') { 128 } else { 8 }, 0),
            ] {
                let bytes = b.build(b"x");
                let p = IpPacket::parse(&bytes).unwrap();
                assert!(admits(&r, &p), "{b:?}");
                assert_eq!(inbound(&p, ip(me), &r), Inbound::Allow, "{b:?}");
            }
        }
    }

    #[test]
    fn fragments_are_dropped() {
        let r = resource(&["10.0.5.20"], &[]);
        let mut bytes = PacketBuilder::udp(ip(ME), ip("10.0.5.20"), 1, 53).build(b"x");
        bytes[6] = 0x20;
        assert_eq!(
            inbound(&IpPacket::parse(&bytes).unwrap(), ip(ME), &r),
            Inbound::Deny(DropReason::Fragment)
        );
    }

    #[test]
    fn outbound_matches_the_resource_side() {
        let r = resource(&["10.0.5.20"], &["tcp/22"]);
        let reply = PacketBuilder::tcp(ip("10.0.5.20"), ip(ME), 22, 40000).build(b"");
        assert!(outbound(&IpPacket::parse(&reply).unwrap(), ip(ME), &r));
        let other_port = PacketBuilder::tcp(ip("10.0.5.20"), ip(ME), 23, 40000).build(b"");
        assert!(!outbound(
            &IpPacket::parse(&other_port).unwrap(),
            ip(ME),
            &r
        ));
        let other_device = PacketBuilder::tcp(ip("10.0.5.20"), ip("100.64.0.9"), 22, 1).build(b"");
        assert!(!outbound(
            &IpPacket::parse(&other_device).unwrap(),
            ip(ME),
            &r
        ));
    }
}
