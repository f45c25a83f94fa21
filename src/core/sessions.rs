//! Session windows per user, in event time.
//!
//! A session is a run of a user's activity with no pause of `gap` or more. Each event opens the
//! window `[ts, ts + gap)`; windows that overlap merge (Flink's session-window rule), so a late
//! event can extend a session or bridge two into one. A session closes when the watermark reaches
//! `end + gap`: no event that is not late can touch it after that.
//!
//! A user has few open sessions (usually one), kept sorted by start and pairwise separated by at
//! least `gap`, so a plain `Vec` is the right structure.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::catalog`, `streamflix-schemas`.

use serde::{Deserialize, Serialize};
use streamflix_schemas::{SessionSummary, SCHEMA_VERSION};

/// A session still accumulating events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenSession {
    /// Event time of the first event.
    pub start: i64,
    /// Event time of the last event.
    pub end: i64,
    /// Events (ratings + tags).
    pub events: u32,
    /// Ratings among them.
    pub ratings: u32,
    /// Sum of the ratings, for the mean.
    pub rating_sum: f64,
    /// Genres of the movies touched (catalog bits).
    pub genres: u64,
}

impl OpenSession {
    fn of(ts: i64, rating: Option<f32>, genres: u64) -> Self {
        OpenSession {
            start: ts,
            end: ts,
            events: 1,
            ratings: rating.is_some() as u32,
            rating_sum: rating.map_or(0.0, f64::from),
            genres,
        }
    }

    fn absorb(&mut self, other: &OpenSession) {
        self.start = self.start.min(other.start);
        self.end = self.end.max(other.end);
        self.events += other.events;
        self.ratings += other.ratings;
        self.rating_sum += other.rating_sum;
        self.genres |= other.genres;
    }

    /// Event time at which the watermark closes this session.
    pub fn closes_at(&self, gap: i64) -> i64 {
        self.end.saturating_add(gap)
    }

    /// Mean rating, if the session has ratings.
    pub fn mean_rating(&self) -> Option<f64> {
        (self.ratings > 0).then(|| self.rating_sum / f64::from(self.ratings))
    }
}

/// A closed session as the state keeps it: a [`SessionSummary`] less what follows from the user
/// and the catalog (the id, the tag count, the genre names), so the checkpoint stores a few dozen
/// bytes per session.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClosedSession {
    /// Event time of the first event.
    pub start: i64,
    /// Last event time minus first, seconds.
    pub length: u64,
    /// Events (ratings + tags).
    pub events: u32,
    /// Ratings among them.
    pub ratings: u32,
    /// Genres of the movies touched (catalog bits).
    pub genres: u64,
    /// Mean rating, if the session has ratings.
    pub mean_rating: Option<f64>,
    /// A binge session.
    pub binge: bool,
    /// The user's first session.
    pub first: bool,
}

impl ClosedSession {
    /// The published form, for `user`, with the catalog's genre names (in bit order).
    pub fn summary(&self, user: u32, genre_names: &[String]) -> SessionSummary {
        SessionSummary {
            v: SCHEMA_VERSION,
            session_id: format!("{user}-{}", self.start),
            user_id: user,
            start: self.start,
            end: self.end(),
            events: self.events,
            ratings: self.ratings,
            tags: self.events - self.ratings,
            genres: crate::core::catalog::names_in(genre_names, self.genres),
            mean_rating: self.mean_rating,
            binge: self.binge,
            first: self.first,
        }
    }

    /// Appends [`ClosedSession::summary`] as JSON, byte for byte what serde_json writes for it,
    /// without building it: `genre_json` holds each catalog genre's name already as a JSON string.
    /// (Publishing sessions through serde, with an id string and a vector of genre-name copies
    /// per session, was about a sixth of the processing thread through tansu.)
    pub fn write_json(&self, user: u32, genre_json: &[Vec<u8>], out: &mut Vec<u8>) {
        use std::io::Write;
        // Writes to a Vec cannot fail.
        let _ = write!(
            out,
            r#"{{"v":{SCHEMA_VERSION},"session_id":"{user}-{}","user_id":{user},"start":{},"end":{},"events":{},"ratings":{},"tags":{},"genres":["#,
            self.start,
            self.start,
            self.end(),
            self.events,
            self.ratings,
            self.events - self.ratings,
        );
        for (n, name) in
            crate::core::catalog::bits(self.genres).filter_map(|bit| genre_json.get(bit)).enumerate()
        {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
        }
        out.extend_from_slice(br#"],"mean_rating":"#);
        let _ = serde_json::to_writer(&mut *out, &self.mean_rating);
        let _ = write!(out, r#","binge":{},"first":{}}}"#, self.binge, self.first);
    }

    /// Event time of the last event.
    pub fn end(&self) -> i64 {
        self.start.saturating_add_unsigned(self.length)
    }
}

/// A user's open sessions: sorted by start, non-overlapping, separated by at least `gap`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    open: Vec<OpenSession>,
}

impl Sessions {
    /// Adds an event at `ts` (a rating when `rating` is `Some`) touching `genres`, merging every
    /// open session whose window overlaps the event's.
    pub fn add(&mut self, ts: i64, rating: Option<f32>, genres: u64, gap: i64) {
        let mut merged = OpenSession::of(ts, rating, genres);
        // Windows [start, end + gap) and [ts, ts + gap) overlap iff ts < end + gap && start < ts + gap.
        let overlaps = |s: &OpenSession| ts < s.end.saturating_add(gap) && s.start < ts.saturating_add(gap);
        let first = self.open.iter().position(overlaps);
        match first {
            None => {
                let at = self.open.partition_point(|s| s.start < ts);
                self.open.insert(at, merged);
            }
            Some(i) => {
                let mut j = i;
                while j < self.open.len() && overlaps(&self.open[j]) {
                    merged.absorb(&self.open[j]);
                    j += 1;
                }
                self.open.splice(i..j, [merged]);
            }
        }
    }

