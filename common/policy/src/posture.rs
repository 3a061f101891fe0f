use std::cmp::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use model::{CheckState, PostureProfile, PostureReport, compare_versions};
use serde::{Deserialize, Serialize};

use crate::reason::{Reason, ReasonCode, describe_secs};

/// How far in the future a report's collection time may lie before it is refused, for
/// clocks that are a little off.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Which requirement of a posture profile a check result is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PostureCheck {
    /// A report exists and is not dated in the future.
    Report,
    /// The report is recent enough.
    Freshness,
    /// The operating system version is at least the profile's minimum for that OS.
    OsVersion,
    /// The system disk is encrypted.
    DiskEncryption,
    /// A firewall rule set is loaded.
    Firewall,
    /// Secure boot is on.
    SecureBoot,
    /// A screen lock is configured.
    ScreenLock,
    /// A required process is running.
    Process,
    /// The Postern client is at least the profile's minimum version.
    ClientVersion,
    /// The serial number is on the profile's allow-list.
    Serial,
}

/// The result of one posture check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    /// Which requirement was checked.
    pub check: PostureCheck,
    /// A label for people, e.g. `Firewall` or `Process falcon-sensor`.
    pub name: String,
    /// Whether it passed; `unknown` counts as a failure.
    pub state: CheckState,
    /// Why it did not pass; `None` exactly when it passed.
    pub reason: Option<Reason>,
}

/// The result of checking a device's posture report against a profile: one entry per
/// requirement of the profile, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureOutcome {
    /// The checks, in the order they should be shown. Without a report there is only the
    /// `report` check.
    pub checks: Vec<CheckResult>,
    /// Until when the report is fresh enough (`collected_at + max_report_age_secs`), when
    /// the profile limits its age and there is a report.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub fresh_until: Option<Timestamp>,
}

impl PostureOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.state == CheckState::Pass)
    }

    /// The reasons of the checks that did not pass, in check order.
    pub fn failures(&self) -> impl Iterator<Item = &Reason> + '_ {
        self.checks.iter().filter_map(|c| c.reason.as_ref())
    }

    /// The reasons of the checks that did not pass, owned.
    pub fn reasons(&self) -> Vec<Reason> {
        self.failures().cloned().collect()
    }
}

/// Checks `report` (the device's latest, if any) against `profile` at `now`.
///
/// Something the report does not tell (a missing OS version, a check the client could not
/// determine) is `unknown`, which fails: a device passes only on what it positively reports.
/// Every check that does not pass carries a reason that says what is wrong and how to fix
/// it (or, when unknown, how to check it), in terms of the device's operating system.
pub fn check_posture(
    profile: &PostureProfile,
    report: Option<&PostureReport>,
    now: Timestamp,
) -> PostureOutcome {
    let mut checks = Checks::default();
    let Some(report) = report else {
        checks.fail(
            PostureCheck::Report,
            "Posture report",
            CheckState::Fail,
            ReasonCode::PostureMissing,
            "This device has not sent a posture report: make sure the Postern client is \
             running and up to date (`postern status` shows it), then try again."
                .to_owned(),
        );
        return PostureOutcome {
            checks: checks.0,
            fresh_until: None,
        };
    };

    if report.collected_at > plus_secs(now, MAX_CLOCK_SKEW_SECS) {
        checks.fail(
            PostureCheck::Report,
            "Posture report",
            CheckState::Fail,
            ReasonCode::PostureFromFuture,
            format!(
                "This device's posture report is dated {}, in the future: set the device's \
                 clock right (turn on network time) and try again.",
                report.collected_at
            ),
        );
    } else {
        checks.pass(PostureCheck::Report, "Posture report");
    }

    let fresh_until = profile
        .max_report_age_secs
        .map(|max| plus_secs(report.collected_at, max));
    if let (Some(max), Some(until)) = (profile.max_report_age_secs, fresh_until) {
        if until > now {
            checks.pass(PostureCheck::Freshness, "Report freshness");
        } else {
            checks.fail(
                PostureCheck::Freshness,
                "Report freshness",
                CheckState::Fail,
                ReasonCode::PostureStale,
                format!(
                    "This device's last posture report is from {}, older than the {} \
                     allowed: make sure the Postern client is running and connected \
                     (`postern status` shows it) so that it sends a fresh report, then try \
                     again.",
                    report.collected_at,
                    describe_secs(max)
                ),
            );
        }
    }

    let platform = Platform::of(report);
    check_os(&mut checks, profile, report, platform);
    check_flags(&mut checks, profile, report, platform);

    for process in &profile.required_processes {
        let name = format!("Process {process}");
        if report.processes.iter().any(|p| p == process) {
            checks.pass(PostureCheck::Process, name);
        } else {
            checks.fail(
                PostureCheck::Process,
                name,
                CheckState::Fail,
                ReasonCode::ProcessMissing,
                process_missing(process, platform),
            );
        }
    }

    check_client(&mut checks, profile, report);
    check_serial(&mut checks, profile, report, platform);

    PostureOutcome {
        checks: checks.0,
        fresh_until,
    }
}

/// The kind of operating system a report comes from, to tell how to fix things on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Linux,
    MacOs,
    Windows,
    /// The report does not name its OS: the advice covers all of them.
    Unnamed,
}

