//! Measurements for benchmarks: iperf3 throughput and ping round-trip times between
//! namespaces.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{ChildGuard, Netns, wait_for};

/// An `iperf3` server in a namespace, stopped on drop.
#[derive(Debug)]
pub struct IperfServer {
    _process: ChildGuard,
}

impl IperfServer {
    /// Starts `iperf3 -s` on `address` in `ns`.
    pub fn start(ns: &Netns, address: &str, dir: &Path) -> anyhow::Result<Self> {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-B", address]);
        let process = ns.spawn(cmd, &dir.join(format!("iperf3-{}.log", ns.name())))?;
        let listening = wait_for(Duration::from_secs(10), || {
            ns.sh("ss -Hltn 'sport = :5201'")
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
        if listening.is_none() {
            bail!("iperf3 did not start in {}", ns.name());
        }
        Ok(Self { _process: process })
    }
}

/// TCP throughput from `ns` to `target` in Mbit/s (as received), over `streams` parallel
/// streams for `seconds`.
pub fn throughput(ns: &Netns, target: &str, streams: u32, seconds: u32) -> anyhow::Result<f64> {
    let out = ns
        .command("iperf3")
        .args([
            "-c",
            target,
            "-J",
            "-P",
            &streams.to_string(),
            "-t",
            &seconds.to_string(),
            "-O",
            "1",
        ])
        .output()
        .context("running iperf3")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = json.get("error") {
        bail!("iperf3: {err}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
        .context("iperf3 JSON has no end.sum_received")
}

/// The average round-trip time from `ns` to `target` in milliseconds over `count` pings.
pub fn round_trip_ms(ns: &Netns, target: &str, count: u32) -> anyhow::Result<f64> {
    let out = ns.sh(&format!("ping -q -c {count} -i 0.01 -W 2 {target}"))?;
    // rtt min/avg/max/mdev = 0.031/0.045/0.090/0.010 ms
    let stats = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .context("ping printed no statistics")?;
    let avg = stats.trim().split('/').nth(1).context("no average")?;
    Ok(avg.trim().parse()?)
}
