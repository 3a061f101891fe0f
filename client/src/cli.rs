//! The `postern` command line: arguments (each also read from a `POSTERN_*` environment
//! variable), the client side of the local socket, and output for people or, with
//! `--json`, for scripts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::daemon::{self, DaemonConfig};
use crate::ipc::{LoginRequest, Request, Response, Status};
use crate::router::RouterConfig;

/// The exit status of a command whose access request was denied.
pub const EXIT_DENIED: u8 = 3;

/// Postern: per-application access to private services.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "POSTERN_SOCKET",
        default_value = "/run/postern/postern.sock"
    )]
    pub socket: PathBuf,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true, env = "POSTERN_JSON")]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign this device in to a controller.
    Login(LoginArgs),
    /// Sign out: forget the session, remove the routes and the TUN device.
    Logout,
    /// Show who is signed in, the connection and each resource's tunnel.
    Status,
    /// List the resources you may reach.
    Resources,
    /// Resume after `postern down`.
    Up,
    /// Pause: remove the routes and the TUN device but stay signed in.
    Down,
    /// Ask for access to a resource now and wait for the answer.
    Connect {
        /// The resource's name or id.
        resource: String,
        /// How long to wait for the answer, in seconds.
        #[arg(long, env = "POSTERN_CONNECT_TIMEOUT", default_value_t = 30)]
        timeout: u64,
    },
    /// Run the daemon (as root or with CAP_NET_ADMIN).
    Daemon(DaemonArgs),
}

/// `postern login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The controller's URL, e.g. https://access.example.com.
    #[arg(env = "POSTERN_CONTROLLER")]
    pub controller: Option<String>,
    /// Pin the controller's certificate by its SHA-256 fingerprint (as it prints at start).
    #[arg(long, env = "POSTERN_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Trust the CA certificates in this PEM file for the controller.
    #[arg(long, env = "POSTERN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Enroll with an enrollment key instead of signing in with a browser.
    #[arg(long, env = "POSTERN_ENROLL_KEY", hide_env_values = true)]
    pub enroll_key: Option<String>,
    /// This device's name (default: the host name).
    #[arg(long, env = "POSTERN_DEVICE_NAME")]
    pub name: Option<String>,
    /// Print the URL and code instead of opening a browser.
    #[arg(long, env = "POSTERN_NO_BROWSER")]
    pub no_browser: bool,
}

/// `postern daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where the device key and session are kept.
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "/var/lib/postern")]
    pub state_dir: PathBuf,
    /// The TUN device's name.
    #[arg(long, env = "POSTERN_TUN_NAME", default_value = "postern0")]
    pub tun_name: String,
    /// Close a tunnel after this many seconds without traffic.
    #[arg(long, env = "POSTERN_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,
    /// The most packets held per resource while access is requested.
    #[arg(long, env = "POSTERN_HOLD_PACKETS", default_value_t = 64)]
    pub hold_packets: usize,
    /// Seconds before a denied resource is asked for again.
    #[arg(long, env = "POSTERN_DENY_BACKOFF", default_value_t = 5)]
    pub deny_backoff: u64,
    /// Log filter (e.g. `info`, `postern=debug`).
    #[arg(long, env = "POSTERN_LOG", default_value = "info")]
    pub log: String,
}

/// Runs the command line; returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"result": "error", "message": format!("{e:#}")})
                );
            } else {
                eprintln!("postern: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Daemon(args) => {
            init_logging(&args.log);
            daemon::run(DaemonConfig {
                state_dir: args.state_dir,
                socket: cli.socket,
                tun_name: args.tun_name,
                router: RouterConfig {
                    idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
                    hold_packets: args.hold_packets.max(1),
                    deny_backoff: Duration::from_secs(args.deny_backoff),
                    ..RouterConfig::default()
                },
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => login(&cli.socket, args, json).await,
        Command::Status => {
            let mut c = Conn::open(&cli.socket).await?;
            match c.call(&Request::Status).await? {
                Response::Status(s) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&s)?);
                    } else {
                        print!("{}", format_status(&s));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => finish(other, json),
            }
        }
        Command::Resources => {
            let mut c = Conn::open(&cli.socket).await?;
            match c.call(&Request::Status).await? {
                Response::Status(s) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&s.resources)?);
                    } else {
                        print!("{}", format_resources(&s));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => finish(other, json),
            }
        }
        Command::Logout => simple(&cli.socket, Request::Logout, json, "Signed out.").await,
        Command::Up => simple(&cli.socket, Request::Up, json, "Resumed.").await,
        Command::Down => {
            simple(
                &cli.socket,
                Request::Down,
                json,
                "Paused: routes and the TUN device are removed; `postern up` resumes.",
            )
            .await
        }
        Command::Connect { resource, timeout } => {
            let mut c = Conn::open(&cli.socket).await?;
            let answer = tokio::time::timeout(
                Duration::from_secs(timeout),
                c.call(&Request::Connect { resource }),
            )
            .await
            .context("no answer from the controller in time")??;
            finish(answer, json)
        }
    }
}

