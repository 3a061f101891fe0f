//! Command-line arguments (each also read from a `POSTERN_*` environment variable) and the
//! settings resolved from them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use ipnet::IpNet;
pub use trust::Fingerprint;

/// The gateway's command line. Deliberately not `Debug`: it holds the enrollment token.
#[derive(Clone, Parser)]
#[command(
    name = "postern-gateway",
    version,
    about = "The Postern gateway: userspace WireGuard next to private servers."
)]
pub struct Args {
    /// The controller's URL, e.g. `https://controller.example.com:8443`. The QUIC control
    /// endpoint is on the same host and port, over UDP.
    #[arg(long, env = "POSTERN_CONTROLLER")]
    pub controller: ControllerUrl,

    /// The one-time enrollment token from `sites/{id}/gateway-tokens`. Used only while the
    /// state directory holds no credential yet.
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The SHA-256 fingerprint of the controller's certificate (`AB:CD:...`, as the
    /// controller prints it). When given, that certificate is pinned instead of verifying it
    /// against the web PKI.
    #[arg(long, env = "POSTERN_CONTROLLER_FINGERPRINT")]
    pub controller_fingerprint: Option<Fingerprint>,

    /// Where the durable credential and the gateway's WireGuard private key are kept.
    #[arg(
        long,
        env = "POSTERN_STATE_DIR",
        default_value = "/var/lib/postern-gateway"
    )]
    pub state_dir: PathBuf,

    /// The gateway's name as the controller shows it [default: the host name].
    #[arg(long, env = "POSTERN_NAME")]
    pub name: Option<String>,

    /// The UDP port WireGuard listens on.
    #[arg(long, env = "POSTERN_LISTEN_PORT", default_value_t = 51820)]
    pub listen_port: u16,

    /// The `host:port` clients should send WireGuard to [default: the first non-loopback
    /// address and the listen port].
    #[arg(long, env = "POSTERN_ENDPOINT")]
    pub endpoint: Option<String>,

    /// The name of the TUN device.
    #[arg(long, env = "POSTERN_TUN_NAME", default_value = "postern0")]
    pub tun_name: String,

    /// The range of client tunnel addresses, routed into the TUN device. The gateway takes
    /// its last usable address for itself; the controller must not hand it to a device.
    #[arg(long, env = "POSTERN_TUNNEL_NETWORK", default_value = "100.64.0.0/10")]
    pub tunnel_network: IpNet,

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(long, env = "POSTERN_HTTP_LISTEN", default_value = "127.0.0.1:9090")]
    pub http_listen: SocketAddr,

    /// Enable IP forwarding and install an nftables masquerade rule for traffic from the
    /// tunnel network leaving through any other interface, removed again on exit. Turn it
    /// off (`--no-masquerade` or `POSTERN_MASQUERADE=false`) when the host sets up NAT.
    #[arg(
        long,
        env = "POSTERN_MASQUERADE",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        overrides_with = "no_masquerade",
    )]
    pub masquerade: bool,

    /// Do not set up forwarding and masquerade (see `--masquerade`).
    #[arg(long, overrides_with = "masquerade")]
    pub no_masquerade: bool,

    /// How long the gateway keeps serving its grants without its controller, counted from
    /// the loss of the last control connection that delivered a full sync (or from start):
    /// then it drops every grant until the controller is back and sends its full sync.
    /// `0` drops them as soon as the link is lost. A number with a unit (`90s`, `10m`,
    /// `1h 30m`, ISO 8601 `PT10M`) or plain seconds (`600`). Longer keeps users working
    /// through a controller outage but leaves a revocation made meanwhile unenforced until
    /// the grace ends.
    #[arg(
        long,
        env = "POSTERN_CONTROLLER_GRACE",
        default_value = "10m",
        value_parser = parse_duration,
    )]
    pub controller_grace: Duration,
}

