//! The day close, in event time: what happened on the open UTC day, and the rows of its tables
//! once the watermark passes the next midnight.
//!
//! [`DayLog`] collects, as events are applied, what the day's tables need that the per-user state
//! does not keep: the day's ratings in the order they were applied, the users whose state
//! changed, the sessions closed and the churn alerts fired. It is part of the checkpoint, so a
//! restart mid-day closes the day exactly as an uninterrupted run does. When the watermark passes
//! 00:00 UTC of the next day, the processor turns it into a [`DayClose`] (the rows, as plain
//! values; `analytics::tables` makes Arrow batches of them) and starts the next day's log.
//!
//! Every aggregate here is a mergeable partial per input partition: users are keyed to
//! partitions, so per-genre counts, sums and distinct raters of two partitions add up.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::calendar`, `crate::core::catalog`, `crate::core::engagement`, `crate::core::features`, `crate::core::sessions`, `streamflix-schemas`.

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use streamflix_schemas::{ChurnStatus, Rating};

use crate::core::calendar::{month_index, DAY};
use crate::core::catalog::{bits, Catalog};
use crate::core::engagement::Engagement;
use crate::core::features::FeatureRow;
use crate::core::sessions::ClosedSession;

/// A churn alert as the `churn_alerts` table holds it (the published alert less its features,
/// which the day's `user_features` row has).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// The user.
    pub user: u32,
    /// `churned` or `reactivated`.
    pub status: ChurnStatus,
    /// Event time of the transition.
    pub at: i64,
    /// The last activity before the inactivity episode.
    pub last_activity: i64,
    /// Days without activity.
    pub inactive_days: f64,
}

/// What the open day has seen so far (checkpointed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DayLog {
    /// The open day (days since the epoch); `None` before the first event.
    pub open: Option<i64>,
    /// Ratings applied on the open day, in order.
    pub ratings: Vec<Rating>,
    /// Users whose state changed on the open day (with repeats; deduplicated at the close).
    pub users: Vec<u32>,
    /// Sessions closed on the open day, in order.
    pub sessions: Vec<(u32, ClosedSession)>,
    /// Alerts fired on the open day, in order.
    pub alerts: Vec<AlertRow>,
    /// `users`' length at which it is next deduplicated (0: at 2^20).
    #[serde(skip)]
    next_dedup: usize,
}

impl PartialEq for DayLog {
    /// The logged data (not when the touched users are next deduplicated).
    fn eq(&self, o: &DayLog) -> bool {
        (self.open, &self.ratings, &self.users, &self.sessions, &self.alerts)
            == (o.open, &o.ratings, &o.users, &o.sessions, &o.alerts)
    }
}

impl DayLog {
    /// An empty log for `day`.
    pub fn starting(day: i64) -> DayLog {
        DayLog { open: Some(day), ..DayLog::default() }
    }

    /// Notes that `user`'s state changed.
    #[inline]
    pub fn touch(&mut self, user: u32) {
        if self.users.last() != Some(&user) {
            self.users.push(user);
            // A day of real-time input touches a user many times: keep the list near its set,
            // deduplicating whenever it has doubled since the last time.
            if self.users.len() >= self.next_dedup.max(1 << 20) {
                self.users.sort_unstable();
                self.users.dedup();
                self.next_dedup = 2 * self.users.len();
            }
        }
    }

    /// The distinct users touched, ascending.
    pub fn distinct_users(&self) -> Vec<u32> {
        let mut u = self.users.clone();
        u.sort_unstable();
        u.dedup();
        u
    }
}

/// One genre's activity on a day (`genre_daily`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenreDay {
    /// Catalog genre index.
    pub genre: usize,
    /// Ratings of movies of the genre.
    pub ratings: u64,
    /// Their sum.
    pub rating_sum: f64,
    /// Distinct users who rated a movie of the genre.
    pub raters: u64,
    /// Sessions closed on the day that touched the genre.
    pub sessions: u64,
    /// Users whose first rating of the day was of a movie of the genre.
    pub first_rating_users: u64,
}

/// One cell of the cohort triangle (`cohort_retention`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionRow {
    /// Signup month index (see `calendar::month_index`).
    pub cohort: i32,
    /// Months since signup.
    pub months: i32,
    /// Users of the cohort.
    pub size: u64,
    /// Of them, active in that month.
    pub active: u64,
}

/// Every user and the cohort triangle: at each month's last close and at the end of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct FullSnapshot {
    /// Every user, by id (empty when `user_features_full` is not written); shared with the
    /// processor, which ages the rows of unchanged users at the next month end.
    pub users: std::sync::Arc<Vec<FeatureRow>>,
    /// All cohorts, every month from signup to `as_of`'s.
    pub retention: Vec<RetentionRow>,
}

