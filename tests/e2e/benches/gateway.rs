//! Throughput and round-trip time client → gateway → resource, side by side in one run:
//! over the bare links, through a Debian `wireguard-go` pair, and through
//! `postern-gateway` (client side: the same `wireguard-go`). Run as root:
//!
//! ```sh
//! cargo bench -p e2e --bench gateway
//! ```
//!
//! `POSTERN_BENCH_SECONDS` sets the length of each iperf3 run (default 5).

use e2e::deploy::{Controller, Gateway, connect_client, provision};
use e2e::measure::{IperfServer, round_trip_ms, throughput};
use e2e::topology::{RESOURCE_1, Topology, WireguardGoPair};

struct Row {
    path: &'static str,
    single: f64,
    four: f64,
    rtt: f64,
}

fn measure(t: &Topology, path: &'static str, seconds: u32) -> anyhow::Result<Row> {
    Ok(Row {
        path,
        single: throughput(&t.client, RESOURCE_1, 1, seconds)?,
        four: throughput(&t.client, RESOURCE_1, 4, seconds)?,
        rtt: round_trip_ms(&t.client, RESOURCE_1, 200)?,
    })
}

fn wireguard_go_path(t: &Topology, dir: &std::path::Path, seconds: u32) -> anyhow::Result<Row> {
    let _pair = WireguardGoPair::start(t, dir, "10.77.2.0/24")?;
    measure(t, "wireguard-go pair", seconds)
}

fn postern_path(t: &Topology, dir: &std::path::Path, seconds: u32) -> anyhow::Result<Row> {
    let ctl = Controller::start(t, dir)?;
    let site = ctl.api.ok(
        "POST",
        "/api/v1/sites",
        Some(serde_json::json!({"name": "bench"})),
    )?;
    let site = site["id"].as_str().unwrap_or_default().to_owned();
    let _gw = Gateway::start(t, &ctl, &site, dir)?;
    let ids = provision(&ctl, &site, &["tcp/5201", "icmp"])?;
    let _client = connect_client(t, &ctl, &ids, dir, "wgp")?;
    // The first packets wait for the handshake; start measuring once it is done.
    t.client.sh(&format!(
        "ping -c 3 -i 0.2 -W 2 {RESOURCE_1} >/dev/null || true"
    ))?;
    measure(t, "postern-gateway", seconds)
}

fn main() -> anyhow::Result<()> {
    let seconds: u32 = std::env::var("POSTERN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile_dir()?;
    let t = Topology::new()?;
    let _iperf = IperfServer::start(&t.resource1, RESOURCE_1, &dir)?;

    let mut rows = Vec::new();
    t.route_bare()?;
    rows.push(measure(&t, "bare veth", seconds)?);
    t.resource1.ip(&["route", "del", "10.77.1.0/24"])?;
    rows.push(wireguard_go_path(&t, &dir, seconds)?);
    rows.push(postern_path(&t, &dir, seconds)?);

    println!();
    println!(
        "client -> gateway -> resource, TCP via iperf3 ({seconds} s per run), RTT via 200 pings"
    );
    println!(
        "{:<22} {:>16} {:>16} {:>10}",
        "path", "1 stream Mbit/s", "4 streams Mbit/s", "RTT ms"
    );
    for r in &rows {
        println!(
            "{:<22} {:>16.0} {:>16.0} {:>10.3}",
            r.path, r.single, r.four, r.rtt
        );
    }
    let base = &rows[0];
    for r in &rows[1..] {
        println!(
            "{:<22} {:>15.2}x {:>15.2}x {:>9.2}x   (of bare veth)",
            r.path,
            r.single / base.single,
            r.four / base.four,
            r.rtt / base.rtt
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("postern-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