/// The settings the gateway runs with, resolved from [`Args`].
#[derive(Clone)]
pub struct Config {
    /// The controller's QUIC endpoint.
    pub controller: ControllerUrl,
    /// The enrollment token, if given. Never logged.
    pub token: Option<String>,
    /// The pinned controller certificate, if any.
    pub fingerprint: Option<Fingerprint>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The gateway's name.
    pub name: String,
    /// The WireGuard UDP port.
    pub listen_port: u16,
    /// The endpoint announced to the controller, `host:port`.
    pub endpoint: String,
    /// The TUN device's name.
    pub tun_name: String,
    /// The client tunnel network.
    pub tunnel_network: IpNet,
    /// The gateway's own address on the TUN device, inside `tunnel_network`.
    pub tun_address: IpAddr,
    /// The health and metrics listener.
    pub http_listen: SocketAddr,
    /// Whether the gateway sets up forwarding and masquerade itself.
    pub masquerade: bool,
    /// How long grants are served without contact with the controller.
    pub controller_grace: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("controller", &self.controller)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("fingerprint", &self.fingerprint)
            .field("state_dir", &self.state_dir)
            .field("name", &self.name)
            .field("listen_port", &self.listen_port)
            .field("endpoint", &self.endpoint)
            .field("tun_name", &self.tun_name)
            .field("tunnel_network", &self.tunnel_network)
            .field("tun_address", &self.tun_address)
            .field("http_listen", &self.http_listen)
            .field("masquerade", &self.masquerade)
            .field("controller_grace", &self.controller_grace)
            .finish()
    }
}

/// Why the arguments do not make a usable configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The tunnel network has no room for the gateway's own address.
    #[error("the tunnel network {0} is too small: it needs at least two usable addresses")]
    TunnelNetworkTooSmall(IpNet),
    /// No endpoint was given and no non-loopback address was found to make one.
    #[error("no non-loopback address found for the endpoint; give --endpoint HOST:PORT")]
    NoEndpointAddress,
    /// The endpoint is not `host:port`.
    #[error("the endpoint {0:?} is not HOST:PORT")]
    BadEndpoint(String),
    /// The TUN device name is unusable.
    #[error("the TUN device name {0:?} must be 1 to 15 letters, digits, '-', '_' or '.'")]
    BadTunName(String),
    /// The name is empty.
    #[error("the gateway name is empty")]
    EmptyName,
}

impl Args {
    /// Resolves defaults that depend on the host: the name from `hostname`, the endpoint from
    /// `first_address` (called only when no endpoint was given).
    pub fn resolve(
        self,
        hostname: impl FnOnce() -> Option<String>,
        first_address: impl FnOnce() -> Option<IpAddr>,
    ) -> Result<Config, ConfigError> {
        let masquerade = self.masquerade && !self.no_masquerade;
        let tun_address = gateway_address(self.tunnel_network)
            .ok_or(ConfigError::TunnelNetworkTooSmall(self.tunnel_network))?;
        let valid_tun = !self.tun_name.is_empty()
            && self.tun_name.len() <= 15
            && self
                .tun_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_tun {
            return Err(ConfigError::BadTunName(self.tun_name));
        }
        let endpoint = match self.endpoint {
            Some(e) => {
                split_host_port(&e).ok_or_else(|| ConfigError::BadEndpoint(e.clone()))?;
                e
            }
            None => {
                let ip = first_address().ok_or(ConfigError::NoEndpointAddress)?;
                SocketAddr::new(ip, self.listen_port).to_string()
            }
        };
        let name = match self.name {
            Some(n) => n,
            None => hostname().unwrap_or_else(|| "postern-gateway".to_owned()),
        };
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        Ok(Config {
            controller: self.controller,
            token: self.token.filter(|t| !t.is_empty()),
            fingerprint: self.controller_fingerprint,
            state_dir: self.state_dir,
            name,
            listen_port: self.listen_port,
            endpoint,
            tun_name: self.tun_name,
            tunnel_network: self.tunnel_network.trunc(),
            tun_address,
            http_listen: self.http_listen,
            masquerade,
            controller_grace: self.controller_grace,
        })
    }
}

