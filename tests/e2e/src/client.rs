//! The Postern client daemon in a test namespace, its command line, sign-in through the
//! controller's device authorization flow (a local account approving in place of a
//! browser), and small TCP echo helpers shared by the client test and benchmark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::deploy::{Api, Controller};
use crate::topology::{GATEWAY_CONTROL, GATEWAY_PUBLIC, Topology};
use crate::{ChildGuard, Netns, wait_for, workspace_binary};

/// A TCP echo server (python3) for the resource hosts.
pub const ECHO: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Starts an echo server on `addr:port` in `ns` and waits until it listens.
pub fn echo_server(ns: &Netns, addr: &str, port: u16, dir: &Path) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ECHO, addr, &port.to_string()]);
    let guard = ns.spawn(cmd, &dir.join(format!("echo-{addr}-{port}.log")))?;
    wait_for(Duration::from_secs(10), || {
        ns.sh(&format!("ss -Hltn 'sport = :{port}'"))
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .context("echo server listening")?;
    Ok(guard)
}

/// Opens a TCP connection from inside `ns`, sends a line and checks it comes back.
pub fn echo(ns: &Netns, target: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let target: SocketAddr = format!("{target}:{port}").parse()?;
    ns.block_on(async move {
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut s = TcpStream::connect_timeout(&target, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(b"hello\n")?;
            let mut buf = [0u8; 6];
            s.read_exact(&mut buf)?;
            anyhow::ensure!(&buf == b"hello\n", "echo came back wrong");
            Ok(())
        })
        .await?
    })?
}

/// The `postern` daemon running in a namespace, with its own state dir and socket.
#[derive(Debug)]
pub struct Daemon {
    ns: String,
    process: Option<ChildGuard>,
    /// The control socket.
    pub socket: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The TUN device's name.
    pub tun: String,
    log: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts `postern daemon` in `ns` with state under `dir/name` and waits for its socket.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        tun: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        crate::deploy::build_binaries();
        let mut d = Self {
            ns: ns.name().to_owned(),
            process: None,
            socket: dir.join(format!("{name}.sock")),
            state_dir: dir.join(format!("{name}-state")),
            tun: tun.to_owned(),
            log: dir.join(format!("{name}.log")),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        d.launch(ns)?;
        Ok(d)
    }

    fn launch(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let mut cmd = Command::new(workspace_binary("postern"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--tun-name", &self.tun])
            .args(&self.extra)
            .env("POSTERN_LOG", "info,client=debug");
        let previous = std::fs::read_to_string(&self.log).unwrap_or_default();
        self.process = Some(ns.spawn(cmd, &self.log)?);
        if !previous.is_empty() {
            let mut all = std::fs::read_to_string(self.log.with_extension("previous.log"))
                .unwrap_or_default();
            all.push_str(&previous);
            std::fs::write(self.log.with_extension("previous.log"), all)?;
        }
        let socket = self.socket.clone();
        wait_for(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        })
        .with_context(|| format!("the daemon did not start: {}", self.log()))?;
        Ok(())
    }

    /// Stops the daemon (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Stops and starts it again on the same state.
    pub fn restart(&mut self, ns: &Netns) -> anyhow::Result<()> {
        self.stop()?;
        debug_assert_eq!(ns.name(), self.ns);
        self.launch(ns)
    }

    /// Runs `postern --socket S ARGS`.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(workspace_binary("postern"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .context("running postern")
    }

    /// `postern status --json`.
    pub fn status(&self) -> anyhow::Result<Value> {
        let out = self.cli(&["--json", "status"])?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "status printed no JSON: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits until the status has `state`.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> anyhow::Result<Value> {
        wait_for(timeout, || {
            self.status().ok().filter(|s| s["state"] == state)
        })
        .with_context(|| {
            format!(
                "the daemon did not reach `{state}`: {:?}\n{}",
                self.status().ok(),
                self.log()
            )
        })
    }

