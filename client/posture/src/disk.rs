//! Disk encryption: whether the root file system sits on dm-crypt.
//!
//! The device mounted at `/` comes from `<root>/proc/self/mountinfo` (its `major:minor`),
//! or `<root>/proc/mounts` (its source path) when mountinfo is unreadable. Its sysfs entry
//! `<root>/sys/dev/block/MAJ:MIN` is then inspected: a device-mapper device whose
//! `dm/uuid` starts with `CRYPT-` is encrypted; any other device is encrypted exactly when
//! it has underlying devices (`slaves/`, e.g. an LVM volume on a LUKS container) and all of
//! them are. A plain disk or partition fails.
//!
//! A root with no block device behind it (overlay, tmpfs, NFS, ZFS, a container's root) is
//! unknown, not a pass or a fail: this probe cannot see what stores it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use model::CheckState;

use crate::Finding;
use crate::read::{self, under};

/// How deep a stack of devices may be before we give up (a loop in a broken tree).
const MAX_DEPTH: usize = 16;

/// Whether the root file system under `root` is on dm-crypt.
pub fn disk_encryption(root: &Path) -> Finding {
    let (source, mount) = match root_mount(root) {
        Ok(found) => found,
        Err(finding) => return finding,
    };
    let what = format!("/ is {} on {}", mount.fstype, mount.source);
    let dev = match mount.dev {
        Some((major, minor)) if major != 0 => {
            under(root, format!("/sys/dev/block/{major}:{minor}"))
        }
        _ => match device_by_source(root, &mount.source) {
            Some(dev) => dev,
            None => {
                return Finding::new(
                    CheckState::Unknown,
                    source,
                    format!("{what}, which is not a block device this probe can inspect"),
                );
            }
        },
    };
    let node = inspect(root, &dev, 0);
    Finding::new(node.state, source, format!("{what}: {}", node.note))
}

/// The mount at `/`.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    dev: Option<(u32, u32)>,
    fstype: String,
    source: String,
}

/// The root mount and the file it came from, or an unknown finding saying why not.
fn root_mount(root: &Path) -> Result<(&'static str, Mount), Finding> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    const MOUNTS: &str = "/proc/mounts";
    if let Ok(text) = read::text(&under(root, MOUNTINFO)) {
        return match parse_mountinfo(&text) {
            Some(m) => Ok((MOUNTINFO, m)),
            None => Err(Finding::new(
                CheckState::Unknown,
                MOUNTINFO,
                "no mount at / found in mountinfo",
            )),
        };
    }
    match read::text(&under(root, MOUNTS)) {
        Ok(text) => match parse_mounts(&text) {
            Some(m) => Ok((MOUNTS, m)),
            None => Err(Finding::new(
                CheckState::Unknown,
                MOUNTS,
                "no mount at / found in /proc/mounts",
            )),
        },
        Err(e) => Err(Finding::new(
            CheckState::Unknown,
            MOUNTINFO,
            format!("neither {MOUNTINFO} nor {MOUNTS} could be read: {e}"),
        )),
    }
}

/// The last mount at `/` in a `/proc/self/mountinfo` text (a later mount hides earlier ones).
fn parse_mountinfo(text: &str) -> Option<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let mut right = right.split_whitespace();
            if left.len() < 5 || unescape(left[4]) != "/" {
                return None;
            }
            let (major, minor) = left[2].split_once(':')?;
            Some(Mount {
                dev: major.parse().ok().zip(minor.parse().ok()),
                fstype: right.next()?.to_owned(),
                source: unescape(right.next().unwrap_or("none")),
            })
        })
        .next_back()
}

/// The last mount at `/` in a `/proc/mounts` text.
fn parse_mounts(text: &str) -> Option<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let source = unescape(fields.next()?);
            let target = unescape(fields.next()?);
            let fstype = fields.next()?.to_owned();
            (target == "/").then_some(Mount {
                dev: None,
                fstype,
                source,
            })
        })
        .next_back()
}

