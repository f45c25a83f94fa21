//! Alternating least squares for explicit ratings, trained in batch or one event at a time.
//!
//! The model: rating(u, i) ≈ xᵤ · vᵢ with rank-k factors, minimising
//! Σ (r − xᵤ·vᵢ)² + λ (Σᵤ nᵤ‖xᵤ‖² + Σᵢ nᵢ‖vᵢ‖²), where nᵤ, nᵢ are rating counts: the
//! regularisation is weighted by each user's and item's count exactly as Spark MLlib's ALS does
//! ("ALS-WR"), so the same λ means the same thing in both.
//!
//! Each side (users, items) keeps, per entity, the **sufficient statistics** of its least-squares
//! problem: the Gram matrix G = Σ vvᵀ (f32, lower triangle with rows padded to whole 8-float
//! vectors, see [`row_len`]), the right-hand side b = Σ r·v and the residual b − (G + λnI)x
//! of the current factor x; the count n is the length of the entity's rating list. The factor is
//! the solution of (G + λnI) x = b.
//!
//! - **Per event** ([`Als::observe`]): the rating adds one outer product to the user's statistics
//!   (with the item's current factor), the residual is updated in O(k) and the user's factor is
//!   re-solved by conjugate gradients warm-started from the current factor: n + 1 steps below
//!   [`kernels::EXACT_BELOW`] ratings, which is exact (G has rank ≤ n), [`kernels::CG_STEPS`] steps after that
//!   and one from [`kernels::ONE_STEP_FROM`] ratings, which tracks the solution as one rating moves it
//!   little; each step is one O(k²) matrix-vector product. Then the same for the item with the
//!   user's new factor. Nothing re-reads a history. The kernels run in 256-bit vectors (AVX2)
//!   when the CPU has them, with bit-identical results either way, and rank 32 (the default) is
//!   compiled on its own with every loop bound a constant. [`Als::prefetch`] lets a caller that
//!   knows the next ratings start their memory loads early (at millions of ratings the
//!   statistics are in no cache).
//! - **Sweeps** correct the drift of statistics accumulated with factors that have since moved:
//!   an entity is re-solved exactly from its ratings and the other side's current factors. The
//!   streaming sweep is incremental: a few entities after each event (users first, then items),
//!   paced so a full sweep spans `max(sweep_every, ratings)` events. It never stops ingestion, and
//!   because it is driven by the event sequence (not by a clock or a thread), the model after a
//!   given sequence of ratings is always the same, which the checkpoint relies on.
//! - **Batch** ([`Als::train`]): full alternating sweeps over all entities of the side with more
//!   of them, then all of the other (see there why the order matters), on every
//!   core (at most 8); each half-sweep solves its side exactly, so the loss never increases.
//!
//! New users and items get a deterministic random unit-length factor (seeded by their id, as
//! Spark initialises) on first sight, so two newcomers meeting in one rating do not stay at zero.
//! Ratings are kept (for sweeps) at MovieLens's resolution: half stars from 0.5 to 5.0.
//!
//! May import: what `model/mod.rs` allows its layer; this module uses `crate::core::config`.

pub use crate::core::config::AlsConfig;
use ndarray::ArrayView1;

mod init;
mod kernels;
mod storage;

pub use init::mix;
pub use kernels::{dot, PREFETCH_AHEAD};
pub use storage::Side;

use kernels::{exact, exact_all, has_avx2, solve_spd, update_entity};
use storage::Shape;

/// Where the incremental streaming sweep stands.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SweepCursor {
    /// 0 = users, 1 = items.
    side: u8,
    next: usize,
    /// Work (rating visits) the sweep may still spend; grows with every event.
    credit: f64,
}

/// What [`Als::train`] calls after each half-sweep: given a function that computes the objective.
pub type AfterHalf<'a> = dyn FnMut(&dyn Fn() -> f64) + 'a;

/// A prediction on MovieLens's rating scale, 0.5–5.0.
pub fn clamp_rating(score: f32) -> f32 {
    score.clamp(0.5, 5.0)
}

/// The model and its statistics.
#[derive(Debug, Clone)]
pub struct Als {
    cfg: AlsConfig,
    shape: Shape,
    users: Side,
    items: Side,
    sweep: SweepCursor,
    sweeps_done: u64,
    ratings: u64,
    scratch: Vec<f64>,
    work: Vec<f32>,
    /// Run the per-event arithmetic in 256-bit vectors (the CPU has AVX2).
    vectors: bool,
}

