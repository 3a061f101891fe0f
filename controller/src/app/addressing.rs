//! The tunnel network device addresses come from: its default, its check, and host
//! arithmetic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The tunnel network device addresses come from unless configured otherwise.
pub(crate) fn default_tunnel_network() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10))
}

/// Checks that a tunnel network leaves room for device addresses.
pub(crate) fn check_tunnel_network(net: IpNet) -> std::result::Result<(), String> {
    match net {
        IpNet::V4(n) if n.prefix_len() > 30 => Err(format!(
            "`{net}` is too small: use an IPv4 network of /30 or larger"
        )),
        IpNet::V6(n) if n.prefix_len() > 126 || n.prefix_len() < 8 => {
            Err(format!("`{net}` must be an IPv6 network from /8 to /126"))
        }
        _ => Ok(()),
    }
}

/// How many addresses the network has (at most 2^120 for IPv6 after the check above).
pub(crate) fn network_size(net: IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// The address `offset` places after the network address.
pub(crate) fn host_at(net: IpNet, offset: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            IpAddr::V4(Ipv4Addr::from(
                base.wrapping_add(u32::try_from(offset).unwrap_or(0)),
            ))
        }
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(offset))),
    }
}

/// The usable host offsets: the network address and the last address are never handed out.
pub(crate) fn host_offsets(net: IpNet) -> std::ops::Range<u128> {
    1..network_size(net).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_skip_network_and_last_address() {
        let net: IpNet = "100.64.0.0/30".parse().unwrap();
        let hosts: Vec<IpAddr> = host_offsets(net).map(|o| host_at(net, o)).collect();
        assert_eq!(
            hosts,
            vec![
                "100.64.0.1".parse::<IpAddr>().unwrap(),
                "100.64.0.2".parse().unwrap()
            ]
        );
        let v6: IpNet = "fd00::/64".parse().unwrap();
        assert_eq!(host_at(v6, 5), "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(host_offsets(v6).end, (1u128 << 64) - 1);
    }

    #[test]
    fn tunnel_networks_must_leave_room() {
        assert!(check_tunnel_network(default_tunnel_network()).is_ok());
        assert!(check_tunnel_network("10.0.0.0/31".parse().unwrap()).is_err());
        assert!(check_tunnel_network("fd00::/127".parse().unwrap()).is_err());
        assert!(check_tunnel_network("fd00::/64".parse().unwrap()).is_ok());
    }
}
