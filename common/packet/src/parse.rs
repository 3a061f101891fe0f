use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::proto;

/// Why bytes are not a packet this crate can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// There are no bytes at all.
    #[error("empty packet")]
    Empty,
    /// The version nibble is neither 4 nor 6.
    #[error("IP version {0} is not 4 or 6")]
    BadVersion(u8),
    /// The bytes end before the fixed IP header does.
    #[error("truncated IP header")]
    TruncatedHeader,
    /// The IPv4 header length field is below 20 bytes or beyond the packet.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// The length field disagrees with the header or claims more bytes than there are.
    #[error("IP length field does not match the packet")]
    LengthMismatch,
    /// An IPv6 extension header runs past the end of the packet, or there are too many.
    #[error("malformed IPv6 extension header")]
    BadExtensionHeader,
    /// An IPv6 extension header this parser refuses to skip (e.g. a routing header, which
    /// changes where the packet goes).
    #[error("unsupported IPv6 extension header {0}")]
    UnsupportedExtensionHeader(u8),
    /// The TCP, UDP or ICMP header is cut short or inconsistent.
    #[error("truncated or malformed transport header")]
    BadTransportHeader,
}

/// Whether a packet is a fragment, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole packet.
    None,
    /// The first fragment (offset 0, more fragments follow); its transport header is parsed.
    First,
    /// A later fragment: it carries no transport header.
    Later,
}

/// The transport-layer facts of a packet that access decisions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with its ports.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (in IPv4) or ICMPv6 (in IPv6).
    Icmp {
        /// Message type.
        kind: u8,
        /// Message code.
        code: u8,
    },
    /// Another protocol, or a later fragment whose transport header is elsewhere.
    Other,
}

impl Transport {
    /// The source port for TCP and UDP.
    pub fn src_port(&self) -> Option<u16> {
        match *self {
            Transport::Tcp { src_port, .. } | Transport::Udp { src_port, .. } => Some(src_port),
            _ => None,
        }
    }

    /// The destination port for TCP and UDP.
    pub fn dst_port(&self) -> Option<u16> {
        match *self {
            Transport::Tcp { dst_port, .. } | Transport::Udp { dst_port, .. } => Some(dst_port),
            _ => None,
        }
    }
}

/// A parsed IPv4 or IPv6 packet, borrowing its bytes.
///
/// Only the bytes the length field covers belong to the packet; trailing padding is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    bytes: &'a [u8],
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    transport_offset: usize,
    fragment: Fragment,
    transport: Transport,
}

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const MAX_EXTENSION_HEADERS: usize = 8;