impl Platform {
    fn of(report: &PostureReport) -> Self {
        match report
            .os_name
            .as_deref()
            .map(|s| s.trim().to_ascii_lowercase())
        {
            None => Self::Unnamed,
            Some(os) if os.is_empty() => Self::Unnamed,
            Some(os) if matches!(os.as_str(), "macos" | "darwin" | "mac os x" | "osx") => {
                Self::MacOs
            }
            Some(os) if os.starts_with("windows") => Self::Windows,
            // Every other OS id comes from a Linux os-release file.
            Some(_) => Self::Linux,
        }
    }
}

/// An OS id (`debian`, `macos`) as people write it.
fn os_display(id: &str) -> String {
    let id = id.trim();
    let known = [
        ("debian", "Debian"),
        ("ubuntu", "Ubuntu"),
        ("fedora", "Fedora"),
        ("rhel", "Red Hat Enterprise Linux"),
        ("centos", "CentOS"),
        ("rocky", "Rocky Linux"),
        ("almalinux", "AlmaLinux"),
        ("opensuse-leap", "openSUSE Leap"),
        ("sles", "SUSE Linux Enterprise"),
        ("arch", "Arch Linux"),
        ("linuxmint", "Linux Mint"),
        ("pop", "Pop!_OS"),
        ("macos", "macOS"),
        ("windows", "Windows"),
    ];
    known
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(id))
        .map_or_else(|| id.to_owned(), |(_, name)| (*name).to_owned())
}

fn check_os(
    checks: &mut Checks,
    profile: &PostureProfile,
    report: &PostureReport,
    platform: Platform,
) {
    const NAME: &str = "Operating system version";
    if profile.min_os_versions.is_empty() {
        return;
    }
    let Some(os) = report.os_name.as_deref() else {
        checks.fail(
            PostureCheck::OsVersion,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            "The operating system of this device could not be determined, and access needs \
             a minimum version of it: on Linux, check that `cat /etc/os-release` shows `ID` \
             and `VERSION_ID`; update the Postern client, then try again."
                .to_owned(),
        );
        return;
    };
    let Some(min) = profile
        .min_os_versions
        .iter()
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(os.trim()))
        .map(|(_, min)| min)
    else {
        // An OS the profile does not list is allowed at any version.
        checks.pass(PostureCheck::OsVersion, NAME);
        return;
    };
    let shown = os_display(os);
    let version = report.os_version.as_deref().unwrap_or("").trim();
    match compare_versions(version, min) {
        Some(Ordering::Greater | Ordering::Equal) => checks.pass(PostureCheck::OsVersion, NAME),
        Some(Ordering::Less) => checks.fail(
            PostureCheck::OsVersion,
            NAME,
            CheckState::Fail,
            ReasonCode::OsOutdated,
            format!(
                "This device runs {shown} {version}, and access needs {shown} {min} or \
                 later: upgrade the operating system to {shown} {min} or later, then try \
                 again."
            ),
        ),
        None => {
            let how = match platform {
                Platform::Linux => format!(
                    "check that `cat /etc/os-release` shows a `VERSION_ID` (rolling releases \
                     have none: ask an administrator to remove the minimum for {shown})"
                ),
                _ => "update the Postern client".to_owned(),
            };
            checks.fail(
                PostureCheck::OsVersion,
                NAME,
                CheckState::Unknown,
                ReasonCode::PostureUndetermined,
                format!(
                    "The version of {shown} on this device could not be determined, and \
                     access needs {shown} {min} or later: {how}, then try again."
                ),
            );
        }
    }
}

/// What to tell the user about a yes/no requirement that is not met.
struct FlagText {
    /// The check's label.
    name: &'static str,
    /// The reason code when the check fails.
    code: ReasonCode,
    /// What is wrong and how to fix it.
    off: &'static str,
    /// That it could not be determined, and how to check it.
    unknown: &'static str,
}

