//! Failed sign-ins for e-mail addresses without a local account, so that they lock like
//! real accounts do.

use jiff::Timestamp;

/// Failed sign-ins before an account locks.
pub const MAX_FAILED_SIGN_INS: i64 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// Failed sign-ins per e-mail address that has no local account, kept in memory: they lock
/// after the same number of failures as a real account, so a lockout does not reveal that an
/// account exists. Bounded; forgetting entries only weakens that disguise, never security.
#[derive(Debug, Default)]
pub(crate) struct UnknownSignIns {
    entries: std::sync::Mutex<std::collections::HashMap<String, (i64, Option<Timestamp>)>>,
}

/// What a failed sign-in for an unknown address leads to.
pub(crate) enum UnknownOutcome {
    Failed,
    Locked(Timestamp),
    StillLocked(Timestamp),
}

impl UnknownSignIns {
    const MAX_ENTRIES: usize = 10_000;

    pub(crate) fn locked_until(&self, email: &str, now: Timestamp) -> Option<Timestamp> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(email)
            .and_then(|(_, until)| *until)
            .filter(|u| *u > now)
    }

    pub(crate) fn fail(&self, email: &str, now: Timestamp) -> UnknownOutcome {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX_ENTRIES && !entries.contains_key(email) {
            entries.retain(|_, (_, until)| until.is_some_and(|u| u > now));
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        let entry = entries.entry(email.to_owned()).or_insert((0, None));
        if let Some(until) = entry.1.filter(|u| *u > now) {
            return UnknownOutcome::StillLocked(until);
        }
        entry.0 += 1;
        if entry.0 >= MAX_FAILED_SIGN_INS {
            let until = now.checked_add(LOCKOUT).unwrap_or(Timestamp::MAX);
            *entry = (0, Some(until));
            UnknownOutcome::Locked(until)
        } else {
            UnknownOutcome::Failed
        }
    }
}
