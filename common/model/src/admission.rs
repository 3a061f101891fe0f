use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{PortRule, Protocol};

/// What a grant admits: destination addresses and port rules, and the one rule that decides
/// whether a packet lies inside them. The gateway's per-packet filter enforces it and the
/// client's router uses it to choose which packets to tunnel, so the two never disagree.
///
/// # The admission rule
///
/// A packet to `dst` with `protocol` and destination `port` is admitted when `dst` lies in
/// one of `addresses` and
/// - `ports` is empty ("everything"): `protocol` is TCP, UDP or ICMP, whatever the port;
/// - `ports` is not empty: one of the rules admits `protocol` and `port`
///   ([`PortRule::admits`]; ICMP has no port).
///
/// Every other IP protocol (GRE, ESP, SCTP, the experimental 253, …: `protocol` is `None`)
/// is never admitted, not even with an empty port list. "Everything" means every port of
/// every protocol a port rule can name, not every IP protocol, because:
/// - a port rule can only name `tcp`, `udp` and `icmp`, so an admin could neither grant
///   another protocol on its own nor narrow it: admitting it with empty ports would open
///   something no resource can express or show;
/// - the gateway is the enforcement point and has always dropped such packets
///   (counted as `tunnel::DropReason::UnsupportedProtocol`); a client that
///   tunnelled them only had them vanish at the gateway, where with this rule it refuses
///   them locally at once (ICMP "administratively prohibited").
///
/// For packets from the resource back to the device the gateway applies the same rule to
/// the source address and source port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Admission {
    /// The destinations: addresses and CIDRs.
    pub addresses: Vec<IpNet>,
    /// The protocols and ports; empty means every TCP and UDP port and ICMP.
    pub ports: Vec<PortRule>,
}

impl Admission {
    /// What `addresses` and `ports` admit.
    pub fn new(addresses: Vec<IpNet>, ports: Vec<PortRule>) -> Self {
        Self { addresses, ports }
    }

    /// Whether a packet to `dst` with `protocol` (`None`: an IP protocol other than TCP, UDP
    /// and ICMP) and destination `port` is admitted: see [the rule](Admission#the-admission-rule).
    pub fn admits(&self, dst: IpAddr, protocol: impl Into<Option<Protocol>>, port: u16) -> bool {
        admits(&self.addresses, &self.ports, dst, protocol.into(), port)
    }

    /// Whether `dst` lies in one of the addresses, whatever the protocol and port.
    pub fn contains(&self, dst: IpAddr) -> bool {
        self.addresses.iter().any(|net| net.contains(&dst))
    }
}