fn flag_text(check: PostureCheck, platform: Platform) -> FlagText {
    use Platform::{Linux, MacOs, Unnamed, Windows};
    let (name, code) = match check {
        PostureCheck::DiskEncryption => ("Disk encryption", ReasonCode::DiskEncryptionOff),
        PostureCheck::Firewall => ("Firewall", ReasonCode::FirewallOff),
        PostureCheck::SecureBoot => ("Secure boot", ReasonCode::SecureBootOff),
        _ => ("Screen lock", ReasonCode::ScreenLockOff),
    };
    let (off, unknown) = match (check, platform) {
        (PostureCheck::DiskEncryption, Linux) => (
            "Disk encryption is off: the system disk must be encrypted with LUKS (full-disk \
             encryption, usually chosen when Linux is installed; ask your IT team to help \
             move this device to an encrypted installation), then try again.",
            "Whether the system disk is encrypted could not be determined (for example \
             because the client runs in a container): check with `lsblk -o \
             NAME,TYPE,MOUNTPOINT` that `/` is on a `crypt` device, and run the Postern \
             client on the device itself, then try again.",
        ),
        (PostureCheck::DiskEncryption, MacOs) => (
            "Disk encryption is off: turn on FileVault (System Settings → Privacy & \
             Security → FileVault), then try again.",
            "Whether the system disk is encrypted could not be determined: check with \
             `fdesetup status` that FileVault is on, then try again.",
        ),
        (PostureCheck::DiskEncryption, Windows) => (
            "Disk encryption is off: turn on BitLocker for the system drive (Control Panel \
             → BitLocker Drive Encryption, or Settings → Privacy & security → Device \
             encryption), then try again.",
            "Whether the system disk is encrypted could not be determined: check with \
             `manage-bde -status C:` in an administrator prompt that BitLocker protects \
             the system drive, then try again.",
        ),
        (PostureCheck::DiskEncryption, Unnamed) => (
            "Disk encryption is off: encrypt the system disk (LUKS on Linux, FileVault on \
             macOS, BitLocker on Windows), then try again.",
            "Whether the system disk is encrypted could not be determined: make sure the \
             Postern client is up to date and runs with the permissions it needs, then try \
             again.",
        ),
        (PostureCheck::Firewall, Linux) => (
            "The firewall is off (no rule set filters incoming traffic): turn it on with \
             `sudo ufw enable`, or `sudo systemctl enable --now firewalld`, or `sudo \
             systemctl enable --now nftables` with an input chain in /etc/nftables.conf \
             that drops or rejects unwanted traffic, then try again.",
            "Whether the firewall is on could not be determined: check that `sudo nft list \
             ruleset` works on this device and that the Postern client service runs as \
             root, then try again.",
        ),
        (PostureCheck::Firewall, MacOs) => (
            "The firewall is off: turn it on in System Settings → Network → Firewall, then \
             try again.",
            "Whether the firewall is on could not be determined: check with \
             `/usr/libexec/ApplicationFirewall/socketfilterfw --getglobalstate`, then try \
             again.",
        ),
        (PostureCheck::Firewall, Windows) => (
            "The firewall is off: turn on Microsoft Defender Firewall (Windows Security → \
             Firewall & network protection), then try again.",
            "Whether the firewall is on could not be determined: check with `netsh \
             advfirewall show allprofiles state`, then try again.",
        ),
        (PostureCheck::Firewall, Unnamed) => (
            "The firewall is off: turn it on (for example `sudo ufw enable` on Linux), then \
             try again.",
            "Whether the firewall is on could not be determined: make sure the Postern \
             client is up to date and runs with the permissions it needs, then try again.",
        ),
        (PostureCheck::SecureBoot, MacOs) => (
            "Secure boot is off: set it to Full Security in Startup Security Utility (start \
             up in macOS Recovery), then try again.",
            "Whether secure boot is on could not be determined: check it in Startup \
             Security Utility (macOS Recovery), then try again.",
        ),
        (PostureCheck::SecureBoot, Windows) => (
            "Secure boot is off: enable it in the firmware (UEFI) settings (restart and \
             open the setup, often with F2, F10, F12 or Del), then try again.",
            "Whether secure boot is on could not be determined: check with \
             `Confirm-SecureBootUEFI` in an administrator PowerShell, then try again.",
        ),
        (PostureCheck::SecureBoot, Linux | Unnamed) => (
            "Secure boot is off: enable it in the firmware (UEFI) settings (restart and \
             open the setup, often with F2, F10, F12 or Del; a device that boots in legacy \
             BIOS mode must be switched to UEFI first, ask your IT team), then try again.",
            "Whether secure boot is on could not be determined (for example because the \
             client runs in a container): check with `mokutil --sb-state`, and run the \
             Postern client on the device itself, then try again.",
        ),
        (_, Linux) => (
            "The screen lock is turned off on this device: turn on automatic screen lock \
             (GNOME: Settings → Privacy & Security → Screen Lock; if the setting is \
             locked, ask your IT team), then try again.",
            "Whether a screen lock is set up could not be determined: Postern can read only \
             a screen lock enforced for the whole device, so ask your IT team to enforce one \
             (on GNOME, a locked dconf setting `/org/gnome/desktop/screensaver/lock-enabled` \
             set to true), then try again.",
        ),
        (_, MacOs) => (
            "The screen lock is turned off on this device: in System Settings → Lock \
             Screen, require a password soon after the screen saver starts or the display \
             turns off, then try again.",
            "Whether a screen lock is set up could not be determined: check System Settings \
             → Lock Screen, and make sure the Postern client runs in your session, then try \
             again.",
        ),
        (_, Windows) => (
            "The screen lock is turned off on this device: set a sign-in password and a \
             screen timeout that locks (Settings → Accounts → Sign-in options), then try \
             again.",
            "Whether a screen lock is set up could not be determined: check Settings → \
             Accounts → Sign-in options, and make sure the Postern client runs in your \
             session, then try again.",
        ),
        (_, Unnamed) => (
            "The screen lock is turned off on this device: turn on a screen lock with a \
             password, then try again.",
            "Whether a screen lock is set up could not be determined: make sure the Postern \
             client runs in your desktop session, then try again.",
        ),
    };
    FlagText {
        name,
        code,
        off,
        unknown,
    }
}

fn check_flags(
    checks: &mut Checks,
    profile: &PostureProfile,
    report: &PostureReport,
    platform: Platform,
) {
    let flags = [
        (
            PostureCheck::DiskEncryption,
            profile.require_disk_encryption,
            report.disk_encryption,
        ),
        (
            PostureCheck::Firewall,
            profile.require_firewall,
            report.firewall,
        ),
        (
            PostureCheck::SecureBoot,
            profile.require_secure_boot,
            report.secure_boot,
        ),
        (
            PostureCheck::ScreenLock,
            profile.require_screen_lock,
            report.screen_lock,
        ),
    ];
    for (check, required, state) in flags {
        if !required {
            continue;
        }
        let text = flag_text(check, platform);
        match state {
            CheckState::Pass => checks.pass(check, text.name),
            CheckState::Fail => {
                checks.fail(check, text.name, state, text.code, text.off.to_owned())
            }
            CheckState::Unknown => checks.fail(
                check,
                text.name,
                state,
                ReasonCode::PostureUndetermined,
                text.unknown.to_owned(),
            ),
        }
    }
}

