use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::PostureProfileId;

/// The state of one yes/no check on a device. What could not be determined is `Unknown`,
/// never a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// The check holds (e.g. the disk is encrypted).
    Pass,
    /// The check does not hold.
    Fail,
    /// The client could not tell.
    #[default]
    Unknown,
}

/// What a device reported about itself at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureReport {
    /// When the client collected the report.
    #[schema(value_type = String, format = DateTime)]
    pub collected_at: Timestamp,
    /// The OS id, as in `/etc/os-release` `ID` (e.g. `debian`, `ubuntu`), or `macos`, `windows`.
    #[serde(default)]
    pub os_name: Option<String>,
    /// The OS version (e.g. `12`, `24.04`).
    #[serde(default)]
    pub os_version: Option<String>,
    /// The kernel version.
    #[serde(default)]
    pub kernel_version: Option<String>,
    /// Whether the root file system is encrypted.
    #[serde(default)]
    pub disk_encryption: CheckState,
    /// Whether a firewall rule set is loaded.
    #[serde(default)]
    pub firewall: CheckState,
    /// Whether secure boot is on.
    #[serde(default)]
    pub secure_boot: CheckState,
    /// Whether a screen lock is configured.
    #[serde(default)]
    pub screen_lock: CheckState,
    /// Names of the running processes the client was asked to look for and found.
    #[serde(default)]
    pub processes: Vec<String>,
    /// The Postern client's version.
    #[serde(default)]
    pub client_version: Option<String>,
    /// The device's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The device's serial number, when readable.
    #[serde(default)]
    pub serial: Option<String>,
}

/// Requirements on a device's reported state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureProfile {
    /// The profile's id.
    pub id: PostureProfileId,
    /// A unique name.
    pub name: String,
    /// The lowest OS version allowed, per OS id; an OS not listed is allowed at any version.
    #[serde(default)]
    pub min_os_versions: BTreeMap<String, String>,
    /// Require an encrypted root file system.
    #[serde(default)]
    pub require_disk_encryption: bool,
    /// Require a loaded firewall rule set.
    #[serde(default)]
    pub require_firewall: bool,
    /// Require secure boot.
    #[serde(default)]
    pub require_secure_boot: bool,
    /// Require a configured screen lock.
    #[serde(default)]
    pub require_screen_lock: bool,
    /// Processes that must be running (e.g. an EDR agent), by name.
    #[serde(default)]
    pub required_processes: Vec<String>,
    /// The lowest Postern client version allowed.
    #[serde(default)]
    pub min_client_version: Option<String>,
    /// When not empty, only devices with one of these serial numbers pass.
    #[serde(default)]
    pub serial_allowlist: Vec<String>,
    /// The oldest a report may be, in seconds; access ends when the report gets older.
    #[serde(default)]
    pub max_report_age_secs: Option<u64>,
}

/// Compares dotted version strings numerically (`10.2` > `9.12`); non-numeric parts compare
/// as text. `None` when either side is empty.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let parts = |s: &str| -> Vec<String> {
        s.trim()
            .split(['.', '-', '_', '+'])
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map_or("0", String::as_str);
        let y = b.get(i).map_or("0", String::as_str);
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return Some(ord);
        }
    }
    Some(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("10.2", "9.12", Ordering::Greater)]
    #[test_case("12", "12.0", Ordering::Equal)]
    #[test_case("24.04", "24.10", Ordering::Less)]
    #[test_case("6.1.0-28", "6.1.0-9", Ordering::Greater)]
    fn compares(a: &str, b: &str, ord: Ordering) {
        assert_eq!(compare_versions(a, b), Some(ord));
    }

    #[test]
    fn empty_is_incomparable() {
        assert_eq!(compare_versions("", "1"), None);
    }
}
