//! Device posture collection: what the device says about itself in a
//! [`model::PostureReport`] (OS and kernel version, disk encryption, firewall, secure
//! boot, screen lock, required processes, client version, host name and serial number).
//!
//! Every probe has a named source and reads from [`Probe::root`] (`/` on a real device, a
//! fixture tree in tests); the firewall probe also runs `nft` in the caller's network
//! namespace. This crate does blocking IO (file reads and one subprocess with a timeout):
//! call it from a blocking thread in an async program. It never panics on what it reads,
//! and what it cannot determine is [`CheckState::Unknown`], never a pass. On targets other
//! than Linux it compiles and reports everything as unknown.
//!
//! # Probes
//!
//! | check | source | pass | fail | unknown |
//! |---|---|---|---|---|
//! | [`disk_encryption`] | `/proc/self/mountinfo` (else `/proc/mounts`), `/sys/dev/block/MAJ:MIN/{dm/uuid,slaves/}` | `/` is on a `CRYPT-` device-mapper device, or on devices that all are | `/` is on a block device with no dm-crypt below it (or only partly) | no block device behind `/` (overlay, tmpfs, NFS, ZFS: containers), sysfs unreadable |
//! | [`firewall`] | `nft -j list ruleset` (text listing as fallback), `/proc/net/ip{,6}_tables_names` | an `ip`/`ip6`/`inet` base chain of type filter on hook input with policy drop, or reaching a drop/reject rule | the rule set is readable and has no such chain (e.g. empty, flushed) | `nft` missing, failing, timed out or not understood; or no such chain but a legacy iptables `filter` table |
//! | [`secure_boot`] | `/sys/firmware/efi/efivars/SecureBoot-8be4df61-…` | value byte 1 | value 0; no `SecureBoot` variable among readable EFI variables; legacy BIOS boot (`/sys/firmware` without `efi`) | `/sys/firmware` hidden or empty, efivarfs not mounted, variable unreadable or malformed |
//! | [`screen_lock`] | dconf system databases in `/etc/dconf/profile/user` → `/etc/dconf/db/NAME.d/` | GNOME `lock-enabled=true`, locked | locked off (`lock-enabled=false`, `disable-lock-screen=true`, `idle-delay=0`) | anything else: the user's own dconf database is binary and not read |
//!
//! Plain values are `None` when unreadable: [`os_release`] (`/etc/os-release`, else
//! `/usr/lib/os-release`), [`kernel_version`] (`/proc/sys/kernel/osrelease`), [`hostname`]
//! (`/proc/sys/kernel/hostname`, else `/etc/hostname`), [`serial_number`]
//! (`/sys/class/dmi/id/product_serial`, root only; firmware placeholders are `None`).
//! [`running_processes`] matches `/proc/PID/comm` and the base name of `argv[0]`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod disk;
mod firewall;
mod process;
mod read;
mod screen_lock;
mod secure_boot;
mod system;

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use model::{CheckState, PostureReport};
use serde::{Deserialize, Serialize};

pub use disk::disk_encryption;
pub use firewall::{firewall, firewall_from_nft_json, firewall_from_nft_text};
pub use process::running_processes;
pub use screen_lock::screen_lock;
pub use secure_boot::secure_boot;
pub use system::{OsRelease, hostname, kernel_version, os_release, serial_number};

/// What to probe and where: the settings of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The file system root the probes read from: `/` on a device, a fixture tree in tests.
    pub root: PathBuf,
    /// The `nft` command to run for the firewall probe (a name looked up in `PATH`, or a
    /// path); `None` skips it and reports the firewall as unknown. It runs in the caller's
    /// network namespace, whatever [`Probe::root`] is.
    pub nft: Option<PathBuf>,
    /// How long the `nft` command may take before it is killed and the firewall is unknown.
    pub nft_timeout: Duration,
    /// Process names to look for (e.g. an EDR agent such as `falcon-sensor`).
    pub required_processes: Vec<String>,
    /// The Postern client's own version, reported as is.
    pub client_version: String,
}

