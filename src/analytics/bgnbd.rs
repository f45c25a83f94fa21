//! BG/NBD (Fader, Hardie & Lee 2005) and MBG/NBD (Batislam, Denizel & Filiztekin 2007): how
//! likely a user is still "alive", from when they were active alone.
//!
//! A user is summarised by a *pattern* in whole UTC days: `x` = distinct active days − 1 (the
//! repeat active days), `t_x` = last active day − first active day, `T` = the close's day − first
//! active day. Both models say: while alive, a user is active at a Poisson rate λ ~ Gamma(r, α);
//! after each active day they drop out with probability p ~ Beta(a, b). MBG/NBD also lets a user
//! drop out right after their first day, which BG/NBD does not: under BG/NBD a user with `x = 0`
//! (one active day, then nothing) is alive with probability 1 however long ago that day was.
//! Those users, who watch once and vanish, are the ones this product is about, so scores use
//! MBG/NBD; the BG/NBD fit is kept as the published reference.
//!
//! The parameters are fitted by maximum likelihood over the histogram of patterns (each distinct
//! `(x, t_x, T)` once, with its count), by BFGS on their logarithms with the analytic gradient, warm-started from the
//! previous fit when there is one. The histogram is a mergeable partial: two input partitions'
//! histograms add up.
//!
//! Formulas (log-likelihood of one pattern, `B` the beta function):
//!
//! - BG/NBD: `L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
//!   + [x > 0] B(a+1, b+x−1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))`;
//!   `P(alive) = 1 / (1 + [x > 0] a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))`.
//! - MBG/NBD: `L = B(a, b+x+1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
//!   + B(a+1, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))`;
//!   `P(alive) = 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x))`.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses `statrs` (ln Γ).

use statrs::function::gamma::{digamma, ln_gamma};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// BG/NBD: no dropout before the first repeat.
    Bg,
    /// MBG/NBD: a dropout is possible after every active day, the first included.
    Mbg,
}

/// The four parameters (all > 0): `r`, `alpha` of the Gamma of activity rates (per day), `a`,
/// `b` of the Beta of dropout probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Gamma shape.
    pub r: f64,
    /// Gamma rate (days).
    pub alpha: f64,
    /// Beta `a`.
    pub a: f64,
    /// Beta `b`.
    pub b: f64,
}

impl Params {
    /// Where a fit without a previous one starts (the order of magnitude of published fits).
    pub const START: Params = Params { r: 0.5, alpha: 10.0, a: 0.5, b: 2.0 };

    fn ln(self) -> [f64; 4] {
        [self.r.ln(), self.alpha.ln(), self.a.ln(), self.b.ln()]
    }

    fn exp(v: [f64; 4]) -> Params {
        Params { r: v[0].exp(), alpha: v[1].exp(), a: v[2].exp(), b: v[3].exp() }
    }
}

/// One user's activity in whole days (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    /// Repeat active days.
    pub x: u32,
    /// Days from the first to the last active day.
    pub t_x: u32,
    /// Days from the first active day to the close.
    pub t: u32,
}

impl Pattern {
    /// The pattern of a user active on `active_days` distinct days from `first_day` to
    /// `last_day`, at the close of `day` (all days since the epoch); `None` before the first
    /// active day or for inconsistent values.
    pub fn of(active_days: u64, first_day: i64, last_day: i64, day: i64) -> Option<Pattern> {
        if active_days == 0 || last_day < first_day || day < last_day {
            return None;
        }
        Some(Pattern {
            x: u32::try_from(active_days - 1).ok()?,
            t_x: u32::try_from(last_day - first_day).ok()?,
            t: u32::try_from(day - first_day).ok()?,
        })
    }
}

/// Distinct patterns with their counts, sorted (a mergeable partial: [`Histogram::merge`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    rows: Vec<(Pattern, u64)>,
    /// The distinct day counts among `t` and `t_x`, ascending, and each row's positions in it
    /// (`t_x`, `t`): the likelihood takes one logarithm per distinct day count.
    days: Vec<u32>,
    at: Vec<(u32, u32)>,
}

impl Histogram {
    /// The histogram of `patterns`.
    pub fn from_patterns(patterns: impl IntoIterator<Item = Pattern>) -> Histogram {
        let mut all: Vec<Pattern> = patterns.into_iter().collect();
        all.sort_unstable();
        let mut rows: Vec<(Pattern, u64)> = Vec::new();
        for p in all {
            match rows.last_mut() {
                Some((q, n)) if *q == p => *n += 1,
                _ => rows.push((p, 1)),
            }
        }
        Histogram::indexed(rows)
    }

