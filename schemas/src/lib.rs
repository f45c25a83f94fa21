//! The streamflix wire contract.
//!
//! Every payload that crosses a topic is defined here once, as a Rust type, and once as a JSON
//! Schema under `schemas/json/` (for consumers in other languages, and for the end-to-end tests,
//! which validate every payload read back from the broker against those files). The replay tool
//! and the processor both depend on this crate, so neither depends on the other.
//!
//! Conventions, identical across payloads:
//! - `type` names the payload kind, so one topic can carry events and clock heartbeats;
//! - `v` is the schema version ([`SCHEMA_VERSION`]); a consumer rejects versions it does not know;
//! - `ts` is event time in **seconds** since the Unix epoch, UTC, exactly as in MovieLens. The
//!   Kafka record timestamp (CreateTime) carries the same instant in milliseconds;
//! - `seq` is the event's position in the replay's total order of its dataset (event time, ties in
//!   file order, ratings before tags). It makes every event's identity deterministic, which is what
//!   lets `streamflix-replay run --resume` continue without duplicates or gaps.

use serde::{Deserialize, Serialize};

/// Version of every payload defined in this crate. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Default topic names (a prefix is configurable in the tools; these are the suffixes).
pub mod topics {
    /// Rating events and clock heartbeats, keyed by user id.
    pub const RATINGS: &str = "streamflix.ratings";
    /// Tag events and clock heartbeats, keyed by user id.
    pub const TAGS: &str = "streamflix.tags";
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
}
