//! The per-packet entitlement checks.

use std::net::IpAddr;

use model::{Protocol, Resource};
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

/// Checks a decrypted packet against its grant: the source must be `tunnel_address`; the
/// destination, protocol and destination port must lie inside `resource`.
pub(crate) fn inbound(
    packet: &IpPacket<'_>,
    tunnel_address: IpAddr,
    resource: &Resource,
) -> Inbound {
    if packet.src() != tunnel_address {
        return Inbound::Deny(DropReason::SpoofedSource);
    }
    if packet.fragment() != Fragment::None {
        return Inbound::Deny(DropReason::Fragment);
    }
    let (protocol, port) = match packet.transport() {
        Transport::Tcp { dst_port, .. } => (Protocol::Tcp, dst_port),
        Transport::Udp { dst_port, .. } => (Protocol::Udp, dst_port),
        Transport::Icmp { .. } => (Protocol::Icmp, 0),
        Transport::Other => return Inbound::Deny(DropReason::UnsupportedProtocol),
    };
    if resource.admits(packet.dst(), protocol, port) {
        Inbound::Allow
    } else if protocol == Protocol::Icmp {
        Inbound::Deny(DropReason::OutsideResource)
    } else {
        Inbound::DenyWithIcmp(DropReason::OutsideResource)
    }
}

/// Whether a packet from the TUN device is the resource side of a flow of this grant: sent to
/// `tunnel_address`, from an address, protocol and source port inside `resource`.
pub(crate) fn outbound(packet: &IpPacket<'_>, tunnel_address: IpAddr, resource: &Resource) -> bool {
    if packet.dst() != tunnel_address || packet.fragment() != Fragment::None {
        return false;
    }
    let (protocol, port) = match packet.transport() {
        Transport::Tcp { src_port, .. } => (Protocol::Tcp, src_port),
        Transport::Udp { src_port, .. } => (Protocol::Udp, src_port),
        Transport::Icmp { .. } => (Protocol::Icmp, 0),
        Transport::Other => return false,
    };
    resource.admits(packet.src(), protocol, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use model::{ResourceId, SiteId};
    use packet::PacketBuilder;
    use test_case::test_case;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