    fn indexed(rows: Vec<(Pattern, u64)>) -> Histogram {
        let mut days: Vec<u32> = rows.iter().flat_map(|(p, _)| [p.t_x, p.t]).collect();
        days.sort_unstable();
        days.dedup();
        let pos = |d: u32| days.binary_search(&d).expect("every day is listed") as u32;
        let at = rows.iter().map(|(p, _)| (pos(p.t_x), pos(p.t))).collect();
        Histogram { rows, days, at }
    }

    /// Adds another partition's histogram (what a scale-out over input partitions combines; one
    /// partition's processor does not need it yet).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn merge(&mut self, other: &Histogram) {
        let mut rows = Vec::with_capacity(self.rows.len() + other.rows.len());
        let (mut i, mut j) = (0, 0);
        while i < self.rows.len() || j < other.rows.len() {
            match (self.rows.get(i), other.rows.get(j)) {
                (Some(&(p, n)), Some(&(q, m))) if p == q => {
                    rows.push((p, n + m));
                    i += 1;
                    j += 1;
                }
                (Some(&(p, n)), Some(&(q, _))) if p < q => {
                    rows.push((p, n));
                    i += 1;
                }
                (Some(&(p, n)), None) => {
                    rows.push((p, n));
                    i += 1;
                }
                (_, Some(&(q, m))) => {
                    rows.push((q, m));
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        *self = Histogram::indexed(rows);
    }

    /// The distinct patterns and their counts, sorted.
    pub fn rows(&self) -> &[(Pattern, u64)] {
        &self.rows
    }

    /// Users in all.
    pub fn users(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

/// `ln(e^x + e^y)` without overflow.
#[cfg(test)]
fn log_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x >= y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// The log-likelihood of one pattern, term by term as published (the reference the histogram's
/// [`log_likelihood_grad`] is tested against).
#[cfg(test)]
pub fn pattern_log_likelihood(v: Variant, p: Params, pat: Pattern) -> f64 {
    let (x, t_x, t) = (f64::from(pat.x), f64::from(pat.t_x), f64::from(pat.t));
    let Params { r, alpha, a, b } = p;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    match v {
        Variant::Bg => {
            let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
            let a3 = -(r + x) * (alpha + t).ln();
            let a4 = if pat.x > 0 {
                a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln()
            } else {
                f64::NEG_INFINITY
            };
            a1 + a2 + log_add_exp(a3, a4)
        }
        Variant::Mbg => {
            let a2 = ln_gamma(a + b) + ln_gamma(b + x + 1.0) - ln_gamma(b) - ln_gamma(a + b + x + 1.0);
            let a3 = -(r + x) * (alpha + t).ln();
            let a4 = a.ln() - (b + x).ln() - (r + x) * (alpha + t_x).ln();
            a1 + a2 + log_add_exp(a3, a4)
        }
    }
}

/// The log-likelihood of a histogram, Σ count · ℓ(pattern), and its gradient with respect to `(ln r, ln α, ln a, ln b)` (what the fit
/// moves). With `w` the weight of the second term of a pattern's likelihood (the "dropped out
/// after `t_x`" branch) and ψ the digamma function:
/// `∂ℓ/∂r = ψ(r+x) − ψ(r) + ln α − (1−w) ln(α+T) − w ln(α+t_x)`,
/// `∂ℓ/∂α = r/α − (r+x) ((1−w)/(α+T) + w/(α+t_x))`,
/// `∂ℓ/∂a = ψ(a+b) − ψ(a+b+x+k) + w/a`,
/// `∂ℓ/∂b = ψ(a+b) + ψ(b+x+k) − ψ(b) − ψ(a+b+x+k) − w/(b+x+k−1)`, with `k` = 0 for BG/NBD and 1
/// for MBG/NBD.
pub fn log_likelihood_grad(v: Variant, p: Params, h: &Histogram) -> (f64, [f64; 4]) {
    let Params { r, alpha, a, b } = p;
    let k = match v {
        Variant::Bg => 0.0,
        Variant::Mbg => 1.0,
    };
    let ln_day: Vec<f64> = h.days.iter().map(|&d| (alpha + f64::from(d)).ln()).collect();
    let inv_day: Vec<f64> = h.days.iter().map(|&d| 1.0 / (alpha + f64::from(d))).collect();
    let (ln_a, ln_alpha, lg_r, lg_ab, lg_b) = (a.ln(), alpha.ln(), ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
    let (dg_r, dg_ab, dg_b) = (digamma(r), digamma(a + b), digamma(b));
    let (mut ll, mut g) = (0.0, [0.0f64; 4]);
    let mut cur_x = None;
    // Per distinct x: the ln Γ part, the ψ parts of ∂r, ∂a, ∂b, and the second branch's ln a − ln(b+x+k−1).
    let (mut head, mut tail, mut dr0, mut da0, mut db0, mut inv_bx) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&(q, n), &(at_tx, at_t)) in h.rows.iter().zip(&h.at) {
        let x = f64::from(q.x);
        if cur_x != Some(q.x) {
            cur_x = Some(q.x);
            head = ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x + k)
                - lg_b
                - ln_gamma(a + b + x + k);
            let second = v == Variant::Mbg || q.x > 0;
            inv_bx = if second { 1.0 / (b + x + k - 1.0) } else { 0.0 };
            tail = if second { ln_a - (b + x + k - 1.0).ln() } else { f64::NEG_INFINITY };
            dr0 = digamma(r + x) - dg_r + ln_alpha;
            let dg_abx = digamma(a + b + x + k);
            da0 = dg_ab - dg_abx;
            db0 = dg_ab + digamma(b + x + k) - dg_b - dg_abx;
        }
        let (a3, a4) = (-(r + x) * ln_day[at_t as usize], tail - (r + x) * ln_day[at_tx as usize]);
        // ln(e^a3 + e^a4) and the second term's weight w = e^a4 / (e^a3 + e^a4), from one
        // exponential: e = e^−|a3−a4|.
        let (lse, w) = if a4 == f64::NEG_INFINITY {
            (a3, 0.0)
        } else {
            let e = (-(a3 - a4).abs()).exp();
            let hi = a3.max(a4);
            (hi + e.ln_1p(), if a4 >= a3 { 1.0 / (1.0 + e) } else { e / (1.0 + e) })
        };
        let n = n as f64;
        ll += n * (head + lse);
        let dr = dr0 - (1.0 - w) * ln_day[at_t as usize] - w * ln_day[at_tx as usize];
        let dalpha = r / alpha - (r + x) * ((1.0 - w) * inv_day[at_t as usize] + w * inv_day[at_tx as usize]);
        let da = da0 + w / a;
        let db = db0 - w * inv_bx;
        // Chain rule to the logarithms: ∂/∂ln θ = θ ∂/∂θ.
        g[0] += n * r * dr;
        g[1] += n * alpha * dalpha;
        g[2] += n * a * da;
        g[3] += n * b * db;
    }
    (ll, g)
}

/// P(alive) of a pattern.
pub fn p_alive(v: Variant, p: Params, pat: Pattern) -> f64 {
    let (x, t_x, t) = (f64::from(pat.x), f64::from(pat.t_x), f64::from(pat.t));
    let Params { r, alpha, a, b } = p;
    let odds_ln = (r + x) * ((alpha + t).ln() - (alpha + t_x).ln());
    let ratio = match v {
        Variant::Bg if pat.x == 0 => return 1.0,
        Variant::Bg => a / (b + x - 1.0),
        Variant::Mbg => a / (b + x),
    };
    1.0 / (1.0 + ratio * odds_ln.exp())
}

/// A fit's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The maximum-likelihood parameters.
    pub params: Params,
    /// The log-likelihood there (summed over users).
    pub log_likelihood: f64,
    /// Likelihood evaluations it took.
    pub evaluations: u32,
    /// BFGS's estimate of the inverse Hessian of the mean negative log-likelihood in the
    /// parameters' logarithms, at the optimum: a [`refit`] starts from it.
    pub inverse_hessian: [[f64; 4]; 4],
}

/// Maximum-likelihood parameters for `h`: the best of BFGS runs from each of `starts` (a
/// previous fit, [`Params::START`], [`SPREAD`]). The likelihood can have several local maxima, so
/// a fit that must find the global one starts from several places. Deterministic: the same
/// histogram and starts give the same bits. `None` for an empty histogram or one where every
/// user has a single active day (the likelihood then has no maximum).
pub fn fit(v: Variant, h: &Histogram, starts: &[Params]) -> Option<Fit> {
    fit_with(v, h, starts, 1e-10, 5, 500, None)
}

/// A quicker fit for a model refitted every week as the data grow: one BFGS run per start, of
/// at most 100 iterations, stopped when the largest component of the mean log-likelihood's
/// gradient (in the parameters' logarithms) is below 1e-6, which moves P(alive) by far less
/// than its own uncertainty; with `warm`, the runs start from that inverse-Hessian estimate (a
/// previous fit's) instead of the identity. A run stopped at 100 iterations keeps its best point,
/// so the next week's refit continues from there.
pub fn refit(v: Variant, h: &Histogram, starts: &[Params], warm: Option<[[f64; 4]; 4]>) -> Option<Fit> {
    fit_with(v, h, starts, 1e-6, 1, 100, warm)
}

/// [`refit`] from each of `starts` for at most `iterations` BFGS iterations: a cheap look at
/// which start leads to the highest likelihood, to continue from with [`refit`].
pub fn probe(v: Variant, h: &Histogram, starts: &[Params], iterations: u32) -> Option<Fit> {
    fit_with(v, h, starts, 1e-6, 1, iterations, None)
}

fn fit_with(
    v: Variant,
    h: &Histogram,
    starts: &[Params],
    gtol: f64,
    runs: u32,
    max_iter: u32,
    inverse_hessian: Option<[[f64; 4]; 4]>,
) -> Option<Fit> {
    let n = h.users();
    if n == 0 || h.rows.iter().all(|(q, _)| q.x == 0) {
        return None;
    }
    let mut evaluations = 0u32;
    // Minimises the mean negative log-likelihood over ln(params); outside a sane box the
    // objective is +∞ (the parameters would overflow the Γ functions).
    let scale = 1.0 / n as f64;
    let mut objective = |th: &[f64; 4]| {
        evaluations += 1;
        if th.iter().any(|t| !(-30.0..=30.0).contains(t)) {
            return (f64::INFINITY, [0.0; 4]);
        }
        let (ll, g) = log_likelihood_grad(v, Params::exp(*th), h);
        if ll.is_finite() && g.iter().all(|x| x.is_finite()) {
            (-ll * scale, g.map(|x| -x * scale))
        } else {
            (f64::INFINITY, [0.0; 4])
        }
    };
    let mut found: Option<([f64; 4], f64, [[f64; 4]; 4])> = None;
    let starts = if starts.is_empty() { &[Params::START][..] } else { starts };
    for start in starts {
        // BFGS with the analytic gradient, restarted from its own optimum until a restart gains
        // nothing (a fresh inverse-Hessian estimate, as a collapsed one can stall it).
        let (mut best, mut best_f, mut best_h) = (start.ln(), f64::INFINITY, IDENTITY);
        let mut h0 = inverse_hessian.unwrap_or(IDENTITY);
        for _ in 0..runs {
            let (x, f, hx) = bfgs(&mut objective, best, gtol, max_iter, h0);
            h0 = IDENTITY;
            let gained = best_f - f;
            if f < best_f {
                (best, best_f, best_h) = (x, f, hx);
            }
            if !best_f.is_finite() || gained.abs() <= 1e-14 * best_f.abs().max(1.0) {
                break;
            }
        }
        if best_f.is_finite() && found.as_ref().is_none_or(|&(_, f, _)| best_f < f) {
            found = Some((best, best_f, best_h));
        }
    }
    let (best, best_f, inverse_hessian) = found?;
    Some(Fit { params: Params::exp(best), log_likelihood: -best_f * n as f64, evaluations, inverse_hessian })
}

const IDENTITY: [[f64; 4]; 4] =
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

/// Starts spread over the plausible range, for a fit that must find the global maximum.
pub const SPREAD: [Params; 4] = [
    Params::START,
    Params { r: 1.0, alpha: 1.0, a: 1.0, b: 1.0 },
    Params { r: 0.1, alpha: 1.0, a: 2.0, b: 50.0 },
    Params { r: 2.0, alpha: 20.0, a: 0.3, b: 0.3 },
];

/// BFGS on a function of 4 variables with its gradient, from `x0` with the inverse-Hessian
/// estimate `h0` (the identity, or a previous run's), with a backtracking
/// (Armijo) line search; stops when the gradient's largest component is below `gtol`, after
/// three steps that gain less than 1e-15 relative, or after `max_iter` iterations. Returns the point, its value and the final
/// estimate.
fn bfgs(
    f: &mut impl FnMut(&[f64; 4]) -> (f64, [f64; 4]),
    x0: [f64; 4],
    gtol: f64,
    max_iter: u32,
    h0: [[f64; 4]; 4],
) -> ([f64; 4], f64, [[f64; 4]; 4]) {
    const N: usize = 4;
    let dot = |a: &[f64; N], b: &[f64; N]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (mut x, (mut fx, mut g)) = (x0, f(&x0));
    if !fx.is_finite() {
        return (x, fx, h0);
    }
    // The inverse Hessian's estimate, starting from `h0`.
    let mut h = h0;
    let mut stalled = 0;
    for _ in 0..max_iter {
        if g.iter().all(|v| v.abs() < gtol) || stalled >= 3 {
            break;
        }
        let mut d: [f64; N] = std::array::from_fn(|i| -dot(&h[i], &g));
        if dot(&d, &g) >= 0.0 {
            // Not a descent direction (the estimate went bad): start over from steepest descent.
            h = [[0.0; N]; N];
            for (i, row) in h.iter_mut().enumerate() {
                row[i] = 1.0;
            }
            d = std::array::from_fn(|i| -g[i]);
        }
        let slope = dot(&d, &g);
        let mut t = 1.0;
        let mut next = None;
        for _ in 0..60 {
            let xn: [f64; N] = std::array::from_fn(|i| x[i] + t * d[i]);
            let (fn_, gn) = f(&xn);
            if fn_.is_finite() && fn_ <= fx + 1e-4 * t * slope {
                next = Some((xn, fn_, gn));
                break;
            }
            t *= 0.5;
        }
        let Some((xn, fn_, gn)) = next else { break };
        let sv: [f64; N] = std::array::from_fn(|i| xn[i] - x[i]);
        let yv: [f64; N] = std::array::from_fn(|i| gn[i] - g[i]);
        let unchanged = fn_ == fx && sv.iter().all(|&v| v == 0.0);
        // Three steps in a row that gain nothing measurable: at the optimum as far as f64 tells.
        stalled = if fx - fn_ <= 1e-15 * fx.abs() { stalled + 1 } else { 0 };
        (x, fx, g) = (xn, fn_, gn);
        if unchanged {
            break;
        }
        let sy = dot(&sv, &yv);
        if sy > 1e-300 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: [f64; N] = std::array::from_fn(|i| dot(&h[i], &yv));
            let yhy = dot(&yv, &hy);
            for i in 0..N {
                for j in 0..N {
                    h[i][j] +=
                        -rho * (hy[i] * sv[j] + sv[i] * hy[j]) + (rho * rho * yhy + rho) * sv[i] * sv[j];
                }
            }
        }
    }
    (x, fx, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient equals central finite differences of the likelihood.
    #[test]
    fn gradient_matches_finite_differences() {
        let pats: Vec<Pattern> = (0..200u32)
            .map(|i| Pattern { x: i % 7, t_x: if i % 7 == 0 { 0 } else { 3 + i % 50 }, t: 60 + i % 90 })
            .collect();
        let h = Histogram::from_patterns(pats);
        for v in [Variant::Bg, Variant::Mbg] {
            let p = Params { r: 0.7, alpha: 12.0, a: 0.9, b: 3.1 };
            let (_, g) = log_likelihood_grad(v, p, &h);
            let th = p.ln();
            for i in 0..4 {
                let eps = 1e-6;
                let at = |d: f64| {
                    let mut t = th;
                    t[i] += d;
                    log_likelihood_grad(v, Params::exp(t), &h).0
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (g[i] - numeric).abs() <= 1e-6 * numeric.abs().max(1.0),
                    "{v:?} ∂{i}: {} vs {numeric}",
                    g[i]
                );
            }
        }
    }

    /// The histogram's fast likelihood equals the sum of the one-pattern formula.
    #[test]
    fn histogram_likelihood_is_the_sum_of_the_patterns() {
        let pats: Vec<Pattern> = (0..300u32)
            .map(|i| {
                let t = 30 + i * 7 % 400;
                let t_x = if i % 3 == 0 { 0 } else { i * 13 % t };
                Pattern { x: if t_x == 0 { 0 } else { 1 + i % 9 }, t_x, t }
            })
            .collect();
        let h = Histogram::from_patterns(pats.iter().copied());
        for v in [Variant::Bg, Variant::Mbg] {
            let p = Params { r: 0.7, alpha: 12.0, a: 0.9, b: 3.1 };
            let direct: f64 = pats.iter().map(|&q| pattern_log_likelihood(v, p, q)).sum();
            let fast = log_likelihood_grad(v, p, &h).0;
            assert!((direct - fast).abs() <= 1e-9 * direct.abs(), "{v:?}: {direct} vs {fast}");
        }
    }

    #[test]
    fn p_alive_of_one_day_users() {
        let p = Params { r: 0.5, alpha: 10.0, a: 0.8, b: 2.5 };
        let once = |t| Pattern { x: 0, t_x: 0, t };
        assert_eq!(p_alive(Variant::Bg, p, once(500)), 1.0, "BG/NBD: a one-day user never dies");
        let (soon, late) = (p_alive(Variant::Mbg, p, once(3)), p_alive(Variant::Mbg, p, once(300)));
        assert!(soon > late && late > 0.0 && soon < 1.0, "{soon} {late}");
        // Active just now: alive as far as the data tell.
        let now = Pattern { x: 5, t_x: 100, t: 100 };
        assert!((p_alive(Variant::Bg, p, now) - 1.0 / (1.0 + 0.8 / 6.5)).abs() < 1e-12);
    }

    #[test]
    fn histograms_merge_like_the_union() {
        let a: Vec<Pattern> = (0..50).map(|i| Pattern { x: i % 4, t_x: i % 4 * 2, t: 10 + i % 7 }).collect();
        let b: Vec<Pattern> = (0..70).map(|i| Pattern { x: i % 5, t_x: i % 5 * 2, t: 12 + i % 3 }).collect();
        let mut m = Histogram::from_patterns(a.iter().copied());
        m.merge(&Histogram::from_patterns(b.iter().copied()));
        assert_eq!(m, Histogram::from_patterns(a.into_iter().chain(b)));
        assert_eq!(m.users(), 120);
    }

    /// A seeded generator for the simulation below.
    struct Rng(u64);

    impl Rng {
        fn unif(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Gamma(k, 1): Marsaglia–Tsang on k + 1, scaled by U^(1/k) (valid for every k > 0).
        fn gamma(&mut self, k: f64) -> f64 {
            let d = k + 1.0 - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let (u1, u2) = (self.unif(), self.unif());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let v = (1.0 + c * z).powi(3);
                let u = self.unif();
                if v > 0.0 && u.ln() < 0.5 * z * z + d - d * v - d * v.ln() {
                    return d * v * self.unif().powf(1.0 / k);
                }
            }
        }
    }

    /// Users drawn from the model itself: the fit finds parameters near the true ones and a
    /// likelihood at least the true parameters'.
    #[test]
    fn fit_recovers_simulated_parameters() {
        let truth = Params { r: 0.8, alpha: 6.0, a: 0.6, b: 2.4 };
        let mut rng = Rng(11);
        let mut pats = Vec::new();
        for _ in 0..6_000 {
            let lambda = rng.gamma(truth.r) / truth.alpha;
            let (ga, gb) = (rng.gamma(truth.a), rng.gamma(truth.b));
            let p = ga / (ga + gb);
            let horizon = 200.0 + 400.0 * rng.unif();
            let (mut t, mut x, mut last) = (0.0f64, 0u32, 0.0f64);
            loop {
                t += -rng.unif().ln() / lambda;
                if t > horizon {
                    break;
                }
                x += 1;
                last = t;
                if rng.unif() < p {
                    break;
                }
            }
            pats.push(Pattern { x, t_x: last as u32, t: horizon as u32 });
        }
        let h = Histogram::from_patterns(pats);
        let f = fit(Variant::Bg, &h, &SPREAD).unwrap();
        assert!(f.log_likelihood >= log_likelihood_grad(Variant::Bg, truth, &h).0);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        assert!(rel(f.params.r, truth.r) < 0.25 && rel(f.params.a, truth.a) < 0.5, "{:?}", f.params);
        // Warm-started from its own optimum, the fit stays there.
        let again = fit(Variant::Bg, &h, &[f.params]).unwrap();
        assert!(rel(again.params.alpha, f.params.alpha) < 1e-6, "{:?} vs {:?}", again.params, f.params);
    }
}