/// Undoes the octal escapes of mount tables (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sysfs directory of a device named by a path such as `/dev/mapper/cryptroot`,
/// `/dev/dm-0` or `/dev/disk/by-uuid/…` (for btrfs, whose mounts show no device number,
/// and for `/proc/mounts`).
fn device_by_source(root: &Path, source: &str) -> Option<PathBuf> {
    if !source.starts_with("/dev/") {
        return None;
    }
    let path = under(root, source);
    let name = match fs::read_link(&path) {
        Ok(target) => {
            let resolved = path.parent().map_or(target.clone(), |p| p.join(&target));
            resolved.file_name()?.to_str()?.to_owned()
        }
        Err(_) => path.file_name()?.to_str()?.to_owned(),
    };
    let class = under(root, "/sys/class/block");
    let by_name = class.join(&name);
    if by_name.is_dir() {
        return Some(by_name);
    }
    // A device-mapper name (`/dev/mapper/NAME`) with no /dev tree to resolve it.
    fs::read_dir(&class).ok()?.flatten().find_map(|entry| {
        let dm_name = read::line(&entry.path().join("dm/name"))?;
        (dm_name == name).then(|| entry.path())
    })
}

/// The verdict on one device and what was seen.
struct Node {
    state: CheckState,
    note: String,
}

impl Node {
    fn new(state: CheckState, note: impl Into<String>) -> Self {
        Self {
            state,
            note: note.into(),
        }
    }
}

/// Whether the block device whose sysfs directory is `dev` is encrypted.
fn inspect(root: &Path, dev: &Path, depth: usize) -> Node {
    let name = device_name(dev);
    if depth > MAX_DEPTH {
        return Node::new(CheckState::Unknown, "the device stack is too deep");
    }
    if !dev.is_dir() {
        return Node::new(
            CheckState::Unknown,
            format!("sysfs has no entry for {name} ({})", dev.display()),
        );
    }
    match read::text(&dev.join("dm/uuid")) {
        Ok(uuid) if uuid.trim_start().starts_with("CRYPT-") => {
            return Node::new(CheckState::Pass, format!("{name} is a dm-crypt device"));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Node::new(
                CheckState::Unknown,
                format!("the device-mapper uuid of {name} could not be read: {e}"),
            );
        }
    }
    let slaves = match fs::read_dir(dev.join("slaves")) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect();
            names.sort();
            names
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Node::new(
                CheckState::Unknown,
                format!("the devices under {name} could not be listed: {e}"),
            );
        }
    };
    if slaves.is_empty() {
        return Node::new(CheckState::Fail, format!("{name} is not on dm-crypt"));
    }
    let below: Vec<Node> = slaves
        .iter()
        .map(|slave| {
            let direct = dev.join("slaves").join(slave);
            let child = if direct.is_dir() {
                direct
            } else {
                under(root, "/sys/class/block").join(slave)
            };
            inspect(root, &child, depth + 1)
        })
        .collect();
    let state = if below.iter().all(|n| n.state == CheckState::Pass) {
        CheckState::Pass
    } else if below.iter().any(|n| n.state == CheckState::Fail) {
        CheckState::Fail
    } else {
        CheckState::Unknown
    };
    let notes: Vec<&str> = below.iter().map(|n| n.note.as_str()).collect();
    Node::new(state, format!("{name} is on {}", notes.join(", and ")))
}

/// The kernel name of a device from its sysfs directory (`dm-0`, `nvme0n1p2`).
fn device_name(dev: &Path) -> String {
    let canonical = fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf());
    canonical.file_name().map_or_else(
        || dev.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_root_mount() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
26 1 8:2 / / rw - ext4 /dev/sda2 rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw
28 27 0:25 / /mnt\\040x ro - tmpfs none ro";
        assert_eq!(
            parse_mountinfo(text),
            Some(Mount {
                dev: Some((254, 1)),
                fstype: "ext4".into(),
                source: "/dev/mapper/vg-root".into(),
            })
        );
    }

    #[test]
    fn parses_mounts() {
        let text = "rootfs / rootfs rw 0 0\n/dev/dm-0 / btrfs rw 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(
            parse_mounts(text),
            Some(Mount {
                dev: None,
                fstype: "btrfs".into(),
                source: "/dev/dm-0".into(),
            })
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/mnt\\040a\\134b"), "/mnt a\\b");
        assert_eq!(unescape("\\04"), "\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }

    proptest::proptest! {
        #[test]
        fn mount_tables_never_panic(text in "(\\PC{0,40}( - )?\\PC{0,20}\n){0,6}") {
            let _ = parse_mountinfo(&text);
            let _ = parse_mounts(&text);
            let _ = unescape(&text);
        }
    }
}
