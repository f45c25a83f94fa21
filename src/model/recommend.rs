//! Recommendations served from the live ALS model: per user, similar titles, and watch parties.
//!
//! - **Per user**: movies by predicted rating, optionally within one genre and without the ones the
//!   user already rated. Ranked by the model's unclamped prediction (`score`), so movies the
//!   model rates above 5 keep their order; `predicted_rating` is the same clamped to 0.5–5.
//!   Only movies with at least `min_ratings` ratings (`--min-movie-ratings`, default
//!   [`MIN_SUPPORT`]) are ranked, here, for similar titles and for groups.
//! - **Similar titles**: cosine similarity of movie factors.
//! - **Groups** ("watch party"): each member's unclamped prediction of each candidate; the group
//!   score is their weighted mean (`average`) or the lowest (`least_misery`, weights ignored);
//!   `members` shows each member's predicted rating (clamped).
//!   Candidates are unrated by every member and belong to a genre all members like: a member's
//!   *taste genres* are their (at most) two genres of highest lift — share of their ratings over
//!   share of all ratings — among those with ≥ 10 % of their ratings and a lift ≥ 1.2.
//! - **Fallback**: a user with fewer than [`COLD_START_BELOW`] ratings, or a group with a cold
//!   member or no taste genre in common, gets the most-rated titles of the last 30 event-days
//!   within their genres (the genres they rated, or the union of the members' taste genres; all
//!   genres when that is empty). The response says so (`strategy: "popular_in_genres"` with a
//!   `reason`).
//!
//! May import: what `model/mod.rs` allows its layer; this module uses `crate::core::calendar`, `crate::core::catalog`, `crate::core::config`, `crate::core::engagement`, `crate::core::processor`, `crate::model::als`, `streamflix-schemas`.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::core::calendar::day_of;
use crate::core::catalog::{bits, count_bits, Catalog};
use crate::core::engagement::day_bucket;
use crate::model::als::{clamp_rating, dot, Als, AlsConfig, Which, PREFETCH_AHEAD};

/// Users with fewer ratings than this get popular titles instead of ALS scores.
pub const COLD_START_BELOW: usize = 5;
/// The default least number of ratings for a movie to be ranked by ALS (a factor fitted to one
/// or two ratings is noise, and would crowd the top of every list); `--min-movie-ratings`.
pub const MIN_SUPPORT: usize = 5;
/// Event-days of the popularity window.
pub const POPULAR_DAYS: i64 = 30;
const TASTE_SHARE: f64 = 0.10;
const TASTE_LIFT: f64 = 1.2;
const TASTE_GENRES: usize = 2;

/// Ratings per movie over the last [`POPULAR_DAYS`] event-days, in day buckets.
#[derive(Debug, Clone, Default)]
pub struct Popularity {
    days: VecDeque<(i64, FxHashMap<u32, u32>)>,
}

impl Popularity {
    /// Counts a rating of `movie` at `ts`.
    pub fn add(&mut self, movie: u32, ts: i64) {
        if let Some(counts) = day_bucket(&mut self.days, day_of(ts), POPULAR_DAYS, FxHashMap::default) {
            *counts.entry(movie).or_default() += 1;
        }
    }

    /// Movies by ratings in the window (most first, then by id), filtered by `keep`.
    pub fn top(&self, n: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, u32)> {
        let mut total: FxHashMap<u32, u32> = FxHashMap::default();
        for (_, counts) in &self.days {
            for (&m, &c) in counts {
                *total.entry(m).or_default() += c;
            }
        }
        let mut v: Vec<(u32, u32)> = total.into_iter().filter(|&(m, _)| keep(m)).collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The window's last event-day, if any rating was counted.
    #[cfg(test)]
    pub fn last_day(&self) -> Option<i64> {
        self.days.back().map(|&(d, _)| d)
    }
}

/// One recommended movie.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// MovieLens movie id.
    pub movie_id: u32,
    /// Title from the catalog.
    pub title: String,
    /// Genres from the catalog.
    pub genres: Vec<String>,
    /// What the list is ranked by: the unclamped predicted rating (ALS), cosine similarity
    /// (similar titles), the group score of unclamped predictions (groups), or the number of
    /// ratings in the popularity window (fallback).
    pub score: f64,
    /// ALS and groups: `score` clamped to the rating scale, 0.5–5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_rating: Option<f64>,
    /// Groups: each member's predicted rating, in the order of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<f64>>,
}

