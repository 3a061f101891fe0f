//! How times, durations and keys are written on the pages.

use jiff::Timestamp;

/// A time as `2026-11-25 09:30 UTC`.
pub fn datetime(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 48 * 3600 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 || h >= 10 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else {
        format!("{} days", s / 86_400)
    }
}

/// How long ago `t` was, seen at `now`: `just now`, `5 min ago`, `3 days ago`; a time in the
/// future reads `in 5 min`.
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second() - t.as_second();
    if (0..10).contains(&secs) {
        "just now".to_owned()
    } else if secs < 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(secs))
    }
}

/// How long until `t` at `now`: `in 59 min`, or `expired` when it has passed.
pub fn expires_in(t: Timestamp, now: Timestamp) -> String {
    let secs = t.as_second() - now.as_second();
    if secs <= 0 {
        "expired".to_owned()
    } else {
        format!("in {}", span(secs))
    }
}

/// A duration in seconds in words: `8 h`, `30 min`, `90 s`, `7 days`.
pub fn duration_secs(secs: u64) -> String {
    if secs == 0 {
        return "0 s".to_owned();
    }
    if secs.is_multiple_of(86_400) {
        let d = secs / 86_400;
        return if d == 1 {
            "1 day".to_owned()
        } else {
            format!("{d} days")
        };
    }
    if secs.is_multiple_of(3600) {
        return format!("{} h", secs / 3600);
    }
    if secs.is_multiple_of(60) {
        return format!("{} min", secs / 60);
    }
    format!("{secs} s")
}

/// The start of a base64 key, enough to tell keys apart: `k3Yb9Q…`.
pub fn short_key(key: &str) -> String {
    let head: String = key.chars().take(8).collect();
    if head.len() < key.len() {
        format!("{head}…")
    } else {
        head
    }
}

/// Up to two initials of a name for the avatar: `Ann Lee` → `AL`.
pub fn initials(name: &str) -> String {
    let out: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    if out.is_empty() { "?".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test_case(0, "just now")]
    #[test_case(9, "just now")]
    #[test_case(45, "45 s ago")]
    #[test_case(300, "5 min ago")]
    #[test_case(3600, "1 h ago")]
    #[test_case(5400, "1 h 30 min ago")]
    #[test_case(3 * 86_400, "3 days ago")]
    #[test_case(-300, "in 5 min")]
    fn ago_reads_naturally(secs_before: i64, want: &str) {
        let now = at(1_800_000_000);
        assert_eq!(ago(at(1_800_000_000 - secs_before), now), want);
    }

    #[test]
    fn expiry() {
        let now = at(1_800_000_000);
        assert_eq!(expires_in(at(1_800_000_000 + 3540), now), "in 59 min");
        assert_eq!(expires_in(now, now), "expired");
    }

    #[test_case(28_800, "8 h")]
    #[test_case(1800, "30 min")]
    #[test_case(90, "90 s")]
    #[test_case(86_400, "1 day")]
    #[test_case(604_800, "7 days")]
    fn durations(secs: u64, want: &str) {
        assert_eq!(duration_secs(secs), want);
    }

    #[test]
    fn datetime_is_utc_minutes() {
        assert_eq!(
            datetime("2026-11-25T09:30:59Z".parse().unwrap()),
            "2026-11-25 09:30 UTC"
        );
    }

    #[test]
    fn keys_and_initials() {
        assert_eq!(short_key("abcdefghijkl"), "abcdefgh…");
        assert_eq!(short_key("abc"), "abc");
        assert_eq!(initials("Ann Lee"), "AL");
        assert_eq!(initials("ann"), "A");
        assert_eq!(initials("  "), "?");
    }
}