/// The admission rule over borrowed parts, for [`Admission`] and [`crate::Resource`].
pub(crate) fn admits(
    addresses: &[IpNet],
    ports: &[PortRule],
    dst: IpAddr,
    protocol: Option<Protocol>,
    port: u16,
) -> bool {
    let Some(protocol) = protocol else {
        return false;
    };
    addresses.iter().any(|net| net.contains(&dst))
        && (ports.is_empty() || ports.iter().any(|r| r.admits(protocol, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_case::test_case;

    fn admission(addresses: &[&str], ports: &[&str]) -> Admission {
        Admission::new(
            addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ports.iter().map(|p| p.parse().unwrap()).collect(),
        )
    }

    const TCP: Option<Protocol> = Some(Protocol::Tcp);
    const UDP: Option<Protocol> = Some(Protocol::Udp);
    const ICMP: Option<Protocol> = Some(Protocol::Icmp);
    /// GRE, ESP, protocol 253: anything the packet parser calls `Transport::Other`.
    const OTHER: Option<Protocol> = None;

    // Empty ports: every TCP and UDP port and ICMP, nothing else.
    #[test_case(&[], "10.0.5.9", TCP, 22, true; "empty ports admit tcp")]
    #[test_case(&[], "10.0.5.9", UDP, 65535, true; "empty ports admit udp")]
    #[test_case(&[], "10.0.5.9", ICMP, 0, true; "empty ports admit icmp")]
    #[test_case(&[], "10.0.5.9", OTHER, 0, false; "empty ports do not admit other protocols")]
    #[test_case(&[], "10.0.6.9", TCP, 22, false; "empty ports outside the addresses")]
    // Listed ports: exactly those.
    #[test_case(&["tcp/22", "udp/53"], "10.0.5.9", TCP, 22, true; "listed tcp port")]
    #[test_case(&["tcp/22", "udp/53"], "10.0.5.9", TCP, 23, false; "unlisted tcp port")]
    #[test_case(&["tcp/22", "udp/53"], "10.0.5.9", UDP, 22, false; "listed port other protocol")]
    #[test_case(&["tcp/22", "udp/53"], "10.0.5.9", ICMP, 0, false; "icmp not listed")]
    #[test_case(&["icmp"], "10.0.5.9", ICMP, 0, true; "icmp listed")]
    #[test_case(&["tcp"], "10.0.5.9", OTHER, 0, false; "listed ports never admit other protocols")]
    fn the_rule(ports: &[&str], dst: &str, protocol: Option<Protocol>, port: u16, want: bool) {
        let a = admission(&["10.0.5.0/24"], ports);
        assert_eq!(a.admits(dst.parse().unwrap(), protocol, port), want);
    }

    #[test]
    fn a_known_protocol_needs_no_option() {
        let a = admission(&["fd00::/64"], &["tcp/443"]);
        assert!(a.admits("fd00::1".parse().unwrap(), Protocol::Tcp, 443));
        assert!(!a.admits("fd00:1::1".parse().unwrap(), Protocol::Tcp, 443));
        assert!(a.contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn it_travels_as_addresses_and_ports() {
        let a = admission(&["10.0.5.20/32"], &["tcp/22"]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"addresses":["10.0.5.20/32"],"ports":["tcp/22"]}"#);
        assert_eq!(serde_json::from_str::<Admission>(&json).unwrap(), a);
    }

    fn protocol() -> impl Strategy<Value = Option<Protocol>> {
        prop_oneof![
            Just(None),
            Just(Some(Protocol::Tcp)),
            Just(Some(Protocol::Udp)),
            Just(Some(Protocol::Icmp)),
        ]
    }

    fn rule() -> impl Strategy<Value = PortRule> {
        (0..3u8, 1u16.., 0u16..2000).prop_map(|(p, first, len)| {
            let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp][usize::from(p)];
            if protocol == Protocol::Icmp {
                PortRule::all(protocol)
            } else {
                PortRule {
                    protocol,
                    first,
                    last: first.saturating_add(len),
                }
            }
        })
    }

    proptest! {
        /// The rule, stated once more from its parts: inside the addresses, a protocol a
        /// port rule can name, and (unless the list is empty) a rule that admits it.
        #[test]
        fn admits_exactly_per_the_rule(
            octet in 0u8..=255,
            prefix in 8u8..=32,
            dst in any::<u32>(),
            protocol in protocol(),
            port in any::<u16>(),
            ports in proptest::collection::vec(rule(), 0..4),
        ) {
            let net: IpNet = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, octet, 0, 0), prefix)
                .unwrap()
                .trunc()
                .into();
            let a = Admission::new(vec![net], ports.clone());
            let dst = IpAddr::from(std::net::Ipv4Addr::from(dst));
            let want = net.contains(&dst)
                && protocol.is_some_and(|p| {
                    ports.is_empty() || ports.iter().any(|r| r.admits(p, port))
                });
            prop_assert_eq!(a.admits(dst, protocol, port), want);
        }

        /// Whatever the port list, a protocol other than TCP, UDP and ICMP is refused, and
        /// an empty list admits every port of the three.
        #[test]
        fn other_protocols_never_and_empty_ports_every_port(
            ports in proptest::collection::vec(rule(), 0..4),
            port in any::<u16>(),
            p in 0..3usize,
        ) {
            let dst: IpAddr = "10.0.5.9".parse().unwrap();
            let net: IpNet = "10.0.5.0/24".parse().unwrap();
            prop_assert!(!Admission::new(vec![net], ports).admits(dst, None, port));
            let known = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp][p];
            prop_assert!(Admission::new(vec![net], vec![]).admits(dst, known, port));
        }
    }
}
