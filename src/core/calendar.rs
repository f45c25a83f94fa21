//! Calendar arithmetic on event time: UTC days, months, hours and weekdays, and their labels.
//!
//! Every day/month/hour/weekday computation of the crate goes through here, so there is one
//! definition of "the day of an event" (a UTC day, as MovieLens's timestamps are UTC) and one
//! place to test it. Pure arithmetic: no clock, no time zone database.
//!
//! May import: nothing of the crate (chrono for the range the fast path does not cover).

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// The UTC day number of an event time (days since 1970-01-01).
#[inline]
pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY)
}

/// UTC times (seconds) of the years 0 to 9999, for which the calendar arithmetic below is used;
/// chrono answers outside them, as it did everywhere (it ran four times per event, ~5 % of the
/// processing thread). A test checks both agree on every day of the range.
const CALENDAR: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// Year and month (0-based) of a day number (days since 1970-01-01), in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // March-based month mp → January-based, 0-based.
    let m0 = if mp < 10 { mp + 2 } else { mp - 10 };
    (yoe + era * 400 + i64::from(m0 < 2), m0)
}

/// Months since 0000-01 of a UTC time (`year * 12 + month0`).
#[inline]
pub fn month_index(ts: i64) -> i32 {
    if CALENDAR.contains(&ts) {
        let (y, m0) = civil(ts.div_euclid(DAY));
        return (y * 12 + m0) as i32;
    }
    let d = DateTime::from_timestamp(ts, 0).unwrap_or_default();
    d.year() * 12 + d.month0() as i32
}

/// UTC hour (0–23) and weekday (0 = Monday) of a time.
#[inline]
pub fn hour_and_weekday(ts: i64) -> (usize, usize) {
    if CALENDAR.contains(&ts) {
        // 1970-01-01 was a Thursday (3 days after a Monday).
        return ((ts.rem_euclid(DAY) / 3_600) as usize, (ts.div_euclid(DAY) + 3).rem_euclid(7) as usize);
    }
    let d = DateTime::from_timestamp(ts, 0).unwrap_or_default();
    (d.hour() as usize, d.weekday().num_days_from_monday() as usize)
}

/// `YYYY-MM` of a month index.
pub fn month_label(m: i32) -> String {
    format!("{:04}-{:02}", m.div_euclid(12), m.rem_euclid(12) + 1)
}

/// `YYYY-MM-DD HH:MM:SS` of an event time (UTC); the number itself if out of chrono's range.
pub fn format_datetime(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map_or_else(|| ts.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC); the number itself if out of
/// chrono's range.
pub fn day_label(day: i64) -> String {
    DateTime::<Utc>::from_timestamp(day.saturating_mul(DAY), 0)
        .map_or_else(|| day.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_agrees_with_chrono_on_every_day_of_years_0_to_9999() {
        let chrono_parts = |ts: i64| {
            let d = DateTime::from_timestamp(ts, 0).unwrap();
            (
                d.year() * 12 + d.month0() as i32,
                d.hour() as usize,
                d.weekday().num_days_from_monday() as usize,
            )
        };
        let (first, last) = (CALENDAR.start().div_euclid(DAY), CALENDAR.end().div_euclid(DAY));
        for day in first..=last {
            let start = day * DAY;
            for ts in [start, start + (day * 7_919).rem_euclid(DAY), start + DAY - 1] {
                let (h, w) = hour_and_weekday(ts);
                assert_eq!((month_index(ts), h, w), chrono_parts(ts), "at {ts}");
            }
        }
        // Outside the range, chrono as before (out of its own range: the epoch).
        assert_eq!(month_index(i64::MAX), 1970 * 12);
        assert_eq!(month_index(CALENDAR.end() + 1), 10_000 * 12);
    }

    #[test]
    fn labels_and_days() {
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(DAY), 1);
        assert_eq!(month_label(month_index(1_500_000_000)), "2017-07");
        assert_eq!(format_datetime(1_500_000_000), "2017-07-14 02:40:00");
    }
}
