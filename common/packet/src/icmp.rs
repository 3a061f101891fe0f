use std::net::IpAddr;

use crate::{Checksum, Fragment, IpPacket, Transport, checksum, proto};

/// Why an ICMP error could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The output buffer cannot hold even the headers and the minimum quote.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The offending packet is itself an ICMP error; RFC 1122 forbids answering it.
    #[error("will not answer an ICMP error with an ICMP error")]
    QuotesIcmpError,
    /// The offending packet is a later fragment, or was sent to or from a non-unicast address.
    #[error("the offending packet must not be answered")]
    NotAnswerable,
}

/// The most an ICMPv4 error may be in total (RFC 1812 4.3.2.3).
const ICMPV4_MAX: usize = 576;
/// The most an ICMPv6 error may be in total: the IPv6 minimum MTU (RFC 4443 2.4 (c)).
const ICMPV6_MAX: usize = 1280;

/// Writes into `out` an ICMP "destination unreachable: communication administratively
/// prohibited" reply to `offending` (ICMPv4 type 3 code 13, ICMPv6 type 1 code 1), sent from
/// the offending packet's destination back to its source and quoting as much of it as the
/// RFCs allow, with correct checksums. Returns the reply's length.
///
/// `out` needs 576 bytes for any IPv4 reply and 1280 for any IPv6 reply; a smaller buffer
/// quotes less, down to the IP header plus 8 bytes.
pub fn write_admin_prohibited(
    offending: &IpPacket<'_>,
    out: &mut [u8],
) -> Result<usize, BuildError> {
    if offending.fragment() == Fragment::Later
        || !is_unicast(offending.src())
        || !is_unicast(offending.dst())
    {
        return Err(BuildError::NotAnswerable);
    }
    if let Transport::Icmp { kind, .. } = offending.transport() {
        let is_error = if offending.is_ipv6() {
            kind < 128
        } else {
            matches!(kind, 3 | 4 | 5 | 11 | 12)
        };
        if is_error {
            return Err(BuildError::QuotesIcmpError);
        }
    }
    let quoted = offending.as_bytes();
    let (src, dst) = (offending.dst(), offending.src());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let header_len = quoted.len() - offending.payload().len();
            let min = 20 + 8 + (header_len + 8).min(quoted.len());
            if out.len() < min {
                return Err(BuildError::BufferTooSmall);
            }
            let total = out.len().min(ICMPV4_MAX).min(28 + quoted.len());
            let quote_len = total - 28;
            let out = &mut out[..total];
            out[..20].copy_from_slice(&[
                0x45,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                64,
                proto::ICMP,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[12..16].copy_from_slice(&s.octets());
            out[16..20].copy_from_slice(&d.octets());
            let c = checksum(&out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            out[20..28].copy_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
            out[28..].copy_from_slice(&quoted[..quote_len]);
            let c = checksum(&out[20..]);
            out[22..24].copy_from_slice(&c.to_be_bytes());
            Ok(total)
        }
        (src, dst) => {
            let min = 40 + 8 + 48.min(quoted.len());
            if out.len() < min {
                return Err(BuildError::BufferTooSmall);
            }
            let total = out.len().min(ICMPV6_MAX).min(48 + quoted.len());
            let quote_len = total - 48;
            let out = &mut out[..total];
            let plen = (total - 40) as u16;
            out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto::ICMPV6, 64]);
            out[4..6].copy_from_slice(&plen.to_be_bytes());
            out[8..24].copy_from_slice(&octets6(src));
            out[24..40].copy_from_slice(&octets6(dst));
            out[40..48].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
            out[48..].copy_from_slice(&quoted[..quote_len]);
            let c = Checksum::new()
                .add_pseudo_header(src, dst, proto::ICMPV6, u32::from(plen))
                .add(&out[40..])
                .finish();
            out[42..44].copy_from_slice(&c.to_be_bytes());
            Ok(total)
        }
    }
}