async fn simple(
    socket: &Path,
    request: Request,
    json: bool,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let mut c = Conn::open(socket).await?;
    let answer = c.call(&request).await?;
    if !json && answer == Response::Ok {
        println!("{done}");
        return Ok(ExitCode::SUCCESS);
    }
    finish(answer, json)
}

/// Prints a final answer and picks the exit status.
fn finish(answer: Response, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        let text = format_response(&answer);
        if matches!(answer, Response::Error { .. } | Response::Denied { .. }) {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    Ok(match answer {
        Response::Error { .. } => ExitCode::FAILURE,
        Response::Denied { .. } => ExitCode::from(EXIT_DENIED),
        _ => ExitCode::SUCCESS,
    })
}

async fn login(socket: &Path, args: LoginArgs, json: bool) -> anyhow::Result<ExitCode> {
    let ca_pem = match &args.ca_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let name = args.name.clone().unwrap_or_else(hostname);
    let mut c = Conn::open(socket).await?;
    let answer = c
        .call(&Request::Login(LoginRequest {
            controller: args.controller.clone(),
            fingerprint: args.fingerprint.clone(),
            ca_pem,
            enroll_key: args.enroll_key.clone(),
            name,
        }))
        .await?;
    let Response::LoginStarted {
        verification_uri,
        user_code,
        verification_uri_complete,
    } = &answer
    else {
        return finish(answer, json);
    };
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("To sign in, open {verification_uri_complete}");
        println!("or go to {verification_uri} and enter the code: {user_code}");
        println!("Waiting for approval...");
    }
    let _ = std::io::stdout().flush();
    if !args.no_browser && has_display() {
        let _ = std::process::Command::new("xdg-open")
            .arg(verification_uri_complete)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let answer = c.call(&Request::LoginWait).await?;
    finish(answer, json)
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".into())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A connection to the daemon's socket.
struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Conn {
    async fn open(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot reach the postern daemon at {} (is `postern daemon` running? `systemctl start postern`)",
                socket.display()
            )
        })?;
        let (r, w) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    async fn call(&mut self, request: &Request) -> anyhow::Result<Response> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).await?;
        anyhow::ensure!(n > 0, "the daemon closed the connection");
        serde_json::from_str(answer.trim()).context("the daemon's answer is malformed")
    }
}

/// A final answer as text for people.
pub fn format_response(r: &Response) -> String {
    match r {
        Response::Ok => "OK\n".into(),
        Response::Status(s) => format_status(s),
        Response::LoginStarted {
            verification_uri,
            user_code,
            ..
        } => format!("Open {verification_uri} and enter the code: {user_code}\n"),
        Response::SignedIn {
            user_name,
            controller,
        } => format!("Signed in as {user_name} to {controller}.\n"),
        Response::Granted {
            resource,
            expires_at,
        } => format!(
            "Access to {resource} granted until {}.\n",
            short_time(expires_at)
        ),
        Response::Denied { resource, reasons } => {
            let mut s = format!("Access to {resource} denied:\n");
            for r in reasons {
                s.push_str(&format!("  - {} ({})\n", r.message, r.code));
            }
            s
        }
        Response::Error { message } => format!("postern: {message}\n"),
    }
}

