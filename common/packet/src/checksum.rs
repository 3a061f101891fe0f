use std::net::IpAddr;

/// An Internet checksum (RFC 1071) being accumulated over several pieces.
///
/// Pieces are summed as if concatenated, as long as every piece but the last has an even
/// length (true for the headers and pseudo-headers this crate feeds it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Checksum {
    sum: u64,
}

impl Checksum {
    /// An empty checksum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data` to the sum; an odd final byte is padded with zero.
    pub fn add(&mut self, data: &[u8]) -> &mut Self {
        let mut chunks = data.chunks_exact(2);
        for pair in &mut chunks {
            self.sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = chunks.remainder() {
            self.sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
        self
    }

    /// Adds the TCP/UDP/ICMPv6 pseudo-header for `src`, `dst`, `protocol` and the
    /// upper-layer length.
    pub fn add_pseudo_header(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        length: u32,
    ) -> &mut Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.add(&s.octets()).add(&d.octets());
                // IPv4 pseudo-headers carry a 16-bit length.
                self.sum += u64::from(protocol) + u64::from(length & 0xffff);
            }
            _ => {
                self.add(&ip6_octets(src)).add(&ip6_octets(dst));
                self.sum += u64::from(length >> 16) + u64::from(length & 0xffff);
                self.sum += u64::from(protocol);
            }
        }
        self
    }

    /// The one's-complement of the folded sum: the value to store in a checksum field.
    /// Over data that already contains a correct checksum it is 0.
    pub fn finish(&self) -> u16 {
        let mut sum = self.sum;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

fn ip6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The Internet checksum of `data`: the value for a checksum field that covers exactly `data`
/// (with the field itself zeroed), or 0 when `data` carries a correct checksum.
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::new().add(data).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these bytes is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured header (192.168.0.1 -> 192.168.0.199, UDP) whose checksum is 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0);
        header[10] = 0;
        header[11] = 0;
        assert_eq!(checksum(&header), 0xb861);
    }

    // The two vectors below were computed with a separate Python implementation of RFC 1071
    // (struct-unpacked 16-bit words, folded), not with this code.

    #[test]
    fn known_udp_over_ipv4() {
        // 10.0.0.2:53391 -> 10.0.0.1:53, 4 bytes of payload, checksum field zero.
        let src: IpAddr = "10.0.0.2".parse().unwrap();
        let dst: IpAddr = "10.0.0.1".parse().unwrap();
        let udp = [
            0xd0, 0x8f, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0xab, 0xcd, 0x01, 0x00,
        ];
        let sum = Checksum::new()
            .add_pseudo_header(src, dst, 17, udp.len() as u32)
            .add(&udp)
            .finish();
        assert_eq!(sum, 0x6e41);
    }

    #[test]
    fn known_icmpv6_echo() {
        // Echo request fe80::1 -> fe80::2, id 0x1234, seq 1, payload "abcd".
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst: IpAddr = "fe80::2".parse().unwrap();
        let icmp = [128, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];
        let sum = Checksum::new()
            .add_pseudo_header(src, dst, 58, icmp.len() as u32)
            .add(&icmp)
            .finish();
        assert_eq!(sum, 0xabb8);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    #[test]
    fn correct_checksum_verifies_to_zero() {
        let mut data = vec![0x45, 0x00, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x01];
        let sum = checksum(&data);
        data[8..10].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }
}
