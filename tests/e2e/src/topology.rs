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

use std::path::Path;
use std::process::Command;

use crate::wg::{KeyPair, Peer, WireguardGo};
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

/// The baseline the benchmarks compare with: a Debian `wireguard-go` pair between the
/// client (`wgc`, 100.64.0.2) and the gateway (`wgb`, 100.64.0.1, UDP 51821, masquerading
/// the tunnel network towards the resources). The client routes `routed` into the tunnel.
/// Dropping it removes the route and the NAT table and stops both processes.
pub struct WireguardGoPair<'t> {
    topology: &'t Topology,
    routed: String,
    _gateway: WireguardGo,
    _client: WireguardGo,
}

impl<'t> WireguardGoPair<'t> {
    /// Starts the pair with a fresh key pair each side and a preshared key, and completes
    /// the handshake before returning.
    pub fn start(t: &'t Topology, dir: &Path, routed: &str) -> anyhow::Result<Self> {
        let (server, client) = (KeyPair::generate()?, KeyPair::generate()?);
        let psk = String::from_utf8(Command::new("wg").arg("genpsk").output()?.stdout)?
            .trim()
            .to_owned();
        let gateway = WireguardGo::start(
            &t.gateway,
            "wgb",
            &server.private,
            Some(51821),
            "100.64.0.1/32",
            &[Peer {
                public_key: client.public.clone(),
                preshared_key: Some(psk.clone()),
                endpoint: None,
                allowed_ips: vec!["100.64.0.2/32".into()],
            }],
            dir,
        )?;
        t.gateway
            .ip(&["route", "replace", "100.64.0.2/32", "dev", "wgb"])?;
        let client = WireguardGo::start(
            &t.client,
            "wgc",
            &client.private,
            None,
            "100.64.0.2/32",
            &[Peer {
                public_key: server.public,
                preshared_key: Some(psk),
                endpoint: Some(format!("{GATEWAY_PUBLIC}:51821")),
                allowed_ips: vec![routed.to_owned()],
            }],
            dir,
        )?;
        let pair = Self {
            topology: t,
            routed: routed.to_owned(),
            _gateway: gateway,
            _client: client,
        };
        t.client.ip(&[
            "route",
            "replace",
            routed,
            "dev",
            "wgc",
            "src",
            "100.64.0.2",
        ])?;
        t.gateway.sh(
            "nft add table ip wgbaseline; \
             nft add chain ip wgbaseline post '{ type nat hook postrouting priority 100; }'; \
             nft add rule ip wgbaseline post ip saddr 100.64.0.0/10 oifname != \"wgb\" masquerade",
        )?;
        // The handshake happens here, not in the first measured run.
        t.client.sh(&format!(
            "ping -c 3 -i 0.2 -W 2 {RESOURCE_1} >/dev/null || true"
        ))?;
        Ok(pair)
    }
}

impl Drop for WireguardGoPair<'_> {
    fn drop(&mut self) {
        let _ = self.topology.gateway.sh("nft delete table ip wgbaseline");
        let _ = self
            .topology
            .client
            .ip(&["route", "del", &self.routed, "dev", "wgc"]);
    }
}
