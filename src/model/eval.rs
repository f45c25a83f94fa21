//! `streamflix eval`: how good the recommender is, in batch and as a stream.
//!
//! - **Batch**: full ALS on a seeded random 80/20 split; RMSE and MAE over test pairs whose user
//!   and movie are in the training set (the others have no factors).
//! - **Streaming** (prequential): ALS trained in batch on the first 80 % of ratings by time, then
//!   for every later rating, in time order: predict, score, learn ([`Als::observe`]). Scored are
//!   events whose user and movie were seen before them. For comparison, the batch model of the
//!   first 80 %, frozen, is scored on the events whose user and movie it knows, and the stream on
//!   the very same events. Also, on a sample of ratings ≥ 4, just before each is learned: was
//!   the movie in the user's top 10 of unrated movies (recall@10), NDCG@10 with that one movie
//!   relevant (`1 / log2(1 + rank)` when it ranks ≤ 10, else 0), the share of the catalogue
//!   that appears in the sampled top-10 lists (coverage), and the same recall and NDCG for a
//!   popularity baseline (unrated movies by ratings learned so far, ties by lower id); and the
//!   per-update latency.
//! - **Temporal** (`--temporal`, [`temporal`]): the same start, then the streaming model against
//!   a batch model refitted on everything before each window of `--retrain-days` event-days:
//!   RMSE over the events each can score (a frozen model cannot score users or movies that are
//!   new since its fit), on the events both can, and recall@10 / NDCG@10 of a sample of next
//!   ratings ≥ 4, each ranked by both models among the same candidates.
//!
//! May import: what `model/mod.rs` allows its layer; this module uses `crate::model::als`, `crate::model::recommend`, `streamflix-schemas`.

use std::time::Instant;

use crate::model::als::mix;
use serde::Serialize;
use streamflix_schemas::Rating;

use crate::model::als::{Als, AlsConfig, Which};
use crate::model::recommend::ModelStats;

/// Settings of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The model.
    pub als: AlsConfig,
    /// Batch iterations.
    pub iters: usize,
    /// Seed of the random split and the recall sample.
    pub seed: u64,
    /// Ratings ≥ 4 sampled for recall@10.
    pub recall_sample: usize,
    /// Ranking metrics consider only movies with at least this many ratings learned (what the
    /// served lists rank); a sampled movie with fewer is a miss.
    pub min_movie_ratings: usize,
}

/// Error of a model on scored pairs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Errors {
    /// Pairs scored.
    pub scored: u64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
}

impl From<&ModelStats> for Errors {
    fn from(s: &ModelStats) -> Errors {
        Errors { scored: s.scored, rmse: s.rmse(), mae: s.mae() }
    }
}

/// The batch result.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    /// How the data was split.
    pub split: String,
    /// Training ratings.
    pub train: u64,
    /// Test ratings (scored or not).
    pub test: u64,
    /// Errors on the scorable test pairs.
    #[serde(flatten)]
    pub errors: Errors,
    /// Wall time of the fit (all iterations, not counting `loss`), seconds.
    pub fit_seconds: f64,
    /// The training objective (squared errors plus the count-weighted regularisation) after
    /// each iteration, to compare convergence with another implementation's.
    pub loss: Vec<f64>,
}

/// Per-update latency, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Worst.
    pub max_us: f64,
}

/// The streaming result.
#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    /// Ratings the batch model was trained on before streaming.
    pub train: u64,
    /// Ratings streamed (predicted, scored, learned).
    pub events: u64,
    /// Prequential errors over streamed events whose user and movie were seen before them.
    #[serde(flatten)]
    pub errors: Errors,
    /// The stream's errors on the events the frozen batch model could score.
    pub on_batch_events: Errors,
    /// The frozen batch model (first 80 % by time) on the same events.
    pub batch_on_same_events: Errors,
    /// `on_batch_events.rmse / batch_on_same_events.rmse` (below 1: the stream is better).
    pub rmse_ratio: f64,
    /// Recall@10 of ratings ≥ 4 on the sample.
    pub recall_at_10: f64,
    /// NDCG@10 on the same sample (one relevant movie per sampled rating).
    pub ndcg_at_10: f64,
    /// Distinct movies in the sampled users' top-10 lists over the movies the model knew at the end.
    pub coverage_at_10: f64,
    /// The popularity baseline's recall@10 on the same sample.
    pub popular_recall_at_10: f64,
    /// The popularity baseline's NDCG@10 on the same sample.
    pub popular_ndcg_at_10: f64,
    /// Ratings ≥ 4 sampled for recall.
    pub recall_sample: u64,
    /// Time per update (user and movie re-solved, sweep step).
    pub update_latency: Latency,
    /// Updates per second of the streaming phase (one thread).
    pub updates_per_second: f64,
    /// Full incremental sweeps completed while streaming.
    pub sweeps: u64,
}

