//! Event-time helpers: parsing `--from`/`--to`, printing event dates. All UTC, like MovieLens.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses none of them.

use chrono::{DateTime, NaiveDate, Utc};

/// Parses a point in time given as `YYYY-MM-DD` (midnight UTC), RFC 3339
/// (`2015-03-01T12:00:00Z`), or seconds since the epoch. Returns seconds since the epoch.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    Err(format!("`{s}` is not a date: use YYYY-MM-DD, RFC 3339 (2015-03-01T12:00:00Z) or epoch seconds"))
}

/// `YYYY-MM-DD` of an event time.
pub fn format_date(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map_or_else(|| ts.to_string(), |t| t.format("%Y-%m-%d").to_string())
}

/// `YYYY-MM-DD HH:MM:SS` of an event time.
pub fn format_datetime(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map_or_else(|| ts.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_instant("1970-01-02"), Ok(86_400));
        assert_eq!(parse_instant("2015-03-01T00:00:00Z"), Ok(1_425_168_000));
        assert_eq!(parse_instant("1425168000"), Ok(1_425_168_000));
        assert!(parse_instant("March").unwrap_err().contains("YYYY-MM-DD"));
        assert_eq!(format_date(1_425_168_000), "2015-03-01");
    }
}
