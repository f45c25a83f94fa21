//! Rolling per-user features (RFM and engagement), maintained per event in O(genres).
//!
//! Trailing 7/30/90-day counts come from a ring of 90 day buckets, exact by construction: a
//! window is "the N UTC days ending with the evaluation day", and the ring holds every day of the
//! last 90 that has activity. Events can only arrive up to the allowed lateness (≤ 7 days) behind
//! a user's latest event, so no event ever falls off the back of the ring while it still matters,
//! and the ring also tells whether an event's day was already active (for `active_days`).
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::calendar`, `crate::core::catalog`, `streamflix-schemas`.

use serde::{Deserialize, Serialize};
use streamflix_schemas::UserFeatures;

use crate::core::calendar::{day_of, month_index, month_label, DAY};

/// Days in the ring: the longest trailing window.
pub const RING_DAYS: usize = 90;

/// Trailing windows reported, in days.
pub const WINDOWS: [i64; 3] = [7, 30, 90];

/// Event counts for the last [`RING_DAYS`] days up to the latest day seen.
///
/// Stored as the latest day and `(days before it, count)` for each day with activity, newest
/// first: a few bytes for a user's usual handful of active days, where the 90 counts took 90.
#[derive(Debug, Clone, PartialEq)]
pub struct DayRing {
    /// Latest day with a bucket (`i64::MIN` when empty).
    latest: i64,
    /// `counts[day % RING_DAYS]` for days in `(latest - RING_DAYS, latest]`.
    counts: Vec<u32>,
}

impl Default for DayRing {
    fn default() -> Self {
        DayRing { latest: i64::MIN, counts: vec![0; RING_DAYS] }
    }
}

impl Serialize for DayRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let active: Vec<(u8, u32)> = if self.latest == i64::MIN {
            Vec::new()
        } else {
            (0..RING_DAYS as u8)
                .map(|age| (age, self.counts[Self::slot(self.latest - i64::from(age))]))
                .filter(|&(_, c)| c > 0)
                .collect()
        };
        (self.latest, active).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DayRing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (latest, active): (i64, Vec<(u8, u32)>) = Deserialize::deserialize(d)?;
        let mut ring = DayRing { latest, ..DayRing::default() };
        for (age, c) in active {
            if usize::from(age) >= RING_DAYS || latest == i64::MIN {
                return Err(serde::de::Error::custom(format!("day ring: day {age} before {latest}")));
            }
            ring.counts[Self::slot(latest - i64::from(age))] = c;
        }
        Ok(ring)
    }
}

impl DayRing {
    fn slot(day: i64) -> usize {
        day.rem_euclid(RING_DAYS as i64) as usize
    }

    /// Counts one event on `day`. Returns whether that day had no activity before, or `None` if
    /// the day is older than the ring (which the lateness bound rules out).
    pub fn add(&mut self, day: i64) -> Option<bool> {
        if self.latest == i64::MIN || day > self.latest {
            let stale = if self.latest == i64::MIN { RING_DAYS as i64 } else { day - self.latest };
            if stale >= RING_DAYS as i64 {
                self.counts.iter_mut().for_each(|c| *c = 0);
            } else {
                for d in self.latest + 1..=day {
                    self.counts[Self::slot(d)] = 0;
                }
            }
            self.latest = day;
        } else if day <= self.latest - RING_DAYS as i64 {
            return None;
        }
        let c = &mut self.counts[Self::slot(day)];
        *c += 1;
        Some(*c == 1)
    }

    /// Events on the `days` UTC days ending with `as_of_day` (which is included): the reference
    /// [`DayRing::windows`] is tested against.
    #[cfg(test)]
    pub fn trailing(&self, as_of_day: i64, days: i64) -> u64 {
        if self.latest == i64::MIN {
            return 0;
        }
        let lo = (as_of_day - days + 1).max(self.latest - RING_DAYS as i64 + 1);
        let hi = as_of_day.min(self.latest);
        (lo..=hi).map(|d| u64::from(self.counts[Self::slot(d)])).sum()
    }

    /// [`DayRing::trailing`] over each of [`WINDOWS`], in one pass, and the number of days with
    /// events in the longest window.
    pub fn windows(&self, as_of_day: i64) -> ([u64; 3], u64) {
        let (mut out, mut active) = ([0; 3], 0);
        if self.latest == i64::MIN || self.latest <= as_of_day - WINDOWS[2] {
            return (out, active);
        }
        let hi = as_of_day.min(self.latest);
        let lo = (as_of_day - WINDOWS[2] + 1).max(self.latest - RING_DAYS as i64 + 1);
        for d in lo..=hi {
            let c = u64::from(self.counts[Self::slot(d)]);
            active += u64::from(c > 0);
            let age = as_of_day - d;
            for (o, w) in out.iter_mut().zip(WINDOWS) {
                if age < w {
                    *o += c;
                }
            }
        }
        (out, active)
    }
}

/// `c · ln c`, from a table for small counts (a user's genre counts nearly always are).
fn c_ln_c(c: u32) -> f64 {
    const SMALL: usize = 1024;
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let t = TABLE
        .get_or_init(|| (0..SMALL).map(|c| if c == 0 { 0.0 } else { c as f64 * (c as f64).ln() }).collect());
    match t.get(c as usize) {
        Some(&v) => v,
        None => f64::from(c) * f64::from(c).ln(),
    }
}

/// A user's first session, as the insights report's return and genre questions need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FirstSession {
    /// Not closed yet: the user's ratings so far as (event time, the movie's genre bits). Only
    /// those up to the session's end count when it closes; a user usually has a handful.
    Open(Vec<(i64, u64)>),
    /// Closed.
    Closed {
        /// Event time of its last event.
        end: i64,
        /// Its mean rating, if it had ratings.
        mean_rating: Option<f64>,
        /// The genre (bit) most rated in it, ties to the alphabetically first name; `None`
        /// without rated genres.
        top_genre: Option<u16>,
    },
}

/// What the processor knows about one user's activity, apart from open sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Event time of the first event.
    pub first_seen: i64,
    /// Event time of the latest event.
    pub last: i64,
    /// Ratings seen.
    pub ratings: u64,
    /// Tags seen.
    pub tags: u64,
    /// Running mean of ratings (Welford).
    pub rating_mean: f64,
    /// Running sum of squared deviations (Welford).
    pub rating_m2: f64,
    /// Ratings per catalog genre, by genre bit.
    pub genre_counts: Vec<u32>,
    /// Day buckets for trailing counts.
    pub ring: DayRing,
    /// Distinct UTC days with activity.
    pub active_days: u64,
    /// Closed sessions.
    pub sessions: u64,
    /// Sum of closed sessions' lengths, seconds.
    pub session_seconds: i64,
    /// Closed sessions that were binges.
    pub binge_sessions: u64,
    /// End of the latest binge session (0: none yet).
    pub last_binge_end: i64,
    /// The first session.
    pub first_session: FirstSession,
    /// The earliest event after the first session's end, once that session has closed.
    pub returned_at: Option<i64>,
    /// Bit k: an event in the k-th calendar month (UTC) after the month of `first_seen`
    /// (k < 64; bit 0 is the signup month).
    pub active_months: u64,
}

impl Activity {
    /// A user first seen at `ts`, with `genres` catalog genres.
    pub fn new(ts: i64, genres: usize) -> Self {
        Activity {
            first_seen: ts,
            last: ts,
            ratings: 0,
            tags: 0,
            rating_mean: 0.0,
            rating_m2: 0.0,
            genre_counts: vec![0; genres],
            ring: DayRing::default(),
            active_days: 0,
            sessions: 0,
            session_seconds: 0,
            binge_sessions: 0,
            last_binge_end: 0,
            first_session: FirstSession::Open(Vec::new()),
            returned_at: None,
            active_months: 0,
        }
    }

    /// Closes the first session, which ended at `end` with `mean_rating`; `later` is the start
    /// of the user's next session if one is known (open, or closing in the same step).
    /// `genre_names` break ties of the most-rated genre.
    pub fn close_first_session(
        &mut self,
        end: i64,
        mean_rating: Option<f64>,
        later: Option<i64>,
        genre_names: &[String],
    ) {
        let FirstSession::Open(ratings) = &self.first_session else { return };
        let mut counts: Vec<u32> = Vec::new();
        for &(_, genres) in ratings.iter().filter(|(ts, _)| *ts <= end) {
            for g in crate::core::catalog::bits(genres) {
                if g >= counts.len() {
                    counts.resize(g + 1, 0);
                }
                counts[g] += 1;
            }
        }
        let name = |g: usize| genre_names.get(g).map_or("", String::as_str);
        let top_genre = (0..counts.len())
            .filter(|&g| counts[g] > 0)
            .max_by(|&a, &b| counts[a].cmp(&counts[b]).then_with(|| name(b).cmp(name(a))))
            .map(|g| g as u16);
        let after = ratings.iter().map(|(ts, _)| *ts).filter(|ts| *ts > end).min();
        self.returned_at = [after, later].into_iter().flatten().min();
        self.first_session = FirstSession::Closed { end, mean_rating, top_genre };
    }

    /// Counts an event at `ts`: a rating (with `genres` of the movie) or a tag.
    pub fn add(&mut self, ts: i64, rating: Option<f32>, genres: u64) {
        let month = month_index(ts);
        let mut signup = month_index(self.first_seen);
        if ts < self.first_seen {
            // An earlier event moves the signup month back: the mask's months move with it.
            let earlier = signup - month;
            self.active_months = if earlier >= 64 { 0 } else { self.active_months << earlier };
            signup = month;
            self.first_seen = ts;
        }
        let k = month - signup;
        if k < 64 {
            self.active_months |= 1 << k;
        }
        match &mut self.first_session {
            FirstSession::Open(ratings) => {
                if rating.is_some() {
                    ratings.push((ts, genres));
                }
            }
            FirstSession::Closed { end, .. } => {
                if ts > *end {
                    self.returned_at = Some(self.returned_at.map_or(ts, |r| r.min(ts)));
                }
            }
        }
        self.last = self.last.max(ts);
        if self.ring.add(day_of(ts)) == Some(true) {
            self.active_days += 1;
        }
        match rating {
            Some(r) => {
                self.ratings += 1;
                let x = f64::from(r);
                let delta = x - self.rating_mean;
                self.rating_mean += delta / self.ratings as f64;
                self.rating_m2 += delta * (x - self.rating_mean);
                for i in crate::core::catalog::bits(genres) {
                    if i >= self.genre_counts.len() {
                        self.genre_counts.resize(i + 1, 0);
                    }
                    self.genre_counts[i] += 1;
                }
            }
            None => self.tags += 1,
        }
    }

    /// The features at event time `as_of`, or at the user's last event if that is later (which
    /// happens while partitions are consumed at different speeds: the watermark trails the
    /// slowest one). `genre_names` are the catalog's, by bit.
    pub fn features(&self, as_of: i64, genre_names: &[String], open_sessions: u64) -> UserFeatures {
        let row = self.row(0, as_of, false, genre_names.len());
        let name = |i: usize| genre_names.get(i).cloned().unwrap_or_else(|| format!("genre#{i}"));
        UserFeatures {
            as_of: row.as_of,
            recency_days: row.recency_days,
            last_activity: row.last_activity,
            first_seen: row.first_seen,
            cohort: month_label(row.cohort),
            events_7d: row.events_7d,
            events_30d: row.events_30d,
            events_90d: row.events_90d,
            events_lifetime: row.ratings + row.tags,
            ratings: row.ratings,
            tags: row.tags,
            rating_mean: row.rating_mean,
            rating_std: row.rating_std,
            genres: self
                .genre_counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (name(i), u64::from(c)))
                .collect(),
            favourite_genre: row.favourite_genre.map(name),
            genre_diversity: row.genre_diversity,
            sessions: row.sessions,
            open_sessions,
            mean_session_minutes: row.mean_session_minutes,
            binge_sessions: row.binge_sessions,
            active_days: row.active_days,
        }
    }

    /// [`Activity::features`] as plain values, without allocating (the genre counts left out, the
    /// favourite genre as its catalog index): one row of the `user_features` tables. `genres` is
    /// the number of catalog genres.
    pub fn row(&self, user: u32, as_of: i64, churned: bool, genres: usize) -> FeatureRow {
        let as_of = as_of.max(self.last);
        let as_of_day = day_of(as_of);
        let mut total = 0u64;
        let mut favourite: Option<(usize, u32)> = None;
        // Shannon entropy of the counts c_i (total T): ln T − Σ c_i ln c_i / T.
        let mut sum_c_ln_c = 0.0;
        for (i, &c) in self.genre_counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            total += u64::from(c);
            if favourite.is_none_or(|(_, best)| c > best) {
                favourite = Some((i, c));
            }
            sum_c_ln_c += c_ln_c(c);
        }
        let entropy = if total > 0 { (total as f64).ln() - sum_c_ln_c / total as f64 } else { 0.0 };
        let ([events_7d, events_30d, events_90d], active_days_90d) = self.ring.windows(as_of_day);
        FeatureRow {
            user,
            as_of,
            churned,
            ratings: self.ratings,
            tags: self.tags,
            events_7d,
            events_30d,
            events_90d,
            rating_mean: (self.ratings > 0).then_some(self.rating_mean),
            rating_std: (self.ratings > 0).then(|| (self.rating_m2 / self.ratings as f64).max(0.0).sqrt()),
            first_seen: self.first_seen,
            last_activity: self.last,
            recency_days: recency_days(as_of, self.last),
            active_days: self.active_days,
            active_days_90d,
            sessions: self.sessions,
            binge_sessions: self.binge_sessions,
            mean_session_minutes: (self.sessions > 0)
                .then(|| self.session_seconds as f64 / self.sessions as f64 / 60.0),
            favourite_genre: favourite.map(|(i, _)| i),
            genre_diversity: if genres > 1 && total > 0 {
                (entropy / (genres as f64).ln()).clamp(0.0, 1.0)
            } else {
                0.0
            },
            cohort: month_index(self.first_seen),
            segment: None,
        }
    }
}

/// Days from `last` to `as_of` (not below 0).
pub fn recency_days(as_of: i64, last: i64) -> f64 {
    ((as_of - last).max(0)) as f64 / DAY as f64
}

/// One user's features as plain values ([`Activity::row`]): a row of the `user_features` tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureRow {
    /// The user.
    pub user: u32,
    /// The event time the values describe.
    pub as_of: i64,
    /// In an inactivity episode (churned, not back yet).
    pub churned: bool,
    /// Ratings ever.
    pub ratings: u64,
    /// Tags ever.
    pub tags: u64,
    /// Events on the 7 UTC days ending with `as_of`'s day.
    pub events_7d: u64,
    /// The same over 30 days.
    pub events_30d: u64,
    /// The same over 90 days.
    pub events_90d: u64,
    /// Mean rating.
    pub rating_mean: Option<f64>,
    /// Population standard deviation of the ratings.
    pub rating_std: Option<f64>,
    /// First activity.
    pub first_seen: i64,
    /// Latest activity.
    pub last_activity: i64,
    /// Days from the latest activity to `as_of`.
    pub recency_days: f64,
    /// Distinct UTC days with activity.
    pub active_days: u64,
    /// Distinct UTC days with activity among the 90 ending with `as_of`'s day.
    pub active_days_90d: u64,
    /// Closed sessions.
    pub sessions: u64,
    /// Closed binge sessions.
    pub binge_sessions: u64,
    /// Mean closed session length, minutes.
    pub mean_session_minutes: Option<f64>,
    /// Catalog index of the most-rated genre (ties: the first).
    pub favourite_genre: Option<usize>,
    /// Normalised Shannon entropy of the genre counts.
    pub genre_diversity: f64,
    /// Month index of `first_seen`.
    pub cohort: i32,
    /// The user's RFM scores and segment `[R, F, M, segment index]` as of the churn model's last
    /// segmentation (`analytics::segments`); `None` without the model or before its first.
    pub segment: Option<[u8; 4]>,
}

impl FeatureRow {
    /// This row as of the later time `as_of`, for a user whose state has not changed since and
    /// whose trailing windows were empty (`events_90d == 0`: they stay empty without events): only
    /// `as_of` and `recency_days` move. Equal, bit for bit, to [`Activity::row`] at `as_of`.
    pub fn aged(self, as_of: i64) -> FeatureRow {
        debug_assert_eq!(self.events_90d, 0, "trailing windows change with time");
        let as_of = as_of.max(self.last_activity);
        FeatureRow { as_of, recency_days: recency_days(as_of, self.last_activity), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The entropy through the `c ln c` table equals the textbook −Σ p ln p.
    #[test]
    fn genre_diversity_is_the_normalised_entropy() {
        let mut a = Activity::new(0, 5);
        a.genre_counts = vec![3, 0, 1500, 7, 1];
        a.ratings = 1511;
        let total = 1511.0_f64;
        let h: f64 = [3.0, 1500.0, 7.0, 1.0].iter().map(|c: &f64| -(c / total) * (c / total).ln()).sum();
        let row = a.row(1, 0, false, 5);
        assert!(
            (row.genre_diversity - h / 5f64.ln()).abs() < 1e-12,
            "{} vs {}",
            row.genre_diversity,
            h / 5f64.ln()
        );
        assert_eq!(row.favourite_genre, Some(2));
    }

    #[test]
    fn windows_are_whole_utc_days() {
        let mut ring = DayRing::default();
        let d0 = 20_000;
        for d in [d0 - 100, d0 - 89, d0 - 30, d0 - 29, d0 - 7, d0 - 6, d0] {
            ring.add(d);
        }
        assert_eq!(ring.trailing(d0, 7), 2);
        assert_eq!(ring.trailing(d0, 30), 4);
        assert_eq!(ring.trailing(d0, 90), 6, "day d0-100 was cleared; d0-89 is the 90th day");
        assert_eq!(ring.trailing(d0 + 7, 7), 0);
    }

    #[test]
    fn features_of_a_small_history() {
        let names: Vec<String> = ["Action", "Comedy", "Drama"].iter().map(|s| s.to_string()).collect();
        let mut a = Activity::new(1_000_000_000, 3);
        a.add(1_000_000_000, Some(4.0), 0b001);
        a.add(1_000_000_100, Some(2.0), 0b011);
        a.add(1_000_090_000, None, 0b100);
        let f = a.features(1_000_090_000 + DAY, &names, 0);
        assert_eq!((f.ratings, f.tags, f.events_lifetime, f.active_days), (2, 1, 3, 2));
        assert_eq!(f.rating_mean, Some(3.0));
        assert_eq!(f.rating_std, Some(1.0));
        assert_eq!(f.favourite_genre.as_deref(), Some("Action"));
        assert_eq!(f.genres.get("Comedy"), Some(&1));
        assert!((f.recency_days - 1.0).abs() < 1e-12);
        let h = -(2.0f64 / 3.0 * (2.0f64 / 3.0).ln() + 1.0 / 3.0 * (1.0f64 / 3.0).ln());
        assert!((f.genre_diversity - h / 3f64.ln()).abs() < 1e-12);
        assert_eq!(f.cohort, "2001-09");
    }

    proptest! {
        /// Whatever the history (in order up to a 7-day lateness), every trailing count at every
        /// evaluation day equals a brute-force recount, active days equal distinct days, and the
        /// ring reads back as stored.
        #[test]
        fn trailing_counts_equal_a_brute_force_recount(
            steps in proptest::collection::vec((0i64..5 * DAY, 0i64..7 * DAY), 1..300),
            probes in proptest::collection::vec(0i64..200, 1..10),
        ) {
            let mut a = Activity::new(0, 0);
            let mut clock = 1_500_000_000i64;
            let mut max_seen = i64::MIN;
            let mut seen = Vec::new();
            for (advance, back) in steps {
                clock += advance;
                let ts = (clock - back).max(max_seen.saturating_sub(7 * DAY));
                if seen.is_empty() { a = Activity::new(ts, 0); }
                a.add(ts, None, 0);
                max_seen = max_seen.max(ts);
                seen.push(ts);
            }
            let stored = postcard::to_stdvec(&a.ring).unwrap();
            prop_assert_eq!(&postcard::from_bytes::<DayRing>(&stored).unwrap(), &a.ring, "the ring round-trips");
            let mut days: Vec<i64> = seen.iter().map(|&t| day_of(t)).collect();
            days.sort_unstable();
            days.dedup();
            prop_assert_eq!(a.active_days, days.len() as u64);
            for p in probes {
                let as_of = max_seen + p * DAY;
                let (all, active) = a.ring.windows(day_of(as_of));
                let in_window = |n: i64, t: i64| (day_of(as_of) - n + 1..=day_of(as_of)).contains(&day_of(t));
                for (i, n) in WINDOWS.into_iter().enumerate() {
                    let want = seen.iter().filter(|&&t| in_window(n, t)).count() as u64;
                    prop_assert_eq!(a.ring.trailing(day_of(as_of), n), want, "window {} at {}", n, as_of);
                    prop_assert_eq!(all[i], want, "windows() for {} at {}", n, as_of);
                }
                let want = days.iter().filter(|&&d| in_window(90, d * DAY)).count() as u64;
                prop_assert_eq!(active, want, "active days in 90 at {}", as_of);
            }
        }
    }

    /// The first session's summary is the batch answer whatever the order events arrive in:
    /// the most-rated genre (ties to the alphabetically first name), the earliest later event,
    /// and active months counted from the earliest event, even one that arrives late.
    #[test]
    fn first_session_and_active_months_follow_event_time() {
        let names: Vec<String> = ["Drama", "Action", "Comedy"].iter().map(|s| s.to_string()).collect();
        let (drama, action, comedy) = (1u64, 2u64, 4u64);
        let month = 31 * DAY;
        let t0 = 1_500_000_000 + 10 * month;
        let mut a = Activity::new(t0 + 600, 3);
        a.add(t0 + 600, Some(4.0), action | comedy);
        a.add(t0 + 900, Some(3.0), drama);
        a.add(t0 + 5 * DAY, Some(2.0), drama); // a later session, applied before the first closes
        a.add(t0, Some(5.0), action | drama); // a late event: the first session's, and the signup
        a.add(t0 + 3 * month + DAY, None, 0); // a tag three months on
        a.close_first_session(t0 + 900, Some(4.0), Some(t0 + 5 * DAY), &names);
        // Action 2, Drama 2 (the later session's Drama does not count), Comedy 1: Action wins the
        // tie by name.
        assert_eq!(
            a.first_session,
            FirstSession::Closed { end: t0 + 900, mean_rating: Some(4.0), top_genre: Some(1) }
        );
        assert_eq!(a.returned_at, Some(t0 + 5 * DAY));
        a.add(t0 + DAY, None, 0); // earlier than the known return: it is the return now
        assert_eq!(a.returned_at, Some(t0 + DAY));
        let k = |ts: i64| month_index(ts) - month_index(t0);
        let want = (1u64 << k(t0)) | (1 << k(t0 + 5 * DAY)) | (1 << k(t0 + 3 * month + DAY));
        assert_eq!(a.active_months, want);
        // An event a year earlier moves the signup month back; the mask follows.
        a.add(t0 - 12 * month, Some(3.0), 0);
        assert_eq!(a.active_months, (want << (month_index(t0) - month_index(t0 - 12 * month))) | 1);
    }
}
