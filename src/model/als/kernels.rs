//! Every `unsafe` and SIMD routine of the recommender, in one file to audit.
//!
//! The per-entity arithmetic of ALS (rank-one updates of the Gram matrix, its product with a
//! vector, conjugate gradients, Cholesky solves, dot products) and the AVX2 entry points that
//! compile it for 256-bit vectors. The kernels are written lane by lane (eight independent sums,
//! no fused multiply-add), so the AVX2 and the baseline compilations compute bit-identical
//! results. Each `unsafe` block says why it is sound; each `unsafe fn` has a `# Safety` section.
//!
//! May import: its parent [`super`] (the model) and [`super::storage`].

use super::storage::{row_len, split_stats, Rated, Shape, Side, LANES};
use super::Als;

impl Als {
    /// [`Als::learn`] compiled for 256-bit vectors when the CPU has them, otherwise the baseline
    /// compilation: the one safe entry point of the per-event arithmetic.
    #[inline(always)]
    pub(super) fn learn_dispatch(&mut self, u: usize, i: usize, rating: f32) {
        #[cfg(target_arch = "x86_64")]
        if self.vectors {
            // SAFETY: `vectors` is only set when the CPU has AVX2 (`has_avx2`).
            unsafe { self.learn_avx2(u, i, rating) };
            return;
        }
        self.learn(u, i, rating);
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
}

/// The CPU runs AVX2 code.
pub(super) fn has_avx2() -> bool {
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
pub(super) fn exact_all(
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
        /// [`exact_range`] compiled for 256-bit vectors.
        ///
        /// # Safety
        /// The CPU must have AVX2.
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
pub(super) fn exact_range(
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
pub(super) fn update_entity(
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
pub(super) fn rank_one(g: &mut [f32], v: &[f32]) {
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
pub(super) fn rank_four(g: &mut [f32], v: [&[f32]; 4]) {
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
pub(super) fn sym_mul(g: &[f32], x: &[f32], reg: f32, y: &mut [f32]) {
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
pub(super) fn residual(g: &[f32], b: &[f32], reg: f32, x: &[f32], r: &mut [f32], work: &mut [f32]) {
    let ax = &mut work[..x.len()];
    sym_mul(g, x, reg, ax);
    for ((ri, &bi), &ai) in r.iter_mut().zip(b).zip(ax.iter()) {
        *ri = bi - ai;
    }
}

/// Up to `steps` conjugate-gradient steps on (G + reg·I) x = b from the current `x`, whose
/// residual `r` is given and kept current.
#[inline(always)]
pub(super) fn conjugate_gradient(
    g: &[f32],
    reg: f32,
    x: &mut [f32],
    r: &mut [f32],
    work: &mut [f32],
    steps: usize,
) {
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
pub(super) fn exact(
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
pub(super) fn cholesky_solve(g: &[f32], b: &[f32], reg: f64, k: usize, scratch: &mut [f64], x: &mut [f32]) {
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
pub(super) fn solve_spd(l: &mut [f64], y: &mut [f64], k: usize) -> bool {
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
pub(super) fn prefetch<T>(v: &T) {
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
pub(super) fn prefetch_floats(v: &[f32]) {
    /// Floats per 64-byte cache line.
    pub(super) const LINE: usize = 16;
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
pub(super) fn lane_sum(a: &[f32; LANES]) -> f32 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Pairwise sums of two vectors' neighbouring lanes, in the lane order of x86's `vhaddps`.
#[inline(always)]
pub(super) fn pair_sums(a: &[f32; LANES], b: &[f32; LANES]) -> [f32; LANES] {
    [a[0] + a[1], a[2] + a[3], b[0] + b[1], b[2] + b[3], a[4] + a[5], a[6] + a[7], b[4] + b[5], b[6] + b[7]]
}

/// [`lane_sum`] of each of eight vectors, computed together: three rounds of [`pair_sums`] and a
/// cross-half addition (vector shuffles and adds, where eight separate sums need 56 scalar
/// additions). Each result is added in exactly [`lane_sum`]'s order.
#[inline(always)]
pub(super) fn sum_rows(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
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
pub(super) fn sum_rows_portable(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
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
pub(super) unsafe fn sum_rows_avx(acc: &[[f32; LANES]; LANES]) -> [f32; LANES] {
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
pub(super) fn dot64(a: &[f64], b: &[f64]) -> f64 {
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
