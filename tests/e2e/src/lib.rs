//! The end-to-end test harness: network namespaces the tests create (with unique names and
//! RAII guards that delete them even when a test fails), veth links between them, child
//! processes that die with their guard, and a way to run code inside a namespace. It never
//! touches the host's own interfaces: every link joins two test namespaces.
//!
//! This crate does IO (it runs `ip` and spawns processes); it needs root.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod browser;
pub mod client;
pub mod deploy;
pub mod measure;
pub mod oidc;
pub mod postgres;
pub mod topology;
pub mod wg;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name no other test (in this process or another) uses at the same time.
fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Interface names are limited to 15 bytes: keep it short.
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xffff)
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace made for one test, deleted (with every process left in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace whose name starts with `prefix` (at most 6 characters), with its
    /// loopback interface up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(&format!("pst{prefix}"));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run(self.command("ip").args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a shell command line inside the namespace and returns its standard output.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = run(self.command("sh").args(["-c", script]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running process inside the namespace, killed when the guard drops.
    /// Its output goes to `log`.
    pub fn spawn(&self, cmd: Command, log: &Path) -> anyhow::Result<ChildGuard> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = file.try_clone()?;
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        let mut inner = self.command(&program);
        inner.args(&args);
        for (k, v) in envs {
            match v {
                Some(v) => inner.env(k, v),
                None => inner.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        inner.stdin(Stdio::null()).stdout(file).stderr(err);
        let child = inner
            .spawn()
            .with_context(|| format!("starting {program:?} in {}", self.name))?;
        Ok(ChildGuard {
            child,
            name: program.to_string_lossy().into_owned(),
        })
    }

    /// Runs `f` on a thread that has entered this namespace, so that every socket it opens
    /// lives there. `f` gets a fresh single-threaded tokio runtime.
    pub fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        in_namespace(&format!("/var/run/netns/{}", self.name), f)
    }
}

/// Runs `f` on a thread inside the namespace at `path` (`/var/run/netns/NAME`), with a fresh
/// single-threaded tokio runtime.
pub fn in_namespace<T: Send + 'static>(
    path: &str,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = path.to_owned();
    std::thread::spawn(move || -> anyhow::Result<T> {
        let fd = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the namespace")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(f))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs in it, then delete it.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair and gives each end an address (`10.1.2.3/24`).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> anyhow::Result<()> {
    let (ia, ib) = (unique("va"), unique("vb"));
    run(Command::new("ip").args([
        "link",
        "add",
        &ia,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &ib,
        "netns",
        b.name(),
    ]))?;
    a.ip(&["addr", "add", a_addr, "dev", &ia])?;
    b.ip(&["addr", "add", b_addr, "dev", &ib])?;
    a.ip(&["link", "set", &ia, "up"])?;
    b.ip(&["link", "set", &ib, "up"])?;
    Ok(())
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns whether it exited
    /// successfully.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not exit within {timeout:?} of SIGTERM", self.name)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of a workspace binary built by cargo for these tests (`target/<profile>/NAME`).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // Test executables live in target/<profile>/deps.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_link_and_disappear() {
        let name;
        {
            let a = Netns::new("ta").unwrap();
            let b = Netns::new("tb").unwrap();
            name = a.name().to_owned();
            link(&a, "10.250.0.1/24", &b, "10.250.0.2/24").unwrap();
            a.sh("ping -c 1 -W 2 10.250.0.2").unwrap();
            // A socket opened on a thread inside `b` listens only there.
            let port = b
                .block_on(async {
                    let l = tokio::net::TcpListener::bind("10.250.0.2:0").await.unwrap();
                    l.local_addr().unwrap().port()
                })
                .unwrap();
            assert!(port > 0);
            let _sleeper = a
                .spawn(
                    {
                        let mut c = Command::new("sleep");
                        c.arg("30");
                        c
                    },
                    &std::env::temp_dir().join(format!("{name}.log")),
                )
                .unwrap();
        }
        let list = String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(!list.contains(&name), "{name} was deleted");
    }
}
