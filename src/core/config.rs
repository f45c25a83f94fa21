//! Processing settings: what a session, a binge, churn and a bad event mean.
//!
//! One typed [`CoreConfig`] is validated once (by [`CoreConfig::validate`]) and then handed to the
//! pure core. Every duration is in event-time seconds. The checkpoint stores the config it was
//! written with, and a restart with different semantics is refused instead of silently mixing two
//! definitions in one state.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::calendar`.

use serde::{Deserialize, Serialize};

pub use crate::core::calendar::DAY;

pub use streamflix_schemas::MIN_EVENT_TS;

/// Semantics of the processor's analytics. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// A pause of at least this many seconds ends a session.
    pub session_gap: i64,
    /// Watermark = max event time seen on a partition − this; events older than their
    /// partition's watermark are late and go to the DLQ.
    pub allowed_lateness: i64,
    /// No activity for this many seconds (at the watermark) means churned.
    pub churn_after: i64,
    /// A session with at least this many events is a binge.
    pub binge_min_events: u32,
    /// Whether a user's first session (MovieLens's onboarding burst) can count as a binge.
    pub binge_first_session: bool,
    /// Events more than this many seconds beyond their partition's watermark go to the DLQ
    /// (catches milliseconds sent as seconds, and clocks far in the future).
    pub max_future: i64,
    /// Payloads larger than this many bytes go to the DLQ without being parsed.
    pub max_payload_bytes: usize,
    /// Records (heartbeats included) whose event time is more than this many seconds ahead of
    /// the processing machine's clock go to the DLQ: event time cannot be in the future of the
    /// machine processing it, and one such record would otherwise move its partition's watermark
    /// for good. (Absent from state written before the check existed: the default.)
    #[serde(default = "default_max_ahead_of_clock")]
    pub max_ahead_of_clock: i64,
    /// The recommender's settings (absent from state written before the recommender existed,
    /// which the state-version check then refuses with a clear message).
    #[serde(default)]
    pub als: AlsConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            session_gap: 30 * 60,
            allowed_lateness: 5 * 60,
            churn_after: 30 * DAY,
            binge_min_events: 5,
            binge_first_session: false,
            max_future: 30 * DAY,
            max_payload_bytes: 64 * 1024,
            max_ahead_of_clock: default_max_ahead_of_clock(),
            als: AlsConfig::default(),
        }
    }
}

fn default_max_ahead_of_clock() -> i64 {
    streamflix_schemas::MAX_AHEAD_OF_CLOCK
}

impl CoreConfig {
    /// Checks the settings make sense together.
    ///
    /// # Errors
    /// A one-line message naming the offending setting.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.session_gap <= 0 {
            return Err(InvalidConfig(format!("session gap must be positive (got {}s)", self.session_gap)));
        }
        if !(0..=7 * DAY).contains(&self.allowed_lateness) {
            return Err(InvalidConfig(format!(
                "allowed lateness must be between 0 and 7 days (got {}s): the 90-day activity ring \
                 must cover every event that is not late",
                self.allowed_lateness
            )));
        }
        if self.churn_after <= self.session_gap + self.allowed_lateness {
            return Err(InvalidConfig(format!(
                "churn period ({}s) must be longer than the session gap plus allowed lateness ({}s)",
                self.churn_after,
                self.session_gap + self.allowed_lateness
            )));
        }
        if self.binge_min_events == 0 {
            return Err(InvalidConfig("binge threshold must be at least 1 event".to_string()));
        }
        if self.max_ahead_of_clock <= 0 {
            return Err(InvalidConfig(format!(
                "max ahead of clock must be positive (got {}s)",
                self.max_ahead_of_clock
            )));
        }
        if self.max_future <= 0 {
            return Err(InvalidConfig(format!("max future must be positive (got {}s)", self.max_future)));
        }
        self.als.validate()?;
        if self.max_payload_bytes < 64 {
            return Err(InvalidConfig(format!(
                "max payload size must be at least 64 bytes (got {})",
                self.max_payload_bytes
            )));
        }
        Ok(())
    }
}

/// Largest supported rank.
pub const MAX_RANK: usize = 128;

/// ALS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsConfig {
    /// Rank k of the factors.
    pub rank: usize,
    /// Regularisation λ (scaled by each entity's rating count, as in Spark MLlib).
    pub lambda: f32,
    /// Streaming: a full incremental sweep spans this many events (at least as many as there are
    /// ratings). 0 disables sweeps.
    pub sweep_every: u64,
}

impl Default for AlsConfig {
    fn default() -> Self {
        AlsConfig { rank: 32, lambda: 0.1, sweep_every: 1_000_000 }
    }
}

impl AlsConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A one-line message naming the bad setting.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !(1..=MAX_RANK).contains(&self.rank) {
            return Err(InvalidConfig(format!(
                "ALS rank must be between 1 and {MAX_RANK} (got {})",
                self.rank
            )));
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(InvalidConfig(format!("ALS lambda must be a positive number (got {})", self.lambda)));
        }
        Ok(())
    }
}

/// A setting that makes no sense (one line, naming the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// Parses a duration such as `30m`, `90s`, `12h`, `30d` or a plain number of seconds.
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_duration(s: &str) -> Result<i64, InvalidConfig> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| InvalidConfig(format!("invalid duration {s:?}: expected e.g. 90s, 30m, 12h, 30d")))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        _ => return Err(InvalidConfig(format!("invalid duration {s:?}: unit must be s, m, h or d"))),
    };
    n.checked_mul(mult).ok_or_else(|| InvalidConfig(format!("duration {s:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CoreConfig::default().validate().unwrap();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("30d").unwrap(), 30 * DAY);
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = CoreConfig { churn_after: 60, ..Default::default() };
        assert!(bad.validate().unwrap_err().0.contains("churn period"));
        let bad = CoreConfig { allowed_lateness: 8 * DAY, ..Default::default() };
        assert!(bad.validate().is_err());
    }
}
