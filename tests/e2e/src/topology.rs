//! The namespace topology of the gateway tests and benchmarks:
//!
//! ```text
//!  client 10.77.1.1 ── 10.77.1.2 gateway 10.77.2.1 ── 10.77.2.2 resource-1
//!                                 gateway 10.77.3.1 ── 10.77.3.2 resource-2
//!                                 gateway 10.77.4.1 ── 10.77.4.2 controller
//! ```
//!
//! The resources know no route back to the client or the tunnel network: whatever reaches
//! them through the gateway must be masqueraded.

use crate::{Netns, link};

/// The client's address on its link to the gateway.
pub const CLIENT: &str = "10.77.1.1";
/// The gateway's public address, where clients send WireGuard.
pub const GATEWAY_PUBLIC: &str = "10.77.1.2";
/// The first resource host.
pub const RESOURCE_1: &str = "10.77.2.2";
/// The second resource host.
pub const RESOURCE_2: &str = "10.77.3.2";
/// The controller's address.
pub const CONTROLLER: &str = "10.77.4.2";
/// The gateway's address on the controller's link.
pub const GATEWAY_CONTROL: &str = "10.77.4.1";

/// Five namespaces wired as above, all deleted on drop.
#[derive(Debug)]
pub struct Topology {
    /// The employee's machine.
    pub client: Netns,
    /// The gateway host.
    pub gateway: Netns,
    /// A protected server.
    pub resource1: Netns,
    /// Another protected server.
    pub resource2: Netns,
    /// The controller host.
    pub controller: Netns,
}

impl Topology {
    /// Builds the namespaces and links; IP forwarding is on in the gateway.
    pub fn new() -> anyhow::Result<Self> {
        let t = Self {
            client: Netns::new("cli")?,
            gateway: Netns::new("gw")?,
            resource1: Netns::new("r1")?,
            resource2: Netns::new("r2")?,
            controller: Netns::new("ctl")?,
        };
        link(&t.client, "10.77.1.1/24", &t.gateway, "10.77.1.2/24")?;
        link(&t.gateway, "10.77.2.1/24", &t.resource1, "10.77.2.2/24")?;
        link(&t.gateway, "10.77.3.1/24", &t.resource2, "10.77.3.2/24")?;
        link(&t.gateway, "10.77.4.1/24", &t.controller, "10.77.4.2/24")?;
        t.gateway.sh("sysctl -qw net.ipv4.ip_forward=1")?;
        Ok(t)
    }

    /// Lets the client reach the resources over the bare links, without any tunnel
    /// (benchmark baseline): routes both ways through the gateway.
    pub fn route_bare(&self) -> anyhow::Result<()> {
        self.client
            .ip(&["route", "replace", "10.77.2.0/24", "via", GATEWAY_PUBLIC])?;
        self.resource1
            .ip(&["route", "replace", "10.77.1.0/24", "via", "10.77.2.1"])?;
        Ok(())
    }
}
