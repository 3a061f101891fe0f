//! Facts about the system that are plain values: OS release, kernel, host name, serial.

use std::path::Path;

use crate::read::{self, under};

/// The OS as `os-release(5)` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `ubuntu`, `fedora`; lower case.
    pub id: String,
    /// `VERSION_ID`, e.g. `12` or `24.04`; rolling releases have none.
    pub version_id: Option<String>,
}

/// The OS from `<root>/etc/os-release`, or `<root>/usr/lib/os-release` when that is
/// unreadable; `None` when neither names an `ID`.
pub fn os_release(root: &Path) -> Option<OsRelease> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .into_iter()
        .find_map(|p| read::text(&under(root, p)).ok())
        .and_then(|text| parse_os_release(&text))
}

/// Parses the `ID` and `VERSION_ID` of an os-release file.
pub(crate) fn parse_os_release(text: &str) -> Option<OsRelease> {
    let mut id = None;
    let mut version_id = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "ID" => id = Some(value.to_ascii_lowercase()),
            "VERSION_ID" => version_id = Some(value.to_owned()),
            _ => {}
        }
    }
    Some(OsRelease {
        id: id?,
        version_id,
    })
}

/// Removes shell quoting from an os-release value: `"a \"b\""` → `a "b"`, `'x'` → `x`.
fn unquote(value: &str) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let mut out = String::new();
            let mut escaped = false;
            for c in chars {
                if escaped {
                    out.push(c);
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    break;
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => value.to_owned(),
    }
}

/// The kernel release from `<root>/proc/sys/kernel/osrelease`, e.g. `6.1.0-28-amd64`.
pub fn kernel_version(root: &Path) -> Option<String> {
    read::line(&under(root, "/proc/sys/kernel/osrelease"))
}

/// The host name from `<root>/proc/sys/kernel/hostname`, or `<root>/etc/hostname`.
pub fn hostname(root: &Path) -> Option<String> {
    read::line(&under(root, "/proc/sys/kernel/hostname"))
        .or_else(|| read::line(&under(root, "/etc/hostname")))
}

/// Values firmware puts in the serial number field when the vendor left it empty: they
/// identify nothing, so they are reported as no serial number.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "0",
    "00000000",
    "0123456789",
    "default string",
    "none",
    "not applicable",
    "not specified",
    "n/a",
    "na",
    "oem",
    "system serial number",
    "to be filled by o.e.m.",
    "unknown",
];

/// The product serial number from `<root>/sys/class/dmi/id/product_serial` (readable only
/// by root on most systems); `None` when unreadable, blank or a placeholder.
pub fn serial_number(root: &Path) -> Option<String> {
    let serial = read::line(&under(root, "/sys/class/dmi/id/product_serial"))?;
    let lower = serial.to_ascii_lowercase();
    (!PLACEHOLDER_SERIALS.contains(&lower.as_str())).then_some(serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("ID=debian\nVERSION_ID=\"12\"\n", Some(("debian", Some("12"))) ; "debian")]
    #[test_case("NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID='24.04'\n", Some(("ubuntu", Some("24.04"))) ; "single quotes")]
    #[test_case("ID=arch\nBUILD_ID=rolling\n", Some(("arch", None)) ; "rolling")]
    #[test_case("# ID=fake\nID=Fedora\nVERSION_ID=41", Some(("fedora", Some("41"))) ; "comment and case")]
    #[test_case("ID=\"a\\\"b\"", Some(("a\"b", None)) ; "escaped quote")]
    #[test_case("VERSION_ID=12\n", None ; "no id")]
    #[test_case("ID=\nVERSION_ID=1", None ; "empty id")]
    #[test_case("garbage\n\0\u{7f}==", None ; "garbage")]
    fn parses_os_release(text: &str, want: Option<(&str, Option<&str>)>) {
        let got = parse_os_release(text);
        let got = got
            .as_ref()
            .map(|o| (o.id.as_str(), o.version_id.as_deref()));
        assert_eq!(got, want);
    }

    proptest::proptest! {
        #[test]
        fn os_release_never_panics(text in "\\PC*") {
            let _ = parse_os_release(&text);
        }
    }
}
