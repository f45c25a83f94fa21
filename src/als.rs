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
//!   [`EXACT_BELOW`] ratings, which is exact (G has rank ≤ n), [`CG_STEPS`] steps after that
//!   and one from [`ONE_STEP_FROM`] ratings, which tracks the solution as one rating moves it
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
//! - **Batch** ([`Als::train`]): full alternating sweeps over all users, then all items, on every
//!   core (at most 8); each half-sweep solves its side exactly, so the loss never increases.
//!
//! New users and items get a deterministic random unit-length factor (seeded by their id, as
//! Spark initialises) on first sight, so two newcomers meeting in one rating do not stay at zero.
//! Ratings are kept (for sweeps) at MovieLens's resolution: half stars from 0.5 to 5.0.

use ndarray::{ArrayView1, ArrayView2};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use streamflix_replay::generate::mix;

/// Largest supported rank.
pub const MAX_RANK: usize = 128;

/// ALS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsConfig {
    /// Rank k of the factors.
    pub rank: usize,
    /// Regularisation λ (scaled by each entity's rating count, as in Spark MLlib).
    pub lambda: f32,
    /// Streaming: a full incremental sweep spans this many events (at least as many as there are
    /// ratings). 0 disables sweeps.
    pub sweep_every: u64,
}

impl Default for AlsConfig {
    fn default() -> Self {
        AlsConfig { rank: 32, lambda: 0.1, sweep_every: 1_000_000 }
    }
}

impl AlsConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A one-line message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RANK).contains(&self.rank) {
            return Err(format!("ALS rank must be between 1 and {MAX_RANK} (got {})", self.rank));
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(format!("ALS lambda must be a positive number (got {})", self.lambda));
        }
        Ok(())
    }
}

/// One side of the factorisation (users or items).
#[derive(Debug, Clone, Default)]
pub struct Side {
    index: IdIndex,
    ids: Vec<u32>,
    /// Factors, row-major n × k.
    factors: Vec<f32>,
    /// Per entity, [`Shape::stride`] floats: the right-hand side b (k), the residual
    /// b − (G + λnI)x of the current factor (k), and the Gram matrix G in [`Shape`]'s layout.
    stats: Vec<f32>,
    /// Ratings per entity, in arrival order.
    ratings: Vec<Rated>,
}

/// One entity's ratings in arrival order, 4 bytes each: the other side's index in the low
/// [`INDEX_BITS`] bits, the rating in half stars (1–10) above them. One array per entity, so
/// recording a rating touches one place in memory per side.
#[derive(Debug, Clone, Default)]
pub struct Rated {
    packed: Vec<u32>,
}

/// Bits of a rating entry that hold the other side's index: up to 268 M users or movies.
const INDEX_BITS: u32 = 28;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

impl Rated {
    /// Ratings.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The other side's indices.
    pub fn others(&self) -> impl Iterator<Item = u32> + '_ {
        self.packed.iter().map(|&p| Rated::unpack(p).0)
    }

    /// (other side's index, rating) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.packed.iter().map(|&p| Rated::unpack(p))
    }

    /// One packed entry as (other side's index, rating).
    #[inline(always)]
    fn unpack(p: u32) -> (u32, f32) {
        (p & INDEX_MASK, (p >> INDEX_BITS) as f32 / 2.0)
    }

    fn push(&mut self, other: u32, rating: f32) {
        // MovieLens's scale: 0.5–5.0 in half steps (the processor rejects anything else).
        let half_stars = (rating * 2.0).round().clamp(1.0, 10.0) as u32;
        self.packed.push(other | half_stars << INDEX_BITS);
    }
}

/// Width of the Gram matrix's row blocks: eight f32 fill one 256-bit vector register.
const LANES: usize = 8;

/// Length of row `i` of a rank-`k` Gram matrix in the stored layout: the lower triangle with each
/// row extended to the end of its block of [`LANES`] rows, so every row is whole vectors and the
/// diagonal blocks are stored in full (rank 32: 640 floats, against 528 packed and 1,024 full).
#[inline(always)]
const fn row_len(i: usize, k: usize) -> usize {
    let end = (i / LANES + 1) * LANES;
    if end < k {
        end
    } else {
        k
    }
}