/// A list of recommendations and how it was made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendations {
    /// `als`, `cosine` or `popular_in_genres`.
    pub strategy: String,
    /// Why the fallback was used (only for `popular_in_genres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Genres the list was restricted to (empty: all).
    pub genres: Vec<String>,
    /// The recommendations, best first.
    pub items: Vec<Item>,
}

/// How a group's score combines its members'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStrategy {
    /// Weighted mean of the members' predicted ratings.
    Average,
    /// The lowest predicted rating among members (nobody hates it); weights ignored.
    LeastMisery,
}

/// The learner times one update in this many: reading the clock twice costs about 3 % of an
/// update (0.05 µs of ~1.7), and one in eight still gives millions of samples over a long
/// stream. Which updates are timed depends only on the rating count, never on their latency.
pub const TIME_EVERY: u64 = 8;

/// Upper bounds (µs) of the update-latency histogram buckets (the last bucket is unbounded).
pub const LATENCY_BOUNDS_US: [f64; 12] =
    [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// How the model is doing: prequential error (each rating predicted before it is learned, for
/// users and movies seen before) and how long updates take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    /// Ratings predicted before being learned.
    pub scored: u64,
    /// Σ (predicted − actual)².
    pub squared_error: f64,
    /// Σ |predicted − actual|.
    pub absolute_error: f64,
    /// Σ update time, seconds.
    pub update_seconds: f64,
    /// Updates per latency bucket ([`LATENCY_BOUNDS_US`], then one for slower).
    pub latency_buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
}

impl ModelStats {
    /// Adds one scored prediction.
    pub fn score(&mut self, predicted: f32, actual: f32) {
        let e = f64::from(predicted - actual);
        self.scored += 1;
        self.squared_error += e * e;
        self.absolute_error += e.abs();
    }

    /// Prequential RMSE (0 before anything was scored).
    pub fn rmse(&self) -> f64 {
        if self.scored == 0 {
            0.0
        } else {
            (self.squared_error / self.scored as f64).sqrt()
        }
    }

    /// Prequential MAE.
    pub fn mae(&self) -> f64 {
        if self.scored == 0 {
            0.0
        } else {
            self.absolute_error / self.scored as f64
        }
    }

    /// Updates timed.
    pub fn updates(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }

