//! Zero-copy parsing of IPv4 and IPv6 packets (addresses, protocol, TCP and UDP ports, ICMP
//! types), the Internet checksum, and the few packets the tunnel core has to build itself:
//! ICMP "communication administratively prohibited" replies, plus a small builder of test
//! packets. Parsing never allocates and never panics on any input; errors are cheap values.
//! No IO.

mod build;
mod checksum;
mod icmp;
mod parse;

pub use build::PacketBuilder;
pub use checksum::{Checksum, checksum};
pub use icmp::{BuildError, write_admin_prohibited};
pub use parse::{Fragment, IpPacket, ParseError, Transport};

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`) this crate knows by name.
pub mod proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 hop-by-hop options header.
    pub const HOP_BY_HOP: u8 = 0;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// IPv6 destination options header.
    pub const DEST_OPTS: u8 = 60;
}
