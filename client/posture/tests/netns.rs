#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]
//! The firewall probe against the real `nft`, in a network namespace this test creates
//! and deletes: an empty rule set fails, a rule set with a filtering input chain passes,
//! flushing it fails again. The host's own rule set is never touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use model::CheckState;
use posture::firewall;

/// A network namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "postern-posture-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        Self(name)
    }

    /// Runs `nft ARGS` inside the namespace; its output.
    fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.0, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The probe's verdict on the real `nft list ruleset` text output.
    fn text_verdict(&self) -> CheckState {
        let text = self.nft(&["list", "ruleset"]);
        posture::firewall_from_nft_text(&text).unwrap().state
    }

    /// Loads a rule set from text.
    fn load(&self, dir: &Path, ruleset: &str) {
        let file = dir.join("ruleset.nft");
        fs::write(&file, ruleset).unwrap();
        self.nft(&["-f", file.to_str().unwrap()]);
    }

    /// An executable that runs the real `nft` inside the namespace, for the probe.
    fn nft_wrapper(&self, dir: &Path) -> PathBuf {
        let path = dir.join("nft-in-netns");
        fs::write(
            &path,
            format!("#!/bin/sh\nexec ip netns exec '{}' nft \"$@\"\n", self.0),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

const INPUT_DROP: &str = "\
table inet postern_test {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iif lo accept
    }
}
";

const INPUT_REJECT_RULE: &str = "\
table ip postern_test {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 23 reject
    }
}
";

const INPUT_ACCEPT_ONLY: &str = "\
table inet postern_test {
    chain input {
        type filter hook input priority 0; policy accept;
        iif lo accept
    }
}
";

#[test]
fn real_nft_in_a_network_namespace() {
    if !is_root() {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    }
    let host_before = run("nft", &["list", "ruleset"]);
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let nft = ns.nft_wrapper(dir.path());
    let check = || firewall(Some(&nft), Path::new("/"), Duration::from_secs(10));

    let f = check();
    assert_eq!(
        f.state,
        CheckState::Fail,
        "a new namespace has no rules: {f:?}"
    );
    assert_eq!(f.source, "nft -j list ruleset");

    ns.load(dir.path(), INPUT_DROP);
    let f = check();
    assert_eq!(f.state, CheckState::Pass, "{f:?}");
    assert_eq!(ns.text_verdict(), CheckState::Pass);

    ns.nft(&["flush", "ruleset"]);
    let f = check();
    assert_eq!(f.state, CheckState::Fail, "flushed: {f:?}");

    ns.load(dir.path(), INPUT_REJECT_RULE);
    assert_eq!(check().state, CheckState::Pass);
    assert_eq!(ns.text_verdict(), CheckState::Pass);

    ns.nft(&["flush", "ruleset"]);
    ns.load(dir.path(), INPUT_ACCEPT_ONLY);
    let f = check();
    assert_eq!(
        f.state,
        CheckState::Fail,
        "an input chain that accepts everything: {f:?}"
    );

    drop(ns);
    assert_eq!(
        run("nft", &["list", "ruleset"]),
        host_before,
        "the host's rule set changed"
    );
}