/// The gateway's own address in the tunnel network: its last usable address (the one before
/// the broadcast address for IPv4), so that controllers allocating devices from the bottom
/// of the range never collide with it.
pub fn gateway_address(network: IpNet) -> Option<IpAddr> {
    match network {
        IpNet::V4(n) => {
            let last = u32::from(n.broadcast());
            let first = u32::from(n.network());
            (n.prefix_len() <= 30)
                .then(|| IpAddr::V4(Ipv4Addr::from(last - 1)))
                .filter(|_| last - 1 > first)
        }
        IpNet::V6(n) => {
            let last = u128::from(n.broadcast());
            (n.prefix_len() <= 126).then(|| IpAddr::V6(Ipv6Addr::from(last - 1)))
        }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// Parses a non-negative duration: plain seconds (`0`, `600`) or jiff's friendly and ISO 8601
/// forms (`500ms`, `90s`, `10m`, `1h 30m`, `10 minutes`, `PT10M`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?} is too many seconds"));
    }
    let d: jiff::SignedDuration = s.parse().map_err(|_| {
        format!("{s:?} is not a duration: give seconds (600) or a unit (90s, 10m, 1h)")
    })?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// Where the controller's QUIC control endpoint is: the host and port of its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    /// The host name or IP address, without brackets: also the TLS server name.
    pub host: String,
    /// The port (443 when the URL has none).
    pub port: u16,
}

/// Why a controller URL was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the controller URL must look like https://HOST[:PORT]")]
pub struct BadUrl;