impl<'a> IpPacket<'a> {
    /// Parses an IPv4 or IPv6 packet.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let first = *bytes.first().ok_or(ParseError::Empty)?;
        match first >> 4 {
            4 => Self::parse_v4(bytes),
            6 => Self::parse_v6(bytes),
            v => Err(ParseError::BadVersion(v)),
        }
    }

    fn parse_v4(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let header: &[u8; IPV4_HEADER] = bytes
            .get(..IPV4_HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or(ParseError::TruncatedHeader)?;
        let header_len = usize::from(header[0] & 0x0f) * 4;
        if header_len < IPV4_HEADER || header_len > bytes.len() {
            return Err(ParseError::BadHeaderLength);
        }
        let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if total_len < header_len || total_len > bytes.len() {
            return Err(ParseError::LengthMismatch);
        }
        let bytes = &bytes[..total_len];
        let flags_offset = u16::from_be_bytes([header[6], header[7]]);
        let more_fragments = flags_offset & 0x2000 != 0;
        let offset = flags_offset & 0x1fff;
        let fragment = match (offset, more_fragments) {
            (0, false) => Fragment::None,
            (0, true) => Fragment::First,
            _ => Fragment::Later,
        };
        let protocol = header[9];
        let src = IpAddr::V4(Ipv4Addr::new(
            header[12], header[13], header[14], header[15],
        ));
        let dst = IpAddr::V4(Ipv4Addr::new(
            header[16], header[17], header[18], header[19],
        ));
        let transport = match fragment {
            Fragment::Later => Transport::Other,
            _ => parse_transport(protocol, false, &bytes[header_len..])?,
        };
        Ok(Self {
            bytes,
            src,
            dst,
            protocol,
            transport_offset: header_len,
            fragment,
            transport,
        })
    }

    fn parse_v6(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let header: &[u8; IPV6_HEADER] = bytes
            .get(..IPV6_HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or(ParseError::TruncatedHeader)?;
        let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let total_len = IPV6_HEADER + payload_len;
        // A zero payload length with a hop-by-hop header would be a jumbogram: unsupported.
        if total_len > bytes.len() || (payload_len == 0 && header[6] == proto::HOP_BY_HOP) {
            return Err(ParseError::LengthMismatch);
        }
        let bytes = &bytes[..total_len];
        let mut src = [0u8; 16];
        src.copy_from_slice(&header[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&header[24..40]);

        let mut next = header[6];
        let mut offset = IPV6_HEADER;
        let mut fragment = Fragment::None;
        for i in 0..=MAX_EXTENSION_HEADERS {
            match next {
                proto::HOP_BY_HOP if i == 0 => {}
                proto::HOP_BY_HOP => return Err(ParseError::BadExtensionHeader),
                proto::DEST_OPTS => {}
                proto::FRAGMENT => {
                    let ext = bytes
                        .get(offset..offset + 8)
                        .ok_or(ParseError::BadExtensionHeader)?;
                    if fragment != Fragment::None {
                        return Err(ParseError::BadExtensionHeader);
                    }
                    let field = u16::from_be_bytes([ext[2], ext[3]]);
                    let (frag_offset, more) = (field >> 3, field & 1 != 0);
                    next = ext[0];
                    offset += 8;
                    // An atomic fragment (offset 0, no more) is a whole packet.
                    if frag_offset != 0 {
                        fragment = Fragment::Later;
                        break;
                    }
                    if more {
                        fragment = Fragment::First;
                    }
                    continue;
                }
                proto::ROUTING => return Err(ParseError::UnsupportedExtensionHeader(next)),
                _ => break,
            }
            // Hop-by-hop and destination options: next header, length in 8-octet units
            // not counting the first 8.
            let ext = bytes
                .get(offset..offset + 2)
                .ok_or(ParseError::BadExtensionHeader)?;
            let len = (usize::from(ext[1]) + 1) * 8;
            if offset + len > bytes.len() {
                return Err(ParseError::BadExtensionHeader);
            }
            next = ext[0];
            offset += len;
            if i == MAX_EXTENSION_HEADERS {
                return Err(ParseError::BadExtensionHeader);
            }
        }
        if matches!(
            next,
            proto::HOP_BY_HOP | proto::DEST_OPTS | proto::ROUTING | proto::FRAGMENT
        ) && fragment != Fragment::Later
        {
            return Err(ParseError::BadExtensionHeader);
        }
        let transport = match fragment {
            Fragment::Later => Transport::Other,
            _ => parse_transport(next, true, &bytes[offset..])?,
        };
        Ok(Self {
            bytes,
            src: IpAddr::V6(Ipv6Addr::from(src)),
            dst: IpAddr::V6(Ipv6Addr::from(dst)),
            protocol: next,
            transport_offset: offset,
            fragment,
            transport,
        })
    }

    /// The packet's bytes, up to its length field.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the packet has no bytes (never true for a parsed packet).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether this is an IPv6 packet.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// The source address.
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        self.dst
    }

    /// The IPv4 protocol, or for IPv6 the next header after the skipped extension headers.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Whether and which fragment this is.
    pub fn fragment(&self) -> Fragment {
        self.fragment
    }

    /// Ports or ICMP type and code.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The bytes after the IP header and skipped extension headers.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.transport_offset..]
    }
}

fn parse_transport(protocol: u8, ipv6: bool, payload: &[u8]) -> Result<Transport, ParseError> {
    let bad = ParseError::BadTransportHeader;
    let port = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
    Ok(match protocol {
        proto::TCP => {
            if payload.len() < 20 {
                return Err(bad);
            }
            let data_offset = usize::from(payload[12] >> 4) * 4;
            if data_offset < 20 || data_offset > payload.len() {
                return Err(bad);
            }
            Transport::Tcp {
                src_port: port(0),
                dst_port: port(2),
            }
        }
        proto::UDP => {
            if payload.len() < 8 {
                return Err(bad);
            }
            let len = usize::from(port(4));
            // Length 0 is legal only for IPv6 jumbograms, which are refused above.
            if len < 8 || len > payload.len() {
                return Err(bad);
            }
            Transport::Udp {
                src_port: port(0),
                dst_port: port(2),
            }
        }
        proto::ICMP if !ipv6 => icmp(payload)?,
        proto::ICMPV6 if ipv6 => icmp(payload)?,
        _ => Transport::Other,
    })
}

