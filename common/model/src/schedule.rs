use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A day of the week, as written in time windows.
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
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    fn of(date: Date) -> Self {
        match date.weekday() {
            jiff::civil::Weekday::Monday => Weekday::Mon,
            jiff::civil::Weekday::Tuesday => Weekday::Tue,
            jiff::civil::Weekday::Wednesday => Weekday::Wed,
            jiff::civil::Weekday::Thursday => Weekday::Thu,
            jiff::civil::Weekday::Friday => Weekday::Fri,
            jiff::civil::Weekday::Saturday => Weekday::Sat,
            jiff::civil::Weekday::Sunday => Weekday::Sun,
        }
    }
}

/// A wall-clock time of day, `HH:MM`, from `00:00` to `24:00` (end of day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Clock {
    minutes: u16,
}

impl Clock {
    /// The end of the day, `24:00`.
    pub const END_OF_DAY: Clock = Clock { minutes: 24 * 60 };

    /// A time from hours and minutes; `None` past `24:00`.
    pub fn new(hours: u16, minutes: u16) -> Option<Self> {
        let total = hours.checked_mul(60)?.checked_add(minutes)?;
        (minutes < 60 && total <= 24 * 60).then_some(Self { minutes: total })
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.minutes
    }
}

impl FromStr for Clock {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadClock(s.to_owned());
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        Clock::new(h, m).ok_or_else(bad)
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl Serialize for Clock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Clock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why a schedule is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A time of day is not `HH:MM` between `00:00` and `24:00`.
    #[error("`{0}` is not a time of day: use HH:MM from 00:00 to 24:00")]
    BadClock(String),
    /// The time zone is not in the IANA database.
    #[error("unknown time zone `{0}`: use an IANA name such as Europe/Berlin")]
    UnknownTimeZone(String),
    /// A window has no days.
    #[error("a time window needs at least one day")]
    NoDays,
    /// A window starts and ends at the same time.
    #[error("the window starts and ends at {0}: it would be empty")]
    Empty(Clock),
    /// `24:00` can only end a window.
    #[error("24:00 can only end a window")]
    StartAtEndOfDay,
}

/// A weekly window of access: on each of `days`, from `start` to `end` in the policy's time
/// zone. A window whose end is before its start runs past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimeWindow {
    /// The days on which the window opens.
    pub days: Vec<Weekday>,
    /// When it opens, `HH:MM`.
    #[schema(value_type = String, example = "09:00")]
    pub start: Clock,
    /// When it closes, `HH:MM` (`24:00` for midnight at the end of the day).
    #[schema(value_type = String, example = "18:00")]
    pub end: Clock,
}

impl TimeWindow {
    /// Checks that the window is well formed.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.days.is_empty() {
            return Err(ScheduleError::NoDays);
        }
        if self.start == Clock::END_OF_DAY {
            return Err(ScheduleError::StartAtEndOfDay);
        }
        if self.start == self.end {
            return Err(ScheduleError::Empty(self.start));
        }
        Ok(())
    }

    /// If `now` lies inside this window in `tz`, the instant the window closes.
    pub fn current_end(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = now.to_zoned(tz.clone());
        let date = local.date();
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        let (start, end) = (self.start.minutes, self.end.minutes);
        let open_on = |d: Date| self.days.contains(&Weekday::of(d));
        if start < end {
            if open_on(date) && (start..end).contains(&minute) {
                return Some(at(date, self.end, tz));
            }
        } else {
            if open_on(date) && minute >= start {
                return Some(at(date.tomorrow().ok()?, self.end, tz));
            }
            if open_on(date.yesterday().ok()?) && minute < end {
                return Some(at(date, self.end, tz));
            }
        }
        None
    }
}

/// The instant of `clock` on `date` in `tz` (the later instant across a DST gap).
fn at(date: Date, clock: Clock, tz: &TimeZone) -> Timestamp {
    let (date, minutes) = if clock == Clock::END_OF_DAY {
        (date.tomorrow().unwrap_or(date), 0)
    } else {
        (date, clock.minutes)
    };
    let civil = date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    tz.to_ambiguous_zoned(civil)
        .later()
        .map_or(Timestamp::MAX, |z| z.timestamp())
}

/// Looks up an IANA time zone by name.
pub fn time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(days: &[Weekday], start: &str, end: &str) -> TimeWindow {
        TimeWindow {
            days: days.to_vec(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    #[test]
    fn office_hours_in_berlin() {
        let tz = time_zone("Europe/Berlin").unwrap();
        let w = window(
            &[
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            "09:00",
            "18:00",
        );
        // Wednesday 2026-11-25 10:00 CET = 09:00 UTC.
        assert_eq!(
            w.current_end(ts("2026-11-25T09:00:00Z"), &tz),
            Some(ts("2026-11-25T17:00:00Z"))
        );
        // 08:59 CET: closed.
        assert_eq!(w.current_end(ts("2026-11-25T07:59:00Z"), &tz), None);
        // Saturday: closed.
        assert_eq!(w.current_end(ts("2026-11-28T10:00:00Z"), &tz), None);
    }

    #[test]
    fn overnight_window_runs_into_the_next_day() {
        let tz = TimeZone::UTC;
        let w = window(&[Weekday::Fri], "22:00", "06:00");
        assert_eq!(
            w.current_end(ts("2026-11-27T23:00:00Z"), &tz),
            Some(ts("2026-11-28T06:00:00Z"))
        );
        assert_eq!(
            w.current_end(ts("2026-11-28T05:59:00Z"), &tz),
            Some(ts("2026-11-28T06:00:00Z"))
        );
        assert_eq!(w.current_end(ts("2026-11-28T06:00:00Z"), &tz), None);
        assert_eq!(w.current_end(ts("2026-11-26T23:00:00Z"), &tz), None);
    }

    #[test]
    fn end_of_day_is_midnight() {
        let w = window(&[Weekday::Wed], "00:00", "24:00");
        assert_eq!(
            w.current_end(ts("2026-11-25T12:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-11-26T00:00:00Z"))
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!("25:00".parse::<Clock>().is_err());
        assert!("24:01".parse::<Clock>().is_err());
        assert!("9:5".parse::<Clock>().is_err());
        assert!(window(&[], "09:00", "10:00").validate().is_err());
        assert!(
            window(&[Weekday::Mon], "10:00", "10:00")
                .validate()
                .is_err()
        );
        assert!(
            window(&[Weekday::Mon], "24:00", "10:00")
                .validate()
                .is_err()
        );
        assert!(time_zone("Mars/Olympus").is_err());
    }
}
