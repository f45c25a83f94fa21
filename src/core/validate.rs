//! Decoding and validation: every way an incoming record can be unusable, as a value.
//!
//! Nothing here panics or drops a record silently: a record is either a usable
//! [`StreamRecord`] or an [`Invalid`] with a [`Reason`], which the processor turns into a
//! dead letter (with the source position) and counts.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `streamflix-schemas`.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use streamflix_schemas::{Heartbeat, RatingEvent, StreamRecord, TagEvent, SCHEMA_VERSION};

/// Why a record went to the dead-letter topic. The names are stable (metrics, DLQ `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Larger than the configured maximum; not parsed.
    OversizedPayload,
    /// Not JSON at all (or not UTF-8).
    UndecodableJson,
    /// JSON, but not a rating, tag or heartbeat (missing or mistyped fields, unknown `type`).
    SchemaViolation,
    /// A schema version this processor does not know.
    UnsupportedVersion,
    /// Rating below 0.5 or above 5.0 (or not a finite number).
    RatingOutOfRange,
    /// Rating inside the range but not a multiple of 0.5.
    RatingNotHalfStep,
    /// Movie id not in the catalog.
    UnknownMovie,
    /// Event time before 1995-01-01 (MovieLens starts in 1995).
    TimestampBefore1995,
    /// Event time further beyond its partition's watermark than `max_future` allows.
    TimestampTooFarAhead,
    /// Event time behind its partition's watermark (later than the allowed lateness).
    LateEvent,
    /// Event time further ahead of the processing machine's clock than `max_ahead_of_clock`.
    TimestampAheadOfClock,
    /// A rating or tag read from Kafka whose record key is missing or is not its `user_id`.
    KeyMismatch,
    /// A rating on the tags topic, or a tag on the ratings topic.
    WrongTopic,
}

impl Reason {
    /// Every reason, so metrics can report each one from zero.
    pub const ALL: [Reason; 13] = [
        Reason::OversizedPayload,
        Reason::UndecodableJson,
        Reason::SchemaViolation,
        Reason::UnsupportedVersion,
        Reason::RatingOutOfRange,
        Reason::RatingNotHalfStep,
        Reason::UnknownMovie,
        Reason::TimestampBefore1995,
        Reason::TimestampTooFarAhead,
        Reason::LateEvent,
        Reason::TimestampAheadOfClock,
        Reason::KeyMismatch,
        Reason::WrongTopic,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OversizedPayload => "oversized_payload",
            Reason::UndecodableJson => "undecodable_json",
            Reason::SchemaViolation => "schema_violation",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::RatingOutOfRange => "rating_out_of_range",
            Reason::RatingNotHalfStep => "rating_not_half_step",
            Reason::UnknownMovie => "unknown_movie",
            Reason::TimestampBefore1995 => "timestamp_before_1995",
            Reason::TimestampTooFarAhead => "timestamp_too_far_ahead",
            Reason::LateEvent => "late_event",
            Reason::TimestampAheadOfClock => "timestamp_ahead_of_clock",
            Reason::KeyMismatch => "key_mismatch",
            Reason::WrongTopic => "wrong_topic",
        }
    }
}

/// An unusable record: why, and a human-readable detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The reason.
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: String,
}

impl Invalid {
    /// An `Invalid` with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Invalid { reason, detail: detail.into() }
    }
}

/// Parses a payload into a record, checking size, JSON, shape and version.
///
/// # Errors
/// The [`Invalid`] reason; the payload is not consumed.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<StreamRecord, Invalid> {
    if payload.len() > max_bytes {
        return Err(Invalid::new(
            Reason::OversizedPayload,
            format!("payload is {} bytes; the limit is {max_bytes}", payload.len()),
        ));
    }
    let fast = decode_canonical(payload).or_else(|| decode_flat(payload));
    match fast.map_or_else(|| serde_json::from_slice::<StreamRecord>(payload), Ok) {
        Ok(record) => {
            let v = version(&record);
            if v != SCHEMA_VERSION {
                return Err(Invalid::new(
                    Reason::UnsupportedVersion,
                    format!("schema version {v}; this processor reads version {SCHEMA_VERSION}"),
                ));
            }
            Ok(record)
        }
        Err(e) => {
            // Tell "not JSON" from "JSON of the wrong shape" with a second, cheap parse that only
            // happens for bad records.
            if serde_json::from_slice::<IgnoredAny>(payload).is_err() {
                Err(Invalid::new(Reason::UndecodableJson, e.to_string()))
            } else {
                Err(Invalid::new(Reason::SchemaViolation, e.to_string()))
            }
        }
    }
}

