//! The streamflix wire contract.
//!
//! Every payload that crosses a topic is defined here once, as a Rust type, and once as a JSON
//! Schema under `schemas/json/` (for consumers in other languages, and for the end-to-end tests,
//! which validate every payload read back from the broker against those files). The replay tool
//! and the processor both depend on this crate. The processor's binary also depends on the replay
//! tool's library (to embed a replay, and for its MovieLens readers); nothing here depends on
//! either. [`data`] holds the MovieLens data model both read into.
//!
//! Conventions, identical across payloads:
//! - `type` names the payload kind, so one topic can carry events and clock heartbeats;
//! - `v` is the schema version ([`SCHEMA_VERSION`]); a consumer rejects versions it does not know;
//! - `ts` is event time in **seconds** since the Unix epoch, UTC, exactly as in MovieLens. The
//!   Kafka record timestamp (CreateTime) carries the same instant in milliseconds;
//! - `seq` is the event's position in the replay's total order of its dataset (event time, ties in
//!   file order, ratings before tags). It makes every event's identity deterministic, which is what
//!   lets `streamflix-replay run --resume` continue without duplicates or gaps.
//!
//! May import: serde only: the wire contract depends on neither binary's crate; this module uses none of them.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub mod data;
pub use data::{Movie, Rating, MAX_AHEAD_OF_CLOCK, MIN_EVENT_TS, NO_GENRES};

/// Version of every payload defined in this crate. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A user's record key on the input topics: the user id in decimal ASCII, written into the end of
/// `buf` (no allocation: the replay partitions by it and the processor checks it, per record).
pub fn user_key(mut user: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (user % 10) as u8;
        user /= 10;
        if user == 0 {
            return &buf[i..];
        }
    }
}

/// Default topic names (a prefix is configurable in the tools; these are the suffixes).
pub mod topics {
    /// Rating events and clock heartbeats, keyed by user id.
    pub const RATINGS: &str = "streamflix.ratings";
    /// Tag events and clock heartbeats, keyed by user id.
    pub const TAGS: &str = "streamflix.tags";
    /// Closed-session summaries ([`crate::SessionSummary`]), keyed by user id.
    pub const SESSIONS: &str = "streamflix.sessions";
    /// Churn alerts ([`crate::ChurnAlert`]), keyed by user id; the latest record per key is the
    /// user's current status, so the topic can be compacted.
    pub const CHURN_ALERTS: &str = "streamflix.churn-alerts";
    /// Records the processor could not use ([`crate::DeadLetter`]), keyed by the original key.
    pub const DLQ: &str = "streamflix.dlq";
}

/// A user rated a movie (MovieLens `ratings.csv` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingEvent {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Position in the replay order of the dataset; unique per dataset.
    pub seq: u64,
    /// MovieLens `userId`; also the Kafka key, so a user's events stay in one partition, in order.
    pub user_id: u32,
    /// MovieLens `movieId`.
    pub movie_id: u32,
    /// Stars, 0.5 to 5.0 in half steps.
    pub rating: f32,
    /// Event time, seconds since the Unix epoch (UTC).
    pub ts: i64,
}

/// A user tagged a movie with free text (MovieLens `tags.csv` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagEvent {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Position in the replay order of the dataset; unique per dataset.
    pub seq: u64,
    /// MovieLens `userId`; also the Kafka key.
    pub user_id: u32,
    /// MovieLens `movieId`.
    pub movie_id: u32,
    /// The tag as the user typed it (may contain commas, quotes, non-ASCII).
    pub tag: String,
    /// Event time, seconds since the Unix epoch (UTC).
    pub ts: i64,
}

/// A clock heartbeat: a promise about one partition of one topic.
///
/// The replay sends events in event-time order, so once it has sent a heartbeat with `ts = T` to a
/// partition, no event with an earlier event time will follow on that partition. Consumers use it
/// to advance their watermark through quiet periods, when a partition has no events to move it.
/// Heartbeats have no key and are sent to every partition explicitly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Every later event on this partition has event time `>= ts`.
    pub ts: i64,
    /// Every event with `seq < next_seq` destined to this partition precedes this heartbeat.
    pub next_seq: u64,
}

/// Anything that travels on the ratings or tags topic, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRecord {
    /// See [`RatingEvent`].
    Rating(RatingEvent),
    /// See [`TagEvent`].
    Tag(TagEvent),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
}