impl Probe {
    /// The probe of this device: root `/`, `nft` from `PATH`, a 5 second `nft` timeout.
    pub fn system(client_version: impl Into<String>, required_processes: Vec<String>) -> Self {
        Self {
            root: PathBuf::from("/"),
            nft: Some(PathBuf::from("nft")),
            nft_timeout: Duration::from_secs(5),
            required_processes,
            client_version: client_version.into(),
        }
    }
}

/// The outcome of one yes/no probe: its state, where it looked and what it saw, so that
/// `postern status` can say why something is unknown or failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check's state; `unknown` whenever the source could not be read or understood.
    pub state: CheckState,
    /// Where the probe looked, e.g. `/proc/self/mountinfo` or `nft -j list ruleset`.
    pub source: String,
    /// What it saw, in a sentence, e.g. `/ is on dm-1, on dm-crypt device dm-0`.
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(
        state: CheckState,
        source: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            state,
            source: source.into(),
            detail: detail.into(),
        }
    }

    /// A finding for a platform this crate has no probe for.
    pub fn unsupported() -> Self {
        Self::new(
            CheckState::Unknown,
            std::env::consts::OS,
            "this check is not implemented on this platform",
        )
    }
}

/// The findings of the yes/no probes, one per check of a [`PostureReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Whether the root file system is on dm-crypt.
    pub disk_encryption: Finding,
    /// Whether a firewall rule set filters incoming traffic.
    pub firewall: Finding,
    /// Whether the firmware booted with secure boot on.
    pub secure_boot: Finding,
    /// Whether a screen lock is enforced.
    pub screen_lock: Finding,
}

/// A report with the findings behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// What is sent to the controller.
    pub report: PostureReport,
    /// Why each yes/no check has its state, for the user.
    pub findings: Findings,
}

/// Collects a posture report dated `now`.
pub fn collect(probe: &Probe, now: Timestamp) -> PostureReport {
    collect_detailed(probe, now).report
}

/// Collects a posture report dated `now`, with the findings behind its yes/no checks.
pub fn collect_detailed(probe: &Probe, now: Timestamp) -> Collected {
    #[cfg(target_os = "linux")]
    {
        collect_linux(probe, now)
    }
    #[cfg(not(target_os = "linux"))]
    {
        collect_unsupported(probe, now)
    }
}

#[cfg(target_os = "linux")]
fn collect_linux(probe: &Probe, now: Timestamp) -> Collected {
    let root = probe.root.as_path();
    let os = os_release(root);
    let findings = Findings {
        disk_encryption: disk_encryption(root),
        firewall: firewall(probe.nft.as_deref(), root, probe.nft_timeout),
        secure_boot: secure_boot(root),
        screen_lock: screen_lock(root),
    };
    let report = PostureReport {
        collected_at: now,
        os_name: os.as_ref().map(|o| o.id.clone()),
        os_version: os.and_then(|o| o.version_id),
        kernel_version: kernel_version(root),
        disk_encryption: findings.disk_encryption.state,
        firewall: findings.firewall.state,
        secure_boot: findings.secure_boot.state,
        screen_lock: findings.screen_lock.state,
        processes: running_processes(root, &probe.required_processes),
        client_version: Some(probe.client_version.clone()),
        hostname: hostname(root),
        serial: serial_number(root),
    };
    Collected { report, findings }
}

#[cfg(not(target_os = "linux"))]
fn collect_unsupported(probe: &Probe, now: Timestamp) -> Collected {
    let findings = Findings {
        disk_encryption: Finding::unsupported(),
        firewall: Finding::unsupported(),
        secure_boot: Finding::unsupported(),
        screen_lock: Finding::unsupported(),
    };
    let report = PostureReport {
        collected_at: now,
        os_name: Some(std::env::consts::OS.to_owned()),
        os_version: None,
        kernel_version: None,
        disk_encryption: CheckState::Unknown,
        firewall: CheckState::Unknown,
        secure_boot: CheckState::Unknown,
        screen_lock: CheckState::Unknown,
        processes: Vec::new(),
        client_version: Some(probe.client_version.clone()),
        hostname: None,
        serial: None,
    };
    Collected { report, findings }
}