/// The whole report printed by `streamflix eval`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Ratings read.
    pub ratings: u64,
    /// Rank.
    pub rank: usize,
    /// λ.
    pub lambda: f32,
    /// Batch iterations.
    pub iters: usize,
    /// Batch RMSE (same as `batch.rmse`).
    pub rmse: f64,
    /// Batch MAE (same as `batch.mae`).
    pub mae: f64,
    /// The batch result.
    pub batch: BatchResult,
    /// The streaming result.
    pub streaming: StreamResult,
    /// The streaming model against a batch model retrained every few event-days
    /// (`eval --temporal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal: Option<TemporalResult>,
}

/// One model's numbers in the temporal evaluation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TemporalModel {
    /// Errors over the test events this model could score (user and movie known to it).
    #[serde(flatten)]
    pub errors: Errors,
    /// `scored` over all test events.
    pub scored_share: f64,
    /// Recall@10 of the sampled next ratings ≥ 4 (a rating it cannot rank is a miss).
    pub recall_at_10: f64,
    /// NDCG@10 on the same sample.
    pub ndcg_at_10: f64,
    /// Sampled ratings whose user and movie it knew, so it could rank them.
    pub ranked: u64,
}

/// `eval --temporal`: train on the first 80 % by time, then the streaming model (learning every
/// rating) against a batch model retrained on everything before each `retrain_days` window.
#[derive(Debug, Clone, Serialize)]
pub struct TemporalResult {
    /// Ratings before the split (both models start as the batch model of these).
    pub train: u64,
    /// Ratings after it, in time order.
    pub events: u64,
    /// Event-days per batch window.
    pub retrain_days: u32,
    /// Batch fits after the first (one per window with events).
    pub retrains: u64,
    /// Wall time of all batch fits, seconds.
    pub retrain_seconds: f64,
    /// The streaming model (predict, score, learn).
    pub streaming: TemporalModel,
    /// The batch model of the window.
    pub batch_retrained: TemporalModel,
    /// Events both models could score.
    pub common_events: u64,
    /// The streaming model's errors on the common events.
    pub streaming_on_common: Errors,
    /// The retrained batch model's errors on the common events.
    pub batch_on_common: Errors,
    /// Ratings ≥ 4 sampled for the ranking metrics.
    pub recall_sample: u64,
}

/// Ranking sums of one model over the sample.
#[derive(Default)]
struct RankSums {
    hits: u64,
    ndcg: f64,
    ranked: u64,
}

impl RankSums {
    /// Ranks `movie` for `user` with `model` among `candidates` (movie ids; those the model does
    /// not know cannot be recommended by it and are left out). Unknown user or movie: a miss.
    fn add(&mut self, model: &Als, user: u32, movie: u32, candidates: &[u32], eligible: bool) {
        let (Some(x), Some(target)) = (model.user_factor(user), model.side(Which::Items).index_of(movie))
        else {
            return;
        };
        self.ranked += 1;
        if !eligible {
            return;
        }
        let items = model.side(Which::Items);
        let scores = model.scores(x);
        let t = scores[target];
        let ahead = candidates
            .iter()
            .filter_map(|&m| items.index_of(m))
            .filter(|&i| i != target && scores[i] > t)
            .count();
        if ahead < 10 {
            self.hits += 1;
            self.ndcg += gain(ahead + 1);
        }
    }

