//! Shape facts of a dataset, the ones the generator aims for (from MovieLens latest-small):
//! ratings per user (min ≥ 20, median ~70, max ~2,700), the share of ratings in each user's
//! first session (~48 %), users active on one day only (~60 %), users spanning more than 600
//! days (~10 %), users inactive for 30+ days at the end of the data (most); and ratings per movie
//! (median 3, 57 % of rated movies with ≤ 3, 37.5 % with ≥ 5 holding 90 % of the ratings).
//!
//! `streamflix-replay inspect` prints them for any MovieLens directory, so the synthetic data can
//! be compared with the real thing, and a test keeps the generator on target.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `dataset`, `generate`.

use serde::Serialize;

use crate::dataset::Dataset;

/// Session gap used to find each user's first session (the processor's default).
pub const SESSION_GAP: i64 = 30 * 60;

/// Shape facts of a dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shape {
    /// Distinct users with ratings.
    pub users: u64,
    /// Distinct movies rated.
    pub movies: u64,
    /// Ratings.
    pub ratings: u64,
    /// Tags.
    pub tags: u64,
    /// First and last event time (ratings and tags).
    pub first_ts: i64,
    /// See `first_ts`.
    pub last_ts: i64,
    /// Ratings per user: minimum.
    pub ratings_per_user_min: u64,
    /// Ratings per user: median.
    pub ratings_per_user_median: u64,
    /// Ratings per user: maximum.
    pub ratings_per_user_max: u64,
    /// Share of all ratings that fall in their user's first session (30-minute gap).
    pub first_session_share: f64,
    /// Share of users whose ratings all fall on one UTC day.
    pub one_day_users: f64,
    /// Share of users whose first and last rating are more than 600 days apart.
    pub users_over_600_days: f64,
    /// Share of users with no rating in the 30 days before the last event.
    pub inactive_30d_at_end: f64,
    /// Share of half-star ratings (x.5).
    pub half_star_share: f64,
    /// Ratings per rated movie: median.
    pub ratings_per_movie_median: u64,
    /// Share of rated movies with at most 3 ratings.
    pub movies_max_3_ratings: f64,
    /// Share of rated movies with at least 5 ratings.
    pub movies_min_5_ratings: f64,
    /// Share of all ratings that fall on movies with at least 5 ratings.
    pub ratings_on_movies_min_5: f64,
}

#[derive(Clone, Copy, Default)]
struct Acc {
    count: u64,
    first: i64,
    last: i64,
    in_first_session: bool,
    first_session: u64,
    multi_day: bool,
}