/// Why a required process that the report does not list is missing, and what to do.
fn process_missing(process: &str, platform: Platform) -> String {
    let how = match platform {
        Platform::Linux => format!(
            "start it (for a system service usually `sudo systemctl start {process}`; \
             `systemctl status {process}` tells why it stopped)"
        ),
        Platform::Windows => "start its service in Services (services.msc)".to_owned(),
        Platform::MacOs | Platform::Unnamed => "start it".to_owned(),
    };
    format!(
        "`{process}` is not running on this device, and access here requires it: {how}, \
         or ask your IT team to install it, then try again."
    )
}

fn check_client(checks: &mut Checks, profile: &PostureProfile, report: &PostureReport) {
    const NAME: &str = "Postern client version";
    let Some(min) = profile.min_client_version.as_deref() else {
        return;
    };
    let version = report.client_version.as_deref().unwrap_or("").trim();
    match compare_versions(version, min) {
        Some(Ordering::Greater | Ordering::Equal) => {
            checks.pass(PostureCheck::ClientVersion, NAME);
        }
        Some(Ordering::Less) => checks.fail(
            PostureCheck::ClientVersion,
            NAME,
            CheckState::Fail,
            ReasonCode::ClientOutdated,
            format!(
                "This Postern client is version {version}; version {min} or later is \
                 required: update Postern, then try again."
            ),
        ),
        None => checks.fail(
            PostureCheck::ClientVersion,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            format!(
                "The version of this Postern client could not be determined (`postern \
                 --version` shows it), and version {min} or later is required: update \
                 Postern, then try again."
            ),
        ),
    }
}

fn check_serial(
    checks: &mut Checks,
    profile: &PostureProfile,
    report: &PostureReport,
    platform: Platform,
) {
    const NAME: &str = "Serial number";
    if profile.serial_allowlist.is_empty() {
        return;
    }
    let serial = report
        .serial
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(serial) = serial else {
        let how = match platform {
            Platform::Linux => {
                "check that `sudo cat /sys/class/dmi/id/product_serial` shows it (only root \
                 can read it, so the Postern client service must run as root; some virtual \
                 machines have none)"
            }
            _ => "make sure the Postern client runs with the permissions it needs",
        };
        checks.fail(
            PostureCheck::Serial,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            format!(
                "This device's serial number could not be determined, and only listed \
                 devices are allowed: {how}, or ask an administrator."
            ),
        );
        return;
    };
    if profile
        .serial_allowlist
        .iter()
        .any(|allowed| allowed.trim().eq_ignore_ascii_case(serial))
    {
        checks.pass(PostureCheck::Serial, NAME);
    } else {
        checks.fail(
            PostureCheck::Serial,
            NAME,
            CheckState::Fail,
            ReasonCode::SerialNotAllowed,
            format!(
                "This device (serial number {serial}) is not on the list of allowed devices: \
                 ask an administrator to add it."
            ),
        );
    }
}

#[derive(Default)]
struct Checks(Vec<CheckResult>);

impl Checks {
    fn pass(&mut self, check: PostureCheck, name: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            name: name.into(),
            state: CheckState::Pass,
            reason: None,
        });
    }

    fn fail(
        &mut self,
        check: PostureCheck,
        name: impl Into<String>,
        state: CheckState,
        code: ReasonCode,
        message: String,
    ) {
        self.0.push(CheckResult {
            check,
            name: name.into(),
            state,
            reason: Some(Reason::new(code, message)),
        });
    }
}