/// A closed day: the rows of its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct DayClose {
    /// The day (days since the epoch).
    pub day: i64,
    /// `false` for the last day when a finite input ends (it gets no `_SUCCESS`).
    pub complete: bool,
    /// The time the rows describe: the day's last second, or the final watermark.
    pub as_of: i64,
    /// The day's ratings, in the order they were applied.
    pub ratings: Vec<Rating>,
    /// Users whose state changed on the day, by id (empty when the table is not written).
    pub users: Vec<FeatureRow>,
    /// Sessions closed on the day, by close time (end + gap), user and start.
    pub sessions: Vec<(u32, ClosedSession)>,
    /// Alerts fired on the day, by time, user and status.
    pub alerts: Vec<AlertRow>,
    /// Genres rated or touched by a closed session on the day, in catalog order.
    pub genres: Vec<GenreDay>,
    /// At a month's last close and at the end of the input.
    pub full: Option<FullSnapshot>,
}

/// Which of a close's rows the processor computes (the others are left empty): the per-user ones
/// cost a feature evaluation per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSpec {
    /// `user_features`: the users whose state changed on the day.
    pub users: bool,
    /// `user_features_full`: every user, at month ends and at the end of the input.
    pub full: bool,
    /// `cohort_retention`: the cohort triangle, at the same closes.
    pub retention: bool,
}

/// Whether `day` is the last of its UTC month.
pub fn is_month_end(day: i64) -> bool {
    month_index(day * DAY) != month_index((day + 1) * DAY)
}

/// The `genre_daily` rows of a day's log.
pub fn genre_day(log: &DayLog, catalog: &Catalog) -> Vec<GenreDay> {
    let n = catalog.genre_names().len();
    let mut g: Vec<GenreDay> = (0..n)
        .map(|genre| GenreDay {
            genre,
            ratings: 0,
            rating_sum: 0.0,
            raters: 0,
            sessions: 0,
            first_rating_users: 0,
        })
        .collect();
    let mut seen = FxHashSet::default();
    let mut by_user: Vec<(u32, u64)> = Vec::with_capacity(log.ratings.len());
    for r in &log.ratings {
        let mask = catalog.genres_of(r.movie).unwrap_or(0);
        for i in bits(mask) {
            g[i].ratings += 1;
            g[i].rating_sum += f64::from(r.rating);
        }
        if seen.insert(r.user) {
            for i in bits(mask) {
                g[i].first_rating_users += 1;
            }
        }
        by_user.push((r.user, mask));
    }
    by_user.sort_unstable_by_key(|&(u, _)| u);
    for run in by_user.chunk_by(|a, b| a.0 == b.0) {
        let mask = run.iter().fold(0, |m, &(_, b)| m | b);
        for i in bits(mask) {
            g[i].raters += 1;
        }
    }
    for (_, s) in &log.sessions {
        for i in bits(s.genres) {
            if i < n {
                g[i].sessions += 1;
            }
        }
    }
    g.retain(|x| x.ratings > 0 || x.sessions > 0);
    g
}

/// The cohort triangle at `as_of`: every cohort, every month from its signup to `as_of`'s.
pub fn retention(engagement: &Engagement, as_of: i64) -> Vec<RetentionRow> {
    let now = month_index(as_of);
    let mut out = Vec::new();
    for (&cohort, c) in engagement.cohorts.range(..=now) {
        for months in 0..=(now - cohort) {
            let active = c.active.get(&(cohort + months)).copied().unwrap_or(0);
            out.push(RetentionRow { cohort, months, size: c.users, active });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamflix_schemas::Movie;

    #[test]
    fn genre_day_counts_ratings_raters_first_ratings_and_sessions() {
        let movies = vec![
            Movie { id: 1, title: "A".into(), year: None, genres: vec!["Action".into(), "Drama".into()] },
            Movie { id: 2, title: "B".into(), year: None, genres: vec!["Drama".into()] },
            Movie { id: 3, title: "C".into(), year: None, genres: vec!["Comedy".into()] },
        ];
        let catalog = Catalog::from_movies(&movies).unwrap();
        let r = |user, movie, rating| Rating { user, movie, rating, ts: 0 };
        let session = |genres| ClosedSession {
            start: 0,
            length: 0,
            events: 1,
            ratings: 1,
            genres,
            mean_rating: None,
            binge: false,
            first: true,
        };
        let log = DayLog {
            open: Some(0),
            ratings: vec![r(7, 2, 4.0), r(7, 1, 3.0), r(8, 1, 5.0), r(8, 1, 1.0)],
            users: vec![7, 8],
            sessions: vec![(7, session(0b110))],
            alerts: Vec::new(),
            ..DayLog::default()
        };
        // Catalog order: Action, Comedy, Drama.
        let g = genre_day(&log, &catalog);
        assert_eq!(g.len(), 3, "Comedy: no ratings, but a session touched it");
        let (action, comedy, drama) = (g[0], g[1], g[2]);
        assert_eq!((action.ratings, action.rating_sum, action.raters), (3, 9.0, 2));
        assert_eq!((drama.ratings, drama.rating_sum, drama.raters), (4, 13.0, 2));
        assert_eq!((action.first_rating_users, drama.first_rating_users), (1, 2));
        assert_eq!((comedy.ratings, comedy.sessions, drama.sessions, action.sessions), (0, 1, 1, 0));
    }

    #[test]
    fn month_ends() {
        // 2017-01-31 is day 17197.
        assert!(is_month_end(17_197));
        assert!(!is_month_end(17_196));
    }
}
