//! A whole Postern deployment in the [`Topology`](crate::topology::Topology): the real
//! controller in the controller namespace, the real gateway started through its container
//! entrypoint script in the gateway namespace, and an admin API client that runs inside
//! the controller namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::topology::{CLIENT, CONTROLLER, GATEWAY_PUBLIC, RESOURCE_1, RESOURCE_2, Topology};
use crate::wg::{KeyPair, Peer, WireguardGo};
use crate::{ChildGuard, Netns, wait_for, workspace_binary};

static BUILD: Once = Once::new();

/// Builds the controller and gateway binaries of the running profile, once per process, so
/// the tests never run stale binaries.
pub fn build_binaries() {
    // POSTERN_E2E_PREBUILT=1 uses the binaries already in target/ (e.g. while another crate of
    // the workspace does not build).
    if std::env::var_os("POSTERN_E2E_PREBUILT").is_some() {
        return;
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_dir = workspace_binary("");
        let mut cmd = Command::new(cargo);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.args([
                "build",
                "--release",
                "-p",
                "postern-controller",
                "-p",
                "postern-gateway",
                "-p",
                "postern-client",
            ]);
        } else {
            // The same selection as `cargo test --workspace` (every test target, so the same
            // features): after it, this only links the binaries instead of building every
            // dependency a second time with other features (minutes, and disk).
            cmd.args(["build", "--workspace", "--tests", "--bins"]);
        }
        // Without what cargo set for this test process (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
        // OUT_DIR, ...): build scripts such as ring's rerun when those change, and the outer
        // `cargo test` ran them without.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_CFG_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*k)
            {
                cmd.env_remove(&key);
            }
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An admin API client that runs its requests inside a namespace.
#[derive(Debug, Clone)]
pub struct Api {
    ns_path: String,
    base: String,
    ca_pem: Vec<u8>,
    /// The bearer token.
    pub token: String,
}

impl Api {
    /// Sends a request and returns the status and the JSON body (or the text as a string).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let (url, pem, token, ns) = (
            format!("{}{path}", self.base),
            self.ca_pem.clone(),
            self.token.clone(),
            self.ns_path.clone(),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        crate::in_namespace(&ns, async move {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
                .timeout(Duration::from_secs(20))
                .build()?;
            let mut req = client.request(method, url);
            if !token.is_empty() {
                req = req.bearer_auth(token);
            }
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

    /// The controller's base URL (`https://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The controller's certificate (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The namespace the requests run in (`/var/run/netns/NAME`).
    pub fn ns_path(&self) -> &str {
        &self.ns_path
    }

    /// Like [`Api::call`], but fails unless the status is 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} answered {status}: {v}");
        }
        Ok(v)
    }
}

/// The running controller.
#[derive(Debug)]
pub struct Controller {
    process: Option<ChildGuard>,
    listen: String,
    env: Vec<(String, String)>,
    data: PathBuf,
    log: PathBuf,
    /// The certificate fingerprint it printed.
    pub fingerprint: String,
    /// The admin API.
    pub api: Api,
}

impl Controller {
    /// Starts the controller in the controller namespace and completes setup.
    pub fn start(t: &Topology, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(t, dir, &[])
    }

    /// Starts the controller with extra `POSTERN_*` variables (e.g. a short posture interval).
    pub fn start_with_env(t: &Topology, dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        build_binaries();
        let data = dir.join("controller");
        let log = dir.join("controller.log");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let listen = format!("{CONTROLLER}:8443");
        let process = spawn_controller(&t.controller, &listen, &data, &log, &env)?;
        let out = started(&log)?;
        let line_after = |prefix: &str| {
            out.lines()
                .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_owned()))
        };
        let fingerprint =
            line_after("pin it in gateways and clients): ").context("no fingerprint printed")?;
        let code = line_after("One-time setup code: ").context("no setup code printed")?;
        let mut api = Api {
            ns_path: format!("/var/run/netns/{}", t.controller.name()),
            base: format!("https://{CONTROLLER}:8443"),
            ca_pem: std::fs::read(data.join("tls/cert.pem"))?,
            token: String::new(),
        };
        let setup = api.ok(
            "POST",
            "/api/v1/setup",
            Some(json!({"code": code, "email": "admin@example.com", "name": "Admin"})),
        )?;
        api.token = setup["token"]
            .as_str()
            .context("setup gave no token")?
            .to_owned();
        Ok(Self {
            process: Some(process),
            listen,
            env,
            data,
            log,
            fingerprint,
            api,
        })
    }

    /// Starts another replica of this controller (it must run on PostgreSQL) in the
    /// controller namespace on `port`, with the same TLS certificate, secret key and
    /// settings, and the data dir `dir/name`. It shares this one's admin token.
    pub fn start_replica(
        &self,
        t: &Topology,
        dir: &Path,
        name: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        let data = dir.join(name);
        std::fs::create_dir_all(data.join("tls"))?;
        for file in ["tls/cert.pem", "tls/key.pem", "secret.key"] {
            std::fs::copy(self.data.join(file), data.join(file))
                .with_context(|| format!("copying {file} to the replica"))?;
        }
        let log = dir.join(format!("{name}.log"));
        let listen = format!("{CONTROLLER}:{port}");
        let process = spawn_controller(&t.controller, &listen, &data, &log, &self.env)?;
        started(&log)?;
        let mut api = self.api.clone();
        api.base = format!("https://{listen}");
        Ok(Self {
            process: Some(process),
            listen,
            env: self.env.clone(),
            data,
            log,
            fingerprint: self.fingerprint.clone(),
            api,
        })
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the controller (SIGTERM).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Starts it again on the same data.
    pub fn restart(&mut self, t: &Topology) -> anyhow::Result<()> {
        self.stop()?;
        self.process = Some(spawn_controller(
            &t.controller,
            &self.listen,
            &self.data,
            &self.log,
            &self.env,
        )?);
        let api = self.api.clone();
        wait_for(Duration::from_secs(30), || {
            api.call("GET", "/healthz", None)
                .ok()
                .filter(|(s, _)| *s == 200)
        })
        .context("the controller did not come back")?;
        Ok(())
    }
}