impl StreamRecord {
    /// Event time of the record, seconds since the epoch.
    pub fn ts(&self) -> i64 {
        match self {
            StreamRecord::Rating(r) => r.ts,
            StreamRecord::Tag(t) => t.ts,
            StreamRecord::Heartbeat(h) => h.ts,
        }
    }

    /// The replay position after this record on its partition: events with a lower `seq` that
    /// belong to the same partition are already before it.
    pub fn next_seq(&self) -> u64 {
        match self {
            StreamRecord::Rating(r) => r.seq + 1,
            StreamRecord::Tag(t) => t.seq + 1,
            StreamRecord::Heartbeat(h) => h.next_seq,
        }
    }
}

/// A user's session: a run of activity (ratings and tags) with no pause of `gap` or more, closed
/// once the watermark has passed its end + gap. Published to [`topics::SESSIONS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// `"{user_id}-{start}"`: deterministic, so a re-published session (after a crash) carries the
    /// same id and consumers can deduplicate.
    pub session_id: String,
    /// The user.
    pub user_id: u32,
    /// Event time of the first event, seconds since the epoch.
    pub start: i64,
    /// Event time of the last event.
    pub end: i64,
    /// Events in the session (ratings + tags).
    pub events: u32,
    /// Ratings in the session.
    pub ratings: u32,
    /// Tags in the session.
    pub tags: u32,
    /// Distinct genres of the movies touched, in catalog order.
    pub genres: Vec<String>,
    /// Mean of the session's ratings; `null` for a session of tags only.
    pub mean_rating: Option<f64>,
    /// At least the binge threshold of events, and not the user's first (onboarding) session
    /// unless configured otherwise.
    pub binge: bool,
    /// The user's first session (MovieLens's onboarding burst).
    pub first: bool,
}

/// A user's engagement features, evaluated at event time `as_of`.
///
/// Trailing windows are in whole UTC days: `events_7d` counts events on the 7 UTC days ending
/// with `as_of`'s day (that day included). Events after `as_of` are not counted by windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFeatures {
    /// The event time these features describe (the watermark, or the moment of churn).
    pub as_of: i64,
    /// Days from the last activity to `as_of` (fractional; 0 if the last activity is later).
    pub recency_days: f64,
    /// Event time of the latest activity.
    pub last_activity: i64,
    /// Event time of the first activity (the user's cohort).
    pub first_seen: i64,
    /// `YYYY-MM` of `first_seen`, UTC.
    pub cohort: String,
    /// Events (ratings + tags) in the trailing 7 UTC days.
    pub events_7d: u64,
    /// Events in the trailing 30 UTC days.
    pub events_30d: u64,
    /// Events in the trailing 90 UTC days.
    pub events_90d: u64,
    /// All events ever.
    pub events_lifetime: u64,
    /// Ratings ever.
    pub ratings: u64,
    /// Tags ever.
    pub tags: u64,
    /// Mean rating; `null` without ratings.
    pub rating_mean: Option<f64>,
    /// Population standard deviation of the ratings; `null` without ratings.
    pub rating_std: Option<f64>,
    /// Ratings per genre (a movie counts once for each of its genres); genres never rated are
    /// left out.
    pub genres: std::collections::BTreeMap<String, u64>,
    /// The genre with the most ratings (ties: first in catalog order); `null` without ratings.
    pub favourite_genre: Option<String>,
    /// Shannon entropy of the genre distribution divided by ln(number of catalog genres):
    /// 0 = one genre only, 1 = all genres equally.
    pub genre_diversity: f64,
    /// Closed sessions.
    pub sessions: u64,
    /// Sessions still open at `as_of` (their end + gap is not yet passed).
    pub open_sessions: u64,
    /// Mean length of the closed sessions, minutes (last event − first event).
    pub mean_session_minutes: Option<f64>,
    /// Closed sessions that were binges.
    pub binge_sessions: u64,
    /// Distinct UTC days with activity.
    pub active_days: u64,
}

/// Version of the `at_risk` payload ([`AtRiskAlert`]) on the churn-alerts topic. The
/// `churned` and `reactivated` alerts keep [`SCHEMA_VERSION`] and their shape, so a consumer that
/// knows only version 1 skips `at_risk` alerts and reads the others as before.
pub const AT_RISK_VERSION: u32 = 2;

/// One input's part in an `at_risk` score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskReason {
    /// The input's name, as `GET /models/churn` lists it.
    pub feature: String,
    /// Its value for the user.
    pub value: f64,
    /// Weight × value: what it adds to the score's log-odds.
    pub contribution: f64,
}