/// Entity sides, for [`Als::side`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Users.
    Users,
    /// Items (movies).
    Items,
}

const USER_SALT: u64 = 0x5553_4552;
const ITEM_SALT: u64 = 0x4954_454d;

impl Als {
    /// An empty model.
    pub fn new(cfg: AlsConfig) -> Als {
        let k = cfg.rank;
        Als {
            cfg,
            shape: Shape::new(k),
            users: Side::default(),
            items: Side::default(),
            sweep: SweepCursor::default(),
            sweeps_done: 0,
            ratings: 0,
            scratch: vec![0.0; k * k + k],
            work: vec![0.0; 2 * k],
            vectors: has_avx2(),
        }
    }

    /// Rank k.
    pub fn rank(&self) -> usize {
        self.cfg.rank
    }

    /// One side of the model.
    pub fn side(&self, which: Which) -> &Side {
        match which {
            Which::Users => &self.users,
            Which::Items => &self.items,
        }
    }

    /// Ratings observed (streaming and batch).
    pub fn ratings(&self) -> u64 {
        self.ratings
    }

    /// Complete streaming sweeps so far.
    pub fn sweeps_done(&self) -> u64 {
        self.sweeps_done
    }

    /// A user's factor.
    pub fn user_factor(&self, user: u32) -> Option<&[f32]> {
        self.users.index_of(user).map(|i| self.users.factor(i, self.cfg.rank))
    }

    /// An item's factor.
    pub fn item_factor(&self, item: u32) -> Option<&[f32]> {
        self.items.index_of(item).map(|i| self.items.factor(i, self.cfg.rank))
    }

    /// Predicted rating, clamped to MovieLens's 0.5–5.0; `None` if the user or item is unknown.
    pub fn predict(&self, user: u32, item: u32) -> Option<f32> {
        let x = self.user_factor(user)?;
        let v = self.item_factor(item)?;
        Some(clamp_rating(dot(x, v)))
    }

    /// Starts loading into the cache what [`Als::observe`] of this user and item will touch
    /// (their statistics are ~2.8 KB each at rank 32, and at millions of ratings most are not in
    /// any cache): called a few ratings ahead, the loads overlap the arithmetic of the ratings
    /// between. Changes nothing; unknown ids are ignored.
    #[inline]
    pub fn prefetch(&self, user: u32, item: u32) {
        if let Some(u) = self.users.index_of(user) {
            self.users.prefetch(u, self.shape);
        }
        if let Some(i) = self.items.index_of(item) {
            self.items.prefetch(i, self.shape);
        }
    }

    /// Adds ratings without solving (batch loading before [`Als::train`]).
    pub fn add(&mut self, user: u32, item: u32, rating: f32) {
        self.insert(user, item, rating);
    }

    /// Records a rating (creating the user and item if new); returns their indices and whether
    /// both were known before.
    fn insert(&mut self, user: u32, item: u32, rating: f32) -> (usize, usize, bool) {
        let (users, items) = (self.users.len(), self.items.len());
        let u = self.users.get_or_insert(user, self.shape, USER_SALT);
        let i = self.items.get_or_insert(item, self.shape, ITEM_SALT);
        let known = u < users && i < items;
        self.users.ratings[u].push(i as u32, rating);
        self.items.ratings[i].push(u as u32, rating);
        self.ratings += 1;
        (u, i, known)
    }

    /// Learns from one rating: updates the user's statistics and re-solves the user, then the
    /// item with the user's new factor; then advances the incremental sweep. Returns what
    /// [`Als::predict`] said before learning, if the user and the item were both known.
    pub fn observe(&mut self, user: u32, item: u32, rating: f32) -> Option<f32> {
        let (u, i, known) = self.insert(user, item, rating);
        let k = self.cfg.rank;
        let before = known.then(|| clamp_rating(dot(self.users.factor(u, k), self.items.factor(i, k))));
        self.learn_dispatch(u, i, rating);
        before
    }

    /// The arithmetic of [`Als::observe`] for user index `u`, item index `i`; rank 32 compiled
    /// on its own (see [`Shape::RANK32`]).
    #[inline(always)]
    fn learn(&mut self, u: usize, i: usize, rating: f32) {
        if self.shape == Shape::RANK32 {
            self.learn_shaped(u, i, rating, Shape::RANK32);
        } else {
            self.learn_shaped(u, i, rating, self.shape);
        }
    }