/// Computes the shape of a loaded dataset (ratings sorted by time, as [`Dataset::load`] leaves them).
pub fn shape(ds: &Dataset) -> Shape {
    let max_user = ds.ratings.iter().map(|r| r.user).max().unwrap_or(0) as usize;
    let mut acc = vec![Acc::default(); max_user + 1];
    let mut movies = std::collections::HashMap::<u32, u64>::new();
    let mut half = 0u64;
    for r in &ds.ratings {
        *movies.entry(r.movie).or_default() += 1;
        half += (r.rating.fract() != 0.0) as u64;
        let a = &mut acc[r.user as usize];
        if a.count == 0 {
            *a = Acc {
                count: 0,
                first: r.ts,
                last: r.ts,
                in_first_session: true,
                first_session: 0,
                multi_day: false,
            };
        }
        if a.in_first_session && r.ts - a.last > SESSION_GAP {
            a.in_first_session = false;
        }
        a.first_session += a.in_first_session as u64;
        a.multi_day |= r.ts.div_euclid(86_400) != a.first.div_euclid(86_400);
        a.count += 1;
        a.last = r.ts;
    }
    let users: Vec<&Acc> = acc.iter().filter(|a| a.count > 0).collect();
    let (first_ts, last_ts) = ds.span().unwrap_or((0, 0));
    let n = users.len().max(1) as f64;
    let mut counts: Vec<u64> = users.iter().map(|a| a.count).collect();
    counts.sort_unstable();
    let mut per_movie: Vec<u64> = movies.values().copied().collect();
    per_movie.sort_unstable();
    let rated = per_movie.len().max(1) as f64;
    let share = |f: &dyn Fn(&Acc) -> bool| users.iter().filter(|a| f(a)).count() as f64 / n;
    Shape {
        users: users.len() as u64,
        movies: movies.len() as u64,
        ratings: ds.ratings.len() as u64,
        tags: ds.tags.len() as u64,
        first_ts,
        last_ts,
        ratings_per_user_min: counts.first().copied().unwrap_or(0),
        ratings_per_user_median: counts.get(counts.len() / 2).copied().unwrap_or(0),
        ratings_per_user_max: counts.last().copied().unwrap_or(0),
        first_session_share: users.iter().map(|a| a.first_session).sum::<u64>() as f64
            / ds.ratings.len().max(1) as f64,
        one_day_users: share(&|a| !a.multi_day),
        users_over_600_days: share(&|a| a.last - a.first > 600 * 86_400),
        inactive_30d_at_end: share(&|a| last_ts - a.last >= 30 * 86_400),
        half_star_share: half as f64 / ds.ratings.len().max(1) as f64,
        ratings_per_movie_median: per_movie.get(per_movie.len() / 2).copied().unwrap_or(0),
        movies_max_3_ratings: per_movie.iter().filter(|&&c| c <= 3).count() as f64 / rated,
        movies_min_5_ratings: per_movie.iter().filter(|&&c| c >= 5).count() as f64 / rated,
        ratings_on_movies_min_5: per_movie.iter().filter(|&&c| c >= 5).sum::<u64>() as f64
            / ds.ratings.len().max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, GenerateConfig};

    /// The generator stays on MovieLens's shape (latest-small has 610 users, 100,836 ratings).
    #[test]
    fn generated_data_has_movielens_shape() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GenerateConfig {
            users: 2_000,
            movies: 9_000,
            ratings: 330_000,
            tags: 7_000,
            ..Default::default()
        };
        generate(&cfg, dir.path(), |_| {}).unwrap();
        let s = shape(&Dataset::load(dir.path(), true).unwrap());
        eprintln!("{s:#?}");
        assert!((20..=25).contains(&s.ratings_per_user_min), "min {}", s.ratings_per_user_min);
        assert!((50..=100).contains(&s.ratings_per_user_median), "median {}", s.ratings_per_user_median);
        assert!(s.ratings_per_user_max >= 1_500, "max {}", s.ratings_per_user_max);
        assert!((0.40..=0.56).contains(&s.first_session_share), "first session {}", s.first_session_share);
        assert!((0.52..=0.68).contains(&s.one_day_users), "one day {}", s.one_day_users);
        assert!((0.07..=0.14).contains(&s.users_over_600_days), "600 days {}", s.users_over_600_days);
        assert!(s.inactive_30d_at_end > 0.8, "inactive {}", s.inactive_30d_at_end);
        assert!(s.half_star_share > 0.1);
        // 330 k ratings over 9,000 movies is a dense catalogue: all movies are mainstream.
        assert!(s.movies_min_5_ratings > 0.9, "≥ 5 {}", s.movies_min_5_ratings);
    }

    /// `--preset ml-latest-small` has the real one's item sparsity: 9,724 of 9,742 movies rated,
    /// median 3 ratings per movie, 57 % with ≤ 3, 37.5 % with ≥ 5 holding 90 % of the ratings.
    #[test]
    fn sparse_catalogue_has_ml_latest_small_item_shape() {
        for seed in [42, 7] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = GenerateConfig {
                users: 610,
                movies: 9_742,
                ratings: 100_836,
                tags: 3_683,
                seed,
                ..Default::default()
            };
            generate(&cfg, dir.path(), |_| {}).unwrap();
            let s = shape(&Dataset::load(dir.path(), true).unwrap());
            eprintln!("seed {seed}: {s:#?}");
            assert!(s.movies >= 9_700, "rated movies {}", s.movies);
            assert!((2..=4).contains(&s.ratings_per_movie_median), "median {}", s.ratings_per_movie_median);
            assert!((0.50..=0.64).contains(&s.movies_max_3_ratings), "≤ 3 {}", s.movies_max_3_ratings);
            assert!((0.32..=0.44).contains(&s.movies_min_5_ratings), "≥ 5 {}", s.movies_min_5_ratings);
            assert!(
                (0.87..=0.93).contains(&s.ratings_on_movies_min_5),
                "on ≥ 5 {}",
                s.ratings_on_movies_min_5
            );
            // The users keep their shape.
            assert!((50..=100).contains(&s.ratings_per_user_median), "median {}", s.ratings_per_user_median);
        }
    }
}