/// `t` plus `secs` seconds, saturating at the end of time.
pub(crate) fn plus_secs(t: Timestamp, secs: u64) -> Timestamp {
    t.saturating_add(Duration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use test_case::test_case;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-11-25T10:00:00Z";

    fn profile() -> PostureProfile {
        PostureProfile {
            id: "00000000-0000-0000-0000-000000000001".parse().unwrap(),
            name: "baseline".into(),
            min_os_versions: BTreeMap::new(),
            require_disk_encryption: false,
            require_firewall: false,
            require_secure_boot: false,
            require_screen_lock: false,
            required_processes: vec![],
            min_client_version: None,
            serial_allowlist: vec![],
            max_report_age_secs: None,
        }
    }

    fn report() -> PostureReport {
        PostureReport {
            collected_at: ts("2026-11-25T09:59:00Z"),
            os_name: Some("debian".into()),
            os_version: Some("12".into()),
            kernel_version: Some("6.1.0-28-amd64".into()),
            disk_encryption: CheckState::Pass,
            firewall: CheckState::Pass,
            secure_boot: CheckState::Pass,
            screen_lock: CheckState::Pass,
            processes: vec!["falcon-sensor".into()],
            client_version: Some("0.1.0".into()),
            hostname: Some("laptop".into()),
            serial: Some("ABC123".into()),
        }
    }

    /// The single result for `check`, asserting there is exactly one.
    fn only(outcome: &PostureOutcome, check: PostureCheck) -> CheckResult {
        let found: Vec<_> = outcome.checks.iter().filter(|c| c.check == check).collect();
        assert_eq!(found.len(), 1, "{outcome:#?}");
        found[0].clone()
    }

    fn assert_result(result: &CheckResult, state: CheckState, code: Option<ReasonCode>) {
        assert_eq!(result.state, state, "{result:#?}");
        assert_eq!(result.reason.as_ref().map(|r| r.code), code, "{result:#?}");
        if let Some(reason) = &result.reason {
            assert!(reason.message.ends_with('.'), "{reason:?}");
        }
    }

    #[test]
    fn empty_profile_passes_any_report() {
        let outcome = check_posture(&profile(), Some(&report()), ts(NOW));
        assert!(outcome.passed());
        assert_eq!(outcome.checks.len(), 1);
        assert_eq!(outcome.fresh_until, None);
        assert_eq!(outcome.failures().count(), 0);
    }

    #[test]
    fn missing_report_is_the_only_failure() {
        let mut p = profile();
        p.require_firewall = true;
        p.max_report_age_secs = Some(300);
        let outcome = check_posture(&p, None, ts(NOW));
        assert!(!outcome.passed());
        assert_eq!(outcome.checks.len(), 1);
        assert_result(
            &outcome.checks[0],
            CheckState::Fail,
            Some(ReasonCode::PostureMissing),
        );
        assert_eq!(outcome.fresh_until, None);
    }

    #[test_case("2026-11-25T09:59:00Z", CheckState::Pass, None ; "a minute old")]
    #[test_case("2026-11-25T10:05:00Z", CheckState::Pass, None ; "five minutes ahead")]
    #[test_case("2026-11-25T10:05:01Z", CheckState::Fail, Some(ReasonCode::PostureFromFuture) ; "too far ahead")]
    fn report_date(collected_at: &str, state: CheckState, code: Option<ReasonCode>) {
        let mut r = report();
        r.collected_at = ts(collected_at);
        let outcome = check_posture(&profile(), Some(&r), ts(NOW));
        assert_result(&only(&outcome, PostureCheck::Report), state, code);
    }

    #[test_case(None, "2026-11-25T09:00:00Z", None ; "no limit")]
    #[test_case(Some(3_601), "2026-11-25T09:00:00Z", Some(CheckState::Pass) ; "fresh")]
    #[test_case(Some(3_600), "2026-11-25T09:00:00Z", Some(CheckState::Fail) ; "exactly as old as allowed")]
    #[test_case(Some(300), "2026-11-25T09:00:00Z", Some(CheckState::Fail) ; "stale")]
    fn freshness(max: Option<u64>, collected_at: &str, state: Option<CheckState>) {
        let mut p = profile();
        p.max_report_age_secs = max;
        let mut r = report();
        r.collected_at = ts(collected_at);
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        let found: Vec<_> = outcome
            .checks
            .iter()
            .filter(|c| c.check == PostureCheck::Freshness)
            .collect();
        assert_eq!(found.first().map(|c| c.state), state);
        assert_eq!(
            outcome.fresh_until,
            max.map(|m| plus_secs(ts(collected_at), m))
        );
        if state == Some(CheckState::Fail) {
            assert_result(found[0], CheckState::Fail, Some(ReasonCode::PostureStale));
        }
    }

    #[test_case(Some("debian"), Some("12"), CheckState::Pass, None ; "at the minimum")]
    #[test_case(Some("debian"), Some("13.1"), CheckState::Pass, None ; "above the minimum")]
    #[test_case(Some("Debian"), Some("12"), CheckState::Pass, None ; "os id in another case")]
    #[test_case(Some("debian"), Some("11.9"), CheckState::Fail, Some(ReasonCode::OsOutdated) ; "below the minimum")]
    #[test_case(Some("debian"), None, CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "no version")]
    #[test_case(Some("debian"), Some(""), CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "empty version")]
    #[test_case(None, Some("12"), CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "no os")]
    #[test_case(Some("freebsd"), None, CheckState::Pass, None ; "unlisted os")]
    fn os_version(
        os: Option<&str>,
        version: Option<&str>,
        state: CheckState,
        code: Option<ReasonCode>,
    ) {
        let mut p = profile();
        p.min_os_versions.insert("debian".into(), "12".into());
        p.min_os_versions.insert("ubuntu".into(), "24.04".into());
        let mut r = report();
        r.os_name = os.map(Into::into);
        r.os_version = version.map(Into::into);
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        assert_result(&only(&outcome, PostureCheck::OsVersion), state, code);
        assert_eq!(outcome.passed(), state == CheckState::Pass);
    }

    #[test]
    fn os_version_not_checked_without_minimums() {
        let mut r = report();
        r.os_name = None;
        let outcome = check_posture(&profile(), Some(&r), ts(NOW));
        assert!(outcome.passed());
    }

    fn set_flag(
        p: &mut PostureProfile,
        r: &mut PostureReport,
        check: PostureCheck,
        state: CheckState,
    ) {
        match check {
            PostureCheck::DiskEncryption => {
                p.require_disk_encryption = true;
                r.disk_encryption = state;
            }
            PostureCheck::Firewall => {
                p.require_firewall = true;
                r.firewall = state;
            }
            PostureCheck::SecureBoot => {
                p.require_secure_boot = true;
                r.secure_boot = state;
            }
            PostureCheck::ScreenLock => {
                p.require_screen_lock = true;
                r.screen_lock = state;
            }
            _ => unreachable!(),
        }
    }

    #[test_case(PostureCheck::DiskEncryption, CheckState::Pass, None)]
    #[test_case(
        PostureCheck::DiskEncryption,
        CheckState::Fail,
        Some(ReasonCode::DiskEncryptionOff)
    )]
    #[test_case(
        PostureCheck::DiskEncryption,
        CheckState::Unknown,
        Some(ReasonCode::PostureUndetermined)
    )]
    #[test_case(PostureCheck::Firewall, CheckState::Pass, None)]
    #[test_case(
        PostureCheck::Firewall,
        CheckState::Fail,
        Some(ReasonCode::FirewallOff)
    )]
    #[test_case(
        PostureCheck::Firewall,
        CheckState::Unknown,
        Some(ReasonCode::PostureUndetermined)
    )]
    #[test_case(PostureCheck::SecureBoot, CheckState::Pass, None)]
    #[test_case(
        PostureCheck::SecureBoot,
        CheckState::Fail,
        Some(ReasonCode::SecureBootOff)
    )]
    #[test_case(
        PostureCheck::SecureBoot,
        CheckState::Unknown,
        Some(ReasonCode::PostureUndetermined)
    )]
    #[test_case(PostureCheck::ScreenLock, CheckState::Pass, None)]
    #[test_case(
        PostureCheck::ScreenLock,
        CheckState::Fail,
        Some(ReasonCode::ScreenLockOff)
    )]
    #[test_case(
        PostureCheck::ScreenLock,
        CheckState::Unknown,
        Some(ReasonCode::PostureUndetermined)
    )]
    fn flag(check: PostureCheck, state: CheckState, code: Option<ReasonCode>) {
        let (mut p, mut r) = (profile(), report());
        set_flag(&mut p, &mut r, check, state);
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        let result = only(&outcome, check);
        assert_result(&result, state, code);
        if state == CheckState::Unknown {
            assert!(
                result
                    .reason
                    .unwrap()
                    .message
                    .contains("could not be determined"),
                "unknown must say so"
            );
        }
    }

    #[test_case(CheckState::Fail ; "off")]
    #[test_case(CheckState::Unknown ; "unknown")]
    fn flags_not_required_are_not_checked(state: CheckState) {
        let mut r = report();
        r.disk_encryption = state;
        r.firewall = state;
        r.secure_boot = state;
        r.screen_lock = state;
        assert!(check_posture(&profile(), Some(&r), ts(NOW)).passed());
    }

    #[test]
    fn firewall_message_says_what_to_do() {
        let (mut p, mut r) = (profile(), report());
        set_flag(&mut p, &mut r, PostureCheck::Firewall, CheckState::Fail);
        let reasons = check_posture(&p, Some(&r), ts(NOW)).reasons();
        assert_eq!(
            reasons[0].message,
            "The firewall is off (no rule set filters incoming traffic): turn it on with \
             `sudo ufw enable`, or `sudo systemctl enable --now firewalld`, or `sudo \
             systemctl enable --now nftables` with an input chain in /etc/nftables.conf that \
             drops or rejects unwanted traffic, then try again."
        );
    }

    #[test_case(Some("debian"), PostureCheck::DiskEncryption, CheckState::Fail, "LUKS" ; "linux disk off")]
    #[test_case(Some("macos"), PostureCheck::DiskEncryption, CheckState::Fail, "turn on FileVault" ; "mac disk off")]
    #[test_case(Some("windows"), PostureCheck::DiskEncryption, CheckState::Fail, "turn on BitLocker" ; "windows disk off")]
    #[test_case(None, PostureCheck::DiskEncryption, CheckState::Fail, "LUKS on Linux, FileVault on macOS, BitLocker on Windows" ; "unnamed disk off")]
    #[test_case(Some("fedora"), PostureCheck::DiskEncryption, CheckState::Unknown, "`lsblk -o NAME,TYPE,MOUNTPOINT`" ; "linux disk unknown")]
    #[test_case(Some("macos"), PostureCheck::DiskEncryption, CheckState::Unknown, "`fdesetup status`" ; "mac disk unknown")]
    #[test_case(Some("windows"), PostureCheck::DiskEncryption, CheckState::Unknown, "`manage-bde -status C:`" ; "windows disk unknown")]
    #[test_case(Some("ubuntu"), PostureCheck::Firewall, CheckState::Unknown, "`sudo nft list ruleset`" ; "linux firewall unknown")]
    #[test_case(Some("macos"), PostureCheck::Firewall, CheckState::Fail, "System Settings → Network → Firewall" ; "mac firewall off")]
    #[test_case(Some("windows"), PostureCheck::Firewall, CheckState::Fail, "Microsoft Defender Firewall" ; "windows firewall off")]
    #[test_case(Some("windows"), PostureCheck::Firewall, CheckState::Unknown, "`netsh advfirewall show allprofiles state`" ; "windows firewall unknown")]
    #[test_case(Some("debian"), PostureCheck::SecureBoot, CheckState::Fail, "Secure boot is off: enable it in the firmware (UEFI) settings" ; "linux secure boot off")]
    #[test_case(Some("debian"), PostureCheck::SecureBoot, CheckState::Unknown, "`mokutil --sb-state`" ; "linux secure boot unknown")]
    #[test_case(Some("windows"), PostureCheck::SecureBoot, CheckState::Unknown, "`Confirm-SecureBootUEFI`" ; "windows secure boot unknown")]
    #[test_case(Some("macos"), PostureCheck::SecureBoot, CheckState::Fail, "Startup Security Utility" ; "mac secure boot off")]
    #[test_case(Some("debian"), PostureCheck::ScreenLock, CheckState::Fail, "Settings → Privacy & Security → Screen Lock" ; "linux screen lock off")]
    #[test_case(Some("debian"), PostureCheck::ScreenLock, CheckState::Unknown, "`/org/gnome/desktop/screensaver/lock-enabled`" ; "linux screen lock unknown")]
    #[test_case(Some("macos"), PostureCheck::ScreenLock, CheckState::Fail, "System Settings → Lock Screen" ; "mac screen lock off")]
    #[test_case(Some("windows"), PostureCheck::ScreenLock, CheckState::Fail, "Settings → Accounts → Sign-in options" ; "windows screen lock off")]
    fn flag_messages_fit_the_device(
        os: Option<&str>,
        check: PostureCheck,
        state: CheckState,
        fix: &str,
    ) {
        let (mut p, mut r) = (profile(), report());
        r.os_name = os.map(Into::into);
        set_flag(&mut p, &mut r, check, state);
        let result = only(&check_posture(&p, Some(&r), ts(NOW)), check);
        let message = result.reason.unwrap().message;
        assert!(message.contains(fix), "{message}");
        assert!(message.ends_with("then try again."), "{message}");
    }

    #[test]
    fn process_message_says_how_to_start_it() {
        let mut p = profile();
        p.required_processes = vec!["osqueryd".into()];
        let reasons = check_posture(&p, Some(&report()), ts(NOW)).reasons();
        assert_eq!(
            reasons[0].message,
            "`osqueryd` is not running on this device, and access here requires it: start it \
             (for a system service usually `sudo systemctl start osqueryd`; `systemctl status \
             osqueryd` tells why it stopped), or ask your IT team to install it, then try \
             again."
        );
    }

    #[test]
    fn version_messages_name_both_versions() {
        let mut p = profile();
        p.min_client_version = Some("0.2.0".into());
        p.min_os_versions.insert("debian".into(), "12".into());
        let mut r = report();
        r.client_version = Some("0.1.5".into());
        r.os_version = Some("11.9".into());
        let messages: Vec<_> = check_posture(&p, Some(&r), ts(NOW))
            .reasons()
            .into_iter()
            .map(|r| r.message)
            .collect();
        assert_eq!(
            messages,
            [
                "This device runs Debian 11.9, and access needs Debian 12 or later: upgrade \
                 the operating system to Debian 12 or later, then try again.",
                "This Postern client is version 0.1.5; version 0.2.0 or later is required: \
                 update Postern, then try again.",
            ]
        );
    }

    #[test]
    fn rolling_release_without_version_says_how_to_check() {
        let mut p = profile();
        p.min_os_versions.insert("arch".into(), "1".into());
        let mut r = report();
        r.os_name = Some("arch".into());
        r.os_version = None;
        let result = only(
            &check_posture(&p, Some(&r), ts(NOW)),
            PostureCheck::OsVersion,
        );
        let message = result.reason.unwrap().message;
        assert!(message.contains("Arch Linux"), "{message}");
        assert!(message.contains("`cat /etc/os-release`"), "{message}");
    }

    #[test_case(&["falcon-sensor"], &[CheckState::Pass] ; "running")]
    #[test_case(&["falcon-sensor", "osqueryd"], &[CheckState::Pass, CheckState::Fail] ; "one missing")]
    #[test_case(&["Falcon-Sensor"], &[CheckState::Fail] ; "names are exact")]
    fn processes(required: &[&str], states: &[CheckState]) {
        let mut p = profile();
        p.required_processes = required.iter().map(|s| s.to_string()).collect();
        let outcome = check_posture(&p, Some(&report()), ts(NOW));
        let found: Vec<_> = outcome
            .checks
            .iter()
            .filter(|c| c.check == PostureCheck::Process)
            .collect();
        assert_eq!(found.iter().map(|c| c.state).collect::<Vec<_>>(), states);
        for c in found {
            let code = (c.state == CheckState::Fail).then_some(ReasonCode::ProcessMissing);
            assert_result(c, c.state, code);
        }
    }

    #[test_case(Some("0.1.0"), CheckState::Pass, None ; "equal")]
    #[test_case(Some("0.10.0"), CheckState::Pass, None ; "newer")]
    #[test_case(Some("0.0.9"), CheckState::Fail, Some(ReasonCode::ClientOutdated) ; "older")]
    #[test_case(None, CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "unknown")]
    fn client_version(version: Option<&str>, state: CheckState, code: Option<ReasonCode>) {
        let mut p = profile();
        p.min_client_version = Some("0.1.0".into());
        let mut r = report();
        r.client_version = version.map(Into::into);
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        assert_result(&only(&outcome, PostureCheck::ClientVersion), state, code);
    }

    #[test_case(Some("ABC123"), CheckState::Pass, None ; "listed")]
    #[test_case(Some(" abc123 "), CheckState::Pass, None ; "listed in another case")]
    #[test_case(Some("XYZ999"), CheckState::Fail, Some(ReasonCode::SerialNotAllowed) ; "not listed")]
    #[test_case(None, CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "unreadable")]
    #[test_case(Some(""), CheckState::Unknown, Some(ReasonCode::PostureUndetermined) ; "empty")]
    fn serial(serial: Option<&str>, state: CheckState, code: Option<ReasonCode>) {
        let mut p = profile();
        p.serial_allowlist = vec!["ABC123".into(), "DEF456".into()];
        let mut r = report();
        r.serial = serial.map(Into::into);
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        assert_result(&only(&outcome, PostureCheck::Serial), state, code);
    }

    #[test]
    fn every_failure_is_reported_in_order() {
        let mut p = profile();
        p.require_disk_encryption = true;
        p.require_firewall = true;
        p.required_processes = vec!["osqueryd".into()];
        let mut r = report();
        r.disk_encryption = CheckState::Fail;
        r.firewall = CheckState::Unknown;
        let outcome = check_posture(&p, Some(&r), ts(NOW));
        let codes: Vec<_> = outcome.failures().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                ReasonCode::DiskEncryptionOff,
                ReasonCode::PostureUndetermined,
                ReasonCode::ProcessMissing
            ]
        );
        for c in &outcome.checks {
            assert_eq!(c.reason.is_none(), c.state == CheckState::Pass);
        }
    }

    #[test]
    fn extreme_ages_saturate() {
        let mut p = profile();
        p.max_report_age_secs = Some(u64::MAX);
        let outcome = check_posture(&p, Some(&report()), ts(NOW));
        assert!(outcome.passed());
        assert_eq!(outcome.fresh_until, Some(Timestamp::MAX));
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::sample::{select, subsequence};

        use super::*;

        fn state() -> impl Strategy<Value = CheckState> {
            select(&[CheckState::Pass, CheckState::Fail, CheckState::Unknown][..])
        }

        fn text(options: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
            prop::option::of(select(options).prop_map(String::from))
        }

        fn any_profile() -> impl Strategy<Value = PostureProfile> {
            (
                prop::array::uniform4(any::<bool>()),
                subsequence(
                    &[
                        ("debian", "12"),
                        ("macos", "14.1"),
                        ("windows", "10.0.22631"),
                    ][..],
                    0..=3,
                ),
                subsequence(&["falcon-sensor", "osqueryd"][..], 0..=2),
                text(&["0.1.0", "1.0", "2"]),
                prop::option::of(subsequence(&["ABC123", "DEF456"][..], 0..=2)),
                prop::option::of(0u64..100_000),
            )
                .prop_map(|(flags, mins, processes, client, serials, age)| {
                    PostureProfile {
                        id: "00000000-0000-0000-0000-000000000001".parse().unwrap(),
                        name: "p".into(),
                        min_os_versions: mins
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                        require_disk_encryption: flags[0],
                        require_firewall: flags[1],
                        require_secure_boot: flags[2],
                        require_screen_lock: flags[3],
                        required_processes: processes.into_iter().map(String::from).collect(),
                        min_client_version: client,
                        serial_allowlist: serials
                            .unwrap_or_default()
                            .into_iter()
                            .map(String::from)
                            .collect(),
                        max_report_age_secs: age,
                    }
                })
        }

        fn any_report() -> impl Strategy<Value = PostureReport> {
            (
                -200_000i64..1_000,
                text(&["debian", "Ubuntu", "macos", "windows", "arch", ""]),
                text(&["12", "11.9", "14.0", "10.0.19045", "", "rolling"]),
                prop::array::uniform4(state()),
                subsequence(&["falcon-sensor", "osqueryd"][..], 0..=2),
                text(&["0.1.0", "0.0.1", "2.0", "", "dev"]),
                text(&["ABC123", "zzz", " ", ""]),
            )
                .prop_map(|(age, os, version, states, processes, client, serial)| {
                    PostureReport {
                        collected_at: Timestamp::new(ts(NOW).as_second() + age, 0).unwrap(),
                        os_name: os,
                        os_version: version,
                        kernel_version: None,
                        disk_encryption: states[0],
                        firewall: states[1],
                        secure_boot: states[2],
                        screen_lock: states[3],
                        processes: processes.into_iter().map(String::from).collect(),
                        client_version: client,
                        hostname: None,
                        serial,
                    }
                })
        }

        proptest! {
            /// Every check that does not pass says why and what to do, unknown says that it
            /// could not be determined, and the checks come in their fixed order.
            #[test]
            fn every_failure_is_actionable(
                profile in any_profile(),
                report in prop::option::of(any_report()),
            ) {
                let outcome = check_posture(&profile, report.as_ref(), ts(NOW));
                prop_assert!(outcome.checks.windows(2).all(|w| w[0].check <= w[1].check));
                prop_assert_eq!(outcome.passed(), outcome.failures().next().is_none());
                for c in &outcome.checks {
                    match (&c.reason, c.state) {
                        (None, CheckState::Pass) => {}
                        (Some(r), CheckState::Unknown) => {
                            prop_assert_eq!(r.code, ReasonCode::PostureUndetermined);
                            prop_assert!(r.message.contains("could not be determined"), "{}", r.message);
                        }
                        (Some(r), CheckState::Fail) => {
                            prop_assert_ne!(r.code, ReasonCode::PostureUndetermined);
                        }
                        _ => prop_assert!(false, "reason and state disagree: {:?}", c),
                    }
                    if let Some(r) = &c.reason {
                        let m = &r.message;
                        prop_assert!(m.ends_with('.'), "{}", m);
                        prop_assert!(m.contains(": "), "no fix after the problem: {}", m);
                        prop_assert!(
                            m.contains("try again") || m.contains("administrator"),
                            "{}", m
                        );
                        prop_assert!(!m.contains("  ") && !m.contains('\n'), "{:?}", m);
                    }
                }
            }
        }
    }
}