/// The churn model's warning: a user still active whose probability of no activity in the next
/// 30 days crossed the threshold. One per activity episode. Published to
/// [`topics::CHURN_ALERTS`], keyed by user id, with `status` `"at_risk"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtRiskAlert {
    /// Schema version, [`AT_RISK_VERSION`].
    pub v: u32,
    /// `"{user_id}-{close date}-at_risk"`: deterministic, the same after a replay.
    pub alert_id: String,
    /// The user.
    pub user_id: u32,
    /// Always `"at_risk"`.
    pub status: String,
    /// Event time of the daily close that scored it (the day's last second).
    pub at: i64,
    /// The user's latest activity.
    pub last_activity: i64,
    /// P(no activity in the next 30 event-days).
    pub churn_risk: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// P(alive) under MBG/NBD.
    pub p_alive: f64,
    /// The user's marketing segment, if segments are computed.
    pub segment: Option<String>,
    /// The three inputs that added most to the score, largest first.
    pub reasons: Vec<RiskReason>,
    /// The user's features at `at`.
    pub features: UserFeatures,
}

/// Whether a churn alert reports an inactivity episode starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnStatus {
    /// No activity for the churn period.
    Churned,
    /// The first activity after a churn.
    Reactivated,
}

/// A churn lifecycle event. Published to [`topics::CHURN_ALERTS`], keyed by user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnAlert {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// `"{user_id}-{last_activity}-{status}"`: one inactivity episode has one `churned` and at
    /// most one `reactivated` alert, and a re-published alert (after a crash) has the same id.
    pub alert_id: String,
    /// The user.
    pub user_id: u32,
    /// `churned` or `reactivated`.
    pub status: ChurnStatus,
    /// Event time of the transition: last activity + churn period for `churned`, the returning
    /// event's time for `reactivated`.
    pub at: i64,
    /// The last activity before the inactivity episode.
    pub last_activity: i64,
    /// Days without activity: the churn period for `churned`, the whole gap for `reactivated`.
    pub inactive_days: f64,
    /// The user's features at `at` (before the returning event, for `reactivated`).
    pub features: UserFeatures,
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Topic (or `embedded.ratings` / `embedded.tags` in embedded mode).
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset (in embedded mode, the record's replay `seq`).
    pub offset: u64,
}

/// A record the processor could not use, with the reason. Published to [`topics::DLQ`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Machine-readable reason, e.g. `undecodable_json`, `unknown_movie` (README lists them).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// Where the record was read.
    pub source: SourcePosition,
    /// The original Kafka key, if it was UTF-8 (`null` in embedded mode, which has no Kafka record).
    pub key: Option<String>,
    /// The original payload, if it was UTF-8 (truncated to 64 KiB for oversized payloads).
    pub payload: Option<String>,
    /// The original payload in hex, when it was not UTF-8 (truncated like `payload`).
    pub payload_hex: Option<String>,
    /// Size of the original payload in bytes.
    pub payload_bytes: u64,
}

/// The JSON Schema of the sessions topic.
pub const SESSIONS_TOPIC_SCHEMA: &str = include_str!("../json/sessions.schema.json");
/// The JSON Schema of the churn-alerts topic.
pub const CHURN_ALERTS_TOPIC_SCHEMA: &str = include_str!("../json/churn-alerts.schema.json");
/// The JSON Schema of the dead-letter topic.
pub const DLQ_TOPIC_SCHEMA: &str = include_str!("../json/dlq.schema.json");

