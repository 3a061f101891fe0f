//! A real browser for the web UI tests: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver) with fantoccini. The driver runs inside a test namespace and
//! dies with its guard; the controller it talks to is started here too, so that the test
//! can complete first-run setup in the browser.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::topology::{CONTROLLER, Topology};
use crate::{ChildGuard, Netns, wait_for, workspace_binary};

/// The chromium binary chromedriver should start (Debian's wrapper script's target when
/// present, so that its shell preamble does not stand in the way).
fn chromium_binary() -> anyhow::Result<PathBuf> {
    for p in ["/usr/lib/chromium/chromium", "/usr/bin/chromium"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!(
        "chromium is not installed: `apt-get install -y chromium chromium-driver` (scripts/test does)"
    )
}

/// `chromedriver` listening on a free loopback port inside a namespace; killed on drop.
#[derive(Debug)]
pub struct ChromeDriver {
    _process: ChildGuard,
    /// Its WebDriver port on the namespace's loopback.
    pub port: u16,
}

impl ChromeDriver {
    /// Starts chromedriver inside `ns`, logging to `log`, and waits until it listens.
    pub fn start(ns: &Netns, log: &Path) -> anyhow::Result<Self> {
        chromium_binary()?;
        if !Path::new("/usr/bin/chromedriver").exists() {
            bail!(
                "chromedriver is not installed: `apt-get install -y chromium-driver` (scripts/test does)"
            );
        }
        let port = ns.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Ok::<_, anyhow::Error>(l.local_addr()?.port())
        })??;
        // Chromium fails a navigation in flight with ERR_NETWORK_CHANGED whenever the
        // namespace's addresses change, e.g. when the IPv6 link-local addresses of fresh
        // links finish duplicate address detection. These tests use IPv4 only: IPv6 is
        // turned off in the browser's namespace and the change is given time to settle.
        ns.sh(
            "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg(format!("--port={port}"));
        let process = ns.spawn(cmd, log)?;
        wait_for(Duration::from_secs(20), || {
            ns.sh(&format!("ss -Hltn 'sport = :{port}'"))
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .with_context(|| {
            format!(
                "chromedriver did not listen: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })?;
        Ok(Self {
            _process: process,
            port,
        })
    }

    /// A new headless browser session (call inside the driver's namespace). Certificate
    /// errors are ignored: the controller's certificate is self-signed.
    pub async fn session(&self, profile_dir: &Path) -> anyhow::Result<fantoccini::Client> {
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary()?,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--window-size=1280,900",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    format!("--user-data-dir={}", profile_dir.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .context("starting a chromium session")?;
        Ok(client)
    }
}

/// Where screenshots go: `<target>/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_binary("")
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("target"))
        });
    target.join("ui-screenshots")
}

/// Saves a PNG screenshot of the page as `<name>.png` under [`screenshot_dir`].
pub async fn screenshot(client: &fantoccini::Client, name: &str) -> anyhow::Result<PathBuf> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    let png = client.screenshot().await?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png)?;
    Ok(path)
}

/// The controller started for a browser test, before setup.
#[derive(Debug)]
pub struct FreshController {
    _process: ChildGuard,
    /// Its log file.
    pub log: PathBuf,
    /// Its HTTPS URL.
    pub url: String,
    /// The one-time setup code it printed.
    pub setup_code: String,
    /// Its certificate fingerprint.
    pub fingerprint: String,
    /// Its certificate (PEM), to trust in API calls.
    pub ca_pem: Vec<u8>,
}