    /// Removes and returns, oldest first, the sessions the watermark `wm` has closed
    /// (`end + gap <= wm`).
    pub fn close_due(&mut self, wm: i64, gap: i64) -> Vec<OpenSession> {
        let n = self.open.iter().take_while(|s| s.closes_at(gap) <= wm).count();
        self.open.drain(..n).collect()
    }

    /// The earliest time at which some open session closes, if any is open.
    pub fn next_close(&self, gap: i64) -> Option<i64> {
        self.open.iter().map(|s| s.closes_at(gap)).min()
    }

    /// The open sessions, oldest first.
    pub fn open(&self) -> &[OpenSession] {
        &self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GAP: i64 = 1800;

    proptest! {
        /// The hand-written JSON of a session is serde_json's of its summary, byte for byte.
        #[test]
        fn session_json_is_what_serde_writes(
            start in any::<i64>(), length in 0u64..1_000_000_000, events in 1u32..10_000,
            ratings_share in 0u32..=100, genres in any::<u64>(),
            mean in proptest::option::of(prop_oneof![0.5f64..5.0, Just(f64::NAN), Just(3.0), any::<f64>()]),
            binge in any::<bool>(), first in any::<bool>(), user in any::<u32>(),
        ) {
            let names: Vec<String> = ["Action", "(no genres listed)", "Film-Noir", "Sci-Fi", "a \"quoted\" \\ genre", "Émotion"]
                .iter().map(|s| s.to_string()).chain((0..20).map(|i| format!("g{i}"))).collect();
            let json: Vec<Vec<u8>> = names.iter().map(|n| serde_json::to_vec(n).unwrap()).collect();
            let s = ClosedSession {
                start,
                length,
                events,
                ratings: events * ratings_share / 100,
                genres: genres & ((1 << names.len()) - 1),
                mean_rating: mean,
                binge,
                first,
            };
            let mut out = Vec::new();
            s.write_json(user, &json, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s.summary(user, &names)).unwrap());
        }
    }

    #[test]
    fn a_late_event_bridges_two_sessions() {
        let mut s = Sessions::default();
        s.add(0, Some(4.0), 1, GAP);
        s.add(3000, Some(2.0), 2, GAP);
        assert_eq!(s.open().len(), 2);
        s.add(1500, None, 4, GAP);
        assert_eq!(s.open().len(), 1);
        let only = s.open()[0];
        assert_eq!((only.start, only.end, only.events, only.ratings, only.genres), (0, 3000, 3, 2, 7));
        assert_eq!(only.mean_rating(), Some(3.0));
    }

    #[test]
    fn a_pause_of_exactly_gap_splits() {
        let mut s = Sessions::default();
        s.add(0, None, 0, GAP);
        s.add(GAP, None, 0, GAP);
        assert_eq!(s.open().len(), 2);
        assert_eq!(s.close_due(GAP - 1, GAP).len(), 0);
        assert_eq!(s.close_due(GAP, GAP).len(), 1);
    }

    /// Batch reference: sort, split wherever the pause is `gap` or more.
    fn batch(mut ts: Vec<i64>) -> Vec<(i64, i64, u32)> {
        ts.sort_unstable();
        let mut out: Vec<(i64, i64, u32)> = Vec::new();
        for t in ts {
            match out.last_mut() {
                Some(last) if t - last.1 < GAP => {
                    last.1 = t;
                    last.2 += 1;
                }
                _ => out.push((t, t, 1)),
            }
        }
        out
    }

    proptest! {
        /// Events arrive in time order up to a lateness of `late`; the watermark trails the max
        /// seen by `late`. Whatever the order and however the watermark closes sessions: they
        /// never overlap, they cover every event exactly once, and they equal the batch answer.
        #[test]
        fn sessions_never_overlap_and_cover_every_event(
            steps in proptest::collection::vec((0i64..4000, 0i64..2000), 1..200),
            late in 0i64..1500,
        ) {
            let mut s = Sessions::default();
            let mut closed = Vec::new();
            let mut clock = 1_000_000i64;
            let mut max_seen = i64::MIN;
            let mut all = Vec::new();
            for (advance, back) in steps {
                clock += advance;
                let wm = max_seen.saturating_sub(late);
                // An event no later than the lateness allows (the processor routes later ones to the DLQ).
                let ts = (clock - back.min(late)).max(if max_seen == i64::MIN { i64::MIN } else { wm });
                all.push(ts);
                s.add(ts, None, 0, GAP);
                max_seen = max_seen.max(ts);
                closed.extend(s.close_due(max_seen - late, GAP));
            }
            closed.extend(s.close_due(i64::MAX, GAP));
            for w in closed.windows(2) {
                prop_assert!(w[1].start - w[0].end >= GAP, "sessions overlap: {:?}", w);
            }
            prop_assert_eq!(closed.iter().map(|c| c.events).sum::<u32>() as usize, all.len());
            for t in &all {
                prop_assert_eq!(closed.iter().filter(|c| c.start <= *t && *t <= c.end).count(), 1);
            }
            let got: Vec<_> = closed.iter().map(|c| (c.start, c.end, c.events)).collect();
            prop_assert_eq!(got, batch(all));
        }
    }
}