fn short_time(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `postern status` for people.
pub fn format_status(s: &Status) -> String {
    let mut out = String::new();
    let state = match s.state.as_str() {
        "signed_out" => "signed out",
        "signing_in" => "signing in",
        other => other,
    };
    match (&s.user, &s.controller) {
        (Some(user), Some(ctl)) => {
            out.push_str(&format!("Signed in as {user} to {ctl}: {state}"));
            if let Some(uid) = s.uid {
                out.push_str(&format!(" (uid {uid})"));
            }
            out.push('\n');
        }
        _ => out.push_str(&format!("Postern is {state}\n")),
    }
    if let Some(reason) = &s.reason {
        if s.state == "signed_out" {
            out.push_str(&format!("  {reason}; run `postern login`\n"));
        } else {
            out.push_str(&format!("  {reason}\n"));
        }
    } else if s.state == "signed_out" {
        out.push_str("  run `postern login CONTROLLER-URL` to sign in\n");
    }
    if let Some(p) = &s.login {
        out.push_str(&format!(
            "  waiting for approval: open {} and enter {}\n",
            p.verification_uri, p.user_code
        ));
    }
    if let Some(device) = &s.device_name {
        out.push_str(&format!("Device: {device}"));
        if let (Some(addr), Some(i)) = (&s.tunnel_address, &s.interface) {
            out.push_str(&format!(", {addr} on {i}"));
        }
        out.push('\n');
    }
    if let Some(t) = &s.session_expires_at {
        out.push_str(&format!("Session ends: {}\n", short_time(t)));
    }
    if !s.resources.is_empty() {
        out.push_str(&format_resources(s));
    }
    if !s.posture.is_empty() {
        out.push_str("Posture:\n");
        for c in &s.posture {
            let state = match c.state {
                model::CheckState::Pass => "pass",
                model::CheckState::Fail => "FAIL",
                model::CheckState::Unknown => "unknown",
            };
            out.push_str(&format!("  {:<16} {state:<8} {}\n", c.check, c.detail));
        }
    }
    if let Some(d) = &s.last_denial {
        out.push_str(&format!(
            "Last denial: {} at {}\n",
            d.resource,
            short_time(&d.at)
        ));
        for r in &d.reasons {
            out.push_str(&format!("  - {} ({})\n", r.message, r.code));
        }
    }
    out
}

/// The resources as a table.
pub fn format_resources(s: &Status) -> String {
    if s.resources.is_empty() {
        return "No resources.\n".into();
    }
    let rows: Vec<[String; 4]> = s
        .resources
        .iter()
        .map(|r| {
            let addrs = r
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let ports = if r.ports.is_empty() {
                "all".into()
            } else {
                r.ports.join(",")
            };
            let mut tunnel = r.tunnel.clone();
            if let Some(t) = &r.expires_at {
                tunnel.push_str(&format!(" until {}", short_time(t)));
            }
            [r.name.clone(), addrs, ports, tunnel]
        })
        .collect();
    let header = [
        "RESOURCE".to_owned(),
        "ADDRESSES".into(),
        "PORTS".into(),
        "TUNNEL".into(),
    ];
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{Denial, ResourceStatus};
    use proto::client::DenyReason;

    fn status() -> Status {
        Status {
            state: "connected".into(),
            controller: Some("https://ctl:8443".into()),
            user: Some("Ann".into()),
            uid: Some(1000),
            device_name: Some("laptop".into()),
            interface: Some("postern0".into()),
            tunnel_address: Some("100.64.0.2".parse().unwrap()),
            resources: vec![
                ResourceStatus {
                    id: "r1".into(),
                    name: "app".into(),
                    addresses: vec!["10.77.2.2/32".parse().unwrap()],
                    ports: vec!["tcp/8080".into()],
                    tunnel: "connected".into(),
                    grant_id: Some("g".into()),
                    gateway: Some("10.77.1.2:51820".into()),
                    expires_at: Some("2026-11-25T13:00:00Z".parse().unwrap()),
                },
                ResourceStatus {
                    id: "r2".into(),
                    name: "other-app".into(),
                    addresses: vec!["10.77.3.0/24".parse().unwrap()],
                    ports: vec![],
                    tunnel: "idle".into(),
                    grant_id: None,
                    gateway: None,
                    expires_at: None,
                },
            ],
            last_denial: Some(Denial {
                resource: "other-app".into(),
                reasons: vec![DenyReason {
                    code: "no_policy".into(),
                    message: "no policy gives you access".into(),
                }],
                at: "2026-11-25T12:00:00Z".parse().unwrap(),
            }),
            ..Status::default()
        }
    }

    #[test]
    fn status_reads_well() {
        let text = format_status(&status());
        let want = "\
Signed in as Ann to https://ctl:8443: connected (uid 1000)
Device: laptop, 100.64.0.2 on postern0
RESOURCE   ADDRESSES     PORTS     TUNNEL
app        10.77.2.2/32  tcp/8080  connected until 2026-11-25 13:00:00 UTC
other-app  10.77.3.0/24  all       idle
Last denial: other-app at 2026-11-25 12:00:00 UTC
  - no policy gives you access (no_policy)
";
        assert_eq!(text, want);
    }

    #[test]
    fn signed_out_status_says_what_to_do() {
        let s = Status {
            state: "signed_out".into(),
            reason: Some("the device was disabled".into()),
            ..Status::default()
        };
        assert_eq!(
            format_status(&s),
            "Postern is signed out\n  the device was disabled; run `postern login`\n"
        );
        let s = Status {
            state: "signed_out".into(),
            ..Status::default()
        };
        assert!(format_status(&s).contains("postern login CONTROLLER-URL"));
    }

    #[test]
    fn denials_list_their_reasons() {
        let r = Response::Denied {
            resource: "db".into(),
            reasons: vec![DenyReason {
                code: "disk_encryption".into(),
                message: "disk encryption is off".into(),
            }],
        };
        assert_eq!(
            format_response(&r),
            "Access to db denied:\n  - disk encryption is off (disk_encryption)\n"
        );
    }

    #[test]
    fn flags_read_the_environment() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "postern",
            "login",
            "https://c",
            "--no-browser",
            "--fingerprint",
            "AA",
        ])
        .unwrap();
        match cli.command {
            Command::Login(a) => {
                assert!(a.no_browser);
                assert_eq!(a.controller.as_deref(), Some("https://c"));
            }
            other => panic!("{other:?}"),
        }
        // Every flag names a POSTERN_* variable.
        fn check(cmd: &clap::Command) {
            for a in cmd.get_arguments() {
                if a.get_id() == "help" || a.get_id() == "version" || a.is_positional() {
                    continue;
                }
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                assert!(
                    env.as_deref().is_some_and(|e| e.starts_with("POSTERN_")),
                    "{} of {} has no POSTERN_* variable",
                    a.get_id(),
                    cmd.get_name()
                );
            }
            for s in cmd.get_subcommands() {
                check(s);
            }
        }
        check(&Cli::command());
    }
}