/// Waits until the controller's log says it serves; returns the log.
fn started(log: &Path) -> anyhow::Result<String> {
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(log)
            .ok()
            .filter(|s| s.contains("storage: "))
    })
    .with_context(|| {
        format!(
            "the controller did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

fn spawn_controller(
    ns: &Netns,
    listen: &str,
    data: &Path,
    log: &Path,
    env: &[(String, String)],
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(workspace_binary("postern-controller"));
    cmd.args([
        "serve",
        "--listen",
        listen,
        "--tls-names",
        CONTROLLER,
        "--data-dir",
    ])
    .arg(data)
    .env("POSTERN_LOG", "info")
    .envs(env.iter().map(|(k, v)| (k, v)));
    // Appending keeps the first run's output across restarts.
    let previous = std::fs::read_to_string(log).unwrap_or_default();
    let guard = ns.spawn(cmd, log)?;
    if !previous.is_empty() {
        std::fs::write(log.with_extension("previous.log"), previous)?;
    }
    Ok(guard)
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    process: Option<ChildGuard>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Its id at the controller.
    pub id: String,
}

impl Gateway {
    /// Creates a site and a gateway token, and starts the gateway through
    /// `deploy/gateway/entrypoint.sh` in the gateway namespace; waits until it is online.
    pub fn start(
        t: &Topology,
        controller: &Controller,
        site_id: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(t, controller, site_id, dir, &[])
    }

    /// [`Gateway::start`] with more environment variables for the entrypoint.
    pub fn start_with_env(
        t: &Topology,
        controller: &Controller,
        site_id: &str,
        dir: &Path,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let token = controller.api.ok(
            "POST",
            &format!("/api/v1/sites/{site_id}/gateway-tokens"),
            None,
        )?;
        let env = vec![
            (
                "POSTERN_CONTROLLER".into(),
                controller.api.base().to_owned(),
            ),
            (
                "POSTERN_CONTROLLER_FINGERPRINT".into(),
                controller.fingerprint.clone(),
            ),
            (
                "POSTERN_TOKEN".into(),
                token["secret"].as_str().context("no token")?.to_owned(),
            ),
            (
                "POSTERN_STATE_DIR".into(),
                dir.join("gateway-state").display().to_string(),
            ),
            ("POSTERN_NAME".into(), "gw-1".into()),
            ("POSTERN_ENDPOINT".into(), format!("{GATEWAY_PUBLIC}:51820")),
            ("POSTERN_HTTP_LISTEN".into(), "127.0.0.1:9090".into()),
            (
                "POSTERN_GATEWAY_BIN".into(),
                workspace_binary("postern-gateway").display().to_string(),
            ),
            ("POSTERN_RUN_AS".into(), String::new()),
            ("POSTERN_LOG".into(), "info".into()),
        ];
        let mut env = env;
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut g = Self {
            process: None,
            env,
            log: dir.join("gateway.log"),
            id: String::new(),
        };
        g.launch(t)?;
        let api = controller.api.clone();
        let id = wait_for(Duration::from_secs(30), || {
            let list = api.ok("GET", "/api/v1/gateways", None).ok()?;
            list.as_array()?
                .iter()
                .find(|g| g["online"] == true)
                .map(|g| g["id"].as_str().unwrap_or_default().to_owned())
        })
        .with_context(|| {
            format!(
                "the gateway did not come online: {}",
                std::fs::read_to_string(&g.log).unwrap_or_default()
            )
        })?;
        g.id = id;
        Ok(g)
    }

    fn launch(&mut self, t: &Topology) -> anyhow::Result<()> {
        let mut cmd = Command::new("sh");
        cmd.arg(repo_root().join("deploy/gateway/entrypoint.sh"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let previous = std::fs::read_to_string(&self.log).unwrap_or_default();
        self.process = Some(t.gateway.spawn(cmd, &self.log)?);
        if !previous.is_empty() {
            std::fs::write(self.log.with_extension("previous.log"), previous)?;
        }
        Ok(())
    }

    /// Stops the gateway (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Stops and starts it again with its saved credential (the token is spent).
    pub fn restart(&mut self, t: &Topology) -> anyhow::Result<()> {
        self.stop()?;
        self.env.retain(|(k, _)| k != "POSTERN_TOKEN");
        self.launch(t)
    }

    /// The gateway's Prometheus metrics, read inside its namespace.
    pub fn metrics(&self, t: &Topology) -> anyhow::Result<String> {
        let path = format!("/var/run/netns/{}", t.gateway.name());
        crate::in_namespace(&path, async {
            let res = reqwest::get("http://127.0.0.1:9090/metrics").await?;
            Ok::<_, anyhow::Error>(res.text().await?)
        })?
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, t: &Topology, series: &str) -> anyhow::Result<f64> {
        let text = self.metrics(t)?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A `wireguard-go` client configured from an issued grant.
#[derive(Debug)]
pub struct Client {
    _wg: WireguardGo,
    /// The per-application key pair.
    pub key: KeyPair,
    /// The controller's answer: the peer configuration.
    pub grant: Value,
}

/// Asks the controller for access with a fresh per-application key and configures
/// `wireguard-go` in the client namespace from the answer.
pub fn connect_client(
    t: &Topology,
    ctl: &Controller,
    ids: &Ids,
    dir: &std::path::Path,
    interface: &str,
) -> anyhow::Result<Client> {
    let key = KeyPair::generate()?;
    let grant = ctl.api.ok(
        "POST",
        "/api/v1/access",
        Some(json!({"user_id": ids.user, "device_id": ids.device, "resource_id": ids.app, "source": CLIENT, "public_key": key.public})),
    )?;
    let tunnel_address = grant["tunnel_address"].as_str().context("tunnel address")?;
    let wg = WireguardGo::start(
        &t.client,
        interface,
        &key.private,
        None,
        &format!("{tunnel_address}/32"),
        &[Peer {
            public_key: grant["gateway_public_key"]
                .as_str()
                .context("gateway key")?
                .to_owned(),
            preshared_key: Some(grant["preshared_key"].as_str().context("psk")?.to_owned()),
            endpoint: Some(
                grant["gateway_endpoint"]
                    .as_str()
                    .context("endpoint")?
                    .to_owned(),
            ),
            // Route both resource networks into the tunnel: the gateway must do the filtering.
            allowed_ips: vec!["10.77.2.0/24".into(), "10.77.3.0/24".into()],
        }],
        dir,
    )?;
    for net in ["10.77.2.0/24", "10.77.3.0/24"] {
        t.client.ip(&[
            "route",
            "replace",
            net,
            "dev",
            interface,
            "src",
            tunnel_address,
        ])?;
    }
    Ok(Client {
        _wg: wg,
        key,
        grant,
    })
}

/// The ids `provision` made.
#[derive(Debug, Clone)]
pub struct Ids {
    /// The user.
    pub user: String,
    /// Their device.
    pub device: String,
    /// The resource they may reach.
    pub app: String,
}

/// Makes the objects of a small company: resource `app` on resource-1 with `ports`,
/// `other` on resource-2, user Ann in group eng with a policy to `app`, and her enrolled
/// device.
pub fn provision(ctl: &Controller, site: &str, ports: &[&str]) -> anyhow::Result<Ids> {
    let api = &ctl.api;
    let app = api.ok(
        "POST",
        "/api/v1/resources",
        Some(json!({"name": "app", "site_id": site, "addresses": [RESOURCE_1], "ports": ports})),
    )?;
    api.ok("POST", "/api/v1/resources", Some(json!({"name": "other", "site_id": site, "addresses": [RESOURCE_2], "ports": ["tcp/8080"]})))?;
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
    api.ok("POST", "/api/v1/policies", Some(json!({"name": "eng-app", "group_id": group["id"], "resource_id": app["id"], "max_session_secs": 3600})))?;
    let key = api.ok(
        "POST",
        "/api/v1/enrollment-keys",
        Some(json!({"user_id": user["id"]})),
    )?;
    let device_key = KeyPair::generate()?;
    let device = api.ok("POST", "/api/v1/devices/enroll", Some(json!({"enrollment_key": key["secret"], "name": "laptop", "public_key": device_key.public})))?;
    let s = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    Ok(Ids {
        user: s(&user),
        device: s(&device),
        app: s(&app),
    })
}
