//! The README's main command, `scripts/demo`, end to end: it must bring up the controller,
//! a first admin, a gateway and the sample resource, connect a client, fetch the sample
//! page through the tunnel (`--check`), and leave no namespace or process behind.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::deploy::{build_binaries, repo_root};
use e2e::workspace_binary;

/// Deletes the demo's namespaces and host link if the script could not.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for ns in [format!("{}-gw", self.0), format!("{}-app", self.0)] {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_demo_serves_the_sample_app_through_a_tunnel_and_cleans_up() {
    build_binaries();
    let name = format!("pd{}", std::process::id() % 100_000);
    let _leftovers = Leftovers(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(repo_root().join("scripts/demo"))
        .arg("--check")
        .env("POSTERN_DEMO_NAME", &name)
        .env("POSTERN_DEMO_NET", "10.214")
        .env("POSTERN_DEMO_DIR", dir.path())
        .env("POSTERN_DEMO_BIN", workspace_binary(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM lets the script's trap stop its processes and delete its namespaces.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let logs = ["controller.log", "gateway.log", "client.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            format!(
                "--- {f}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let status =
        status.unwrap_or_else(|| panic!("the demo did not finish in 180 s\n{out}\n{err}\n{logs}"));
    assert!(status.success(), "the demo failed\n{out}\n{err}\n{logs}");
    assert!(out.contains("Postern is running."), "{out}");
    assert!(out.contains("Sign in:       admin@example.com / "), "{out}");
    assert!(out.contains("demo check passed"), "{out}");
    // Nothing is left behind.
    let left = namespaces();
    assert!(!left.contains(&format!("{name}-gw")), "{left}");
    assert!(!left.contains(&format!("{name}-app")), "{left}");
    assert!(
        !Command::new("ip")
            .args(["link", "show", &format!("{name}h")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
}
