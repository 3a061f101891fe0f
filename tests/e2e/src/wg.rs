//! Debian's `wireguard-go` and `wg`: a WireGuard implementation not written here, used as
//! the stock client (and, in benchmarks, as the peer we compare against).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{ChildGuard, Netns, wait_for};

/// A WireGuard key pair made by `wg genkey`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key (base64).
    pub private: String,
    /// The public key (base64).
    pub public: String,
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> anyhow::Result<Self> {
        let out = Command::new("wg")
            .arg("genkey")
            .output()
            .context("running wg genkey")?;
        let private = String::from_utf8(out.stdout)?.trim().to_owned();
        Ok(Self {
            public: public_key(&private)?,
            private,
        })
    }
}

/// The public key of a base64 private key.
pub fn public_key(private: &str) -> anyhow::Result<String> {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running wg pubkey")?;
    child
        .stdin
        .take()
        .context("wg pubkey stdin")?
        .write_all(private.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// One peer of a `wireguard-go` interface.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's public key.
    pub public_key: String,
    /// The preshared key, if any.
    pub preshared_key: Option<String>,
    /// Where to reach it (`ip:port`), if known.
    pub endpoint: Option<String>,
    /// The addresses routed to it.
    pub allowed_ips: Vec<String>,
}

/// A `wireguard-go` interface in a namespace; the process dies with the guard.
#[derive(Debug)]
pub struct WireguardGo {
    _process: ChildGuard,
    /// The interface name.
    pub interface: String,
}

impl WireguardGo {
    /// Starts `wireguard-go` as `interface` in `ns`, configures it with `wg`, gives it
    /// `address` and brings it up.
    pub fn start(
        ns: &Netns,
        interface: &str,
        private_key: &str,
        listen_port: Option<u16>,
        address: &str,
        peers: &[Peer],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new("wireguard-go");
        cmd.args(["-f", interface])
            .env("WG_PROCESS_FOREGROUND", "1");
        let process = ns.spawn(cmd, &dir.join(format!("{}-{interface}.log", ns.name())))?;
        let up = wait_for(Duration::from_secs(10), || {
            ns.ip(&["link", "show", interface]).ok()
        });
        if up.is_none() {
            bail!("wireguard-go did not create {interface}");
        }
        // It creates the link before its control socket; `wg` without the socket falls back
        // to the kernel module there is none of ("Protocol not supported").
        let socket = std::path::PathBuf::from(format!("/var/run/wireguard/{interface}.sock"));
        if wait_for(Duration::from_secs(10), || socket.exists().then_some(())).is_none() {
            bail!("wireguard-go did not open {}", socket.display());
        }
        let key_file = dir.join(format!("{}-{interface}.key", ns.name()));
        std::fs::write(&key_file, private_key)?;
        let mut args: Vec<String> = vec![
            "set".into(),
            interface.into(),
            "private-key".into(),
            key_file.display().to_string(),
        ];
        if let Some(port) = listen_port {
            args.extend(["listen-port".into(), port.to_string()]);
        }
        for (i, p) in peers.iter().enumerate() {
            args.extend(["peer".into(), p.public_key.clone()]);
            if let Some(psk) = &p.preshared_key {
                let psk_file = dir.join(format!("{}-{interface}-{i}.psk", ns.name()));
                std::fs::write(&psk_file, psk)?;
                args.extend(["preshared-key".into(), psk_file.display().to_string()]);
            }
            if let Some(e) = &p.endpoint {
                args.extend(["endpoint".into(), e.clone()]);
            }
            args.extend(["allowed-ips".into(), p.allowed_ips.join(",")]);
        }
        let out = ns.command("wg").args(&args).output()?;
        if !out.status.success() {
            bail!("wg set failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        ns.ip(&["addr", "add", address, "dev", interface])?;
        ns.ip(&["link", "set", interface, "up"])?;
        Ok(Self {
            _process: process,
            interface: interface.to_owned(),
        })
    }
}
