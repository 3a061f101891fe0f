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
             running and up to date, then try again."
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
                     allowed: make sure the Postern client is running so that it sends a \
                     fresh report, then try again.",
                    report.collected_at,
                    describe_secs(max)
                ),
            );
        }
    }

    check_os(&mut checks, profile, report);
    check_flags(&mut checks, profile, report);

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
                format!(
                    "`{process}` is not running on this device: start it (it is required \
                     here) and try again."
                ),
            );
        }
    }

    check_client(&mut checks, profile, report);
    check_serial(&mut checks, profile, report);

    PostureOutcome {
        checks: checks.0,
        fresh_until,
    }
}

fn check_os(checks: &mut Checks, profile: &PostureProfile, report: &PostureReport) {
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
             a minimum version of it: update the Postern client and try again."
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
    let version = report.os_version.as_deref().unwrap_or("");
    match compare_versions(version, min) {
        Some(Ordering::Greater | Ordering::Equal) => checks.pass(PostureCheck::OsVersion, NAME),
        Some(Ordering::Less) => checks.fail(
            PostureCheck::OsVersion,
            NAME,
            CheckState::Fail,
            ReasonCode::OsOutdated,
            format!("{os} {version} is too old: update to {os} {min} or later and try again."),
        ),
        None => checks.fail(
            PostureCheck::OsVersion,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            format!(
                "The version of {os} on this device could not be determined, and access \
                 needs {os} {min} or later: update the Postern client and try again."
            ),
        ),
    }
}

/// A yes/no requirement: its check, label, whether the profile requires it, the reported
/// state, the code when off, what to do when off, and what could not be determined.
type Flag = (
    PostureCheck,
    &'static str,
    bool,
    CheckState,
    ReasonCode,
    &'static str,
    &'static str,
);

fn check_flags(checks: &mut Checks, profile: &PostureProfile, report: &PostureReport) {
    let flags: [Flag; 4] = [
        (
            PostureCheck::DiskEncryption,
            "Disk encryption",
            profile.require_disk_encryption,
            report.disk_encryption,
            ReasonCode::DiskEncryptionOff,
            "Disk encryption is off: encrypt the system disk (LUKS on Linux, FileVault on \
             macOS, BitLocker on Windows) and try again.",
            "Whether the system disk is encrypted could not be determined: make sure the \
             Postern client runs with the permissions it needs and try again.",
        ),
        (
            PostureCheck::Firewall,
            "Firewall",
            profile.require_firewall,
            report.firewall,
            ReasonCode::FirewallOff,
            "The firewall is off: turn it on (for example `sudo ufw enable`) and try again.",
            "Whether the firewall is on could not be determined: make sure the Postern \
             client runs with the permissions it needs and try again.",
        ),
        (
            PostureCheck::SecureBoot,
            "Secure boot",
            profile.require_secure_boot,
            report.secure_boot,
            ReasonCode::SecureBootOff,
            "Secure boot is off: turn it on in the firmware (BIOS/UEFI) settings and try \
             again.",
            "Whether secure boot is on could not be determined: make sure the Postern \
             client runs with the permissions it needs and try again.",
        ),
        (
            PostureCheck::ScreenLock,
            "Screen lock",
            profile.require_screen_lock,
            report.screen_lock,
            ReasonCode::ScreenLockOff,
            "No screen lock is set up: turn on a screen lock with a password and try again.",
            "Whether a screen lock is set up could not be determined: make sure the Postern \
             client runs in your desktop session and try again.",
        ),
    ];
    for (check, name, required, state, code, when_off, when_unknown) in flags {
        if !required {
            continue;
        }
        match state {
            CheckState::Pass => checks.pass(check, name),
            CheckState::Fail => checks.fail(check, name, state, code, when_off.to_owned()),
            CheckState::Unknown => checks.fail(
                check,
                name,
                state,
                ReasonCode::PostureUndetermined,
                when_unknown.to_owned(),
            ),
        }
    }
}

fn check_client(checks: &mut Checks, profile: &PostureProfile, report: &PostureReport) {
    const NAME: &str = "Postern client version";
    let Some(min) = profile.min_client_version.as_deref() else {
        return;
    };
    let version = report.client_version.as_deref().unwrap_or("");
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
                "Postern client {version} is too old: update it to {min} or later and try \
                 again."
            ),
        ),
        None => checks.fail(
            PostureCheck::ClientVersion,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            format!(
                "The Postern client's version could not be determined: update the client to \
                 {min} or later and try again."
            ),
        ),
    }
}

fn check_serial(checks: &mut Checks, profile: &PostureProfile, report: &PostureReport) {
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
        checks.fail(
            PostureCheck::Serial,
            NAME,
            CheckState::Unknown,
            ReasonCode::PostureUndetermined,
            "This device's serial number could not be read, and only listed devices are \
             allowed: make sure the Postern client runs with the permissions it needs, or \
             ask an administrator."
                .to_owned(),
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
            "The firewall is off: turn it on (for example `sudo ufw enable`) and try again."
        );
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
}
