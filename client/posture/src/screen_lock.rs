//! Screen lock: whether a screen lock is enforced for desktop users.
//!
//! What is readable without the user's session is the GNOME settings an administrator
//! enforces through dconf: the system databases named in `<root>/etc/dconf/profile/user`
//! (`system-db:NAME`), whose key files are `<root>/etc/dconf/db/NAME.d/*` and whose locked
//! keys are listed in `<root>/etc/dconf/db/NAME.d/locks/*`. A user's own settings live in a
//! binary database in their home and are not read.
//!
//! - **pass**: `org/gnome/desktop/screensaver` `lock-enabled=true` is set and locked, so no
//!   user can turn it off.
//! - **fail**: the administrator locked the lock off: `lock-enabled=false`, or
//!   `org/gnome/desktop/lockdown` `disable-lock-screen=true`, or
//!   `org/gnome/desktop/session` `idle-delay=0` (the screen never goes idle), each locked.
//! - **unknown**: anything else, including a setting that is set but not locked (the user
//!   may have changed it) and systems without GNOME or dconf.
//!
//! Key files are what `dconf update` compiles; a key file edited but not yet compiled is
//! read as if it were in force.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use model::CheckState;

use crate::Finding;
use crate::read::{self, under};

const PROFILE: &str = "/etc/dconf/profile/user";
const LOCK_ENABLED: &str = "/org/gnome/desktop/screensaver/lock-enabled";
const DISABLE_LOCK: &str = "/org/gnome/desktop/lockdown/disable-lock-screen";
const IDLE_DELAY: &str = "/org/gnome/desktop/session/idle-delay";

/// Whether a screen lock is enforced, from the dconf system databases under `root`.
pub fn screen_lock(root: &Path) -> Finding {
    let Ok(profile) = read::text(&under(root, PROFILE)) else {
        return Finding::new(
            CheckState::Unknown,
            PROFILE,
            "no dconf profile enforces desktop settings; the user's own settings cannot be read",
        );
    };
    let dbs: Vec<&str> = profile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("system-db:"))
        .map(str::trim)
        .filter(|db| !db.is_empty() && !db.contains('/'))
        .collect();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut locked: BTreeSet<String> = BTreeSet::new();
    // Earlier databases take precedence: read them last.
    for db in dbs.iter().rev() {
        let dir = under(root, "/etc/dconf/db").join(format!("{db}.d"));
        for file in files(&dir) {
            if let Ok(text) = read::text(&file) {
                values.extend(parse_keyfile(&text));
            }
        }
        for file in files(&dir.join("locks")) {
            if let Ok(text) = read::text(&file) {
                locked.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| l.starts_with('/'))
                        .map(str::to_owned),
                );
            }
        }
    }
    let source = "/etc/dconf/db/*.d";
    let enforced = |key: &str| {
        locked
            .contains(key)
            .then(|| values.get(key).map(String::as_str))
            .flatten()
    };
    if enforced(DISABLE_LOCK) == Some("true") {
        return Finding::new(
            CheckState::Fail,
            source,
            "the administrator disabled the lock screen (lockdown disable-lock-screen)",
        );
    }
    if enforced(IDLE_DELAY).and_then(parse_uint) == Some(0) {
        return Finding::new(
            CheckState::Fail,
            source,
            "the screen never goes idle (session idle-delay is locked to 0)",
        );
    }
    match enforced(LOCK_ENABLED) {
        Some("true") => Finding::new(
            CheckState::Pass,
            source,
            "GNOME screen lock is enabled and locked by the administrator",
        ),
        Some("false") => Finding::new(
            CheckState::Fail,
            source,
            "GNOME screen lock is disabled and locked by the administrator",
        ),
        _ => Finding::new(
            CheckState::Unknown,
            source,
            "no enforced screen lock setting; the user's own setting cannot be read",
        ),
    }
}

/// The regular files of `dir` in name order; none when it cannot be read.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The keys of a dconf key file as full paths (`/org/gnome/…/key`) with their values.
fn parse_keyfile(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut group: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = Some(name.trim().trim_matches('/').to_owned());
        } else if let (Some(group), Some((key, value))) = (&group, line.split_once('=')) {
            out.insert(format!("/{group}/{}", key.trim()), value.trim().to_owned());
        }
    }
    out
}

/// A GVariant unsigned integer as written in key files: `300` or `uint32 300`.
fn parse_uint(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("uint32")
        .unwrap_or(value)
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_files() {
        let keys = parse_keyfile(
            "# comment\n[org/gnome/desktop/screensaver]\nlock-enabled = true\n\
             [/org/gnome/desktop/session/]\nidle-delay=uint32 300\nstray\n",
        );
        assert_eq!(keys.get(LOCK_ENABLED).map(String::as_str), Some("true"));
        assert_eq!(keys.get(IDLE_DELAY).and_then(|v| parse_uint(v)), Some(300));
    }
}
