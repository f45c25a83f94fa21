//! Platform-level engagement aggregates, in event time: what the analysts' dashboards show.
//!
//! Per-user state answers "who"; these answer "how many": ratings by value, activity by UTC hour
//! and weekday, ratings per genre over the last 30 event-days, and retention by signup cohort
//! month. They are updated as events are applied (in event-time order) and are part of the
//! checkpoint, so they are exactly-once like the rest of the state. The metrics evaluate them at
//! the watermark, beside [`Snapshot`]'s counts over all users.
//!
//! Also the mergeable summaries the insights report tests: rating values per genre, and closed
//! sessions' span and events by weekday or weekend and by Action or Drama.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::calendar`, `crate::core::catalog`, `crate::core::sessions`, `crate::core::summary`.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::core::calendar::{day_of, hour_and_weekday, month_index};
use crate::core::catalog::count_bits;
use crate::core::sessions::ClosedSession;
use crate::core::summary::Moments;

/// Event-days in the genre-demand window.
pub const GENRE_DAYS: i64 = 30;
/// Cohorts (signup months) reported for retention, counting back from the watermark's month.
pub const RETENTION_COHORTS: i32 = 12;

/// The bucket of event-day `day` in `days` (day buckets in order, covering the `window` days
/// ending with the latest day seen), created with `init` if missing; `None` if `day` is already
/// out of the window. Buckets that leave the window are dropped.
pub fn day_bucket<T>(
    days: &mut VecDeque<(i64, T)>,
    day: i64,
    window: i64,
    init: impl FnOnce() -> T,
) -> Option<&mut T> {
    let i = match days.iter().rposition(|(d, _)| *d <= day) {
        Some(i) if days[i].0 == day => i,
        pos => {
            let latest = days.back().map_or(day, |(d, _)| (*d).max(day));
            if day <= latest - window {
                return None;
            }
            days.insert(pos.map_or(0, |i| i + 1), (day, init()));
            while days.front().is_some_and(|(d, _)| *d <= latest - window) {
                days.pop_front();
            }
            days.iter().position(|(d, _)| *d == day).expect("just inserted")
        }
    };
    Some(&mut days[i].1)
}

/// Per movie: its ratings and the sum of their values in half stars (so the mean is exact). A
/// hash map for the per-rating update, stored sorted by movie id so the checkpoint's bytes are a
/// function of the content. Mergeable: counts and sums add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovieRatings(pub FxHashMap<u32, (u32, u32)>);

impl MovieRatings {
    /// Counts a rating of `movie`.
    #[inline]
    pub fn add(&mut self, movie: u32, rating: f32) {
        let e = self.0.entry(movie).or_default();
        e.0 += 1;
        e.1 += (rating * 2.0).round() as u32;
    }

    /// (movie, ratings, mean rating), by movie id.
    pub fn sorted(&self) -> Vec<(u32, u64, f64)> {
        let mut out: Vec<(u32, u64, f64)> = self
            .0
            .iter()
            .map(|(&m, &(n, halves))| (m, u64::from(n), f64::from(halves) / 2.0 / f64::from(n)))
            .collect();
        out.sort_unstable_by_key(|r| r.0);
        out
    }
}

impl Serialize for MovieRatings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(u32, u32, u32)> = self.0.iter().map(|(&m, &(n, h))| (m, n, h)).collect();
        v.sort_unstable_by_key(|r| r.0);
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MovieRatings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<(u32, u32, u32)> = Vec::deserialize(d)?;
        Ok(MovieRatings(v.into_iter().map(|(m, n, h)| (m, (n, h))).collect()))
    }
}

/// One signup cohort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    /// Users whose first event is in this month.
    pub users: u64,
    /// Month index → users of the cohort active (≥ 1 event) in that month.
    pub active: BTreeMap<i32, u64>,
}