/// The JSON Schema of the ratings topic's payloads (ratings and heartbeats).
pub const RATINGS_TOPIC_SCHEMA: &str = include_str!("../json/ratings.schema.json");
/// The JSON Schema of the tags topic's payloads (tags and heartbeats).
pub const TAGS_TOPIC_SCHEMA: &str = include_str!("../json/tags.schema.json");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rating() -> StreamRecord {
        StreamRecord::Rating(RatingEvent {
            v: SCHEMA_VERSION,
            seq: 7,
            user_id: 1,
            movie_id: 31,
            rating: 2.5,
            ts: 1_260_759_144,
        })
    }

    #[test]
    fn rating_wire_format_is_stable() {
        let got: Value = serde_json::to_value(rating()).unwrap();
        assert_eq!(
            got,
            json!({"type":"rating","v":1,"seq":7,"user_id":1,"movie_id":31,"rating":2.5,"ts":1260759144})
        );
        let back: StreamRecord = serde_json::from_value(got).unwrap();
        assert_eq!(back, rating());
    }

    #[test]
    fn tag_escapes_commas_and_quotes() {
        let t = StreamRecord::Tag(TagEvent {
            v: 1,
            seq: 0,
            user_id: 2,
            movie_id: 3,
            tag: "Oscar \"winner\", sort of".into(),
            ts: 5,
        });
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<StreamRecord>(&s).unwrap(), t);
    }

    /// The hand-written JSON Schemas must name exactly the fields the Rust types emit, so the two
    /// halves of the contract cannot drift apart silently.
    #[test]
    fn schema_files_match_rust_types() {
        let samples = [
            ("rating", serde_json::to_value(rating()).unwrap()),
            (
                "heartbeat",
                serde_json::to_value(StreamRecord::Heartbeat(Heartbeat { v: 1, ts: 9, next_seq: 3 }))
                    .unwrap(),
            ),
            (
                "tag",
                serde_json::to_value(StreamRecord::Tag(TagEvent {
                    v: 1,
                    seq: 0,
                    user_id: 1,
                    movie_id: 1,
                    tag: "x".into(),
                    ts: 1,
                }))
                .unwrap(),
            ),
        ];
        for schema_text in [RATINGS_TOPIC_SCHEMA, TAGS_TOPIC_SCHEMA] {
            let schema: Value = serde_json::from_str(schema_text).unwrap();
            let defs = schema["$defs"].as_object().unwrap();
            for (name, def) in defs {
                let (_, sample) = samples.iter().find(|(n, _)| n == name).unwrap();
                let mut required: Vec<&str> =
                    def["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                let mut emitted: Vec<&str> = sample.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                required.sort_unstable();
                emitted.sort_unstable();
                assert_eq!(required, emitted, "schema $defs/{name} vs Rust type");
            }
        }
    }

    /// The `at_risk` alert: the schema's definition names exactly its fields, and the churn
    /// statuses' definition still requires version 1.
    #[test]
    fn at_risk_alert_matches_its_schema() {
        let features: Value = serde_json::from_str(
            r#"{"as_of":1,"recency_days":0.5,"last_activity":1,"first_seen":0,"cohort":"1970-01","events_7d":1,
            "events_30d":1,"events_90d":1,"events_lifetime":1,"ratings":1,"tags":0,"rating_mean":4.0,"rating_std":0.0,
            "genres":{},"favourite_genre":null,"genre_diversity":0.0,"sessions":0,"open_sessions":1,
            "mean_session_minutes":null,"binge_sessions":0,"active_days":1}"#,
        )
        .unwrap();
        let alert = AtRiskAlert {
            v: AT_RISK_VERSION,
            alert_id: "7-2019-01-01-at_risk".into(),
            user_id: 7,
            status: "at_risk".into(),
            at: 1_546_387_199,
            last_activity: 1_545_000_000,
            churn_risk: 0.9,
            threshold: 0.8,
            p_alive: 0.2,
            segment: None,
            reasons: vec![RiskReason { feature: "recency_days / 30".into(), value: 0.5, contribution: 1.2 }],
            features: serde_json::from_value(features).unwrap(),
        };
        let sample = serde_json::to_value(&alert).unwrap();
        let schema: Value = serde_json::from_str(CHURN_ALERTS_TOPIC_SCHEMA).unwrap();
        let def = &schema["$defs"]["at_risk_alert"];
        let mut required: Vec<&str> =
            def["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let mut emitted: Vec<&str> = sample.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        required.sort_unstable();
        emitted.sort_unstable();
        assert_eq!(required, emitted);
        assert_eq!(def["properties"]["v"]["const"], json!(AT_RISK_VERSION));
        assert_eq!(schema["$defs"]["churn_alert"]["properties"]["v"]["const"], json!(SCHEMA_VERSION));
        assert_eq!(serde_json::from_value::<AtRiskAlert>(sample).unwrap(), alert);
    }

    #[test]
    fn user_ids_as_keys_are_their_decimal_digits() {
        let mut buf = [0u8; 10];
        assert_eq!(user_key(0, &mut buf), b"0");
        assert_eq!(user_key(7, &mut buf), b"7");
        assert_eq!(user_key(162_541, &mut buf), b"162541");
        assert_eq!(user_key(u32::MAX, &mut buf), b"4294967295");
    }
}
