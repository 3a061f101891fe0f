use jiff::Timestamp;
use jiff::tz::TimeZone;
use model::{TimeWindow, Weekday};

/// How many stretches of unchanged coverage [`windows_end`] follows before it settles for
/// the end it has found so far (which is then earlier than the real end, never later).
const MAX_STEPS: usize = 64;

/// If `now` lies in one of `windows` in `tz`, the first instant after `now` at which none of
/// them holds any more; `None` when no window holds at `now`.
///
/// Windows that continue one another back to back (Monday all day, Tuesday all day) count
/// as one stretch. The search stops at `horizon`: the result is then some instant at or
/// after `horizon` up to which a window holds throughout.
///
/// Between two offset transitions of `tz` local time runs evenly, so each window is asked
/// for its end in the fixed offset of the current stretch, and the walk restarts at every
/// transition. This keeps the result exact across daylight-saving changes, where a window
/// end in the skipped or repeated hour is otherwise resolved to the wrong instant.
pub(crate) fn windows_end(
    windows: &[TimeWindow],
    tz: &TimeZone,
    now: Timestamp,
    horizon: Timestamp,
) -> Option<Timestamp> {
    let mut t = now;
    for step in 0..MAX_STEPS {
        let fixed = TimeZone::fixed(tz.to_offset(t));
        let Some(end) = windows
            .iter()
            .filter_map(|w| w.current_end(t, &fixed))
            .max()
        else {
            return (step > 0).then_some(t);
        };
        let transition = tz
            .following(t)
            .take(2)
            .map(|tr| tr.timestamp())
            .find(|&tr| tr > t);
        let next = match transition {
            Some(tr) if tr < end => tr,
            _ => end,
        };
        if next <= t {
            // Not reachable with a well-behaved time zone; never loop without progress.
            return (step > 0).then_some(t);
        }
        if next >= horizon {
            return Some(next);
        }
        t = next;
    }
    Some(t)
}

/// Describes windows for a person, e.g. `Mon, Tue, Wed 09:00-18:00 and Sat 10:00-12:00`.
pub(crate) fn describe_windows(windows: &[TimeWindow]) -> String {
    let parts: Vec<String> = windows
        .iter()
        .map(|w| {
            let days: Vec<&str> = w.days.iter().map(|&d| day_name(d)).collect();
            format!("{} {}-{}", days.join(", "), w.start, w.end)
        })
        .collect();
    parts.join(" and ")
}

fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Mon",
        Weekday::Tue => "Tue",
        Weekday::Wed => "Wed",
        Weekday::Thu => "Thu",
        Weekday::Fri => "Fri",
        Weekday::Sat => "Sat",
        Weekday::Sun => "Sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

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

    const WEEKDAYS: &[Weekday] = &[
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];

    // 2026-11-25 is a Wednesday; Berlin is UTC+1 then.
    #[test_case("2026-11-25T09:00:00Z", Some("2026-11-25T17:00:00Z") ; "inside office hours")]
    #[test_case("2026-11-25T16:59:59Z", Some("2026-11-25T17:00:00Z") ; "last second")]
    #[test_case("2026-11-25T17:00:00Z", None ; "at the end")]
    #[test_case("2026-11-25T07:59:00Z", None ; "before the start")]
    #[test_case("2026-11-28T10:00:00Z", None ; "saturday")]
    fn office_hours(now: &str, end: Option<&str>) {
        let tz = model::time_zone("Europe/Berlin").unwrap();
        let windows = [window(WEEKDAYS, "09:00", "18:00")];
        assert_eq!(
            windows_end(&windows, &tz, ts(now), Timestamp::MAX),
            end.map(ts)
        );
    }

    #[test]
    fn back_to_back_windows_are_one_stretch() {
        let windows = [
            window(&[Weekday::Mon, Weekday::Tue], "00:00", "24:00"),
            window(&[Weekday::Wed], "00:00", "12:00"),
        ];
        // Monday 2026-11-23 10:00 UTC: covered until Wednesday noon.
        let end = windows_end(
            &windows,
            &TimeZone::UTC,
            ts("2026-11-23T10:00:00Z"),
            Timestamp::MAX,
        );
        assert_eq!(end, Some(ts("2026-11-25T12:00:00Z")));
    }

    #[test]
    fn overlapping_windows_extend_each_other() {
        let windows = [
            window(WEEKDAYS, "09:00", "12:00"),
            window(WEEKDAYS, "11:00", "14:00"),
        ];
        let end = windows_end(
            &windows,
            &TimeZone::UTC,
            ts("2026-11-25T10:00:00Z"),
            Timestamp::MAX,
        );
        assert_eq!(end, Some(ts("2026-11-25T14:00:00Z")));
    }

    #[test]
    fn stops_at_the_horizon() {
        let every_day = [window(
            &[
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ],
            "00:00",
            "24:00",
        )];
        let now = ts("2026-11-25T10:00:00Z");
        let end = windows_end(&every_day, &TimeZone::UTC, now, ts("2026-11-27T10:00:00Z"));
        // The first midnight at or after the horizon.
        assert_eq!(end, Some(ts("2026-11-28T00:00:00Z")));
    }

    // Berlin springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
    #[test]
    fn window_ending_in_the_skipped_hour_ends_at_the_jump() {
        let tz = model::time_zone("Europe/Berlin").unwrap();
        let windows = [window(&[Weekday::Sun], "01:00", "02:30")];
        let end = windows_end(&windows, &tz, ts("2026-03-29T00:10:00Z"), Timestamp::MAX);
        assert_eq!(end, Some(ts("2026-03-29T01:00:00Z")));
    }

    // Berlin falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
    #[test]
    fn window_ending_in_the_repeated_hour_ends_at_its_first_occurrence() {
        let tz = model::time_zone("Europe/Berlin").unwrap();
        let windows = [window(&[Weekday::Sun], "01:00", "02:30")];
        let end = windows_end(&windows, &tz, ts("2026-10-24T23:10:00Z"), Timestamp::MAX);
        assert_eq!(end, Some(ts("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn all_day_across_the_repeated_hour() {
        let tz = model::time_zone("Europe/Berlin").unwrap();
        let windows = [window(&[Weekday::Sun], "00:00", "24:00")];
        let end = windows_end(&windows, &tz, ts("2026-10-24T23:10:00Z"), Timestamp::MAX);
        // Midnight CET at the end of Sunday.
        assert_eq!(end, Some(ts("2026-10-25T23:00:00Z")));
    }

    #[test]
    fn describes_windows() {
        let windows = [
            window(WEEKDAYS, "09:00", "18:00"),
            window(&[Weekday::Sat], "22:00", "24:00"),
        ];
        assert_eq!(
            describe_windows(&windows),
            "Mon, Tue, Wed, Thu, Fri 09:00-18:00 and Sat 22:00-24:00"
        );
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let every_day = [window(&[Weekday::Mon, Weekday::Sun], "00:00", "24:00")];
        for tz in [
            TimeZone::UTC,
            model::time_zone("Pacific/Kiritimati").unwrap(),
        ] {
            for now in [Timestamp::MIN, Timestamp::MAX] {
                let _ = windows_end(&every_day, &tz, now, Timestamp::MAX);
            }
        }
    }
}