    /// Upper bound of the bucket holding quantile `q` of update latency, µs; `None` when it is
    /// beyond the last bound (1024 µs) or nothing was timed.
    pub fn latency_quantile_us(&self, q: f64) -> Option<f64> {
        let want = (self.updates() as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.latency_buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return LATENCY_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

/// The recommender: ALS plus popularity, fed by the processor with every applied rating.
#[derive(Debug, Clone)]
pub struct Recommender {
    als: Als,
    catalog: Arc<Catalog>,
    popular: Popularity,
    stats: ModelStats,
    latency: Option<prometheus::Histogram>,
}

impl Recommender {
    /// An empty recommender.
    pub fn new(cfg: AlsConfig, catalog: Arc<Catalog>) -> Recommender {
        Recommender {
            als: Als::new(cfg),
            catalog,
            popular: Popularity::default(),
            stats: ModelStats::default(),
            latency: None,
        }
    }

    /// The model.
    pub fn als(&self) -> &Als {
        &self.als
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Also observe update latency into `h` (the Prometheus histogram).
    pub fn set_latency_histogram(&mut self, h: prometheus::Histogram) {
        self.latency = Some(h);
    }

    /// Prequential error and update latency so far.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// [`Recommender::observe`] of each rating in order, with each rating's model data requested
    /// from memory [`PREFETCH_AHEAD`] ratings before it is learned (the same model as one by
    /// one, sooner: at millions of ratings most statistics are in no cache).
    pub fn observe_all(&mut self, ratings: &[crate::core::processor::LoggedRating]) {
        for (n, r) in ratings.iter().enumerate() {
            if let Some(next) = ratings.get(n + PREFETCH_AHEAD) {
                self.als.prefetch(next.user, next.movie);
            }
            self.observe(r.user, r.movie, r.rating, r.ts);
        }
    }

    /// Learns from one applied rating (after scoring the model's prediction of it). Every
    /// [`TIME_EVERY`]th update is timed.
    pub fn observe(&mut self, user: u32, movie: u32, rating: f32, ts: i64) {
        let predicted = if self.als.ratings().is_multiple_of(TIME_EVERY) {
            let started = std::time::Instant::now();
            let predicted = self.als.observe(user, movie, rating);
            self.timed(started.elapsed().as_secs_f64());
            predicted
        } else {
            self.als.observe(user, movie, rating)
        };
        if let Some(p) = predicted {
            self.stats.score(p, rating);
        }
        self.popular.add(movie, ts);
    }

    fn timed(&mut self, dt: f64) {
        self.stats.update_seconds += dt;
        if let Some(h) = &self.latency {
            h.observe(dt);
        }
        let us = dt * 1e6;
        let bucket = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.stats.latency_buckets[bucket] += 1;
    }

    /// Ratings learned per genre (a movie counts for each of its genres): from the movies'
    /// rating counts, O(movies), when asked, rather than counted on the learner's every update.
    fn genre_totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.catalog.genre_names().len()];
        let items = self.als.side(Which::Items);
        for i in 0..items.len() {
            let n = items.ratings(i).len() as u64;
            for g in bits(self.catalog.genres_of(items.id(i)).unwrap_or(0)) {
                totals[g] += n;
            }
        }
        totals
    }

    fn item(&self, movie: u32, score: f64, members: Option<Vec<f64>>) -> Item {
        Item {
            movie_id: movie,
            title: self.catalog.title(movie).unwrap_or_default().to_string(),
            genres: self.catalog.names(self.catalog.genres_of(movie).unwrap_or(0)),
            score,
            predicted_rating: None,
            members,
        }
    }

    /// An item ranked by a predicted rating `score` (unclamped).
    fn predicted(&self, movie: u32, score: f32, members: Option<Vec<f64>>) -> Item {
        Item {
            predicted_rating: Some(f64::from(clamp_rating(score))),
            ..self.item(movie, f64::from(score), members)
        }
    }

    /// Ratings the user has given (0 if unknown).
    pub fn ratings_of(&self, user: u32) -> usize {
        let users = self.als.side(Which::Users);
        users.index_of(user).map_or(0, |u| users.ratings(u).len())
    }

    /// The movies the user rated, in rating order (none if unknown).
    fn rated_movies(&self, user: u32) -> impl Iterator<Item = u32> + '_ {
        let (users, items) = (self.als.side(Which::Users), self.als.side(Which::Items));
        users
            .index_of(user)
            .into_iter()
            .flat_map(move |u| users.ratings(u).others().map(move |i| items.id(i as usize)))
    }

    /// Genres of the movies the user rated (bit mask).
    pub fn rated_genres(&self, user: u32) -> u64 {
        self.rated_movies(user).fold(0, |m, movie| m | self.catalog.genres_of(movie).unwrap_or(0))
    }

    /// Each user's taste genres (see the module docs), as bit masks (the platform's genre totals
    /// are counted once for all of them).
    pub fn tastes(&self, users: &[u32]) -> Vec<u64> {
        let totals = self.genre_totals();
        users.iter().map(|&u| self.taste(u, &totals)).collect()
    }

    /// One user's taste genres, given the ratings learned per genre.
    fn taste(&self, user: u32, totals: &[u64]) -> u64 {
        let mut counts = vec![0u64; totals.len()];
        let mut n = 0usize;
        for movie in self.rated_movies(user) {
            count_bits(&mut counts, self.catalog.genres_of(movie).unwrap_or(0));
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        let n = n as f64;
        let all = self.als.ratings().max(1) as f64;
        let mut lifts: Vec<(f64, usize)> = counts
            .iter()
            .enumerate()
            .filter_map(|(g, &c)| {
                let share = c as f64 / n;
                let lift = share / (totals[g] as f64 / all).max(f64::MIN_POSITIVE);
                (share >= TASTE_SHARE && lift >= TASTE_LIFT).then_some((lift, g))
            })
            .collect();
        lifts.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        lifts.iter().take(TASTE_GENRES).fold(0, |mask, &(_, g)| mask | (1 << g))
    }

    fn rated_set(&self, user: u32) -> FxHashSet<u32> {
        self.rated_movies(user).collect()
    }

    fn popular(&self, mask: u64, n: usize, exclude: &FxHashSet<u32>, reason: String) -> Recommendations {
        let top = self.popular.top(n, |m| {
            !exclude.contains(&m) && (mask == 0 || self.catalog.genres_of(m).unwrap_or(0) & mask != 0)
        });
        Recommendations {
            strategy: "popular_in_genres".into(),
            reason: Some(reason),
            genres: self.catalog.names(mask),
            items: top.into_iter().map(|(m, c)| self.item(m, f64::from(c), None)).collect(),
        }
    }

    /// Best `n` movies, of those with at least `min_ratings` ratings, for a user whose genres
    /// known outside the model (the committed state) are `known_genres`; within `genre` if given.
    pub fn for_user(
        &self,
        user: u32,
        n: usize,
        genre: Option<u64>,
        exclude_rated: bool,
        known_genres: u64,
        min_ratings: usize,
    ) -> Recommendations {
        let rated = self.ratings_of(user);
        let exclude = if exclude_rated { self.rated_set(user) } else { FxHashSet::default() };
        if rated < COLD_START_BELOW {
            let mask = genre.unwrap_or(self.rated_genres(user) | known_genres);
            return self.popular(
                mask,
                n,
                &exclude,
                format!(
                    "cold start: {rated} rating(s), fewer than {COLD_START_BELOW}; most-rated titles of the last {POPULAR_DAYS} event-days in the user's genres"
                ),
            );
        }
        let x = self.als.user_factor(user).expect("a user with ratings has a factor");
        let items = self.als.side(Which::Items);
        let scores = self.als.scores(x);
        let mut ranked: Vec<(u32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|&(i, _)| items.ratings(i).len() >= min_ratings)
            .map(|(i, &s)| (items.id(i), s))
            .filter(|(m, _)| !exclude.contains(m))
            .filter(|(m, _)| genre.is_none_or(|g| self.catalog.genres_of(*m).unwrap_or(0) & g != 0))
            .collect();
        top_n(&mut ranked, n);
        Recommendations {
            strategy: "als".into(),
            reason: None,
            genres: genre.map(|g| self.catalog.names(g)).unwrap_or_default(),
            items: ranked.into_iter().map(|(m, s)| self.predicted(m, s, None)).collect(),
        }
    }

    /// Movies (of those with at least `min_ratings` ratings) whose factors are closest (cosine)
    /// to `movie`'s; for a movie the model has not seen rated, the most-rated titles of the
    /// window in its genres; `None` for a movie not in the catalog.
    pub fn similar(&self, movie: u32, n: usize, min_ratings: usize) -> Option<Recommendations> {
        let genres = self.catalog.genres_of(movie)?;
        let Some(v) = self.als.item_factor(movie) else {
            return Some(self.popular(
                genres,
                n,
                &std::iter::once(movie).collect(),
                format!("movie {movie} has no ratings yet; most-rated titles of the last {POPULAR_DAYS} event-days in its genres"),
            ));
        };
        let items = self.als.side(Which::Items);
        let norm = dot(v, v).sqrt().max(f32::MIN_POSITIVE);
        let m = items.matrix(self.als.rank());
        let sims = self.als.scores(v);
        let mut ranked: Vec<(u32, f32)> = sims
            .iter()
            .enumerate()
            .filter(|&(i, _)| items.id(i) != movie && items.ratings(i).len() >= min_ratings)
            .map(|(i, &s)| {
                let row = m.row(i);
                let other = row.dot(&row).sqrt().max(f32::MIN_POSITIVE);
                (items.id(i), s / (norm * other))
            })
            .collect();
        top_n(&mut ranked, n);
        Some(Recommendations {
            strategy: "cosine".into(),
            reason: None,
            genres: Vec::new(),
            items: ranked.into_iter().map(|(m, s)| self.item(m, f64::from(s), None)).collect(),
        })
    }

    /// Best `n` movies (of those with at least `min_ratings` ratings) for a group of (user,
    /// weight) whose taste genres ([`Recommender::taste`]) are `tastes`, in the same order.
    pub fn for_group(
        &self,
        members: &[(u32, f64)],
        tastes: &[u64],
        strategy: GroupStrategy,
        n: usize,
        min_ratings: usize,
    ) -> Recommendations {
        let exclude: FxHashSet<u32> = members.iter().flat_map(|&(u, _)| self.rated_set(u)).collect();
        let union = tastes.iter().fold(0, |a, &t| a | t);
        if let Some(&(cold, _)) = members.iter().find(|&&(u, _)| self.ratings_of(u) < COLD_START_BELOW) {
            return self.popular(
                union,
                n,
                &exclude,
                format!("cold start: user {cold} has fewer than {COLD_START_BELOW} ratings; most-rated titles of the last {POPULAR_DAYS} event-days in the members' taste genres"),
            );
        }
        let common = tastes.iter().fold(u64::MAX, |a, &t| a & t);
        if common == 0 {
            return self.popular(
                union,
                n,
                &exclude,
                format!("no common ground: the members share no taste genre; most-rated titles of the last {POPULAR_DAYS} event-days in any member's taste genres"),
            );
        }
        let items = self.als.side(Which::Items);
        let per_member: Vec<ndarray::Array1<f32>> = members
            .iter()
            .map(|&(u, _)| self.als.scores(self.als.user_factor(u).expect("warm member has a factor")))
            .collect();
        let total_weight: f64 = members.iter().map(|&(_, w)| w).sum();
        let mut ranked: Vec<(u32, f32)> = (0..items.len())
            .filter(|&i| {
                let m = items.id(i);
                items.ratings(i).len() >= min_ratings
                    && !exclude.contains(&m)
                    && self.catalog.genres_of(m).unwrap_or(0) & common != 0
            })
            .map(|i| {
                let score = match strategy {
                    GroupStrategy::Average => {
                        members.iter().zip(&per_member).map(|(&(_, w), s)| w * f64::from(s[i])).sum::<f64>()
                            / total_weight
                    }
                    GroupStrategy::LeastMisery => {
                        per_member.iter().map(|s| f64::from(s[i])).fold(f64::INFINITY, f64::min)
                    }
                };
                (items.id(i), score as f32)
            })
            .collect();
        top_n(&mut ranked, n);
        Recommendations {
            strategy: match strategy {
                GroupStrategy::Average => "average".into(),
                GroupStrategy::LeastMisery => "least_misery".into(),
            },
            reason: None,
            genres: self.catalog.names(common),
            items: ranked
                .into_iter()
                .map(|(m, s)| {
                    let i = items.index_of(m).expect("ranked movies are in the model");
                    let each = per_member.iter().map(|p| f64::from(clamp_rating(p[i]))).collect();
                    self.predicted(m, s, Some(each))
                })
                .collect(),
        }
    }
}

/// Keeps the `n` best (highest score, then lowest id), best first.
fn top_n(v: &mut Vec<(u32, f32)>, n: usize) {
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > n && n > 0 {
        v.select_nth_unstable_by(n - 1, cmp);
        v.truncate(n);
    }
    v.sort_unstable_by(cmp);
    v.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::DAY;

    #[test]
    fn popularity_keeps_thirty_event_days() {
        let mut p = Popularity::default();
        p.add(1, 0);
        p.add(2, DAY);
        p.add(2, DAY + 5);
        p.add(3, 29 * DAY);
        assert_eq!(p.top(10, |_| true), vec![(2, 2), (1, 1), (3, 1)]);
        p.add(3, 30 * DAY); // day 0 falls out of the window
        assert_eq!(p.top(10, |_| true), vec![(2, 2), (3, 2)]);
        p.add(1, 5 * DAY); // late but inside the window
        assert_eq!(p.top(1, |m| m != 2), vec![(3, 2)]);
        assert_eq!(p.last_day(), Some(30));
    }

    fn catalog() -> Arc<Catalog> {
        use streamflix_schemas::Movie;
        let movies: Vec<Movie> = (1..=40)
            .map(|id| Movie {
                id,
                title: format!("M{id}"),
                year: None,
                genres: vec![if id % 2 == 0 { "Drama" } else { "Horror" }.to_string()],
            })
            .collect();
        Arc::new(Catalog::from_movies(&movies).unwrap())
    }

    #[test]
    fn cold_users_get_popular_titles_in_their_genres_and_say_so() {
        let mut r = Recommender::new(AlsConfig { rank: 4, ..Default::default() }, catalog());
        // Movie 2 (Drama) is the most rated, then 3 (Horror), then 4 (Drama).
        let mut ts = 1_500_000_000;
        for (user, movie) in [(1, 2), (2, 2), (3, 2), (1, 3), (2, 3), (1, 4), (9, 6)] {
            ts += 60;
            r.observe(user, movie, 4.0, ts);
        }
        let recs = r.for_user(9, 3, None, true, 0, MIN_SUPPORT);
        assert_eq!(recs.strategy, "popular_in_genres");
        assert!(recs.reason.as_deref().unwrap().contains("cold start"));
        assert_eq!(recs.genres, vec!["Drama".to_string()], "user 9 rated only a drama");
        let ids: Vec<u32> = recs.items.iter().map(|i| i.movie_id).collect();
        assert_eq!(ids, vec![2, 4], "dramas by ratings in the window, without the one rated");
        // A user the model never saw, with genres known only outside it.
        let horror = r.catalog().genre_bit("horror").unwrap();
        let recs = r.for_user(77, 5, None, true, horror, MIN_SUPPORT);
        assert_eq!(recs.items.iter().map(|i| i.movie_id).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn top_n_orders_by_score_then_id() {
        let mut v = vec![(5, 1.0), (3, 2.0), (4, 2.0), (1, 0.5)];
        top_n(&mut v, 3);
        assert_eq!(v, vec![(3, 2.0), (4, 2.0), (5, 1.0)]);
    }
}