fn octets6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketBuilder;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_reply_quotes_the_packet() {
        let offending =
            PacketBuilder::tcp(ip("100.64.0.2"), ip("10.0.5.20"), 40000, 22).build(b"hello");
        let p = IpPacket::parse(&offending).unwrap();
        let mut out = [0u8; 1500];
        let n = write_admin_prohibited(&p, &mut out).unwrap();
        let reply = &out[..n];
        assert_eq!(n, 28 + offending.len());
        let r = IpPacket::parse(reply).unwrap();
        assert_eq!(r.src(), ip("10.0.5.20"));
        assert_eq!(r.dst(), ip("100.64.0.2"));
        assert_eq!(r.transport(), Transport::Icmp { kind: 3, code: 13 });
        assert_eq!(&reply[28..], &offending[..]);
        assert!(PacketBuilder::checksums_valid(reply));
    }

    #[test]
    fn ipv4_quote_is_capped_at_576() {
        let offending =
            PacketBuilder::udp(ip("100.64.0.2"), ip("10.0.5.20"), 1, 53).build(&[7; 1000]);
        let p = IpPacket::parse(&offending).unwrap();
        let mut out = [0u8; 1500];
        let n = write_admin_prohibited(&p, &mut out).unwrap();
        assert_eq!(n, 576);
        assert!(PacketBuilder::checksums_valid(&out[..n]));
        assert_eq!(&out[28..n], &offending[..548]);
    }

    #[test]
    fn ipv6_reply_is_type_1_code_1() {
        let offending =
            PacketBuilder::udp(ip("fd00::2"), ip("fd10::20"), 5000, 53).build(&[1; 2000]);
        let p = IpPacket::parse(&offending).unwrap();
        let mut out = [0u8; 1500];
        let n = write_admin_prohibited(&p, &mut out).unwrap();
        assert_eq!(n, 1280);
        let r = IpPacket::parse(&out[..n]).unwrap();
        assert_eq!((r.src(), r.dst()), (ip("fd10::20"), ip("fd00::2")));
        assert_eq!(r.transport(), Transport::Icmp { kind: 1, code: 1 });
        assert!(PacketBuilder::checksums_valid(&out[..n]));
    }

    #[test]
    fn known_icmpv4_checksum() {
        // Quoting a fixed 28-byte packet; the expected ICMP checksum was computed with a
        // separate Python implementation of RFC 1071.
        let offending = [
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 100, 64, 0, 2, 10, 0, 5, 20, 0x9c, 0x40,
            0, 53, 0, 8, 0, 0,
        ];
        let p = IpPacket::parse(&offending).unwrap();
        let mut out = [0u8; 576];
        let n = write_admin_prohibited(&p, &mut out).unwrap();
        assert_eq!(n, 56);
        assert_eq!(u16::from_be_bytes([out[22], out[23]]), KNOWN);
    }

    const KNOWN: u16 = 0x27f1;

    #[test]
    fn small_buffer_quotes_less_or_fails() {
        let offending =
            PacketBuilder::tcp(ip("100.64.0.2"), ip("10.0.5.20"), 1, 22).build(&[0; 100]);
        let p = IpPacket::parse(&offending).unwrap();
        let mut out = [0u8; 60];
        assert_eq!(write_admin_prohibited(&p, &mut out), Ok(60));
        assert!(PacketBuilder::checksums_valid(&out));
        let mut tiny = [0u8; 40];
        assert_eq!(
            write_admin_prohibited(&p, &mut tiny),
            Err(BuildError::BufferTooSmall)
        );
    }

    #[test]
    fn refuses_icmp_errors_and_broadcasts() {
        let err = PacketBuilder::icmp(ip("100.64.0.2"), ip("10.0.5.20"), 3, 3).build(&[0; 28]);
        let mut out = [0u8; 576];
        assert_eq!(
            write_admin_prohibited(&IpPacket::parse(&err).unwrap(), &mut out),
            Err(BuildError::QuotesIcmpError)
        );
        let bcast = PacketBuilder::udp(ip("100.64.0.2"), ip("255.255.255.255"), 1, 2).build(b"");
        assert_eq!(
            write_admin_prohibited(&IpPacket::parse(&bcast).unwrap(), &mut out),
            Err(BuildError::NotAnswerable)
        );
    }
}