impl FromStr for ControllerUrl {
    type Err = BadUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("https://").ok_or(BadUrl)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') || authority.is_empty() {
            return Err(BadUrl);
        }
        let (host, port) = if authority.starts_with('[') || authority.contains(':') {
            if authority.starts_with('[') && authority.ends_with(']') {
                (&authority[1..authority.len() - 1], 443)
            } else {
                split_host_port(authority).ok_or(BadUrl)?
            }
        } else {
            (authority, 443)
        };
        if host.is_empty() {
            return Err(BadUrl);
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "https://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut all = vec!["postern-gateway", "--controller", "https://127.0.0.1:8443"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
    }

    fn resolve(args: &[&str]) -> Result<Config, ConfigError> {
        parse(args).unwrap().resolve(
            || Some("gw-host".into()),
            || Some("192.0.2.7".parse().unwrap()),
        )
    }

    #[test]
    fn defaults() {
        let c = resolve(&[]).unwrap();
        assert_eq!(c.controller.host, "127.0.0.1");
        assert_eq!(c.controller.port, 8443);
        assert_eq!(c.name, "gw-host");
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.endpoint, "192.0.2.7:51820");
        assert_eq!(c.tun_name, "postern0");
        assert_eq!(c.tunnel_network, "100.64.0.0/10".parse::<IpNet>().unwrap());
        assert_eq!(c.tun_address, "100.127.255.254".parse::<IpAddr>().unwrap());
        assert_eq!(c.http_listen, "127.0.0.1:9090".parse().unwrap());
        assert!(c.masquerade);
        assert!(c.token.is_none());
        assert!(c.fingerprint.is_none());
        assert_eq!(c.controller_grace, Duration::from_secs(600));
        assert_eq!(c.controller_grace, crate::DEFAULT_CONTROLLER_GRACE);
    }

    #[test_case("0", 0 ; "zero")]
    #[test_case("600", 600_000 ; "plain seconds")]
    #[test_case("600s", 600_000 ; "seconds")]
    #[test_case("10m", 600_000 ; "minutes")]
    #[test_case(" 1h 30m ", 5_400_000 ; "hours and minutes")]
    #[test_case("10 minutes", 600_000 ; "words")]
    #[test_case("PT10M", 600_000 ; "iso 8601")]
    #[test_case("1500ms", 1_500 ; "milliseconds")]
    #[test_case("0s", 0 ; "zero with unit")]
    fn durations(text: &str, millis: u64) {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)));
    }

    #[test_case("" ; "empty")]
    #[test_case("-10m" ; "negative")]
    #[test_case("10m ago" ; "ago")]
    #[test_case("ten minutes" ; "words only")]
    #[test_case("10x" ; "unknown unit")]
    #[test_case("99999999999999999999999" ; "overflow")]
    fn bad_durations(text: &str) {
        assert!(parse_duration(text).is_err(), "{text:?} accepted");
    }

    #[test]
    fn controller_grace_flag() {
        let c = resolve(&["--controller-grace", "1s"]).unwrap();
        assert_eq!(c.controller_grace, Duration::from_secs(1));
        let c = resolve(&["--controller-grace=0"]).unwrap();
        assert_eq!(c.controller_grace, Duration::ZERO);
        assert!(parse(&["--controller-grace", "soon"]).is_err());
    }

    #[test_case(&[], true; "default on")]
    #[test_case(&["--masquerade"], true; "flag")]
    #[test_case(&["--no-masquerade"], false; "negated")]
    #[test_case(&["--masquerade=false"], false; "explicit false")]
    #[test_case(&["--no-masquerade", "--masquerade"], true; "last wins on")]
    #[test_case(&["--masquerade", "--no-masquerade"], false; "last wins off")]
    fn masquerade_flag(args: &[&str], expected: bool) {
        assert_eq!(resolve(args).unwrap().masquerade, expected);
    }

    #[test]
    fn explicit_values() {
        let c = resolve(&[
            "--token",
            "t0ken",
            "--name",
            "edge-1",
            "--listen-port",
            "4500",
            "--endpoint",
            "gw.example.com:4500",
            "--tun-name",
            "pg1",
            "--tunnel-network",
            "10.99.0.0/24",
            "--http-listen",
            "0.0.0.0:9191",
        ])
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("t0ken"));
        assert_eq!(c.name, "edge-1");
        assert_eq!(c.endpoint, "gw.example.com:4500");
        assert_eq!(c.tun_name, "pg1");
        assert_eq!(c.tun_address, "10.99.0.254".parse::<IpAddr>().unwrap());
        assert_eq!(c.http_listen.port(), 9191);
        assert!(!format!("{c:?}").contains("t0ken"));
    }

    #[test_case(&["--endpoint", "nohost"] ; "endpoint without port")]
    #[test_case(&["--endpoint", "::1:51820"] ; "unbracketed v6")]
    #[test_case(&["--tunnel-network", "10.0.0.0/31"] ; "tiny network")]
    #[test_case(&["--tun-name", "a-name-that-is-too-long"] ; "long tun name")]
    #[test_case(&["--name", " "] ; "empty name")]
    fn rejects(args: &[&str]) {
        assert!(resolve(args).is_err());
    }

    #[test]
    fn endpoint_needs_an_address() {
        let err = parse(&[]).unwrap().resolve(|| None, || None).unwrap_err();
        assert_eq!(err, ConfigError::NoEndpointAddress);
    }

    #[test]
    fn v6_endpoint_default_is_bracketed() {
        let c = parse(&[])
            .unwrap()
            .resolve(|| None, || Some("2001:db8::5".parse().unwrap()))
            .unwrap();
        assert_eq!(c.endpoint, "[2001:db8::5]:51820");
        assert_eq!(c.name, "postern-gateway");
    }

    #[test_case("https://ctl.example.com", "ctl.example.com", 443)]
    #[test_case("https://CTL.example.com:8443/", "ctl.example.com", 8443)]
    #[test_case("https://127.0.0.1:8443/api?x=1", "127.0.0.1", 8443)]
    #[test_case("https://[::1]:8443", "::1", 8443)]
    #[test_case("https://[::1]", "::1", 443)]
    fn controller_urls(url: &str, host: &str, port: u16) {
        let u: ControllerUrl = url.parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), (host, port));
    }

    #[test_case("http://ctl:80" ; "plain http")]
    #[test_case("ctl:8443" ; "no scheme")]
    #[test_case("https://" ; "no host")]
    #[test_case("https://user@ctl" ; "userinfo")]
    #[test_case("https://ctl:notaport" ; "bad port")]
    fn bad_controller_urls(url: &str) {
        assert!(url.parse::<ControllerUrl>().is_err());
    }

    #[test]
    fn fingerprint_from_env_style_argument() {
        let fp = Fingerprint::of(b"x").to_string();
        let c = resolve(&["--controller-fingerprint", &fp]).unwrap();
        assert_eq!(c.fingerprint.unwrap().to_string(), fp);
    }
}