    fn model(&self, acc: &ModelStats, events: usize, sampled: u64) -> TemporalModel {
        let per = |x: f64| if sampled > 0 { x / sampled as f64 } else { 0.0 };
        TemporalModel {
            errors: Errors::from(acc),
            scored_share: acc.scored as f64 / events.max(1) as f64,
            recall_at_10: per(self.hits as f64),
            ndcg_at_10: per(self.ndcg),
            ranked: self.ranked,
        }
    }
}

/// `eval --temporal`: both models start as the batch fit of `train` (the first 80 % by time);
/// then, for every rating of `test` in time order, each predicts it and is scored; the streaming
/// model learns it ([`Als::observe`]), and the batch model is refitted from scratch on every
/// rating before the first event of each new `retrain_days` window (windows count from the first
/// test event). A sample of ratings ≥ 4 (every n-th, `cfg.recall_sample` of them) is ranked by
/// both, just before it is learned, among the movies the user has not rated that have at least
/// `cfg.min_movie_ratings` ratings so far (the served catalogue at that time). `progress` gets
/// (events done, events) after each refit.
pub fn temporal(
    cfg: &EvalConfig,
    train: &[Rating],
    test: &[Rating],
    retrain_days: u32,
    mut progress: impl FnMut(usize, usize),
) -> TemporalResult {
    let mut all: Vec<Rating> = train.to_vec();
    let mut rest = test.to_vec();
    rest.sort_by_key(|r| (r.ts, r.user, r.movie));
    all.extend_from_slice(&rest);
    let started = Instant::now();
    let (mut stream, _) = batch(cfg, train, &[], "");
    let mut fixed = stream.clone();
    let mut retrain_seconds = started.elapsed().as_secs_f64();
    let window = i64::from(retrain_days.max(1)) * 86_400;
    let first_ts = rest.first().map_or(0, |r| r.ts);
    let mut current = 0i64;
    let high = rest.iter().filter(|r| r.rating >= 4.0).count().max(1);
    let every = (high / cfg.recall_sample.max(1)).max(1) as u64;
    let (mut s_acc, mut b_acc, mut s_common, mut b_common) =
        (ModelStats::default(), ModelStats::default(), ModelStats::default(), ModelStats::default());
    let (mut s_rank, mut b_rank) = (RankSums::default(), RankSums::default());
    let (mut high_seen, mut sampled, mut retrains) = (0u64, 0u64, 0u64);
    for (n, r) in rest.iter().enumerate() {
        let w = (r.ts - first_ts).div_euclid(window);
        if w > current {
            current = w;
            let t = Instant::now();
            fixed = batch(cfg, &all[..train.len() + n], &[], "").0;
            retrain_seconds += t.elapsed().as_secs_f64();
            retrains += 1;
            progress(n, rest.len());
        }
        if r.rating >= 4.0 {
            high_seen += 1;
            if high_seen % every == 0 && (sampled as usize) < cfg.recall_sample {
                sampled += 1;
                let items = stream.side(Which::Items);
                let floor = cfg.min_movie_ratings;
                let rated: rustc_hash::FxHashSet<u32> = stream
                    .side(Which::Users)
                    .index_of(r.user)
                    .map(|u| stream.side(Which::Users).ratings(u).others().collect())
                    .unwrap_or_default();
                let candidates: Vec<u32> = (0..items.len())
                    .filter(|&i| !rated.contains(&(i as u32)) && items.ratings(i).len() >= floor)
                    .map(|i| items.id(i))
                    .collect();
                let eligible = items.index_of(r.movie).is_some_and(|i| items.ratings(i).len() >= floor);
                s_rank.add(&stream, r.user, r.movie, &candidates, eligible);
                b_rank.add(&fixed, r.user, r.movie, &candidates, eligible);
            }
        }
        let q = fixed.predict(r.user, r.movie);
        let p = stream.observe(r.user, r.movie, r.rating);
        if let Some(p) = p {
            s_acc.score(p, r.rating);
        }
        if let Some(q) = q {
            b_acc.score(q, r.rating);
        }
        if let (Some(p), Some(q)) = (p, q) {
            s_common.score(p, r.rating);
            b_common.score(q, r.rating);
        }
    }
    progress(rest.len(), rest.len());
    TemporalResult {
        train: train.len() as u64,
        events: rest.len() as u64,
        retrain_days,
        retrains,
        retrain_seconds,
        streaming: s_rank.model(&s_acc, rest.len(), sampled),
        batch_retrained: b_rank.model(&b_acc, rest.len(), sampled),
        common_events: s_common.scored,
        streaming_on_common: Errors::from(&s_common),
        batch_on_common: Errors::from(&b_common),
        recall_sample: sampled,
    }
}