impl FreshController {
    /// Starts the controller in the controller namespace without completing setup.
    pub fn start(t: &Topology, dir: &Path) -> anyhow::Result<Self> {
        crate::deploy::build_binaries();
        let data = dir.join("controller");
        let log = dir.join("controller.log");
        let mut cmd = Command::new(workspace_binary("postern-controller"));
        cmd.args([
            "serve",
            "--listen",
            &format!("{CONTROLLER}:8443"),
            "--tls-names",
            CONTROLLER,
            "--data-dir",
        ])
        .arg(&data)
        .env("POSTERN_LOG", "info");
        let process = t.controller.spawn(cmd, &log)?;
        let out = wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|s| s.contains("storage: "))
        })
        .with_context(|| {
            format!(
                "the controller did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        let line_after = |prefix: &str| {
            out.lines()
                .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_owned()))
        };
        Ok(Self {
            _process: process,
            url: format!("https://{CONTROLLER}:8443"),
            setup_code: line_after("One-time setup code: ").context("no setup code printed")?,
            fingerprint: line_after("pin it in gateways and clients): ")
                .context("no fingerprint printed")?,
            ca_pem: std::fs::read(data.join("tls/cert.pem"))?,
            log,
        })
    }

    /// An API client with `token`, running its requests in the controller namespace.
    pub fn api(&self, t: &Topology, token: &str) -> AdminApi {
        AdminApi {
            ns_path: format!("/var/run/netns/{}", t.controller.name()),
            base: self.url.clone(),
            ca_pem: self.ca_pem.clone(),
            token: token.to_owned(),
        }
    }
}

/// A REST API client with a bearer token that runs its requests inside a namespace.
#[derive(Debug, Clone)]
pub struct AdminApi {
    ns_path: String,
    base: String,
    ca_pem: Vec<u8>,
    token: String,
}

impl AdminApi {
    /// Sends a request; returns the status and the JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let (url, pem, token) = (
            format!("{}{path}", self.base),
            self.ca_pem.clone(),
            self.token.clone(),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        crate::in_namespace(&self.ns_path, async move {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
                .timeout(Duration::from_secs(20))
                .build()?;
            let mut req = client.request(method, url).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let res = req.send().await?;
            let status = res.status().as_u16();
            let text = res.text().await?;
            Ok::<_, anyhow::Error>((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })?
    }

    /// Like [`AdminApi::call`], failing unless the status is 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} answered {status}: {v}");
        }
        Ok(v)
    }
}

/// Starts the gateway with an enrollment token through its container entrypoint in the
/// gateway namespace, as the `docker run` command the UI shows would.
pub fn start_gateway(
    t: &Topology,
    controller: &FreshController,
    token: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new("sh");
    cmd.arg(crate::deploy::repo_root().join("deploy/gateway/entrypoint.sh"));
    for (k, v) in [
        ("POSTERN_CONTROLLER", controller.url.clone()),
        (
            "POSTERN_CONTROLLER_FINGERPRINT",
            controller.fingerprint.clone(),
        ),
        ("POSTERN_TOKEN", token.to_owned()),
        (
            "POSTERN_STATE_DIR",
            dir.join("gateway-state").display().to_string(),
        ),
        ("POSTERN_NAME", name.to_owned()),
        (
            "POSTERN_ENDPOINT",
            format!("{}:51820", crate::topology::GATEWAY_PUBLIC),
        ),
        ("POSTERN_HTTP_LISTEN", "127.0.0.1:9090".to_owned()),
        (
            "POSTERN_GATEWAY_BIN",
            workspace_binary("postern-gateway").display().to_string(),
        ),
        ("POSTERN_RUN_AS", String::new()),
        ("POSTERN_LOG", "info".to_owned()),
    ] {
        cmd.env(k, v);
    }
    t.gateway.spawn(cmd, &dir.join("gateway.log"))
}

/// One series of the gateway's Prometheus metrics, read inside its namespace (0 if absent).
pub fn gateway_metric(t: &Topology, series: &str) -> anyhow::Result<f64> {
    let path = format!("/var/run/netns/{}", t.gateway.name());
    let text = crate::in_namespace(&path, async {
        let res = reqwest::get("http://127.0.0.1:9090/metrics").await?;
        Ok::<_, anyhow::Error>(res.text().await?)
    })??;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0))
}