fn icmp(payload: &[u8]) -> Result<Transport, ParseError> {
    if payload.len() < 8 {
        return Err(ParseError::BadTransportHeader);
    }
    Ok(Transport::Icmp {
        kind: payload[0],
        code: payload[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketBuilder;
    use proptest::prelude::*;
    use test_case::test_case;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ipv4_tcp() {
        let bytes = PacketBuilder::tcp(ip("10.0.0.1"), ip("10.0.5.20"), 40000, 443).build(b"hi");
        let p = IpPacket::parse(&bytes).unwrap();
        assert_eq!(p.src(), ip("10.0.0.1"));
        assert_eq!(p.dst(), ip("10.0.5.20"));
        assert_eq!(p.protocol(), proto::TCP);
        assert_eq!(
            p.transport(),
            Transport::Tcp {
                src_port: 40000,
                dst_port: 443
            }
        );
        assert_eq!(p.fragment(), Fragment::None);
        assert_eq!(p.payload().len(), 22);
    }

    #[test]
    fn trailing_padding_is_cut_off() {
        let mut bytes = PacketBuilder::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2).build(b"x");
        let len = bytes.len();
        bytes.extend_from_slice(&[0; 7]);
        assert_eq!(IpPacket::parse(&bytes).unwrap().len(), len);
    }

    #[test]
    fn parses_ipv6_icmp_behind_options() {
        let mut bytes = PacketBuilder::icmp(ip("fd00::1"), ip("fd00::2"), 128, 0).build(b"ping");
        // Insert an 8-byte destination options header (next header ICMPv6, length 0, PadN).
        let ext = [proto::ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        bytes.splice(40..40, ext);
        bytes[6] = proto::DEST_OPTS;
        let plen = u16::from_be_bytes([bytes[4], bytes[5]]) + 8;
        bytes[4..6].copy_from_slice(&plen.to_be_bytes());
        let p = IpPacket::parse(&bytes).unwrap();
        assert_eq!(p.protocol(), proto::ICMPV6);
        assert_eq!(p.transport(), Transport::Icmp { kind: 128, code: 0 });
    }

    #[test]
    fn ipv4_fragments_are_marked() {
        let mut bytes = PacketBuilder::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2).build(b"x");
        bytes[6] = 0x20; // more fragments, offset 0
        assert_eq!(IpPacket::parse(&bytes).unwrap().fragment(), Fragment::First);
        bytes[6] = 0x00;
        bytes[7] = 0x10; // offset 16 * 8
        let p = IpPacket::parse(&bytes).unwrap();
        assert_eq!(p.fragment(), Fragment::Later);
        assert_eq!(p.transport(), Transport::Other);
    }

    #[test]
    fn ipv6_routing_header_is_refused() {
        let mut bytes = PacketBuilder::udp(ip("fd00::1"), ip("fd00::2"), 1, 2).build(b"x");
        bytes[6] = proto::ROUTING;
        assert_eq!(
            IpPacket::parse(&bytes),
            Err(ParseError::UnsupportedExtensionHeader(proto::ROUTING))
        );
    }

    #[test_case(&[], ParseError::Empty; "empty")]
    #[test_case(&[0x50], ParseError::BadVersion(5); "bad version")]
    #[test_case(&[0x45, 0, 0], ParseError::TruncatedHeader; "truncated v4")]
    #[test_case(&[0x60; 39], ParseError::TruncatedHeader; "truncated v6")]
    fn rejects_short(bytes: &[u8], err: ParseError) {
        assert_eq!(IpPacket::parse(bytes), Err(err));
    }

    #[test]
    fn rejects_bad_lengths() {
        let good = PacketBuilder::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2).build(b"");
        let mut b = good.clone();
        b[0] = 0x44;
        assert_eq!(IpPacket::parse(&b), Err(ParseError::BadHeaderLength));
        let mut b = good.clone();
        b[0] = 0x4f;
        assert_eq!(IpPacket::parse(&b), Err(ParseError::BadHeaderLength));
        let mut b = good.clone();
        b[3] += 1;
        assert_eq!(IpPacket::parse(&b), Err(ParseError::LengthMismatch));
        let mut b = good.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(IpPacket::parse(&b), Err(ParseError::LengthMismatch));
        let mut b = good.clone();
        b[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(
            IpPacket::parse(&b[..30]),
            Err(ParseError::BadTransportHeader)
        );
    }

    fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>())
                .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
            (any::<[u8; 16]>(), any::<[u8; 16]>())
                .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = IpPacket::parse(&bytes);
        }

        #[test]
        fn never_panics_on_plausible_headers(
            version in prop_oneof![Just(0x45u8), Just(0x46), Just(0x60)],
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![version];
            bytes.extend(rest);
            if let Ok(p) = IpPacket::parse(&bytes) {
                prop_assert!(p.len() <= bytes.len());
                let _ = p.payload();
            }
        }

        #[test]
        fn round_trips(
            (src, dst) in addr_pair(),
            kind in 0..3u8,
            a in any::<u16>(),
            b in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let builder = match kind {
                0 => PacketBuilder::tcp(src, dst, a, b),
                1 => PacketBuilder::udp(src, dst, a, b),
                _ => PacketBuilder::icmp(src, dst, a as u8, b as u8),
            };
            let bytes = builder.build(&payload);
            let p = IpPacket::parse(&bytes).unwrap();
            prop_assert_eq!(p.src(), src);
            prop_assert_eq!(p.dst(), dst);
            prop_assert_eq!(p.len(), bytes.len());
            prop_assert_eq!(p.fragment(), Fragment::None);
            let expected = match kind {
                0 => Transport::Tcp { src_port: a, dst_port: b },
                1 => Transport::Udp { src_port: a, dst_port: b },
                _ => Transport::Icmp { kind: a as u8, code: b as u8 },
            };
            prop_assert_eq!(p.transport(), expected);
            prop_assert!(p.payload().ends_with(&payload));
            prop_assert!(PacketBuilder::checksums_valid(&bytes));
        }
    }
}