/// The per-entity storage layout for rank k.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    k: usize,
    /// Floats of one entity's statistics: b (k), the residual (k), G (its rows, [`row_len`]).
    stride: usize,
}

impl Shape {
    const fn new(k: usize) -> Shape {
        let mut stride = 2 * k;
        let mut i = 0;
        while i < k {
            stride += row_len(i, k);
            i += 1;
        }
        Shape { k, stride }
    }

    /// The default rank's layout, as a constant: the per-event code compiled for it has every
    /// loop bound known, so it is unrolled into whole vectors with no remainder loops.
    const RANK32: Shape = Shape::new(32);
}

/// One entity's statistics, split: (b, residual, G).
fn split_stats(st: &mut [f32], k: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (b, rest) = st.split_at_mut(k);
    let (r, g) = rest.split_at_mut(k);
    (b, r, g)
}

impl Side {
    /// Entities on this side.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No entities yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Dense index of external id `id`.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.index.get(id).map(|i| i as usize)
    }

    /// External id of dense index `i`.
    pub fn id(&self, i: usize) -> u32 {
        self.ids[i]
    }

    /// Ratings seen for entity `i`.
    pub fn ratings(&self, i: usize) -> &Rated {
        &self.ratings[i]
    }

    fn factor(&self, i: usize, k: usize) -> &[f32] {
        &self.factors[i * k..(i + 1) * k]
    }

    /// All factors as an n × k matrix.
    pub fn matrix(&self, k: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), k), &self.factors).expect("n × k factors")
    }

    /// Entity `e`'s factor, statistics and ratings, the first two to change.
    fn entity_mut(&mut self, e: usize, shape: Shape) -> (&mut [f32], &mut [f32], &Rated) {
        let (k, stride) = (shape.k, shape.stride);
        (
            &mut self.factors[e * k..(e + 1) * k],
            &mut self.stats[e * stride..(e + 1) * stride],
            &self.ratings[e],
        )
    }

    /// Starts loading entity `e`'s factor, statistics and rating-list header into the cache
    /// (see [`Als::prefetch`]).
    #[inline(always)]
    fn prefetch(&self, e: usize, shape: Shape) {
        let (k, stride) = (shape.k, shape.stride);
        prefetch_floats(&self.stats[e * stride..(e + 1) * stride]);
        prefetch_floats(&self.factors[e * k..(e + 1) * k]);
        // The rating list's header, not its end: finding the end would be a load that waits.
        prefetch(&self.ratings[e]);
    }

    fn get_or_insert(&mut self, id: u32, shape: Shape, salt: u64) -> usize {
        if let Some(i) = self.index.get(id) {
            return i as usize;
        }
        let k = shape.k;
        let i = self.ids.len();
        assert!(i < 1 << INDEX_BITS, "more than 2^{INDEX_BITS} users or movies");
        self.index.insert(id, i as u32);
        self.ids.push(id);
        // Spark's initialisation: a random direction (normal components), unit length.
        let mut s = (u64::from(id) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut uniform = move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            ((mix(s, 0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let start = self.factors.len();
        for _ in 0..k {
            let (u1, u2) = (uniform(), uniform());
            self.factors.push(((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32);
        }
        let norm = dot(&self.factors[start..], &self.factors[start..]).sqrt().max(f32::MIN_POSITIVE);
        for f in &mut self.factors[start..] {
            *f /= norm;
        }
        // No ratings: b = 0, G = 0, λn = 0, so the residual b − (G + λnI)x is 0 too.
        self.stats.extend(std::iter::repeat_n(0.0, shape.stride));
        self.ratings.push(Rated::default());
        i
    }
}

/// External id → dense index. Ids below [`IdIndex::DENSE`] (all of MovieLens's) are looked up in
/// a flat table, one load that a prefetch can run ahead of; larger ones in a hash map.
#[derive(Debug, Clone, Default)]
struct IdIndex {
    /// Index + 1 by id; 0 = absent.
    dense: Vec<u32>,
    sparse: FxHashMap<u32, u32>,
}

impl IdIndex {
    /// Ids the flat table covers at most (4 bytes each: 16 MB when full).
    const DENSE: u32 = 1 << 22;

    #[inline(always)]
    fn get(&self, id: u32) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&i) => i.checked_sub(1),
            None if id < Self::DENSE => None,
            None => self.sparse.get(&id).copied(),
        }
    }

    fn insert(&mut self, id: u32, index: u32) {
        if id < Self::DENSE {
            let at = id as usize;
            if at >= self.dense.len() {
                // Doubling (at least to the id) keeps growth amortised.
                let len = (at + 1).max(self.dense.len() * 2).min(Self::DENSE as usize);
                self.dense.resize(len, 0);
            }
            self.dense[at] = index + 1;
        } else {
            self.sparse.insert(id, index);
        }
    }
}

/// Where the incremental streaming sweep stands.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SweepCursor {
    /// 0 = users, 1 = items.
    side: u8,
    next: usize,
    /// Work (rating visits) the sweep may still spend; grows with every event.
    credit: f64,
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
        Some(dot(x, v).clamp(0.5, 5.0))
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
        let before = known.then(|| dot(self.users.factor(u, k), self.items.factor(i, k)).clamp(0.5, 5.0));
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            // SAFETY: `vectors` is only set when the CPU has AVX2 (`has_avx2`).
            unsafe { self.learn_avx2(u, i, rating) };
            return before;
        }
        self.learn(u, i, rating);
        before
    }

    /// [`Als::learn`] compiled for 256-bit vectors (see [`exact_all`]).
    ///
    /// # Safety
    /// The CPU must have AVX2. (An `unsafe fn` rather than a safe `#[target_feature]` one, which
    /// needs Rust 1.86: the crate builds with 1.85.)
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn learn_avx2(&mut self, u: usize, i: usize, rating: f32) {
        self.learn(u, i, rating);
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

    /// Batch training: `iters` full alternating sweeps (all users, then all items), each entity
    /// solved exactly. Calls `after_half(loss)` after each half-sweep when given.
    pub fn train(&mut self, iters: usize, mut after_half: Option<&mut dyn FnMut(f64)>) {
        for _ in 0..iters {
            self.solve_side(Which::Users);
            if let Some(f) = after_half.as_mut() {
                f(self.loss());
            }
            self.solve_side(Which::Items);
            if let Some(f) = after_half.as_mut() {
                f(self.loss());
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
        let threads = streamflix_replay::movielens::cores();
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

/// The CPU runs AVX2 code.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`exact`] for consecutive entities (`factors`, `stats` and `ratings` of the same range),
/// compiled for 256-bit vectors (AVX2) when the CPU has them.
///
/// The kernels are written lane by lane (eight independent sums, no fused multiply-add), so the
/// AVX2 and the baseline compilations compute bit-identical results: a model does not depend on
/// the machine it was learned or rebuilt on.
fn exact_all(
    factors: &mut [f32],
    stats: &mut [f32],
    ratings: &[Rated],
    other: &[f32],
    lambda: f64,
    shape: Shape,
    vectors: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vectors {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(f: &mut [f32], st: &mut [f32], r: &[Rated], other: &[f32], lambda: f64, shape: Shape) {
            exact_range(f, st, r, other, lambda, shape);
        }
        // SAFETY: `vectors` is only set when the CPU has AVX2 (`has_avx2`).
        unsafe { avx2(factors, stats, ratings, other, lambda, shape) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vectors;
    exact_range(factors, stats, ratings, other, lambda, shape);
}

#[inline(always)]
fn exact_range(
    factors: &mut [f32],
    stats: &mut [f32],
    ratings: &[Rated],
    other: &[f32],
    lambda: f64,
    shape: Shape,
) {
    let (k, stride) = (shape.k, shape.stride);
    let (mut scratch, mut work) = (vec![0.0; k * k + k], vec![0.0; 2 * k]);
    for (e, rated) in ratings.iter().enumerate() {
        let (x, st) = (&mut factors[e * k..(e + 1) * k], &mut stats[e * stride..(e + 1) * stride]);
        exact(x, st, rated, other, lambda, k, &mut scratch, &mut work);
    }
}

/// Below this many ratings an entity's per-event update solves its system exactly (conjugate
/// gradients to convergence). From it on, one rating changes the system little, and
/// [`CG_STEPS`] conjugate-gradient steps (one from [`ONE_STEP_FROM`]) warm-started from the
/// current factor track its solution in O(k²) (sweeps then remove what is left).
///
/// Exactness costs n + 2 products per update, most of the per-event work of entities with few
/// ratings. With this constant at 16 / 8 / 4: `streamflix eval` on 1 M ratings, streaming RMSE
/// 0.655607 / 0.655632 / 0.655626; `als_stream` on 5 M ratings with ml-25m's users and movies,
/// 3.0 / 2.4 / 2.2 µs per rating.
pub const EXACT_BELOW: u32 = 4;
/// Conjugate-gradient steps per update from [`EXACT_BELOW`] up to [`ONE_STEP_FROM`] ratings.
pub const CG_STEPS: usize = 2;
/// From this many ratings on, one rating moves the solution so little that one step tracks it
/// (`streamflix eval` on 1 M ratings: the same streaming RMSE to four digits, p50 update latency
/// 2.0 → 1.6 µs).
pub const ONE_STEP_FROM: u32 = 256;

/// Adds one rating (the other side's factor `v`, the rating) to entity `e`'s statistics, keeps
/// its residual current, and re-solves its factor (the entity's rating list already holds it).
///
/// With b' = b + r·v, G' = G + vvᵀ and one more rating (λn grows by λ), the residual of the
/// unchanged factor is r' = r + (rating − v·x)·v − λx: O(k), no matrix product.
#[inline(always)]
fn update_entity(
    side: &mut Side,
    e: usize,
    v: &[f32],
    rating: f32,
    lambda: f64,
    shape: Shape,
    work: &mut [f32],
) {
    let k = shape.k;
    let (x, stats, rated) = side.entity_mut(e, shape);
    // The count weighting λ is the entity's ratings, including the one just added.
    let count = rated.len();
    let reg = lambda * count as f64;
    let (b, r, g) = split_stats(stats, k);
    rank_one(g, v);
    let err = rating - dot(v, x);
    let lam = lambda as f32;
    for j in 0..k {
        b[j] += rating * v[j];
        r[j] += err * v[j] - lam * x[j];
    }
    if count < EXACT_BELOW as usize {
        // G has rank ≤ n, so G + λnI has at most n + 1 distinct eigenvalues and conjugate
        // gradients reach its solution in n + 1 steps from any start (up to rounding, which the
        // fresh residual then measures exactly for the next update).
        conjugate_gradient(g, reg as f32, x, r, work, count + 1);
        residual(g, b, reg as f32, x, r, work);
    } else {
        let steps = if count >= ONE_STEP_FROM as usize { 1 } else { CG_STEPS };
        conjugate_gradient(g, reg as f32, x, r, work, steps);
    }
}

/// G += v vᵀ on the stored rows (see [`row_len`]).
#[inline(always)]
fn rank_one(g: &mut [f32], v: &[f32]) {
    let k = v.len();
    let mut off = 0;
    for (i, &vi) in v.iter().enumerate() {
        let len = row_len(i, k);
        for (gij, &vj) in g[off..off + len].iter_mut().zip(&v[..len]) {
            *gij += vi * vj;
        }
        off += len;
    }
}

/// G += Σ vₜ vₜᵀ over four vectors, on the stored rows, in one pass.
#[inline(always)]
fn rank_four(g: &mut [f32], v: [&[f32]; 4]) {
    let k = v[0].len();
    let mut off = 0;
    for i in 0..k {
        let len = row_len(i, k);
        let (v0, v1, v2, v3) = (&v[0][..len], &v[1][..len], &v[2][..len], &v[3][..len]);
        let (a0, a1, a2, a3) = (v[0][i], v[1][i], v[2][i], v[3][i]);
        let row = &mut g[off..off + len];
        for j in 0..len {
            row[j] += (a0 * v0[j] + a1 * v1[j]) + (a2 * v2[j] + a3 * v3[j]);
        }
        off += len;
    }
}

/// y = (G + reg·I) x for G in the stored layout: each row's stored part (its lower blocks and
/// its whole diagonal block) gives a dot product; the part above the diagonal block comes from
/// the later rows, whose lower blocks are its transpose.
///
/// The later rows' terms are summed block by block of [`LANES`] outputs in registers, in row
/// order (y[j] = reg·x[j] + row j's dot product + the later rows' terms, as a row-by-row pass
/// would add them), rather than row by row into `y` in memory, where each row's update waited
/// for the previous row's store (rank 32, `cargo bench --bench als_stream -- <25 M dir> 6000000 0`:
/// 1.92 → 1.76 µs per rating).
/// Only whole blocks have later rows: a partial block is the last.
#[inline(always)]
fn sym_mul(g: &[f32], x: &[f32], reg: f32, y: &mut [f32]) {
    let k = x.len();
    let full = k / LANES;
    // The rows of a whole block all have the same length, so their eight dot products are
    // summed side by side and reduced together ([`sum_rows`]) rather than one horizontal sum per
    // row, each a chain of dependent additions.
    let mut off = 0;
    for block in 0..full {
        let lo = block * LANES;
        let len = lo + LANES;
        let mut acc = [[0.0f32; LANES]; LANES];
        for (t, a) in acc.iter_mut().enumerate() {
            let row = &g[off + t * len..off + (t + 1) * len];
            for c in (0..len).step_by(LANES) {
                let (r, xs) = (&row[c..c + LANES], &x[c..c + LANES]);
                for l in 0..LANES {
                    a[l] += r[l] * xs[l];
                }
            }
        }
        let sums = sum_rows(&acc);
        for t in 0..LANES {
            y[lo + t] = reg * x[lo + t] + sums[t];
        }
        off += LANES * len;
    }
    // A partial last block: row by row.
    for i in full * LANES..k {
        let len = row_len(i, k);
        y[i] = reg * x[i] + dot(&g[off..off + len], &x[..len]);
        off += len;
    }
    for block in 0..full {
        let lo = block * LANES;
        let mut acc: [f32; LANES] = y[lo..lo + LANES].try_into().expect("a block");
        // The rows of the later blocks hold this block's column entries at [lo, lo + LANES).
        let mut off = LANES * LANES * (block + 1) * (block + 2) / 2;
        for (i, &xi) in x.iter().enumerate().skip(lo + LANES) {
            let row: &[f32; LANES] = g[off + lo..off + lo + LANES].try_into().expect("a block");
            for t in 0..LANES {
                acc[t] += row[t] * xi;
            }
            off += row_len(i, k);
        }
        y[lo..lo + LANES].copy_from_slice(&acc);
    }
}

/// r = b − (G + reg·I) x.
#[inline(always)]
fn residual(g: &[f32], b: &[f32], reg: f32, x: &[f32], r: &mut [f32], work: &mut [f32]) {
    let ax = &mut work[..x.len()];
    sym_mul(g, x, reg, ax);
    for ((ri, &bi), &ai) in r.iter_mut().zip(b).zip(ax.iter()) {
        *ri = bi - ai;
    }
}

/// Up to `steps` conjugate-gradient steps on (G + reg·I) x = b from the current `x`, whose
/// residual `r` is given and kept current.
#[inline(always)]
fn conjugate_gradient(g: &[f32], reg: f32, x: &mut [f32], r: &mut [f32], work: &mut [f32], steps: usize) {
    let k = x.len();
    let (p, rest) = work.split_at_mut(k);
    let ap = &mut rest[..k];
    p.copy_from_slice(r);
    let mut rr = dot(r, r);
    for step in 0..steps {
        if rr.is_nan() || rr <= 1e-20 {
            return;
        }
        sym_mul(g, p, reg, ap);
        let pap = dot(p, ap);
        if pap.is_nan() || pap <= 0.0 {
            return;
        }
        let alpha = rr / pap;
        for i in 0..k {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        if step + 1 == steps {
            return;
        }
        let next = dot(r, r);
        let beta = next / rr;
        for i in 0..k {
            p[i] = r[i] + beta * p[i];
        }
        rr = next;
    }
}

/// Recomputes the statistics of one entity (`stats` as in [`Side::stats`]) from its ratings and
/// the other side's factors, solves for its factor and sets the residual.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn exact(
    x: &mut [f32],
    stats: &mut [f32],
    ratings: &Rated,
    other: &[f32],
    lambda: f64,
    k: usize,
    scratch: &mut [f64],
    work: &mut [f32],
) {
    let (b, r, g) = split_stats(stats, k);
    g.fill(0.0);
    b.fill(0.0);
    // The factors of all the entity's ratings are scattered over the other side: each is
    // requested from memory a few ratings before it is added. (Indexing the packed entries, not
    // a second `others()` iterator skipped ahead: that compiled to a loop 25 % slower.)
    //
    // Four ratings at a time: one pass over G adds four outer products ([`rank_four`]), where
    // one pass per rating spent its time loading and storing G.
    let others = &ratings.packed;
    let factor = |p: u32| {
        let j = Rated::unpack(p).0 as usize;
        &other[j * k..(j + 1) * k]
    };
    let rating = |p: u32| Rated::unpack(p).1;
    let quads = others.len() / 4 * 4;
    for n in (0..quads).step_by(4) {
        for &p in others.iter().skip(n + PREFETCH_AHEAD).take(4) {
            prefetch_floats(factor(p));
        }
        let q = [others[n], others[n + 1], others[n + 2], others[n + 3]];
        let v = [factor(q[0]), factor(q[1]), factor(q[2]), factor(q[3])];
        let r = [rating(q[0]), rating(q[1]), rating(q[2]), rating(q[3])];
        rank_four(g, v);
        for t in 0..k {
            b[t] += (r[0] * v[0][t] + r[1] * v[1][t]) + (r[2] * v[2][t] + r[3] * v[3][t]);
        }
    }
    for &p in &others[quads..] {
        let v = factor(p);
        rank_one(g, v);
        let r = rating(p);
        for (bb, &vv) in b.iter_mut().zip(v) {
            *bb += r * vv;
        }
    }
    let reg = lambda * ratings.len() as f64;
    if !ratings.is_empty() {
        cholesky_solve(g, b, reg, k, scratch, x);
    }
    residual(g, b, reg as f32, x, r, work);
}

/// Solves (G + reg·I) x = b for G in the stored layout, in f64. Leaves `x` unchanged if the
/// system is not positive definite (cannot happen with reg > 0) or the result not finite.
#[inline(always)]
fn cholesky_solve(g: &[f32], b: &[f32], reg: f64, k: usize, scratch: &mut [f64], x: &mut [f32]) {
    let (l, rest) = scratch.split_at_mut(k * k);
    let (y, _) = rest.split_at_mut(k);
    let mut off = 0;
    for i in 0..k {
        for j in 0..=i {
            l[i * k + j] = f64::from(g[off + j]);
        }
        l[i * k + i] += reg;
        y[i] = f64::from(b[i]);
        off += row_len(i, k);
    }
    if solve_spd(l, y, k) {
        for (xi, yi) in x.iter_mut().zip(&y[..k]) {
            *xi = *yi as f32;
        }
    }
}

/// Solves A x = y in place (A symmetric positive definite, lower triangle in `l`, row-major
/// k × k; overwritten by its Cholesky factor). Returns false, leaving `y` unspecified, if A is
/// not positive definite or the solution is not finite.
#[inline(always)]
fn solve_spd(l: &mut [f64], y: &mut [f64], k: usize) -> bool {
    for j in 0..k {
        let rj = &l[j * k..j * k + j];
        let s = l[j * k + j] - dot64(rj, rj);
        if s.is_nan() || s <= 0.0 {
            return false;
        }
        let d = s.sqrt();
        l[j * k + j] = d;
        // One division per column, not per entry (a division costs several multiplications).
        let inv = 1.0 / d;
        for i in j + 1..k {
            let (upper, lower) = l.split_at_mut(i * k);
            let p = dot64(&lower[..j], &upper[j * k..j * k + j]);
            lower[j] = (lower[j] - p) * inv;
        }
    }
    for i in 0..k {
        let s = dot64(&l[i * k..i * k + i], &y[..i]);
        y[i] = (y[i] - s) / l[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = y[i];
        for j in i + 1..k {
            s -= l[j * k + i] * y[j];
        }
        y[i] = s / l[i * k + i];
    }
    y[..k].iter().all(|v| v.is_finite())
}

/// How many ratings ahead of its use data is prefetched ([`Als::prefetch`] as the processor's
/// learner calls it, and a sweep's factor gathers): a memory latency's worth of arithmetic or
/// more. Measured at the time with a variant of `benches/als_stream` taking the distance as a
/// parameter (first 6 M of the 25 M ratings, before the rank-32 build): 3.04 µs per rating
/// without, 2.66 at 8, 2.73 at 32, 2.88 at 64; single runs on a machine whose speed drifts 10 %.
pub const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading the cache line holding `*v` (a hint: no effect on results).
#[inline(always)]
fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect and cannot fault (the address is a live
    // reference anyway); SSE, which has the instruction, is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch(std::ptr::from_ref(v).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// [`prefetch`] of every cache line of `v`.
#[inline(always)]
fn prefetch_floats(v: &[f32]) {
    /// Floats per 64-byte cache line.
    const LINE: usize = 16;
    for f in v.iter().step_by(LINE) {
        prefetch(f);
    }
}

/// f32 dot product with eight independent sums (vectorises).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    // Indexed blocks: zipping two `chunks_exact` iterators left a call to the zip's constructor
    // in the per-event code (`perf`: 6 % of the learner's time).
    for c in (0..whole).step_by(LANES) {
        let (x, y) = (&a[c..c + LANES], &b[c..c + LANES]);
        for t in 0..LANES {
            acc[t] += x[t] * y[t];
        }
    }
    let mut s = lane_sum(&acc);
    for t in whole..n {
        s += a[t] * b[t];
    }
    s
}

/// The sum of eight lanes as a tree (three dependent additions, not seven).
#[inline(always)]
fn lane_sum(a: &[f32; LANES]) -> f32 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Pairwise sums of two vectors' neighbouring lanes, in the lane order of x86's `vhaddps`.
#[inline(always)]
fn pair_sums(a: &[f32; LANES], b: &[f32; LANES]) -> [f32; LANES] {
    [a[0] + a[1], a[2] + a[3], b[0] + b[1], b[2] + b[3], a[4] + a[5], a[6] + a[7], b[4] + b[5], b[6] + b[7]]
}

/// [`lane_sum`] of each of eight vectors, computed together: three rounds of [`pair_sums`] and a
/// cross-half addition (vector shuffles and adds, where eight separate sums need 56 scalar
/// additions). Each result is added in exactly [`lane_sum`]'s order.
#[inline(always)]
fn sum_rows(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { sum_rows_avx(acc) };
    }
    sum_rows_portable(acc)
}

/// [`sum_rows`] in plain arithmetic (the compiler turns the shuffles into scalar code, slower
/// than the row-by-row sums it replaces, hence [`sum_rows_avx`]).
#[inline(always)]
fn sum_rows_portable(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
    let q0 = pair_sums(&pair_sums(&acc[0], &acc[1]), &pair_sums(&acc[2], &acc[3]));
    let q1 = pair_sums(&pair_sums(&acc[4], &acc[5]), &pair_sums(&acc[6], &acc[7]));
    [
        q0[0] + q0[4],
        q0[1] + q0[5],
        q0[2] + q0[6],
        q0[3] + q0[7],
        q1[0] + q1[4],
        q1[1] + q1[5],
        q1[2] + q1[6],
        q1[3] + q1[7],
    ]
}

/// [`sum_rows_portable`] in AVX instructions: `vhaddps` is [`pair_sums`], and the cross-half
/// addition pairs the 128-bit halves of the two last results.
///
/// # Safety
/// The CPU must have AVX2 (AVX would do; asking for the learner's features lets the compiler
/// inline it there).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sum_rows_avx(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_hadd_ps, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_storeu_ps,
    };
    let v = |t: usize| _mm256_loadu_ps(acc[t].as_ptr());
    let q0 = _mm256_hadd_ps(_mm256_hadd_ps(v(0), v(1)), _mm256_hadd_ps(v(2), v(3)));
    let q1 = _mm256_hadd_ps(_mm256_hadd_ps(v(4), v(5)), _mm256_hadd_ps(v(6), v(7)));
    // [q0's low half, q1's low half] + [q0's high half, q1's high half].
    let sums = _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
    let mut out = [0.0f32; LANES];
    _mm256_storeu_ps(out.as_mut_ptr(), sums);
    out
}

/// f64 dot product with four independent sums (lets the compiler use vector registers).
#[inline(always)]
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for t in 0..4 {
            acc[t] += x[t] * y[t];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_full_sweep_never_increases_the_training_loss() {
        let mut als = Als::new(small_cfg());
        for (u, i, r) in synthetic(300, 200, 25, 7) {
            als.add(u, i, r);
        }
        let mut losses = vec![als.loss()];
        als.train(6, Some(&mut |l| losses.push(l)));
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
        als.train(5, None);
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