    #[inline(always)]
    fn learn_shaped(&mut self, u: usize, i: usize, rating: f32, shape: Shape) {
        let k = shape.k;
        let lambda = f64::from(self.cfg.lambda);
        update_entity(&mut self.users, u, self.items.factor(i, k), rating, lambda, shape, &mut self.work);
        update_entity(&mut self.items, i, self.users.factor(u, k), rating, lambda, shape, &mut self.work);
        self.sweep_step(shape);
    }

    #[inline(always)]
    fn sweep_step(&mut self, shape: Shape) {
        if self.cfg.sweep_every == 0 {
            return;
        }
        // One sweep visits every rating twice (once per side) plus k per entity solve; spread it
        // over max(sweep_every, ratings) events.
        let work = 2.0 * self.ratings as f64 + (self.cfg.rank * (self.users.len() + self.items.len())) as f64;
        self.sweep.credit += work / self.cfg.sweep_every.max(self.ratings) as f64;
        let k = shape.k;
        let lambda = f64::from(self.cfg.lambda);
        while self.sweep.credit > 0.0 {
            let (this, other) = match self.sweep.side {
                0 => (&mut self.users, &self.items),
                _ => (&mut self.items, &self.users),
            };
            if self.sweep.next >= this.len() {
                if self.sweep.side == 0 {
                    self.sweep.side = 1;
                    self.sweep.next = 0;
                    continue;
                }
                self.sweeps_done += 1;
                self.sweep = SweepCursor::default();
                break;
            }
            let e = self.sweep.next;
            self.sweep.credit -= (this.ratings[e].len() + k) as f64;
            let (x, stats, rated) = this.entity_mut(e, shape);
            exact(x, stats, rated, &other.factors, lambda, k, &mut self.scratch, &mut self.work);
            self.sweep.next += 1;
        }
    }

    /// Batch training: `iters` full alternating sweeps, each entity solved exactly, starting
    /// with the side that has more entities (fewer ratings each). Calls `after_half` after each
    /// half-sweep when given, with a function that computes the objective ([`Als::loss`]) if
    /// the caller wants it.
    ///
    /// The first half-sweep solves one side against the other's random initial factors. Which
    /// side goes first decides how fast the objective falls (15 iterations, rank 32, λ 0.1;
    /// objective and test RMSE, docs/benchmarks.md "Batch ALS against Spark"): on a sparse
    /// catalogue (ml-latest-small's shape, 9,742 movies for 610 users) movies first ends at
    /// 88,053 / 0.7572 and users first at 88,983 / 0.7696; on a dense one (3,000 movies, 8,000
    /// users) users first ends at 970,524 / 0.6590 and movies first at 985,819 / 0.6619; two more
    /// shapes agree. A likely reason: an entity with fewer ratings than the rank fits them
    /// exactly against random factors and keeps that information for the other side, where one
    /// with many more gets a noisy projection. Spark MLlib always starts with the items.
    pub fn train(&mut self, iters: usize, mut after_half: Option<&mut AfterHalf<'_>>) {
        let order = if self.items.len() > self.users.len() {
            [Which::Items, Which::Users]
        } else {
            [Which::Users, Which::Items]
        };
        for _ in 0..iters {
            for which in order {
                self.solve_side(which);
                if let Some(f) = after_half.as_mut() {
                    f(&|| self.loss());
                }
            }
        }
    }

    /// Solves every entity of one side exactly (one thread per core, at most 8).
    pub fn solve_side(&mut self, which: Which) {
        let k = self.cfg.rank;
        let lambda = f64::from(self.cfg.lambda);
        let (shape, vectors) = (self.shape, self.vectors);
        let (this, other) = match which {
            Which::Users => (&mut self.users, &self.items),
            Which::Items => (&mut self.items, &self.users),
        };
        let n = this.len();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let chunk = n.div_ceil(threads).max(1);
        let other_factors = &other.factors;
        std::thread::scope(|s| {
            let parts = this
                .factors
                .chunks_mut(chunk * k)
                .zip(this.stats.chunks_mut(chunk * shape.stride))
                .zip(this.ratings.chunks(chunk));
            for ((f, st), r) in parts {
                s.spawn(move || exact_all(f, st, r, other_factors, lambda, shape, vectors));
            }
        });
    }

