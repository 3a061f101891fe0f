use std::fmt;

use serde::{Deserialize, Serialize};

/// Why access was denied (or a posture check failed), as a code a program can match.
///
/// The order of the variants is the order in which reasons are listed to the user.
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
pub enum ReasonCode {
    /// The user's account is disabled.
    UserDisabled,
    /// The device is disabled.
    DeviceDisabled,
    /// The device belongs to another user.
    DeviceNotOwned,
    /// No enabled allow policy gives any of the user's groups access to the resource.
    NoPolicy,
    /// A deny policy for the resource applies.
    DeniedByPolicy,
    /// The policy's time zone is not in the time zone database.
    UnknownTimeZone,
    /// The policy refers to a posture profile that does not exist.
    UnknownPostureProfile,
    /// The policy grants sessions of zero length.
    EmptySession,
    /// The user signed in with another identity provider than the policy requires.
    WrongIdentityProvider,
    /// The request comes from an address outside the policy's source ranges.
    SourceNotAllowed,
    /// The user's last multi-factor sign-in is missing or older than the policy allows.
    MfaTooOld,
    /// The current time is outside every time window of the policy.
    OutsideTimeWindow,
    /// The device has sent no posture report.
    PostureMissing,
    /// The device's posture report is dated more than five minutes in the future.
    PostureFromFuture,
    /// The device's posture report is older than the profile allows.
    PostureStale,
    /// A posture check could not be determined from the report.
    PostureUndetermined,
    /// The operating system version is below the profile's minimum.
    OsOutdated,
    /// The system disk is not encrypted.
    DiskEncryptionOff,
    /// No firewall rule set filters incoming traffic.
    FirewallOff,
    /// Secure boot is off.
    SecureBootOff,
    /// No screen lock is configured.
    ScreenLockOff,
    /// A required process is not running.
    ProcessMissing,
    /// The Postern client is older than the profile's minimum.
    ClientOutdated,
    /// The device's serial number is not on the profile's allow-list.
    SerialNotAllowed,
    /// A grant reached the end of its session (its policy's maximum session length) while
    /// the decision still allowed it: the client asks again.
    SessionEnded,
    /// The user, device or resource a grant was issued for no longer exists.
    SubjectGone,
}

impl ReasonCode {
    /// The code as written in JSON and audit events, e.g. `firewall_off`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::UserDisabled => "user_disabled",
            ReasonCode::DeviceDisabled => "device_disabled",
            ReasonCode::DeviceNotOwned => "device_not_owned",
            ReasonCode::NoPolicy => "no_policy",
            ReasonCode::DeniedByPolicy => "denied_by_policy",
            ReasonCode::UnknownTimeZone => "unknown_time_zone",
            ReasonCode::UnknownPostureProfile => "unknown_posture_profile",
            ReasonCode::EmptySession => "empty_session",
            ReasonCode::WrongIdentityProvider => "wrong_identity_provider",
            ReasonCode::SourceNotAllowed => "source_not_allowed",
            ReasonCode::MfaTooOld => "mfa_too_old",
            ReasonCode::OutsideTimeWindow => "outside_time_window",
            ReasonCode::PostureMissing => "posture_missing",
            ReasonCode::PostureFromFuture => "posture_from_future",
            ReasonCode::PostureStale => "posture_stale",
            ReasonCode::PostureUndetermined => "posture_undetermined",
            ReasonCode::OsOutdated => "os_outdated",
            ReasonCode::DiskEncryptionOff => "disk_encryption_off",
            ReasonCode::FirewallOff => "firewall_off",
            ReasonCode::SecureBootOff => "secure_boot_off",
            ReasonCode::ScreenLockOff => "screen_lock_off",
            ReasonCode::ProcessMissing => "process_missing",
            ReasonCode::ClientOutdated => "client_outdated",
            ReasonCode::SerialNotAllowed => "serial_not_allowed",
            ReasonCode::SessionEnded => "session_ended",
            ReasonCode::SubjectGone => "subject_gone",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason for a denial: a code for programs and a sentence a person can act on.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Reason {
    /// What went wrong, for programs.
    pub code: ReasonCode,
    /// What went wrong and what to do about it, for people.
    pub message: String,
}

impl Reason {
    /// A reason with `code` and `message`.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Describes a number of seconds in the largest unit that divides it, e.g. `5 minutes`.
pub(crate) fn describe_secs(secs: u64) -> String {
    let (n, unit) = match secs {
        0 => (0, "second"),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case(0, "0 seconds")]
    #[test_case(1, "1 second")]
    #[test_case(90, "90 seconds")]
    #[test_case(300, "5 minutes")]
    #[test_case(3_600, "1 hour")]
    #[test_case(5_400, "90 minutes")]
    #[test_case(172_800, "2 days")]
    fn describes_durations(secs: u64, text: &str) {
        assert_eq!(describe_secs(secs), text);
    }

    #[test]
    fn as_str_matches_serde() {
        for code in [
            ReasonCode::UserDisabled,
            ReasonCode::NoPolicy,
            ReasonCode::MfaTooOld,
            ReasonCode::PostureUndetermined,
            ReasonCode::SerialNotAllowed,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