/// The aggregates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// Ratings by value: index = rating × 2 − 1 (0.5 … 5.0).
    pub ratings_by_value: [u64; 10],
    /// Events (ratings and tags) by UTC hour of day.
    pub events_by_hour: [u64; 24],
    /// Events by UTC weekday, Monday first.
    pub events_by_weekday: [u64; 7],
    /// Ratings per genre bit, per event-day, for the last [`GENRE_DAYS`] days seen.
    pub genre_days: VecDeque<(i64, Vec<u64>)>,
    /// Signup month index → cohort.
    pub cohorts: BTreeMap<i32, Cohort>,
    /// Rating values per genre bit (each rating in each of its movie's genres), as mergeable
    /// moments: the ANOVA across genres and Action against Drama (`streamflix report`).
    pub rating_moments: Vec<Moments>,
    /// Closed sessions' span in minutes ((last event − first event) / 60), by the UTC weekday
    /// they start on: [Monday–Friday, Saturday–Sunday].
    pub session_minutes: [Moments; 2],
    /// Closed sessions' events (ratings and tags), split the same way.
    pub session_events: [Moments; 2],
    /// Closed sessions' span in minutes: [touching Action and not Drama, touching Drama and not
    /// Action] (genres of the movies rated or tagged in the session).
    pub genre_only_minutes: [Moments; 2],
    /// Ratings per movie (`highly_rated_engagement.movies`).
    pub movie_ratings: MovieRatings,
    /// Per calendar week with activity (Monday-based, UTC; [`week_of`]): ratings applied and
    /// closed sessions that started in it.
    pub weeks: BTreeMap<i64, (u64, u64)>,
}

/// The calendar week (UTC, Monday to Sunday) of event time `ts`: weeks since the one holding
/// 1970-01-01 (a Thursday), which started on Monday 1969-12-29.
pub fn week_of(ts: i64) -> i64 {
    (day_of(ts) + 3).div_euclid(7)
}

/// The first day (a Monday, days since 1970-01-01) of week `week`.
pub fn week_start_day(week: i64) -> i64 {
    week * 7 - 3
}

impl Engagement {
    /// Counts one applied event of a user first seen at `first_seen` whose previous event was at
    /// `prev` (`None`: this is the user's first event).
    pub fn on_event(
        &mut self,
        ts: i64,
        rating: Option<f32>,
        genres: u64,
        genre_count: usize,
        prev: Option<i64>,
        first_seen: i64,
    ) {
        let (hour, weekday) = hour_and_weekday(ts);
        self.events_by_hour[hour] += 1;
        self.events_by_weekday[weekday] += 1;
        let month = month_index(ts);
        let cohort = self.cohorts.entry(month_index(first_seen)).or_default();
        match prev {
            None => {
                cohort.users += 1;
                *cohort.active.entry(month).or_default() += 1;
            }
            // A user's events are applied in time order: a new month is a first event in it.
            Some(p) if month_index(p) != month => *cohort.active.entry(month).or_default() += 1,
            Some(_) => {}
        }
        let Some(r) = rating else { return };
        self.weeks.entry(week_of(ts)).or_default().0 += 1;
        let idx = ((r * 2.0).round() as usize).clamp(1, 10) - 1;
        self.ratings_by_value[idx] += 1;
        if self.rating_moments.len() < genre_count {
            self.rating_moments.resize(genre_count, Moments::default());
        }
        let mut bits = genres;
        while bits != 0 {
            let g = bits.trailing_zeros() as usize;
            if let Some(m) = self.rating_moments.get_mut(g) {
                m.push(f64::from(r));
            }
            bits &= bits - 1;
        }
        if let Some(counts) =
            day_bucket(&mut self.genre_days, day_of(ts), GENRE_DAYS, || vec![0; genre_count])
        {
            count_bits(counts, genres);
        }
    }

    /// Counts one closed session: `action` and `drama` are those genres' bits in the catalog (0
    /// if it has none).
    pub fn on_session(&mut self, s: &ClosedSession, action: u64, drama: u64) {
        let minutes = s.length as f64 / 60.0;
        let weekend = usize::from(hour_and_weekday(s.start).1 >= 5);
        self.weeks.entry(week_of(s.start)).or_default().1 += 1;
        self.session_minutes[weekend].push(minutes);
        self.session_events[weekend].push(f64::from(s.events));
        let (a, d) = (s.genres & action != 0, s.genres & drama != 0);
        if a != d {
            self.genre_only_minutes[usize::from(d)].push(minutes);
        }
    }

