//! TCP connect time client → resource (first SYN to established), side by side in one run:
//! over the bare links, through a pre-configured Debian `wireguard-go` tunnel, and through
//! Postern: warm (the application's tunnel is up) and cold (on demand: the daemon holds the
//! SYN, asks the controller, which decides, picks the gateway, pushes the grant and waits
//! for its acknowledgement; then the WireGuard handshake; then the SYN). Each cold run
//! starts from no tunnel (`postern down` / `postern up` between runs). Run as root:
//!
//! ```sh
//! cargo bench -p e2e --bench connect
//! ```
//!
//! `POSTERN_BENCH_RUNS` sets the runs per path (default 20).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::client::{Daemon, echo_server, route_to_controller};
use e2e::deploy::{Controller, Gateway};
use e2e::topology::{GATEWAY_PUBLIC, RESOURCE_1, Topology, WireguardGoPair};

use e2e::{Netns, wait_for};
use serde_json::json;

const PORT: u16 = 8080;

/// Connect times from inside `ns` to the resource, one fresh connection per run; `before`
/// runs (outside the timing) before each.
fn connect_times(
    ns: &Netns,
    runs: usize,
    mut before: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let target: SocketAddr = format!("{RESOURCE_1}:{PORT}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        if Instant::now() > deadline {
            bail!("the runs took longer than five minutes");
        }
        before()?;
        let took = ns.block_on(async move {
            tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
                let start = Instant::now();
                let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                let took = start.elapsed();
                drop(s);
                Ok(took)
            })
            .await?
        })??;
        times.push(took);
    }
    Ok(times)
}

struct Row {
    path: &'static str,
    times: Vec<Duration>,
}

impl Row {
    fn quantile(&self, q: f64) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        let i = ((t.len() as f64 - 1.0) * q).round() as usize;
        t.get(i).copied().unwrap_or_default()
    }
}

fn wireguard_go(t: &Topology, dir: &std::path::Path, runs: usize) -> anyhow::Result<Row> {
    let _pair = WireguardGoPair::start(t, dir, &format!("{RESOURCE_1}/32"))?;
    Ok(Row {
        path: "wireguard-go tunnel (up)",
        times: connect_times(&t.client, runs, || Ok(()))?,
    })
}

fn postern(t: &Topology, dir: &std::path::Path, runs: usize) -> anyhow::Result<[Row; 2]> {
    route_to_controller(
        &t.client,
        GATEWAY_PUBLIC,
        &t.controller,
        "10.77.4.1",
        "10.77.1.0/24",
    )?;
    let ctl = Controller::start(t, dir)?;
    let api = &ctl.api;
    let site = api.ok("POST", "/api/v1/sites", Some(json!({"name": "bench"})))?;
    let _gw = Gateway::start(t, &ctl, site["id"].as_str().unwrap_or_default(), dir)?;
    let app = api.ok("POST", "/api/v1/resources", Some(json!({"name": "app", "site_id": site["id"], "addresses": [RESOURCE_1], "ports": [format!("tcp/{PORT}")]})))?;
    let user = api.ok(
        "POST",
        "/api/v1/users",
        Some(json!({"email": "ann@example.com", "name": "Ann"})),
    )?;
    let group = api.ok("POST", "/api/v1/groups", Some(json!({"name": "eng"})))?;
    api.ok(
        "POST",
        &format!(
            "/api/v1/groups/{}/members",
            group["id"].as_str().unwrap_or_default()
        ),
        Some(json!({"user_id": user["id"]})),
    )?;
    api.ok(
        "POST",
        "/api/v1/policies",
        Some(json!({"name": "eng-app", "group_id": group["id"], "resource_id": app["id"]})),
    )?;
    let key = api.ok(
        "POST",
        "/api/v1/enrollment-keys",
        Some(json!({"user_id": user["id"]})),
    )?;
    let daemon = Daemon::start(&t.client, dir, "bench", "pstb", &[])?;
    let out = daemon.cli(&[
        "login",
        api.base(),
        "--fingerprint",
        &ctl.fingerprint,
        "--enroll-key",
        key["secret"].as_str().context("no key")?,
    ])?;
    if !out.status.success() {
        bail!("enrolling failed: {out:?}\n{}", daemon.log());
    }
    daemon.wait_state("connected", Duration::from_secs(15))?;
    // Cold: no tunnel before each run.
    let cold = connect_times(&t.client, runs, || {
        let down = daemon.cli(&["down"])?;
        let up = daemon.cli(&["up"])?;
        if !down.status.success() || !up.status.success() {
            bail!("down/up failed: {down:?} {up:?}");
        }
        daemon.wait_state("connected", Duration::from_secs(15))?;
        // Routes are in place once the status says connected; give the kernel a moment to
        // bring the fresh device up.
        wait_for(Duration::from_secs(2), || {
            t.client
                .ip(&["route", "get", RESOURCE_1])
                .ok()
                .filter(|r| r.contains("pstb"))
        })
        .context("the resource is not routed into the TUN device")?;
        Ok(())
    })?;
    let warm = connect_times(&t.client, runs, || Ok(()))?;
    Ok([
        Row {
            path: "postern cold (on demand)",
            times: cold,
        },
        Row {
            path: "postern warm (tunnel up)",
            times: warm,
        },
    ])
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("POSTERN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .clamp(1, 1000);
    let dir = tempfile::tempdir()?;
    let t = Topology::new()?;
    let _server = echo_server(&t.resource1, RESOURCE_1, PORT, dir.path())?;

    let mut rows = Vec::new();
    t.route_bare()?;
    rows.push(Row {
        path: "bare veth (no tunnel)",
        times: connect_times(&t.client, runs, || Ok(()))?,
    });
    t.resource1.ip(&["route", "del", "10.77.1.0/24"])?;
    t.client.ip(&["route", "del", "10.77.2.0/24"])?;
    rows.push(wireguard_go(&t, dir.path(), runs)?);
    rows.extend(postern(&t, dir.path(), runs)?);

    println!();
    println!("TCP connect time client -> resource (SYN to established), {runs} runs each");
    println!(
        "{:<28} {:>12} {:>12} {:>12}",
        "path", "median ms", "p90 ms", "max ms"
    );
    for r in &rows {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let max = r.times.iter().max().copied().unwrap_or_default();
        println!(
            "{:<28} {:>12.3} {:>12.3} {:>12.3}",
            r.path,
            ms(r.quantile(0.5)),
            ms(r.quantile(0.9)),
            ms(max)
        );
    }
    Ok(())
}
