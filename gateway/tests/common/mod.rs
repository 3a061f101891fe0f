//! Helpers shared by the integration tests: a network namespace guard.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;

pub(crate) mod controller;
pub(crate) mod wg;

/// A network namespace deleted on drop, with the gateway process in it killed first.
pub(crate) struct Namespace {
    pub(crate) name: String,
    pub(crate) child: Option<Child>,
}

impl Namespace {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgw-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name, child: None };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command in the namespace and returns its output; panics if it fails.
    pub(crate) fn exec(&self, args: &[&str]) -> String {
        run(&mut self.command(args))
    }

    /// Runs a command in the namespace; whether it succeeded.
    pub(crate) fn succeeds(&self, args: &[&str]) -> bool {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTERN_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// An HTTP/1.0 GET from inside the namespace: the status code and body.
    pub(crate) fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let (addr, path) = (addr.to_owned(), path.to_owned());
        spawn_in_namespace(&self.name, move || http_get(&addr, &path))
            .join()
            .ok()?
    }
}

/// An HTTP/1.0 GET in the current thread's namespace: the status code and body.
pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub(crate) fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a new thread inside the namespace and returns its result.
pub(crate) fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    spawn_in_namespace(name, f).join().unwrap()
}

/// Starts `f` on a new thread inside the namespace.
pub(crate) fn spawn_in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let netns = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(netns).unwrap();
        // Only this thread moves into the namespace.
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}