/// The schema version a record states.
fn version(record: &StreamRecord) -> u32 {
    match record {
        StreamRecord::Rating(r) => r.v,
        StreamRecord::Tag(t) => t.v,
        StreamRecord::Heartbeat(h) => h.v,
    }
}

/// A rating or heartbeat exactly as streamflix-replay writes it (serde_json, fields in
/// declaration order, no spaces; non-negative integers; the rating in whole or half stars), read
/// without a JSON parser: through the broker, serde's decoding (which reads every key as a string
/// and matches it against the field names) was about a fifth of the processing thread. `None`
/// for any other byte sequence, which the JSON decoders read; when it returns a record, it is the
/// one they would (tested against them on mutated payloads).
fn decode_canonical(p: &[u8]) -> Option<StreamRecord> {
    let mut c = Canonical(p);
    if c.eat(br#"{"type":"rating","v":"#) {
        let v = c.u32()?;
        c.expect(br#","seq":"#)?;
        let seq = c.uint()?;
        c.expect(br#","user_id":"#)?;
        let user_id = c.u32()?;
        c.expect(br#","movie_id":"#)?;
        let movie_id = c.u32()?;
        c.expect(br#","rating":"#)?;
        let rating = c.stars()?;
        c.expect(br#","ts":"#)?;
        let ts = i64::try_from(c.uint()?).ok()?;
        c.expect(b"}")?;
        c.0.is_empty().then_some(StreamRecord::Rating(RatingEvent { v, seq, user_id, movie_id, rating, ts }))
    } else if c.eat(br#"{"type":"heartbeat","v":"#) {
        let v = c.u32()?;
        c.expect(br#","ts":"#)?;
        let ts = i64::try_from(c.uint()?).ok()?;
        c.expect(br#","next_seq":"#)?;
        let next_seq = c.uint()?;
        c.expect(b"}")?;
        c.0.is_empty().then_some(StreamRecord::Heartbeat(Heartbeat { v, ts, next_seq }))
    } else {
        None
    }
}

/// The unread rest of a payload, for [`decode_canonical`].
struct Canonical<'a>(&'a [u8]);

impl Canonical<'_> {
    fn eat(&mut self, s: &[u8]) -> bool {
        match self.0.strip_prefix(s) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, s: &[u8]) -> Option<()> {
        self.eat(s).then_some(())
    }

    /// A JSON integer ≥ 0 that fits u64: digits, no leading zero (JSON has none).
    fn uint(&mut self) -> Option<u64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && self.0[0] == b'0') {
            return None;
        }
        let mut v = 0u64;
        for &d in &self.0[..digits] {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.0 = &self.0[digits..];
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    /// Whole or half stars as serde_json writes an f32 (`4.0`, `3.5`; `4` too): values every
    /// float parser reads exactly, so this is the f32 the JSON decoders give. Anything else
    /// (`3.25`, `35e-1`, `-1.0`) is left to them.
    fn stars(&mut self) -> Option<f32> {
        let whole = self.uint().filter(|&w| w <= 100)? as f32;
        if !self.eat(b".") {
            return Some(whole);
        }
        let half = match self.0.first()? {
            b'0' => 0.0,
            b'5' => 0.5,
            _ => return None,
        };
        self.0 = &self.0[1..];
        Some(whole + half)
    }
}

/// The fields of every record type side by side. serde decodes the tagged [`StreamRecord`] by
/// buffering the whole object, then decoding it again as the variant `type` names; straight into
/// this struct is one pass without allocations (through the broker, the tagged decode was about a
/// tenth of the processing thread's time).
#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    v: Option<u32>,
    seq: Option<u64>,
    user_id: Option<u32>,
    movie_id: Option<u32>,
    rating: Option<f32>,
    ts: Option<i64>,
    next_seq: Option<u64>,
    #[serde(borrow)]
    tag: Option<Cow<'a, str>>,
}

/// The record, when the payload is a well-formed one: then it is exactly what decoding
/// [`StreamRecord`] gives (fields a type does not have are ignored by both). `None` for anything
/// else, including some payloads the tagged decode accepts (a field of another type with a value
/// of the wrong kind): the caller decodes those the tagged way, which also words the errors.
fn decode_flat(payload: &[u8]) -> Option<StreamRecord> {
    let f: Flat = serde_json::from_slice(payload).ok()?;
    Some(match f.kind.as_deref()? {
        "rating" => StreamRecord::Rating(RatingEvent {
            v: f.v?,
            seq: f.seq?,
            user_id: f.user_id?,
            movie_id: f.movie_id?,
            rating: f.rating?,
            ts: f.ts?,
        }),
        "tag" => StreamRecord::Tag(TagEvent {
            v: f.v?,
            seq: f.seq?,
            user_id: f.user_id?,
            movie_id: f.movie_id?,
            tag: f.tag?.into_owned(),
            ts: f.ts?,
        }),
        "heartbeat" => StreamRecord::Heartbeat(Heartbeat { v: f.v?, ts: f.ts?, next_seq: f.next_seq? }),
        _ => return None,
    })
}

/// Checks a rating value: 0.5 to 5.0 in half steps.
///
/// # Errors
/// [`Reason::RatingOutOfRange`] or [`Reason::RatingNotHalfStep`].
pub fn check_rating(rating: f32) -> Result<(), Invalid> {
    if !rating.is_finite() || !(0.5..=5.0).contains(&rating) {
        return Err(Invalid::new(Reason::RatingOutOfRange, format!("rating {rating} is outside 0.5–5.0")));
    }
    if (rating * 2.0).fract() != 0.0 {
        return Err(Invalid::new(
            Reason::RatingNotHalfStep,
            format!("rating {rating} is not a multiple of 0.5"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(payload: &str) -> Reason {
        decode(payload.as_bytes(), 1024).unwrap_err().reason
    }

    #[test]
    fn each_kind_of_bad_payload_has_its_reason() {
        assert_eq!(reason("{not json"), Reason::UndecodableJson);
        assert_eq!(decode(&[0xff, 0xfe], 1024).unwrap_err().reason, Reason::UndecodableJson);
        assert_eq!(reason(r#"{"type":"rating","v":1}"#), Reason::SchemaViolation);
        assert_eq!(reason(r#"{"type":"watch","v":1}"#), Reason::SchemaViolation);
        assert_eq!(reason(r#"[1,2,3]"#), Reason::SchemaViolation);
        assert_eq!(
            reason(
                r#"{"type":"rating","v":1,"seq":0,"user_id":-4,"movie_id":1,"rating":3.0,"ts":900000000}"#
            ),
            Reason::SchemaViolation
        );
        assert_eq!(
            reason(r#"{"type":"rating","v":2,"seq":0,"user_id":4,"movie_id":1,"rating":3.0,"ts":900000000}"#),
            Reason::UnsupportedVersion
        );
        assert_eq!(decode(&[b' '; 2000], 1024).unwrap_err().reason, Reason::OversizedPayload);
        assert!(decode(
            br#"{"type":"rating","v":1,"seq":0,"user_id":4,"movie_id":1,"rating":3.5,"ts":900000000}"#,
            1024
        )
        .is_ok());
    }

    /// Every combination of each field absent, valid, null, of the wrong kind or out of range,
    /// for each `type`: the flat decode accepts only what the tagged decode accepts, as the same
    /// record.
    #[test]
    fn the_flat_decode_agrees_with_the_tagged_one() {
        // (name, a valid value, an invalid one: of the wrong kind or out of range)
        let fields: [(&str, [&str; 2]); 8] = [
            ("v", ["1", "\"1\""]),
            ("seq", ["7", "1.5"]),
            ("user_id", ["42", "4294967296"]),
            ("movie_id", ["3", "-3"]),
            ("rating", ["4", "\"3.5\""]),
            ("ts", ["900000000", "9e8"]),
            ("next_seq", ["8", "true"]),
            ("tag", ["\"fun \\\"twist\\\" \\u00e9\"", "5"]),
        ];
        let (mut accepted, mut total) = (0, 0);
        for kind in ["\"rating\"", "\"tag\"", "\"heartbeat\"", "\"watch\"", "5", "null"] {
            // Each field: absent, null, valid or invalid (a base-4 digit of `combo`).
            for combo in 0..4usize.pow(fields.len() as u32) {
                let mut json = format!("{{\"type\":{kind}");
                let mut c = combo;
                for (name, values) in &fields {
                    match c % 4 {
                        0 => {}
                        1 => json += &format!(",\"{name}\":null"),
                        k => json += &format!(",\"{name}\":{}", values[k - 2]),
                    }
                    c /= 4;
                }
                json += "}";
                let tagged = serde_json::from_slice::<StreamRecord>(json.as_bytes()).ok();
                let flat = decode_flat(json.as_bytes());
                if let Some(f) = &flat {
                    assert_eq!(Some(f), tagged.as_ref(), "{json}");
                    accepted += 1;
                }
                total += 1;
                assert_eq!(
                    decode(json.as_bytes(), 1 << 20).ok(),
                    tagged.filter(|r| version(r) == SCHEMA_VERSION),
                    "{json}"
                );
            }
        }
        // The comparison covered acceptances (each type with every optional mix of the other
        // types' fields), not only rejections.
        assert!(accepted >= 200, "{accepted} of {total}");
    }

    /// Records as the replay writes them take the canonical path, and so does nothing else: every
    /// prefix of them, and every one-byte change to them, decodes as the JSON decoders decode it.
    #[test]
    fn the_canonical_decode_agrees_with_the_json_ones() {
        let mut records = Vec::new();
        for (i, rating) in [0.5f32, 1.0, 3.5, 5.0, 4.0, 2.5].into_iter().enumerate() {
            let big = [0u64, 7, 4_294_967_295, 4_294_967_296, u64::MAX][i % 5];
            records.push(StreamRecord::Rating(RatingEvent {
                v: SCHEMA_VERSION,
                seq: big,
                user_id: [1, 4_294_967_295, 162_541][i % 3],
                movie_id: 209_171 + i as u32,
                rating,
                ts: [0, 820_838_754, 1_574_327_703, i64::MAX][i % 4],
            }));
            records.push(StreamRecord::Heartbeat(Heartbeat {
                v: SCHEMA_VERSION,
                ts: 900_000_000 + i as i64,
                next_seq: big,
            }));
        }
        let mut checked = 0;
        for r in &records {
            let json = serde_json::to_vec(r).unwrap();
            assert_eq!(decode_canonical(&json).as_ref(), Some(r), "{}", String::from_utf8_lossy(&json));
            let mut variants: Vec<Vec<u8>> = (0..json.len()).map(|n| json[..n].to_vec()).collect();
            for at in 0..json.len() {
                for b in *b"0159-.e \"}{,+E" {
                    let mut v = json.clone();
                    v[at] = b;
                    variants.push(v);
                }
                let mut v = json.clone();
                v.insert(at, b'0');
                variants.push(v);
            }
            for v in variants {
                if let Some(fast) = decode_canonical(&v) {
                    let json = serde_json::from_slice::<StreamRecord>(&v);
                    assert_eq!(Some(&fast), json.as_ref().ok(), "{}", String::from_utf8_lossy(&v));
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
        // A rating of a quarter star or in another notation is left to the JSON decoders.
        assert!(decode_canonical(
            br#"{"type":"rating","v":1,"seq":0,"user_id":4,"movie_id":1,"rating":3.25,"ts":9}"#
        )
        .is_none());
        assert!(decode_canonical(
            br#"{"type":"rating","v":1,"seq":0,"user_id":4,"movie_id":1,"rating":35e-1,"ts":9}"#
        )
        .is_none());
        // Tags always go through them.
        assert!(decode_canonical(
            br#"{"type":"tag","v":1,"seq":0,"user_id":4,"movie_id":1,"tag":"x","ts":9}"#
        )
        .is_none());
    }

    #[test]
    fn ratings_must_be_half_steps_in_range() {
        assert!(check_rating(0.5).is_ok());
        assert!(check_rating(5.0).is_ok());
        assert_eq!(check_rating(0.0).unwrap_err().reason, Reason::RatingOutOfRange);
        assert_eq!(check_rating(5.5).unwrap_err().reason, Reason::RatingOutOfRange);
        assert_eq!(check_rating(f32::NAN).unwrap_err().reason, Reason::RatingOutOfRange);
        assert_eq!(check_rating(3.7).unwrap_err().reason, Reason::RatingNotHalfStep);
    }
}
