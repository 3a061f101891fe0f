//! Required processes: which of the requested names are running.
//!
//! The source is `<root>/proc/[0-9]*/comm` (the kernel's name of the process, cut to 15
//! bytes) and the base name of `argv[0]` in `<root>/proc/[0-9]*/cmdline`. A process's
//! name is whatever it says it is: this tells that something of that name runs, not that
//! it is genuine.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::read::{self, under};

/// The longest `comm` the kernel keeps (`TASK_COMM_LEN` less the final NUL).
const COMM_LEN: usize = 15;

/// The names in `required` that a running process under `root` has, in the order asked,
/// each once. Unreadable processes (gone, or another user's) are skipped.
pub fn running_processes(root: &Path, required: &[String]) -> Vec<String> {
    if required.is_empty() {
        return Vec::new();
    }
    let names = process_names(root);
    let mut found = Vec::new();
    for want in required {
        let truncated = (want.len() > COMM_LEN)
            .then(|| want.get(..COMM_LEN))
            .flatten();
        let running = names.comms.contains(want.as_str())
            || names.argv0s.contains(want.as_str())
            || truncated.is_some_and(|t| names.comms.contains(t));
        if running && !found.contains(want) {
            found.push(want.clone());
        }
    }
    found
}

/// The names of the processes under `root`.
#[derive(Default)]
struct Names {
    /// Every `comm`.
    comms: BTreeSet<String>,
    /// Every base name of `argv[0]`.
    argv0s: BTreeSet<String>,
}

fn process_names(root: &Path) -> Names {
    let mut names = Names::default();
    let Ok(entries) = fs::read_dir(under(root, "/proc")) else {
        return names;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        if let Some(comm) = read::line(&dir.join("comm")) {
            names.comms.insert(comm);
        }
        if let Ok(cmdline) = read::bytes(&dir.join("cmdline")) {
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            if let Some(base) = argv0.rsplit('/').next().map(str::trim)
                && !base.is_empty()
            {
                names.argv0s.insert(base.to_owned());
            }
        }
    }
    names
}
