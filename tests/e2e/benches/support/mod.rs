//! What the controller benchmarks share: a watch on the gateway's live peer gauge, the
//! admin API with kept-alive connections (one request at a time or many at once), random
//! WireGuard keys, run counts and latency tables.

// Each bench uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use e2e::deploy::{Api, Controller, Gateway, Ids, provision};
use e2e::topology::Topology;
use rand::RngCore;
use serde_json::{Value, json};

/// A deployment in a fresh topology: a controller (on SQLite, or on the PostgreSQL database
/// `database`), optionally a second replica of it, a gateway connected to the first, and
/// the objects `provision` makes. Dropping it stops everything and deletes the namespaces
/// and files (the fields drop in this order).
pub(crate) struct Deployment {
    pub(crate) gateway: Gateway,
    /// The replica the gateway is not connected to.
    pub(crate) other: Option<Controller>,
    /// The controller the gateway is connected to.
    pub(crate) controller: Controller,
    pub(crate) topology: Topology,
    pub(crate) ids: Ids,
    _dir: tempfile::TempDir,
}

impl Deployment {
    pub(crate) fn start(database: Option<&str>, other_replica: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let topology = Topology::new()?;
        let env: Vec<(&str, &str)> = database
            .map(|url| vec![("POSTERN_DATABASE_URL", url)])
            .unwrap_or_default();
        let controller = Controller::start_with_env(&topology, dir.path(), &env)?;
        let other = if other_replica {
            Some(controller.start_replica(&topology, dir.path(), "replica-b", 8444)?)
        } else {
            None
        };
        let site =
            id(&controller
                .api
                .ok("POST", "/api/v1/sites", Some(json!({"name": "bench"})))?)?;
        let gateway = Gateway::start(&topology, &controller, &site, dir.path())?;
        let ids = provision(&controller, &site, &["tcp/8080"])?;
        Ok(Self {
            gateway,
            other,
            controller,
            topology,
            ids,
            _dir: dir,
        })
    }
}

/// Watches the gateway's peer gauge from inside its namespace; sends each change with the
/// time it was seen.
pub(crate) struct PeerWatch {
    changes: mpsc::Receiver<(Instant, u64)>,
    stop: Arc<AtomicBool>,
}

impl PeerWatch {
    /// Polls `postern_gateway_peers` every 0.5 ms, for at most `limit`.
    pub(crate) fn start(t: &Topology, limit: Duration) -> Self {
        let (tx, changes) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = format!("/var/run/netns/{}", t.gateway.name());
        std::thread::spawn(move || {
            let _ = e2e::in_namespace(&path, async move {
                let client = reqwest::Client::new();
                let mut last = None;
                let deadline = Instant::now() + limit;
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
                    // Not tokio's sleep: its timer ticks in milliseconds, which would
                    // add up to 2 ms to every figure. Nothing else runs on this thread.
                    std::thread::sleep(Duration::from_micros(500));
                }
            });
        });
        Self { changes, stop }
    }

    /// Waits until the gauge reads `peers`; returns when it was seen.
    pub(crate) fn until(&self, peers: u64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut seen = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, p) = self.changes.recv_timeout(left).with_context(|| {
                format!("the gateway never had {peers} peer(s) (last seen: {seen:?})")
            })?;
            if p == peers {
                return Ok(at);
            }
            seen = Some(p);
        }
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One API request and where its answer goes (with its index in a batch).
struct Job {
    method: String,
    path: String,
    body: Option<Value>,
    index: usize,
    reply: mpsc::Sender<(usize, anyhow::Result<Value>)>,
}

/// The admin API with one kept-alive HTTPS client inside the controller's namespace. Each
/// request runs as a task of its own, at most `concurrency` at once.
pub(crate) struct Admin {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Admin {
    /// One request at a time.
    pub(crate) fn start(api: &Api) -> Self {
        Self::with_concurrency(api, 1)
    }

    /// Up to `concurrency` requests in flight (as many kept-alive connections).
    pub(crate) fn with_concurrency(api: &Api, concurrency: usize) -> Self {
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
                    .timeout(Duration::from_secs(300))
                    .build()?;
                let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
                while let Some(job) = rx.recv().await {
                    let permit = slots.clone().acquire_owned().await?;
                    let (client, base, token) = (client.clone(), base.clone(), token.clone());
                    tokio::spawn(async move {
                        let result = request(&client, &base, &token, &job).await;
                        let _ = job.reply.send((job.index, result));
                        drop(permit);
                    });
                }
                Ok::<_, anyhow::Error>(())
            });
        });
        Self { jobs }
    }

    /// One request; its JSON answer (`null` when it has no body).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut answers = self.call_all(vec![(method.to_owned(), path.to_owned(), body)])?;
        answers.pop().context("no answer from the API")?
    }

    /// Many requests at once (as many in flight as the concurrency allows); the answers in
    /// the order of `calls`.
    pub(crate) fn call_all(
        &self,
        calls: Vec<(String, String, Option<Value>)>,
    ) -> anyhow::Result<Vec<anyhow::Result<Value>>> {
        let (reply, answers) = mpsc::channel();
        let n = calls.len();
        for (index, (method, path, body)) in calls.into_iter().enumerate() {
            self.jobs
                .send(Job {
                    method,
                    path,
                    body,
                    index,
                    reply: reply.clone(),
                })
                .map_err(|_| anyhow::anyhow!("the API thread ended"))?;
        }
        let mut out: Vec<Option<anyhow::Result<Value>>> = (0..n).map(|_| None).collect();
        let deadline =
            Instant::now() + Duration::from_secs(300) + Duration::from_millis(50) * n as u32;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, result) = answers
                .recv_timeout(left)
                .context("no answer from the API")?;
            out[i] = Some(result);
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("no answer"))))
            .collect())
    }
}

async fn request(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    job: &Job,
) -> anyhow::Result<Value> {
    let mut req = client
        .request(
            reqwest::Method::from_bytes(job.method.as_bytes())?,
            format!("{base}{}", job.path),
        )
        .bearer_auth(token);
    if let Some(b) = &job.body {
        req = req.json(b);
    }
    let res = req.send().await?;
    let status = res.status();
    let text = res.text().await?;
    let v: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if !status.is_success() {
        bail!("{} {} answered {status}: {v}", job.method, job.path);
    }
    Ok(v)
}

/// A random WireGuard public key (base64 of 32 bytes): as good as a real one for the
/// controller and the gateway, and made without running `wg`.
pub(crate) fn random_key() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `POSTERN_BENCH_RUNS`, or `default`.
pub(crate) fn runs(default: usize) -> usize {
    std::env::var("POSTERN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .clamp(1, 1000)
}

/// The `q` quantile of `times` (nearest rank).
pub(crate) fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    let i = ((t.len() as f64 - 1.0) * q).round() as usize;
    t.get(i).copied().unwrap_or_default()
}

/// Milliseconds, for the tables.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The machine's load averages (1, 5, 15 minutes), printed with each table: on 2 cores,
/// whatever else runs shows in the tails.
pub(crate) fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The id of the object named `name` in the list at `path` (`/api/v1/groups`).
pub(crate) fn named(api: &Admin, path: &str, name: &str) -> anyhow::Result<String> {
    let list = api.call("GET", path, None)?;
    let found = list
        .as_array()
        .and_then(|all| all.iter().find(|o| o["name"] == name))
        .with_context(|| format!("no {name} in {path}"))?;
    id(found)
}

/// The `id` field of an API answer.
pub(crate) fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {v}"))
}
