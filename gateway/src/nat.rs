//! IP forwarding and the nftables masquerade rule that lets the protected servers answer
//! clients without a route back to the tunnel network. The gateway installs the rule in a
//! table of its own (`inet postern_<tun>`) and deletes that table on exit.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use ipnet::IpNet;

/// Why forwarding or masquerade could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The `nft` program could not be run.
    #[error("running nft: {0} (is the nftables package installed?)")]
    Spawn(#[source] io::Error),
    /// `nft` refused the ruleset.
    #[error("nft failed: {0}")]
    Nft(String),
    /// Forwarding is off and could not be turned on.
    #[error(
        "IP forwarding ({path}) is off and could not be turned on: {source}; enable it on the host or container (e.g. compose `sysctls`), or run the entrypoint as root"
    )]
    Forwarding {
        /// The sysctl file.
        path: &'static str,
        /// Why writing it failed.
        source: io::Error,
    },
}

/// The nftables table the gateway owns for a TUN device (`postern_<tun>`, with characters
/// nft does not accept in names replaced by `_`).
pub fn table_name(tun_name: &str) -> String {
    let suffix: String = tun_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("postern_{suffix}")
}

/// Turns on forwarding for the tunnel network's address family if it is off.
pub fn enable_forwarding(network: IpNet) -> Result<(), NatError> {
    let path = match network {
        IpNet::V4(_) => "/proc/sys/net/ipv4/ip_forward",
        IpNet::V6(_) => "/proc/sys/net/ipv6/conf/all/forwarding",
    };
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|source| NatError::Forwarding { path, source })?;
    tracing::info!(path, "enabled IP forwarding");
    Ok(())
}

/// The ruleset that (re)creates the gateway's table with the masquerade rule. The leading
/// `add`/`delete` pair removes a table left behind by a crashed run, on any nft version.
fn ruleset(table: &str, tun_name: &str, network: IpNet) -> String {
    let family = match network {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    format!(
        "add table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\t{family} saddr {network} oifname != \"{tun_name}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The installed masquerade rule; removed by [`Masquerade::remove`] or on drop.
#[derive(Debug)]
pub struct Masquerade {
    table: String,
    removed: bool,
}

impl Masquerade {
    /// Installs masquerade for packets from `network` leaving through any interface but the
    /// TUN device.
    pub fn install(tun_name: &str, network: IpNet) -> Result<Self, NatError> {
        let table = table_name(tun_name);
        nft(&ruleset(&table, tun_name, network.trunc()))?;
        tracing::info!(table = %table, network = %network, "installed masquerade");
        Ok(Self {
            table,
            removed: false,
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Deletes the gateway's table.
    pub fn remove(mut self) -> Result<(), NatError> {
        self.removed = true;
        nft(&format!("delete table inet {}\n", self.table))?;
        tracing::info!(table = %self.table, "removed masquerade");
        Ok(())
    }
}

impl Drop for Masquerade {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = nft(&format!("delete table inet {}\n", self.table))
        {
            tracing::warn!(table = %self.table, error = %e, "could not remove masquerade");
        }
    }
}

fn nft(script: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NatError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NatError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NatError::Nft(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("postern0"), "postern_postern0");
        assert_eq!(table_name("pg-1.a"), "postern_pg_1_a");
    }

    #[test]
    fn ruleset_masquerades_the_tunnel_network() {
        let r = ruleset("postern_t", "t", "100.64.0.0/10".parse().unwrap());
        assert!(r.starts_with("add table inet postern_t\ndelete table inet postern_t\n"));
        assert!(r.contains("type nat hook postrouting priority srcnat"));
        assert!(r.contains("ip saddr 100.64.0.0/10 oifname != \"t\" masquerade"));
        let r = ruleset("postern_t", "t", "fd00:64::/64".parse().unwrap());
        assert!(r.contains("ip6 saddr fd00:64::/64"));
    }
}