    /// The training objective over all ratings seen.
    pub fn loss(&self) -> f64 {
        let k = self.cfg.rank;
        let lambda = f64::from(self.cfg.lambda);
        let mut loss = 0.0;
        for u in 0..self.users.len() {
            let x = self.users.factor(u, k);
            for (i, r) in self.users.ratings[u].iter() {
                let e = f64::from(r) - f64::from(dot(x, self.items.factor(i as usize, k)));
                loss += e * e;
            }
        }
        for side in [&self.users, &self.items] {
            for e in 0..side.len() {
                let x = side.factor(e, k);
                loss += lambda * side.ratings[e].len() as f64 * f64::from(dot(x, x));
            }
        }
        loss
    }

    /// The exact regularised least-squares factor for a user with `ratings` (item id, rating)
    /// given the current item factors (unknown items are skipped). Does not change the model.
    pub fn fold_in(&self, ratings: &[(u32, f32)]) -> Vec<f32> {
        let k = self.cfg.rank;
        let mut a = vec![0.0f64; k * k];
        let mut y = vec![0.0f64; k];
        let mut n = 0usize;
        for &(id, r) in ratings {
            let Some(i) = self.items.index_of(id) else { continue };
            let v = self.items.factor(i, k);
            for p in 0..k {
                for q in 0..=p {
                    a[p * k + q] += f64::from(v[p]) * f64::from(v[q]);
                }
                y[p] += f64::from(r) * f64::from(v[p]);
            }
            n += 1;
        }
        if n == 0 {
            return vec![0.0; k];
        }
        for p in 0..k {
            a[p * k + p] += f64::from(self.cfg.lambda) * n as f64;
        }
        if !solve_spd(&mut a, &mut y, k) {
            return vec![0.0; k];
        }
        y.iter().map(|&v| v as f32).collect()
    }

    /// Scores of every item for a user factor `x` (unclamped dot products), by item index.
    pub fn scores(&self, x: &[f32]) -> ndarray::Array1<f32> {
        self.items.matrix(self.cfg.rank).dot(&ArrayView1::from(x))
    }
}

#[cfg(test)]
mod tests {
    use super::kernels::*;
    use super::storage::*;
    use super::*;

    /// Deterministic pseudo-random numbers in [0, 1).
    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Users with a taste vector rating items with a trait vector (rank 3), rounded to half stars.
    fn synthetic(users: u32, items: u32, per_user: u32, seed: u64) -> Vec<(u32, u32, f32)> {
        let mut r = rng(seed);
        let item_traits: Vec<[f64; 3]> = (0..items).map(|_| [r(), r(), r()]).collect();
        let mut out = Vec::new();
        for u in 0..users {
            let taste = [r() * 2.0, r() * 2.0, r() * 2.0];
            let mut seen = std::collections::HashSet::new();
            while seen.len() < per_user as usize {
                let i = (r() * f64::from(items)) as u32;
                if seen.insert(i) {
                    let t = &item_traits[i as usize];
                    let v = 1.0 + taste[0] * t[0] + taste[1] * t[1] + taste[2] * t[2] + (r() - 0.5);
                    out.push((u, i, ((v * 2.0).round() / 2.0).clamp(0.5, 5.0) as f32));
                }
            }
        }
        out
    }

    fn small_cfg() -> AlsConfig {
        AlsConfig { rank: 8, lambda: 0.1, sweep_every: 1000 }
    }

    /// `train` starts each iteration with the side that has more entities (fewer ratings each).
    #[test]
    fn batch_training_starts_with_the_side_that_has_more_entities() {
        for (users, items) in [(40u32, 200u32), (200, 40)] {
            let mut als = Als::new(small_cfg());
            for (u, i, r) in synthetic(users, items, 15, 3) {
                als.add(u, i, r);
            }
            let (mut trained, mut manual) = (als.clone(), als.clone());
            trained.train(2, None);
            let order =
                if items > users { [Which::Items, Which::Users] } else { [Which::Users, Which::Items] };
            for _ in 0..2 {
                for which in order {
                    manual.solve_side(which);
                }
            }
            assert_eq!(trained.users.factors, manual.users.factors, "{users} users, {items} items");
            assert_eq!(trained.items.factors, manual.items.factors, "{users} users, {items} items");
            let mut other = als.clone();
            other.solve_side(order[1]);
            other.solve_side(order[0]);
            assert_ne!(trained.items.factors, other.items.factors, "the order matters");
        }
    }

