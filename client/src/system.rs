//! What the daemon changes on the machine: its TUN device (tun-rs) and the routes of the
//! resources' addresses into it (`ip route`, from iproute2). The TUN device is not
//! persistent: closing it removes the interface and, with it, every route through it, so a
//! daemon that stops or crashes leaves the system as it was.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// The TUN device's MTU: room for WireGuard's overhead on a 1500-byte path.
pub const TUN_MTU: u16 = 1420;

/// The daemon's TUN device and the routes it installed.
pub struct Interface {
    /// The device.
    pub device: AsyncDevice,
    /// Its name.
    pub name: String,
    /// Its address: the device's tunnel address.
    pub address: IpAddr,
    routes: BTreeSet<IpNet>,
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Interface {
    /// Creates the TUN device `name` with `address` as a host address, and brings it up.
    pub fn open(name: &str, address: IpAddr) -> io::Result<Self> {
        let builder = DeviceBuilder::new().name(name).mtu(TUN_MTU);
        let builder = match address {
            IpAddr::V4(a) => builder.ipv4(a, 32u8, None),
            IpAddr::V6(a) => builder.ipv6(a, 128u8),
        };
        let device = builder.build_async()?;
        Ok(Self {
            device,
            name: name.to_owned(),
            address,
            routes: BTreeSet::new(),
        })
    }

    /// Routes exactly `wanted` into the device (those of the device address's family).
    pub async fn set_routes(&mut self, wanted: &[IpNet]) -> Result<(), String> {
        let wanted: BTreeSet<IpNet> = wanted
            .iter()
            .filter(|n| {
                matches!(
                    (n, self.address),
                    (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))
                )
            })
            .map(IpNet::trunc)
            .collect();
        let mut errors = Vec::new();
        for net in self.routes.difference(&wanted) {
            if let Err(e) = ip(&["route", "del", &net.to_string(), "dev", &self.name]).await {
                tracing::debug!(%net, error = %e, "removing a route");
            }
        }
        for net in wanted.difference(&self.routes) {
            if let Err(e) = ip(&[
                "route",
                "replace",
                &net.to_string(),
                "dev",
                &self.name,
                "src",
                &self.address.to_string(),
            ])
            .await
            {
                errors.push(format!("{net}: {e}"));
            }
        }
        self.routes = wanted;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("adding routes failed: {}", errors.join("; ")))
        }
    }

    /// The routes installed.
    pub fn routes(&self) -> impl Iterator<Item = &IpNet> {
        self.routes.iter()
    }
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running ip: {e} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
