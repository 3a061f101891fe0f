use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP protocol a resource can be reached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP and ICMPv6 (IP protocols 1 and 58).
    Icmp,
}

impl Protocol {
    /// The protocol's name as written in port rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// One entry of a resource's `ports`: a protocol and, for TCP and UDP, an inclusive port
/// range. Written `tcp/22`, `tcp/8000-8080`, `udp/53`, `udp` (every UDP port) or `icmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRule {
    /// The protocol.
    pub protocol: Protocol,
    /// The first port of the range (1 for "all ports"; 0 for ICMP).
    pub first: u16,
    /// The last port of the range, inclusive (65535 for "all ports"; 0 for ICMP).
    pub last: u16,
}

/// Why a port rule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortParseError {
    /// The protocol is not `tcp`, `udp` or `icmp`.
    #[error("unknown protocol `{0}`: use tcp, udp or icmp")]
    UnknownProtocol(String),
    /// A port is not a number between 1 and 65535.
    #[error("`{0}` is not a port: use a number from 1 to 65535")]
    InvalidPort(String),
    /// Port 0 cannot be reached.
    #[error("port 0 is not a valid port: use 1 to 65535")]
    PortZero,
    /// The range ends before it starts.
    #[error("range {0}-{1} is inverted: the first port must not be above the last")]
    InvertedRange(u16, u16),
    /// ICMP has no ports.
    #[error("icmp has no ports: write just `icmp`")]
    IcmpWithPort,
}

impl PortRule {
    /// Every port of `protocol`.
    pub fn all(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Icmp => Self {
                protocol,
                first: 0,
                last: 0,
            },
            _ => Self {
                protocol,
                first: 1,
                last: u16::MAX,
            },
        }
    }

    /// Whether this rule admits `protocol` and `port` (the port is ignored for ICMP).
    pub fn admits(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol
            && (protocol == Protocol::Icmp || (self.first..=self.last).contains(&port))
    }
}

impl FromStr for PortRule {
    type Err = PortParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (proto, ports) = match s.split_once('/') {
            Some((p, rest)) => (p, Some(rest)),
            None => (s, None),
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            _ => return Err(PortParseError::UnknownProtocol(proto.to_owned())),
        };
        let Some(ports) = ports else {
            return Ok(Self::all(protocol));
        };
        if protocol == Protocol::Icmp {
            return Err(PortParseError::IcmpWithPort);
        }
        let parse = |p: &str| -> Result<u16, PortParseError> {
            let n: u16 = p
                .trim()
                .parse()
                .map_err(|_| PortParseError::InvalidPort(p.to_owned()))?;
            if n == 0 {
                return Err(PortParseError::PortZero);
            }
            Ok(n)
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(ports)?;
                (p, p)
            }
        };
        if first > last {
            return Err(PortParseError::InvertedRange(first, last));
        }
        Ok(Self {
            protocol,
            first,
            last,
        })
    }
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.protocol.as_str();
        match (self.protocol, self.first, self.last) {
            (Protocol::Icmp, _, _) => f.write_str(p),
            (_, 1, u16::MAX) => f.write_str(p),
            (_, a, b) if a == b => write!(f, "{p}/{a}"),
            (_, a, b) => write!(f, "{p}/{a}-{b}"),
        }
    }
}

impl Serialize for PortRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for PortRule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`tcp/22`, `tcp/8000-8080`, `udp/53`, `udp` (all UDP ports) or `icmp`",
            ))
            .examples(["tcp/443"])
            .into()
    }
}

impl utoipa::ToSchema for PortRule {}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("tcp/22", Protocol::Tcp, 22, 22)]
    #[test_case("TCP/8000-8080", Protocol::Tcp, 8000, 8080)]
    #[test_case("udp/53", Protocol::Udp, 53, 53)]
    #[test_case("udp", Protocol::Udp, 1, 65535)]
    #[test_case("icmp", Protocol::Icmp, 0, 0)]
    fn parses(s: &str, protocol: Protocol, first: u16, last: u16) {
        assert_eq!(
            s.parse(),
            Ok(PortRule {
                protocol,
                first,
                last
            })
        );
    }

    #[test_case("tcp/0", PortParseError::PortZero)]
    #[test_case("tcp/90-80", PortParseError::InvertedRange(90, 80))]
    #[test_case("sctp/1", PortParseError::UnknownProtocol("sctp".into()))]
    #[test_case("tcp/70000", PortParseError::InvalidPort("70000".into()))]
    #[test_case("tcp/", PortParseError::InvalidPort("".into()))]
    #[test_case("icmp/8", PortParseError::IcmpWithPort)]
    fn rejects(s: &str, err: PortParseError) {
        assert_eq!(s.parse::<PortRule>(), Err(err));
    }

    #[test]
    fn admits_only_its_range() {
        let rule: PortRule = "tcp/8000-8080".parse().unwrap();
        assert!(rule.admits(Protocol::Tcp, 8000));
        assert!(rule.admits(Protocol::Tcp, 8080));
        assert!(!rule.admits(Protocol::Tcp, 8081));
        assert!(!rule.admits(Protocol::Udp, 8000));
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(first in 1u16.., len in 0u16..100, p in 0..3u8) {
            let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp][p as usize];
            let last = first.saturating_add(len);
            let rule = if protocol == Protocol::Icmp { PortRule::all(protocol) } else { PortRule { protocol, first, last } };
            proptest::prop_assert_eq!(rule.to_string().parse::<PortRule>(), Ok(rule));
        }
    }
}