    #[test]
    fn a_full_sweep_never_increases_the_training_loss() {
        let mut als = Als::new(small_cfg());
        for (u, i, r) in synthetic(300, 200, 25, 7) {
            als.add(u, i, r);
        }
        let mut losses = vec![als.loss()];
        als.train(6, Some(&mut |l: &dyn Fn() -> f64| losses.push(l())));
        for w in losses.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-6), "loss went up: {losses:?}");
        }
        assert!(losses[losses.len() - 1] < losses[0] * 0.2, "training learned little: {losses:?}");
    }

    #[test]
    fn factors_stay_finite_under_extreme_inputs() {
        for (label, value) in [("all 0.5", Some(0.5f32)), ("all 5.0", Some(5.0)), ("mixed", None)] {
            let mut als = Als::new(AlsConfig { rank: 32, lambda: 0.1, sweep_every: 5000 });
            // One user rates 10 000 movies; a few others rate a handful.
            for m in 0..10_000u32 {
                let r = value.unwrap_or(if m % 2 == 0 { 0.5 } else { 5.0 });
                als.observe(1, m, r);
            }
            for u in 2..50u32 {
                for m in 0..20u32 {
                    als.observe(u, m * 7 + u, value.unwrap_or(if (m + u) % 3 == 0 { 5.0 } else { 0.5 }));
                }
            }
            als.train(10, None);
            for which in [Which::Users, Which::Items] {
                let side = als.side(which);
                assert!(side.factors.iter().all(|v| v.is_finite()), "{label}: non-finite factor");
                assert!(side.stats.iter().all(|v| v.is_finite()), "{label}: non-finite statistics");
            }
            let p = als.predict(1, 3).unwrap();
            assert!((0.5..=5.0).contains(&p), "{label}: prediction {p}");
            if let Some(v) = value {
                assert!((p - v).abs() < 0.6, "{label}: predicts {p} for a user who always gives {v}");
            }
        }
    }

    /// Gaussian elimination with partial pivoting: an independent dense solver.
    fn gauss(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for c in 0..n {
            let p = (c..n).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs())).unwrap();
            a.swap(c, p);
            b.swap(c, p);
            for r in c + 1..n {
                let f = a[r][c] / a[c][c];
                let pivot = a[c].clone();
                for (arj, pj) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                    *arj -= f * pj;
                }
                b[r] -= f * b[c];
            }
        }
        let mut x = vec![0.0; n];
        for r in (0..n).rev() {
            let s: f64 = (r + 1..n).map(|j| a[r][j] * x[j]).sum();
            x[r] = (b[r] - s) / a[r][r];
        }
        x
    }

    #[test]
    fn fold_in_equals_the_exact_least_squares_solution() {
        let cfg = AlsConfig { rank: 16, lambda: 0.07, sweep_every: 0 };
        let mut als = Als::new(cfg.clone());
        for (u, i, r) in synthetic(200, 150, 30, 11) {
            als.add(u, i, r);
        }
        als.train(3, None);
        let mut r = rng(5);
        let ratings: Vec<(u32, f32)> =
            (0..40).map(|j| (j * 3 + 1, ((r() * 9.0).round() / 2.0 + 0.5) as f32)).collect();
        let x = als.fold_in(&ratings);
        // min Σ (r − x·v)² + λ n ‖x‖²  ⇔  (VᵀV + λ n I) x = Vᵀ r
        let k = cfg.rank;
        let mut a = vec![vec![0.0; k]; k];
        let mut b = vec![0.0; k];
        for &(id, rating) in &ratings {
            let v = als.item_factor(id).unwrap();
            for p in 0..k {
                for q in 0..k {
                    a[p][q] += f64::from(v[p]) * f64::from(v[q]);
                }
                b[p] += f64::from(rating) * f64::from(v[p]);
            }
        }
        for (p, row) in a.iter_mut().enumerate() {
            row[p] += f64::from(cfg.lambda) * ratings.len() as f64;
        }
        let want = gauss(a, b);
        for (got, want) in x.iter().zip(&want) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "fold-in {x:?} vs exact {want:?}");
        }
    }

    #[test]
    fn the_exact_solve_of_sweeps_and_batch_equals_the_fold_in() {
        // `exact` accumulates the statistics in f32 (as stored); fold-in works in f64 from scratch.
        let mut als = Als::new(AlsConfig { rank: 16, lambda: 0.07, sweep_every: 0 });
        for (u, i, r) in synthetic(200, 150, 30, 13) {
            als.add(u, i, r);
        }
        als.train(2, None);
        als.solve_side(Which::Users);
        let items = als.side(Which::Items);
        for u in [0u32, 17, 199] {
            let side = als.side(Which::Users);
            let list: Vec<(u32, f32)> = side
                .ratings(side.index_of(u).unwrap())
                .iter()
                .map(|(i, r)| (items.id(i as usize), r))
                .collect();
            let want = als.fold_in(&list);
            for (got, want) in als.user_factor(u).unwrap().iter().zip(&want) {
                assert!((got - want).abs() < 1e-4, "user {u}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn per_event_updates_approach_the_exact_solution() {
        // Items frozen (their factors from a batch fit); one user's ratings arrive one by one.
        // Below EXACT_BELOW ratings each update is exact; after it, CG steps must stay close.
        let mut als = Als::new(AlsConfig { rank: 8, lambda: 0.1, sweep_every: 0 });
        for (u, i, r) in synthetic(100, 120, 30, 21) {
            als.add(u, i, r);
        }
        // The item factors this test's tolerances were set with (users first, before `train`
        // chose its order by the sides' sizes).
        for _ in 0..5 {
            als.solve_side(Which::Users);
            als.solve_side(Which::Items);
        }
        let items = als.items.clone();
        let mut list = Vec::new();
        let mut r = rng(9);
        let mut late = Vec::new();
        for n in 0..60u32 {
            let item = (n * 7) % 120;
            let rating = ((r() * 9.0).round() / 2.0 + 0.5) as f32;
            list.push((item, rating));
            als.observe(1_000, item, rating);
            als.items = items.clone(); // keep the item side fixed
            let want = als.fold_in(&list);
            let got = als.user_factor(1_000).unwrap();
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let tol = if n + 1 < EXACT_BELOW { 1e-4 } else { 0.1 };
            assert!(err < tol, "after {} ratings: max error {err}", n + 1);
            if n >= 40 {
                late.push(err);
            }
        }
        // The warm-started CG steps track the moving solution: the error stays small and shrinks
        // as each rating moves the system less (sweeps re-solve exactly later).
        let mean = late.iter().sum::<f32>() / late.len() as f32;
        assert!(mean < 0.015, "mean error over ratings 41–60: {mean}");
    }

    /// Both models hold the same factors and statistics, bit for bit.
    fn assert_same_bits(a: &Als, b: &Als) {
        for which in [Which::Users, Which::Items] {
            let (x, y) = (a.side(which), b.side(which));
            assert!(x.factors.iter().zip(&y.factors).all(|(p, q)| p.to_bits() == q.to_bits()));
            assert!(x.stats.iter().zip(&y.stats).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }

    #[test]
    fn vector_and_baseline_arithmetic_give_the_same_model() {
        // The AVX2 compilation must compute exactly what the baseline one does (a restart on
        // another machine rebuilds the same model); on a CPU without AVX2 both run the baseline.
        let data = synthetic(120, 90, 30, 17);
        let models = [true, false].map(|vectors| {
            let mut als = Als::new(AlsConfig { rank: 32, lambda: 0.1, sweep_every: 500 });
            als.vectors &= vectors;
            for &(u, i, r) in &data {
                als.observe(u, i, r);
            }
            // And the batch solve (`exact_all`), which has its own AVX2 entry point.
            als.train(2, None);
            als
        });
        let [a, b] = &models;
        assert!(a.sweeps_done() > 0);
        assert_same_bits(a, b);
    }

    /// The row-by-row form of [`sym_mul`] (each row's lower blocks added into `y` in memory).
    fn sym_mul_by_rows(g: &[f32], x: &[f32], reg: f32, y: &mut [f32]) {
        let k = x.len();
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = reg * xi;
        }
        let mut off = 0;
        for (i, &xi) in x.iter().enumerate() {
            let len = row_len(i, k);
            let row = &g[off..off + len];
            let below = i / LANES * LANES;
            for (yj, &gij) in y[..below].iter_mut().zip(&row[..below]) {
                *yj += gij * xi;
            }
            y[i] += dot(row, &x[..len]);
            off += len;
        }
    }

    #[test]
    fn the_id_index_finds_small_and_large_ids() {
        let mut index = IdIndex::default();
        let ids = [0, 1, 7, 162_541, IdIndex::DENSE - 1, IdIndex::DENSE, u32::MAX];
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(index.get(id), None);
            index.insert(id, i as u32);
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(index.get(id), Some(i as u32), "id {id}");
        }
        assert_eq!(index.get(2), None);
        assert_eq!(index.get(IdIndex::DENSE + 1), None);
        assert_eq!(index.dense.len(), IdIndex::DENSE as usize);
    }

    #[test]
    fn the_blocked_product_adds_in_the_row_by_row_order() {
        let mut next = rng(5);
        for k in 1..=41 {
            let shape = Shape::new(k);
            let g: Vec<f32> = (0..shape.stride - 2 * k).map(|_| next() as f32 - 0.5).collect();
            let x: Vec<f32> = (0..k).map(|_| next() as f32 - 0.5).collect();
            let (mut y, mut z) = (vec![0.0; k], vec![0.0; k]);
            sym_mul(&g, &x, 0.37, &mut y);
            sym_mul_by_rows(&g, &x, 0.37, &mut z);
            assert!(y.iter().zip(&z).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {k}");
        }
    }

    #[test]
    fn the_vector_row_sums_equal_the_portable_ones() {
        let mut next = rng(11);
        for _ in 0..200 {
            let mut acc = [[0.0f32; LANES]; LANES];
            for v in acc.iter_mut().flatten() {
                *v = (next() as f32 - 0.5) * 1e3;
            }
            let portable = sum_rows_portable(&acc);
            for (t, row) in acc.iter().enumerate() {
                assert_eq!(portable[t].to_bits(), lane_sum(row).to_bits());
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: checked just above.
                let vector = unsafe { sum_rows_avx(&acc) };
                assert!(vector.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn four_outer_products_at_once_equal_one_at_a_time() {
        let mut next = rng(13);
        for k in [1, 7, 8, 13, 32, 41] {
            let shape = Shape::new(k);
            let n = shape.stride - 2 * k;
            let base: Vec<f32> = (0..n).map(|_| next() as f32).collect();
            let vs: Vec<Vec<f32>> = (0..4).map(|_| (0..k).map(|_| next() as f32 - 0.5).collect()).collect();
            let (mut four, mut ones) = (base.clone(), base);
            rank_four(&mut four, [&vs[0], &vs[1], &vs[2], &vs[3]]);
            for v in &vs {
                rank_one(&mut ones, v);
            }
            // Same sums, added in another order: equal to rounding.
            assert!(four.iter().zip(&ones).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())), "rank {k}");
        }
    }

    #[test]
    fn the_rank_32_compilation_equals_the_general_one() {
        // `learn` runs rank 32 with its shape a compile-time constant; the same arithmetic with
        // the shape only known at run time must give the same bits.
        let data = synthetic(120, 90, 30, 19);
        let cfg = AlsConfig { rank: 32, lambda: 0.1, sweep_every: 500 };
        let (mut special, mut general) = (Als::new(cfg.clone()), Als::new(cfg));
        for &(u, i, r) in &data {
            special.observe(u, i, r);
            let (u, i, _) = general.insert(u, i, r);
            general.learn_shaped(u, i, r, std::hint::black_box(Shape::new(32)));
        }
        assert!(special.sweeps_done() > 0);
        assert_same_bits(&special, &general);
    }

    #[test]
    fn streaming_updates_track_batch_quality() {
        let data = synthetic(400, 300, 40, 3);
        let (train, test): (Vec<_>, Vec<_>) = data.iter().enumerate().partition(|(n, _)| n % 5 != 0);
        let rmse = |als: &Als| {
            let (mut se, mut n) = (0.0, 0);
            for (_, &(u, i, r)) in &test {
                if let Some(p) = als.predict(u, i) {
                    se += f64::from(p - r).powi(2);
                    n += 1;
                }
            }
            (se / f64::from(n)).sqrt()
        };
        let mut batch = Als::new(small_cfg());
        for (_, &(u, i, r)) in &train {
            batch.add(u, i, r);
        }
        batch.train(10, None);
        let mut stream = Als::new(small_cfg());
        for (_, &(u, i, r)) in &train {
            stream.observe(u, i, r);
        }
        let (b, s) = (rmse(&batch), rmse(&stream));
        assert!(stream.sweeps_done() > 0);
        assert!(s < b * 1.15, "streaming RMSE {s} vs batch {b}");
    }
}