    /// The status of one resource, by name.
    pub fn resource(&self, name: &str) -> anyhow::Result<Value> {
        let s = self.status()?;
        s["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
            .with_context(|| format!("no resource {name} in {s}"))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Signs in with the device authorization flow: runs `postern login --no-browser`,
    /// reads the code it prints, signs in as `email` and approves.
    pub fn login_with_browser(
        &self,
        ctl: &Controller,
        email: &str,
        password: &str,
        device_name: &str,
    ) -> anyhow::Result<Value> {
        let cookie = web_login(&ctl.api, email, password)?;
        self.login_approved_by(ctl, &cookie, device_name)
    }

    /// Enrolls as `user_id`'s device `device_name` with a fresh enrollment key and waits until
    /// the daemon is connected; returns its status.
    pub fn login_with_key(
        &self,
        ctl: &Controller,
        user_id: &str,
        device_name: &str,
    ) -> anyhow::Result<Value> {
        let key = ctl.api.ok(
            "POST",
            "/api/v1/enrollment-keys",
            Some(json!({"user_id": user_id})),
        )?;
        let out = self.cli(&[
            "login",
            ctl.api.base(),
            "--fingerprint",
            &ctl.fingerprint,
            "--enroll-key",
            key["secret"].as_str().context("no enrollment key secret")?,
            "--name",
            device_name,
        ])?;
        if !out.status.success() {
            bail!("enrolling failed: {out:?}\n{}", self.log());
        }
        self.wait_state("connected", Duration::from_secs(15))
    }

    /// Signs in with the device authorization flow, approved by the person signed in to the
    /// web with the session `cookie` (`name=value`, from a local or an OIDC sign-in): runs
    /// `postern login --no-browser`, reads the code it prints and approves it. Returns the
    /// result the command printed.
    pub fn login_approved_by(
        &self,
        ctl: &Controller,
        cookie: &str,
        device_name: &str,
    ) -> anyhow::Result<Value> {
        let mut child = Command::new(workspace_binary("postern"))
            .arg("--socket")
            .arg(&self.socket)
            .args([
                "--json",
                "login",
                ctl.api.base(),
                "--no-browser",
                "--fingerprint",
                &ctl.fingerprint,
                "--name",
                device_name,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let guard = KillOnDrop(&mut child);
        let stdout = guard.0.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().context("login printed nothing")??;
        let started: Value = serde_json::from_str(&first)?;
        if started["result"] != "login_started" {
            bail!("login did not start: {first}");
        }
        let code = started["user_code"].as_str().context("no user code")?;
        let (status, body) = with_cookie(
            &ctl.api,
            "POST",
            "/api/v1/device-auth/approve",
            Some(json!({"user_code": code, "approve": true})),
            cookie,
        )?;
        if status != 204 {
            bail!("approving answered {status}: {body}");
        }
        let last = lines.next().context("login printed no result")??;
        let done: Value = serde_json::from_str(&last)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while guard.0.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(done)
    }
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates a local user with a password; returns the user's id.
pub fn create_local_user(
    api: &Api,
    email: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<String> {
    let user = api.ok(
        "POST",
        "/api/v1/users",
        Some(json!({"email": email, "name": name})),
    )?;
    let id = user["id"].as_str().context("user id")?.to_owned();
    api.ok(
        "PUT",
        &format!("/api/v1/users/{id}/password"),
        Some(json!({"password": password})),
    )?;
    Ok(id)
}

/// Signs in to the web API with a local account; returns the session cookie (`name=value`).
pub fn web_login(api: &Api, email: &str, password: &str) -> anyhow::Result<String> {
    let (url, pem) = (
        format!("{}/api/v1/auth/login", api.base()),
        api.ca_pem().to_vec(),
    );
    let body = json!({"email": email, "password": password});
    crate::in_namespace(api.ns_path(), async move {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(20))
            .build()?;
        let res = client.post(url).json(&body).send().await?;
        let status = res.status();
        let cookie = res
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Host-postern_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let text = res.text().await?;
        cookie.with_context(|| format!("signing in answered {status}: {text}"))
    })?
}

/// Sends a request with a web session cookie; returns the status and JSON body.
pub fn with_cookie(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<Value>,
    cookie: &str,
) -> anyhow::Result<(u16, Value)> {
    let (url, pem, cookie) = (
        format!("{}{path}", api.base()),
        api.ca_pem().to_vec(),
        cookie.to_owned(),
    );
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    crate::in_namespace(api.ns_path(), async move {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(20))
            .build()?;
        let mut req = client
            .request(method, url)
            .header(reqwest::header::COOKIE, cookie);
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

/// Whether the interface `name` exists in `ns`.
pub fn has_link(ns: &Netns, name: &str) -> bool {
    ns.ip(&["link", "show", name]).is_ok()
}

/// The routes through `dev` in `ns`, one per line.
pub fn routes_via(ns: &Netns, dev: &str) -> String {
    ns.ip(&["route", "show", "dev", dev]).unwrap_or_default()
}

/// Adds a client-like namespace linked to the gateway on `10.77.<subnet>.0/24` with routes
/// to the controller and to the gateway's public address, as the first client has through
/// the gateway host.
pub fn route_to_controller(
    client: &Netns,
    client_gw: &str,
    controller: &Netns,
    controller_gw: &str,
    client_net: &str,
) -> anyhow::Result<()> {
    client.ip(&["route", "replace", "10.77.4.0/24", "via", client_gw])?;
    controller.ip(&["route", "replace", client_net, "via", controller_gw])?;
    Ok(())
}

/// A [`Topology`] whose client reaches the controller through the gateway host, like over
/// the internet.
pub fn routed_topology() -> anyhow::Result<Topology> {
    let t = Topology::new()?;
    route_to_controller(
        &t.client,
        GATEWAY_PUBLIC,
        &t.controller,
        GATEWAY_CONTROL,
        "10.77.1.0/24",
    )?;
    Ok(t)
}

/// Keeps one TCP connection echoing every 20 ms from a thread inside `ns`; reports each
/// echo's time.
pub struct Ticker {
    times: mpsc::Receiver<Instant>,
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(ns: &Netns, target: &str, port: u16) -> Self {
        let target: SocketAddr = format!("{target}:{port}")
            .parse()
            .expect("an address and port");
        let (tx, times) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let path = format!("/var/run/netns/{}", ns.name());
        let thread = std::thread::spawn(move || {
            let _ = crate::in_namespace(&path, async move {
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                    s.set_read_timeout(Some(Duration::from_millis(200)))?;
                    let mut buf = [0u8; 5];
                    for _ in 0..3000 {
                        if stop_rx.try_recv().is_ok() {
                            break;
                        }
                        if s.write_all(b"tick\n").is_ok() && s.read_exact(&mut buf).is_ok() {
                            let _ = tx.send(Instant::now());
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(())
                })
                .await?
            });
        });
        Self {
            times,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the next echo.
    pub fn next(&self, timeout: Duration) -> Option<Instant> {
        self.times.recv_timeout(timeout).ok()
    }

    /// The latest echo seen so far (draining the queue).
    pub fn last(&self) -> Option<Instant> {
        self.times.try_iter().last()
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
