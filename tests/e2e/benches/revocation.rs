//! Revocation latency: from the admin's `DELETE /api/v1/grants/{id}` leaving the client to
//! the gateway having dropped the peer (its live `postern_gateway_peers` gauge, polled from
//! inside the gateway's namespace every 0.5 ms), side by side in one run for:
//!
//! - one controller on SQLite (the embedded default);
//! - a controller on PostgreSQL, revoking at the replica the gateway is connected to;
//! - two replicas on PostgreSQL, revoking at the other one (the revocation travels through
//!   PostgreSQL's `NOTIFY` to the gateway's replica).
//!
//! Both the API client and the poller keep their connections open, so the figures hold no
//! TLS handshakes. Needs root and, for the PostgreSQL rows, `POSTERN_TEST_POSTGRES_URL` and
//! `POSTERN_TEST_POSTGRES_SOCKET` (as `scripts/test` sets them):
//!
//! ```sh
//! cargo bench -p e2e --bench revocation
//! ```
//!
//! `POSTERN_BENCH_RUNS` sets the revocations per row (default 30).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::deploy::{Api, Controller, Gateway, Ids, provision};
use e2e::postgres::Database;
use e2e::topology::{CLIENT, Topology};
use e2e::wg::KeyPair;
use serde_json::{Value, json};

/// Watches the gateway's peer gauge from inside its namespace; sends each change with the
/// time it was seen.
struct PeerWatch {
    changes: mpsc::Receiver<(Instant, u64)>,
    stop: Arc<AtomicBool>,
}

impl PeerWatch {
    fn start(t: &Topology) -> Self {
        let (tx, changes) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = format!("/var/run/netns/{}", t.gateway.name());
        std::thread::spawn(move || {
            let _ = e2e::in_namespace(&path, async move {
                let client = reqwest::Client::new();
                let mut last = None;
                // Bounded: at most ten minutes of polling.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let text = match client.get("http://127.0.0.1:9090/metrics").send().await {
                        Ok(res) => res.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    let peers = text.lines().find_map(|l| {
                        l.strip_prefix("postern_gateway_peers ")
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    });
                    if let Some(p) = peers
                        && last != Some(p)
                    {
                        last = Some(p);
                        if tx.send((Instant::now(), p)).is_err() {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            });
        });
        Self { changes, stop }
    }

    /// Waits until the gauge reads `peers`; returns when it was seen.
    fn until(&self, peers: u64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, p) = self
                .changes
                .recv_timeout(left)
                .with_context(|| format!("the gateway never had {peers} peer(s)"))?;
            if p == peers {
                return Ok(at);
            }
        }
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Job = (
    String,
    String,
    Option<Value>,
    mpsc::Sender<anyhow::Result<Value>>,
);

/// The admin API with one kept-alive HTTPS client inside the controller's namespace.
struct Admin {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Admin {
    fn start(api: &Api) -> Self {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ns, base, pem, token) = (
            api.ns_path().to_owned(),
            api.base().to_owned(),
            api.ca_pem().to_vec(),
            api.token.clone(),
        );
        std::thread::spawn(move || {
            let _ = e2e::in_namespace(&ns, async move {
                let client = reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
                    .timeout(Duration::from_secs(20))
                    .build()?;
                while let Some((method, path, body, reply)) = rx.recv().await {
                    let result = async {
                        let mut req = client
                            .request(
                                reqwest::Method::from_bytes(method.as_bytes())?,
                                format!("{base}{path}"),
                            )
                            .bearer_auth(&token);
                        if let Some(b) = body {
                            req = req.json(&b);
                        }
                        let res = req.send().await?;
                        let status = res.status();
                        let v: Value = res.json().await?;
                        if !status.is_success() {
                            bail!("{method} {path} answered {status}: {v}");
                        }
                        Ok(v)
                    }
                    .await;
                    let _ = reply.send(result);
                }
                Ok::<_, anyhow::Error>(())
            });
        });
        Self { jobs }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send((method.to_owned(), path.to_owned(), body, tx))
            .map_err(|_| anyhow::anyhow!("the API thread ended"))?;
        rx.recv_timeout(Duration::from_secs(30))
            .context("no answer from the API")?
    }
}

struct Row {
    path: &'static str,
    times: Vec<Duration>,
}

fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    let i = ((t.len() as f64 - 1.0) * q).round() as usize;
    t.get(i).copied().unwrap_or_default()
}

/// Issues a grant through `issuer` and revokes it through `revoker`, `runs` times; the time
/// from the revocation request to the gateway dropping the peer.
fn revocations(
    t: &Topology,
    issuer: &Admin,
    revoker: &Admin,
    ids: &Ids,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let watch = PeerWatch::start(t);
    watch.until(0, Duration::from_secs(10))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let key = KeyPair::generate()?;
        let grant = issuer.call(
            "POST",
            "/api/v1/access",
            Some(json!({"user_id": ids.user, "device_id": ids.device, "resource_id": ids.app, "source": CLIENT, "public_key": key.public})),
        )?;
        let id = grant["grant_id"]
            .as_str()
            .context("no grant id")?
            .to_owned();
        watch.until(1, Duration::from_secs(10))?;
        let started = Instant::now();
        revoker.call("DELETE", &format!("/api/v1/grants/{id}"), None)?;
        let dropped = watch.until(0, Duration::from_secs(10))?;
        times.push(dropped.saturating_duration_since(started));
    }
    Ok(times)
}

/// One row: a fresh topology, the controller(s), a gateway, the objects, then the runs.
fn row(
    path: &'static str,
    database: Option<&str>,
    across: bool,
    runs: usize,
) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let t = Topology::new()?;
    let env: Vec<(&str, &str)> = database
        .map(|url| vec![("POSTERN_DATABASE_URL", url)])
        .unwrap_or_default();
    let a = Controller::start_with_env(&t, dir.path(), &env)?;
    let b = if across {
        Some(a.start_replica(&t, dir.path(), "replica-b", 8444)?)
    } else {
        None
    };
    let site = a
        .api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "bench"})))?;
    let _gw = Gateway::start(&t, &a, site["id"].as_str().unwrap_or_default(), dir.path())?;
    let ids = provision(&a, site["id"].as_str().unwrap_or_default(), &["tcp/8080"])?;
    let issuer = Admin::start(&a.api);
    let revoker = Admin::start(&b.as_ref().unwrap_or(&a).api);
    let times = revocations(&t, &issuer, &revoker, &ids, runs)?;
    Ok(Row { path, times })
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("POSTERN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .clamp(1, 1000);
    let mut rows = vec![row("SQLite, one controller", None, false, runs)?];
    match Database::create()? {
        Some(db) => {
            rows.push(row(
                "PostgreSQL, at the gateway's replica",
                Some(&db.url),
                false,
                runs,
            )?);
            let db2 = Database::create()?.context("a second database")?;
            rows.push(row(
                "PostgreSQL, at another replica",
                Some(&db2.url),
                true,
                runs,
            )?);
        }
        None => eprintln!("the PostgreSQL rows need a test server (see above)"),
    }
    println!(
        "\nrevocation latency: DELETE /api/v1/grants/{{id}} sent -> the gateway's peer gone ({runs} runs)\n"
    );
    println!("| path | median ms | p90 ms | max ms |");
    println!("|---|---|---|---|");
    for r in &rows {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            r.path,
            ms(quantile(&r.times, 0.5)),
            ms(quantile(&r.times, 0.9)),
            ms(quantile(&r.times, 1.0)),
        );
    }
    Ok(())
}