    /// Ratings per genre bit over the [`GENRE_DAYS`] event-days ending with `wm`'s day.
    pub fn genre_demand(&self, wm: i64, genre_count: usize) -> Vec<u64> {
        let last = day_of(wm);
        let mut out = vec![0; genre_count];
        for (d, counts) in &self.genre_days {
            if *d > last - GENRE_DAYS && *d <= last {
                for (o, c) in out.iter_mut().zip(counts) {
                    *o += c;
                }
            }
        }
        out
    }

    /// Retention at `wm`: for the [`RETENTION_COHORTS`] signup months up to `wm`'s month,
    /// `(cohort month, months since signup, share of the cohort active in that month)` for every
    /// month from signup to `wm`'s.
    pub fn retention(&self, wm: i64) -> Vec<(i32, i32, f64)> {
        let now = month_index(wm);
        let mut out = Vec::new();
        for (&c, cohort) in self.cohorts.range(now - RETENTION_COHORTS + 1..=now) {
            for k in 0..=(now - c) {
                let active = cohort.active.get(&(c + k)).copied().unwrap_or(0);
                out.push((c, k, active as f64 / cohort.users.max(1) as f64));
            }
        }
        out
    }
}

/// Counts over all users at the watermark (computed when a checkpoint is written, from the state
/// it commits).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The watermark they are evaluated at.
    pub watermark: Option<i64>,
    /// Users in the state.
    pub users: u64,
    /// Users whose last activity is less than 1, 7, 30 days before the watermark.
    pub active_1d: u64,
    /// See `active_1d`.
    pub active_7d: u64,
    /// See `active_1d`.
    pub active_30d: u64,
    /// Users with a binge session ending less than 30 days before the watermark.
    pub binge_watchers_30d: u64,
    /// Open sessions over all users.
    pub open_sessions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::calendar::{month_label, DAY};

    const T: i64 = 1_500_000_000; // 2017-07-14T02:40:00Z, a Friday

    #[test]
    fn counts_hours_weekdays_values_and_genres() {
        let mut e = Engagement::default();
        e.on_event(T, Some(4.5), 0b101, 3, None, T);
        e.on_event(T + 3600, None, 0b010, 3, Some(T), T);
        assert_eq!(e.events_by_hour[2], 1);
        assert_eq!(e.events_by_hour[3], 1);
        assert_eq!(e.events_by_weekday[4], 2, "Friday");
        assert_eq!(e.ratings_by_value[8], 1, "4.5 is the 9th value");
        assert_eq!(e.genre_demand(T, 3), vec![1, 0, 1], "tags are not ratings");
        // 30 days later the first day has left the window.
        e.on_event(T + 30 * DAY, Some(1.0), 0b010, 3, Some(T + 3600), T);
        assert_eq!(e.genre_demand(T + 30 * DAY, 3), vec![0, 1, 0]);
        assert_eq!(e.genre_days.len(), 1);
    }

    #[test]
    fn retention_counts_distinct_active_users_per_month() {
        let mut e = Engagement::default();
        // Two users sign up in July 2017; one comes back in August (twice), none in September.
        e.on_event(T, Some(3.0), 1, 1, None, T);
        e.on_event(T + 10, Some(3.0), 1, 1, None, T + 10);
        e.on_event(T + 31 * DAY, Some(3.0), 1, 1, Some(T), T);
        e.on_event(T + 32 * DAY, Some(3.0), 1, 1, Some(T + 31 * DAY), T);
        let r = e.retention(T + 62 * DAY);
        let july = month_index(T);
        assert_eq!(month_label(july), "2017-07");
        assert_eq!(r, vec![(july, 0, 1.0), (july, 1, 0.5), (july, 2, 0.0)]);
    }
}