/// Splits ratings 80/20 at random (seeded): (train, test).
pub fn random_split(ratings: &[Rating], seed: u64) -> (Vec<Rating>, Vec<Rating>) {
    ratings.iter().partition(|r| !mix(seed, (u64::from(r.user) << 32) | u64::from(r.movie)).is_multiple_of(5))
}

/// Fits full ALS on `train` and scores `test`.
pub fn batch(cfg: &EvalConfig, train: &[Rating], test: &[Rating], split: &str) -> (Als, BatchResult) {
    let started = Instant::now();
    let mut als = Als::new(cfg.als.clone());
    for r in train {
        als.add(r.user, r.movie, r.rating);
    }
    let (mut loss, mut loss_seconds, mut half) = (Vec::with_capacity(cfg.iters), 0.0, 0);
    als.train(
        cfg.iters,
        Some(&mut |objective: &dyn Fn() -> f64| {
            half += 1;
            if half % 2 == 0 {
                let t = Instant::now();
                loss.push(objective());
                loss_seconds += t.elapsed().as_secs_f64();
            }
        }),
    );
    let fit_seconds = started.elapsed().as_secs_f64() - loss_seconds;
    let mut acc = ModelStats::default();
    for r in test {
        if let Some(p) = als.predict(r.user, r.movie) {
            acc.score(p, r.rating);
        }
    }
    let result = BatchResult {
        split: split.to_string(),
        train: train.len() as u64,
        test: test.len() as u64,
        errors: Errors::from(&acc),
        fit_seconds,
        loss,
    };
    (als, result)
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Trains on `train` in batch, then streams `test` in time order (prequential).
pub fn streaming(cfg: &EvalConfig, train: &[Rating], test: &[Rating]) -> StreamResult {
    let (mut als, _) = batch(cfg, train, &[], "");
    let frozen = als.clone();
    let mut test: Vec<Rating> = test.to_vec();
    test.sort_by_key(|r| (r.ts, r.user, r.movie));
    let high = test.iter().filter(|r| r.rating >= 4.0).count().max(1);
    let every = (high / cfg.recall_sample.max(1)).max(1) as u64;
    let (mut all, mut mine, mut theirs) =
        (ModelStats::default(), ModelStats::default(), ModelStats::default());
    let (mut sampled, mut high_seen) = (0u64, 0u64);
    let (mut hits, mut ndcg, mut popular_hits, mut popular_ndcg) = (0u64, 0.0, 0u64, 0.0);
    let mut listed = rustc_hash::FxHashSet::default();
    let mut nanos: Vec<u32> = Vec::with_capacity(test.len());
    let sweeps_before = als.sweeps_done();
    let mut update_time = 0.0;
    for r in &test {
        if r.rating >= 4.0 && als.user_factor(r.user).is_some() && als.item_factor(r.movie).is_some() {
            high_seen += 1;
            if high_seen % every == 0 && (sampled as usize) < cfg.recall_sample {
                sampled += 1;
                let s =
                    Sample::of(&als, r.user, r.movie, cfg.min_movie_ratings).expect("user and movie known");
                let (rank, top) = rank_and_top_n(&als, r.user, &s, 10);
                listed.extend(top);
                if let Some(k) = rank.filter(|&k| k <= 10) {
                    hits += 1;
                    ndcg += gain(k);
                }
                if let Some(k) = popular_rank(&als, &s).filter(|&k| k <= 10) {
                    popular_hits += 1;
                    popular_ndcg += gain(k);
                }
            }
        }
        let t = Instant::now();
        // The model's prediction before it learns this rating.
        let predicted = als.observe(r.user, r.movie, r.rating);
        let dt = t.elapsed();
        if let Some(p) = predicted {
            all.score(p, r.rating);
            if let Some(q) = frozen.predict(r.user, r.movie) {
                mine.score(p, r.rating);
                theirs.score(q, r.rating);
            }
        }
        update_time += dt.as_secs_f64();
        nanos.push(dt.as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    nanos.sort_unstable();
    let per_sample = |x: f64| if sampled > 0 { x / sampled as f64 } else { 0.0 };
    let (a, b) = (Errors::from(&mine), Errors::from(&theirs));
    StreamResult {
        train: train.len() as u64,
        events: test.len() as u64,
        errors: Errors::from(&all),
        on_batch_events: a,
        batch_on_same_events: b,
        rmse_ratio: if b.rmse > 0.0 { a.rmse / b.rmse } else { 0.0 },
        recall_at_10: per_sample(hits as f64),
        ndcg_at_10: per_sample(ndcg),
        coverage_at_10: listed.len() as f64 / als.side(Which::Items).len().max(1) as f64,
        popular_recall_at_10: per_sample(popular_hits as f64),
        popular_ndcg_at_10: per_sample(popular_ndcg),
        recall_sample: sampled,
        update_latency: Latency {
            p50_us: percentile(&nanos, 0.5),
            p99_us: percentile(&nanos, 0.99),
            max_us: nanos.last().map_or(0.0, |&n| f64::from(n) / 1000.0),
        },
        updates_per_second: if update_time > 0.0 { test.len() as f64 / update_time } else { 0.0 },
        sweeps: als.sweeps_done() - sweeps_before,
    }
}

/// NDCG's gain of the one relevant movie at 1-based `rank` (the ideal DCG is 1).
fn gain(rank: usize) -> f64 {
    1.0 / (1.0 + rank as f64).log2()
}

/// What a sampled rating is ranked against.
struct Sample {
    /// The user's unrated movies with at least the floor's ratings (item indexes).
    candidates: Vec<usize>,
    /// The rated movie's index.
    target: usize,
    /// Whether the rated movie itself has the floor's ratings (else it cannot rank: a miss).
    eligible: bool,
}

impl Sample {
    /// The sample of `user` rating `movie`, with a floor of `min` ratings per movie; `None` for
    /// an unknown user or movie.
    fn of(als: &Als, user: u32, movie: u32, min: usize) -> Option<Sample> {
        let items = als.side(Which::Items);
        let u = als.side(Which::Users).index_of(user)?;
        let target = items.index_of(movie)?;
        let rated: rustc_hash::FxHashSet<u32> = als.side(Which::Users).ratings(u).others().collect();
        let candidates = (0..items.len())
            .filter(|&i| !rated.contains(&(i as u32)) && items.ratings(i).len() >= min)
            .collect();
        Some(Sample { candidates, target, eligible: items.ratings(target).len() >= min })
    }

    /// The 1-based rank of the movie among the other candidates by `better` (`None` when it is
    /// not eligible).
    fn rank(&self, better: impl Fn(usize) -> bool) -> Option<usize> {
        let ahead = self.candidates.iter().filter(|&&i| i != self.target && better(i)).count();
        self.eligible.then_some(ahead + 1)
    }
}

/// The sample's rank by predicted rating (ties count in the movie's favour), and the ids of the
/// top `n` candidates (highest score, then lowest id).
fn rank_and_top_n(als: &Als, user: u32, s: &Sample, n: usize) -> (Option<usize>, Vec<u32>) {
    let items = als.side(Which::Items);
    let scores = als.scores(als.user_factor(user).expect("a sample's user is known"));
    let t = scores[s.target];
    let mut top: Vec<(usize, f32)> = s.candidates.iter().map(|&i| (i, scores[i])).collect();
    let cmp =
        |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(items.id(a.0).cmp(&items.id(b.0)));
    if top.len() > n && n > 0 {
        top.select_nth_unstable_by(n - 1, cmp);
        top.truncate(n);
    }
    (s.rank(|i| scores[i] > t), top.iter().map(|&(i, _)| items.id(i)).collect())
}

/// The sample's rank by ratings learned so far (ties: lower id first).
fn popular_rank(als: &Als, s: &Sample) -> Option<usize> {
    let items = als.side(Which::Items);
    let key = |i: usize| (std::cmp::Reverse(items.ratings(i).len()), items.id(i));
    let t = key(s.target);
    s.rank(|i| key(i) < t)
}

/// Splits ratings by time: the first `fraction` (by `(ts, user, movie)`) and the rest.
pub fn time_split(ratings: &[Rating], fraction: f64) -> (Vec<Rating>, Vec<Rating>) {
    let mut sorted = ratings.to_vec();
    sorted.sort_by_key(|r| (r.ts, r.user, r.movie));
    let cut = (sorted.len() as f64 * fraction).round() as usize;
    let rest = sorted.split_off(cut);
    (sorted, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_deterministic_and_complete() {
        let ratings: Vec<Rating> = (0..1000u32)
            .map(|n| Rating { ts: i64::from(n) * 7 % 1000, user: n % 37, movie: n, rating: 3.0 })
            .collect();
        let (a, b) = random_split(&ratings, 1);
        assert_eq!(a.len() + b.len(), 1000);
        assert!((150..250).contains(&b.len()), "about 20 %: {}", b.len());
        assert_eq!(random_split(&ratings, 1).1, b);
        let (early, late) = time_split(&ratings, 0.8);
        assert_eq!((early.len(), late.len()), (800, 200));
        assert!(early.iter().map(|r| r.ts).max() <= late.iter().map(|r| r.ts).min());
    }

    /// The ranks behind recall, NDCG and coverage equal a brute-force count over every movie.
    #[test]
    fn ranks_equal_a_brute_force_count() {
        let mut als = Als::new(AlsConfig { rank: 4, lambda: 0.1, sweep_every: 0 });
        for n in 0..3000u32 {
            let (user, movie) = (n % 40, (n * 7 + n / 40) % 120);
            als.add(user, movie, f32::from((n % 9) as u8) * 0.5 + 1.0);
        }
        als.train(5, None);
        let items = als.side(Which::Items);
        for (user, min) in [(0u32, 1usize), (7, 1), (39, 1), (7, 25), (39, 25)] {
            let u = als.side(Which::Users).index_of(user).unwrap();
            let rated: Vec<u32> =
                als.side(Which::Users).ratings(u).others().map(|i| items.id(i as usize)).collect();
            let count = |m: u32| items.ratings(items.index_of(m).unwrap()).len();
            let unrated: Vec<u32> = (0..120)
                .filter(|m| !rated.contains(m) && items.index_of(*m).is_some() && count(*m) >= min)
                .collect();
            assert!(unrated.len() > 20, "{} candidates", unrated.len());
            assert!(
                min == 1 || (0..120).any(|m| count(m) < min),
                "the floor of {min} ratings excludes movies"
            );
            let all = als.scores(als.user_factor(user).unwrap());
            let score = |m: u32| all[items.index_of(m).unwrap()];
            for &m in unrated.iter().step_by(7) {
                let want = 1 + unrated.iter().filter(|&&o| o != m && score(o) > score(m)).count();
                let (rank, top) = rank_and_top_n(&als, user, &Sample::of(&als, user, m, min).unwrap(), 10);
                assert_eq!(rank, Some(want), "user {user} movie {m}");
                let mut by_score = unrated.clone();
                by_score.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
                let mut top = top;
                top.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
                assert_eq!(top, by_score[..10].to_vec());
                let popular = 1 + unrated
                    .iter()
                    .filter(|&&o| o != m && (count(o) > count(m) || (count(o) == count(m) && o < m)))
                    .count();
                assert_eq!(popular_rank(&als, &Sample::of(&als, user, m, min).unwrap()), Some(popular));
                // The temporal evaluation's ranking, over candidate ids, agrees.
                let mut sums = RankSums::default();
                sums.add(&als, user, m, &unrated, true);
                assert_eq!((sums.ranked, sums.hits), (1, u64::from(want <= 10)), "user {user} movie {m}");
                assert!((sums.ndcg - if want <= 10 { gain(want) } else { 0.0 }).abs() < 1e-15);
            }
        }
        assert!((gain(1) - 1.0).abs() < 1e-15 && (gain(3) - 0.5).abs() < 1e-15);
        assert!(Sample::of(&als, 999, 1, 1).is_none());
    }

    /// Synthetic ratings over 400 days: users with a taste over 150 movies, new users and movies
    /// arriving over time.
    fn over_time() -> Vec<Rating> {
        (0..6000u32)
            .map(|n| {
                let day = i64::from(n) * 400 / 6000;
                let user = (n * 13 + n / 50) % (20 + n / 100);
                let movie = (n * 7 + user * 3) % (30 + n / 50);
                let stars = 1.0 + ((user % 4 + movie % 5) % 9) as f32 * 0.5;
                Rating { ts: 1_000_000_000 + day * 86_400 + i64::from(n % 97), user, movie, rating: stars }
            })
            .collect()
    }

    fn cfg() -> EvalConfig {
        EvalConfig {
            als: AlsConfig { rank: 4, lambda: 0.1, sweep_every: 500 },
            iters: 5,
            seed: 1,
            recall_sample: 200,
            min_movie_ratings: 1,
        }
    }

    /// Without a refit, the temporal evaluation's streaming and batch numbers are those of the
    /// prequential evaluation (a second implementation of the same loop).
    #[test]
    fn temporal_without_refits_equals_the_prequential_evaluation() {
        let (train, test) = time_split(&over_time(), 0.8);
        let t = temporal(&cfg(), &train, &test, 36_500, |_, _| {});
        let s = streaming(&cfg(), &train, &test);
        assert_eq!(t.retrains, 0);
        assert_eq!(t.streaming.errors, s.errors);
        assert_eq!(t.streaming_on_common, s.on_batch_events);
        assert_eq!(t.batch_on_common, s.batch_on_same_events);
        assert_eq!(t.common_events, s.on_batch_events.scored);
        // New users and movies arrive in the test period: the frozen model cannot score them.
        assert!(t.batch_retrained.errors.scored < t.streaming.errors.scored);
        // Its sample also holds ratings of users new in the test period (misses for the frozen
        // model), where the prequential one samples known users and movies only.
        assert!(t.recall_sample > 0 && t.batch_retrained.ranked < t.streaming.ranked);
    }

    /// The batch model is refitted once per window with events, on everything before it, and
    /// then scores like a fit from scratch on that prefix.
    #[test]
    fn temporal_refits_once_per_window_on_the_prefix() {
        let (train, test) = time_split(&over_time(), 0.8);
        let first = test.iter().map(|r| r.ts).min().unwrap();
        let windows: std::collections::BTreeSet<i64> =
            test.iter().map(|r| (r.ts - first).div_euclid(10 * 86_400)).collect();
        let t = temporal(&cfg(), &train, &test, 10, |_, _| {});
        assert_eq!(t.retrains as usize, windows.len() - 1);
        // The stream has seen every rating the batch model was fitted on: it scores whatever
        // the batch model scores.
        assert_eq!(t.common_events, t.batch_retrained.errors.scored);
        // The last window's model, refitted by hand, scores the last window's events the same.
        let last = *windows.iter().last().unwrap();
        let cut = test.iter().position(|r| (r.ts - first).div_euclid(10 * 86_400) == last).unwrap();
        let mut prefix = train.clone();
        prefix.extend_from_slice(&test[..cut]);
        let (model, _) = batch(&cfg(), &prefix, &[], "");
        let mut acc = ModelStats::default();
        for r in &test[cut..] {
            if let Some(q) = model.predict(r.user, r.movie) {
                acc.score(q, r.rating);
            }
        }
        let t_last = temporal(&cfg(), &prefix, &test[cut..], 36_500, |_, _| {});
        assert_eq!(Errors::from(&acc), t_last.batch_retrained.errors);
        // Refitting lets the batch model score more events than the frozen one.
        let frozen = temporal(&cfg(), &train, &test, 36_500, |_, _| {});
        assert!(t.batch_retrained.errors.scored > frozen.batch_retrained.errors.scored);
    }
}
