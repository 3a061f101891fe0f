//! The Postern gateway's IO shell around the sans-IO [`tunnel::GatewayTunnel`]: a UDP socket
//! and a TUN device driven by one tokio event loop ([`DataPlane`]), the QUIC control link to
//! the controller that enrolls the gateway and converges its grants ([`ControlLink`]), the
//! controller grace after which grants are dropped without the controller (`grace`), the
//! durable state directory ([`StateDir`]), masquerade towards the protected servers through
//! nftables ([`Masquerade`]), and the local health and metrics endpoints ([`http`]). This
//! crate does IO; the `postern-gateway` binary only parses arguments and wires these
//! together.

mod config;
mod control;
mod dataplane;
mod grace;
mod grant;
pub mod http;
mod metrics;
mod nat;
mod state;
mod tls;

pub use config::{Args, Config, ConfigError, ControllerUrl, Fingerprint, gateway_address};
pub use control::{ControlError, ControlLink, ControlLinkConfig, MAX_BACKOFF, Status};
pub use dataplane::{
    DataPlane, DataPlaneError, DataPlaneHandle, Snapshot, SyncReport, bind_udp, converge,
    first_address, open_tun,
};
pub use grace::DEFAULT_CONTROLLER_GRACE;
pub use grant::{GrantSpecError, grant_config};
pub use metrics::render as render_metrics;
pub use nat::{Masquerade, NatError, enable_forwarding, table_name};
pub use state::{StateDir, StateError};
pub use tls::{TlsError, client_config};
