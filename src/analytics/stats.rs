//! Hypothesis tests and correlations from mergeable summaries, with scipy's definitions.
//!
//! Everything a test needs is kept as a summary that can be added to one value at a time and
//! merged with another partition's: [`Moments`] `(n, mean, M2)` (Welford's update, Chan et al.'s
//! merge) for Welch's t-test and the one-way ANOVA, [`CoMoments`] for Pearson's r, counts for
//! the chi-square test. Spearman's rho needs the values themselves (ranks), and is computed when
//! asked ([`spearman`]). Each function gives what scipy gives:
//!
//! | here | scipy |
//! |---|---|
//! | [`welch`] | `ttest_ind(a, b, equal_var=False)` |
//! | [`anova`] | `f_oneway(*groups)` |
//! | [`pearson`] | `pearsonr(x, y)` |
//! | [`spearman`] | `spearmanr(x, y)` (ranks with average ties) |
//! | [`chi_square`] | `chi2_contingency(table, correction=False)` |
//!
//! p-values are two-sided where scipy's are, from the survival function (never `1 − cdf`, which
//! rounds a small p to 0). The distributions are statrs's (0.19), except where its regularised
//! incomplete beta loses accuracy (statrs issue #434: ln Γ of huge shapes subtracted): measured
//! against scipy, the t survival function is within 1.7e-8 relative up to 1e8 degrees of
//! freedom but 1.1e-6 at 1e9 and 2e-3 at 1e12, and F(18, d2)'s within 1.1e-7 up to d2 = 1e8 but
//! 5.9e-7 at 1e9 and 1e-5 at 1e10. Above [`T_LIMIT_DF`] the t distribution is replaced by its
//! normal limit with Abramowitz & Stegun's 26.7.8 correction (1.1e-8 at 1e8, 1e-10 from 1e9), and
//! above [`F_LIMIT_DF`] the F distribution by d1·F ~ χ²(d1) with its first-order correction in
//! 1/d2 (4.7e-8 at d2 = 1e9 for d1 = 18; it grows with d1, which is the number of groups here).
//! Unit tests pin both switches against scipy.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses `crate::core::summary`, `statrs`.

use serde::Serialize;
use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, FisherSnedecor, Normal, StudentsT};

pub use crate::core::summary::{CoMoments, Moments};

/// Degrees of freedom above which the t distribution is taken from its normal limit.
pub const T_LIMIT_DF: f64 = 1e8;
/// Denominator degrees of freedom above which the F distribution is taken from its chi-square
/// limit.
pub const F_LIMIT_DF: f64 = 1e9;

/// Welch's two-sample t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TTest {
    /// Size of the first sample.
    pub n_a: u64,
    /// Size of the second sample.
    pub n_b: u64,
    /// Mean of the first sample.
    pub mean_a: f64,
    /// Mean of the second sample.
    pub mean_b: f64,
    /// Sample standard deviation of the first sample.
    pub sd_a: f64,
    /// Sample standard deviation of the second sample.
    pub sd_b: f64,
    /// Mean of the first minus mean of the second.
    pub diff: f64,
    /// `diff` over the second mean (`None` when that is 0).
    pub rel_diff: Option<f64>,
    /// The t statistic.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Welch's t-test of `a` against `b`; `None` unless both have two values and not both have
/// zero variance.
pub fn welch(a: &Moments, b: &Moments) -> Option<TTest> {
    let (var_a, var_b) = (a.variance()?, b.variance()?);
    let (va, vb) = (var_a / a.n as f64, var_b / b.n as f64);
    let se2 = va + vb;
    if se2 <= 0.0 || !se2.is_finite() {
        return None;
    }
    let diff = a.mean - b.mean;
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (va * va / (a.n - 1) as f64 + vb * vb / (b.n - 1) as f64);
    Some(TTest {
        n_a: a.n,
        n_b: b.n,
        mean_a: a.mean,
        mean_b: b.mean,
        sd_a: var_a.sqrt(),
        sd_b: var_b.sqrt(),
        diff,
        rel_diff: (b.mean != 0.0).then(|| diff / b.mean),
        t,
        df,
        p: (2.0 * t_sf(t.abs(), df)).min(1.0),
    })
}

/// One-way analysis of variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Anova {
    /// Groups with at least one value.
    pub groups: u64,
    /// Values over all groups.
    pub n: u64,
    /// The F statistic.
    pub f: f64,
    /// Groups − 1.
    pub df_between: f64,
    /// Values − groups.
    pub df_within: f64,
    /// p-value (upper tail).
    pub p: f64,
    /// Effect size η² = between-group over total sum of squares.
    pub eta_squared: f64,
}

/// One-way ANOVA over the groups' summaries (empty groups are ignored); `None` with fewer than
/// two groups, no residual degrees of freedom or no variance within groups.
pub fn anova(groups: &[Moments]) -> Option<Anova> {
    let groups: Vec<&Moments> = groups.iter().filter(|g| g.n > 0).collect();
    let k = groups.len() as u64;
    let mut all = Moments::default();
    for g in &groups {
        all.merge(g);
    }
    if k < 2 || all.n <= k {
        return None;
    }
    let within: f64 = groups.iter().map(|g| g.m2).sum();
    let between: f64 = groups.iter().map(|g| g.n as f64 * (g.mean - all.mean).powi(2)).sum();
    if within <= 0.0 {
        return None;
    }
    let (d1, d2) = ((k - 1) as f64, (all.n - k) as f64);
    let f = (between / d1) / (within / d2);
    Some(Anova {
        groups: k,
        n: all.n,
        f,
        df_between: d1,
        df_within: d2,
        p: f_sf(f, d1, d2),
        eta_squared: between / (between + within),
    })
}

/// A correlation coefficient with its test of zero correlation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Correlation {
    /// Pairs.
    pub n: u64,
    /// Pearson's r, or Spearman's rho.
    pub r: f64,
    /// Two-sided p-value (t with n − 2 degrees of freedom, as scipy).
    pub p: f64,
}

fn correlation(n: u64, r: f64) -> Correlation {
    let r = r.clamp(-1.0, 1.0);
    let df = (n - 2) as f64;
    let p = if r.abs() >= 1.0 {
        0.0
    } else {
        let t = r * (df / ((1.0 - r) * (1.0 + r))).sqrt();
        (2.0 * t_sf(t.abs(), df)).min(1.0)
    };
    Correlation { n, r, p }
}

/// Pearson's r from co-moments; `None` below three pairs or when x or y is constant.
pub fn pearson(c: &CoMoments) -> Option<Correlation> {
    if c.n < 3 || c.m2_x <= 0.0 || c.m2_y <= 0.0 {
        return None;
    }
    Some(correlation(c.n, c.c_xy / (c.m2_x.sqrt() * c.m2_y.sqrt())))
}

/// Ranks 1..n with ties given their average rank (scipy's `rankdata(method="average")`).
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut out = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && xs[order[j]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j: their mean.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &o in &order[i..j] {
            out[o] = rank;
        }
        i = j;
    }
    out
}

/// Spearman's rho: Pearson's r of the ranks; `None` below three pairs or when x or y is
/// constant. Ranks are integers and halves, and their mean is exactly (n + 1)/2, so the sums are
/// taken in two passes around it: a perfect rank correlation comes out as exactly ±1 (p = 0,
/// as scipy's), where a running update would leave it an ulp short.
pub fn spearman(xs: &[f64], ys: &[f64]) -> Option<Correlation> {
    assert_eq!(xs.len(), ys.len(), "paired values");
    let n = xs.len();
    let (rx, ry) = (ranks(xs), ranks(ys));
    let m = (n as f64 + 1.0) / 2.0;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (x, y) in rx.iter().zip(&ry) {
        let (dx, dy) = (x - m, y - m);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    if n < 3 || sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some(correlation(n as u64, sxy / (sxx * syy).sqrt()))
}

/// Chi-square test of independence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChiSquare {
    /// The statistic Σ (observed − expected)² / expected.
    pub chi2: f64,
    /// (rows − 1)(columns − 1).
    pub df: f64,
    /// p-value (upper tail).
    pub p: f64,
    /// Cramér's V.
    pub cramers_v: f64,
}

/// Chi-square test of independence of a table of counts, without continuity correction;
/// `None` when a row or column sums to 0 or the table is smaller than 2 × 2.
pub fn chi_square(table: &[Vec<u64>]) -> Option<ChiSquare> {
    let rows = table.len();
    let cols = table.first().map_or(0, Vec::len);
    if rows < 2 || cols < 2 || table.iter().any(|r| r.len() != cols) {
        return None;
    }
    let row_sums: Vec<f64> = table.iter().map(|r| r.iter().sum::<u64>() as f64).collect();
    let col_sums: Vec<f64> = (0..cols).map(|c| table.iter().map(|r| r[c]).sum::<u64>() as f64).collect();
    let total: f64 = row_sums.iter().sum();
    if row_sums.contains(&0.0) || col_sums.contains(&0.0) {
        return None;
    }
    let mut chi2 = 0.0;
    for (r, row) in table.iter().enumerate() {
        for (c, &o) in row.iter().enumerate() {
            let e = row_sums[r] * col_sums[c] / total;
            chi2 += (o as f64 - e).powi(2) / e;
        }
    }
    let df = ((rows - 1) * (cols - 1)) as f64;
    let k = rows.min(cols) as f64 - 1.0;
    Some(ChiSquare { chi2, df, p: chi2_sf(chi2, df), cramers_v: (chi2 / (total * k)).sqrt() })
}

/// P(T > t) for Student's t with `df` degrees of freedom.
pub fn t_sf(t: f64, df: f64) -> f64 {
    if df > T_LIMIT_DF {
        // Abramowitz & Stegun 26.7.8: error O(1/df²).
        let x = t * (1.0 - 1.0 / (4.0 * df)) / (1.0 + t * t / (2.0 * df)).sqrt();
        return Normal::standard().sf(x);
    }
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| d.sf(t))
}

/// P(F > f) for Fisher's F with (d1, d2) degrees of freedom.
pub fn f_sf(f: f64, d1: f64, d2: f64) -> f64 {
    if d2 > F_LIMIT_DF {
        // d1·F → χ²(d1) as d2 → ∞; averaging the chi-square survival function over the
        // denominator's χ²(d2)/d2 ≈ 1 + N(0, 2/d2) adds −G''·x²/d2 = g′(x)·x²/d2 … with G the
        // survival function and g the density: sf ≈ G(x) − g′(x)·x²/d2.
        let x = f * d1;
        let Ok(chi) = ChiSquared::new(d1) else { return f64::NAN };
        if x <= 0.0 {
            return 1.0;
        }
        let g_prime = chi.pdf(x) * ((d1 / 2.0 - 1.0) / x - 0.5);
        return (chi.sf(x) - g_prime * x * x / d2).clamp(0.0, 1.0);
    }
    FisherSnedecor::new(d1, d2).map_or(f64::NAN, |d| d.sf(f))
}

/// P(X > x) for chi-square with `k` degrees of freedom.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    ChiSquared::new(k).map_or(f64::NAN, |d| d.sf(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test samples of tests/stats_golden.py, computed the same way (IEEE doubles).
    fn golden_sample(seed: f64, n: usize, mean: f64, sd: f64, ties: bool) -> Vec<f64> {
        let a = 0.6180339887498949 + seed * 0.0137;
        let b = 0.7548776662466927 + seed * 0.0071;
        let c = 0.5698402909980532 + seed * 0.0029;
        (1..=n)
            .map(|i| {
                let i = i as f64;
                let x = mean + sd * (((i * a) % 1.0) + ((i * b) % 1.0) + ((i * c) % 1.0) - 1.5) * 2.0;
                if ties {
                    (x * 2.0 + 0.5).floor() / 2.0
                } else {
                    x
                }
            })
            .collect()
    }

    fn golden() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/data/stats_golden.json")).unwrap()
    }

    fn f(v: &serde_json::Value) -> f64 {
        v.as_f64().unwrap()
    }

    /// Within 1e-9 relative for statistics.
    fn close_stat(got: f64, want: f64, what: &str) {
        let rel = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
        assert!(rel <= 1e-9 || got == want, "{what}: {got} vs scipy {want} (relative {rel:.1e})");
    }

    /// Within 1e-6 relative, or 1e-300 absolute, for p-values.
    fn close_p(got: f64, want: f64, what: &str) {
        let diff = (got - want).abs();
        assert!(
            diff <= 1e-300 || diff / want.abs() <= 1e-6,
            "{what}: p {got:e} vs scipy {want:e} (relative {:.1e})",
            diff / want.abs()
        );
    }

    fn sample_of(v: &serde_json::Value) -> Vec<f64> {
        let p: Vec<f64> = v.as_array().unwrap().iter().map(f).collect();
        golden_sample(p[0], p[1] as usize, p[2], p[3], false)
    }

    #[test]
    fn welch_equals_scipy() {
        let g = golden();
        for case in g["welch"].as_array().unwrap() {
            let (a, b) = (sample_of(&case["a"]), sample_of(&case["b"]));
            let what = format!("welch n = {} / {}", a.len(), b.len());
            let r = welch(&Moments::of(a.iter().copied()), &Moments::of(b.iter().copied())).unwrap();
            close_stat(r.t, f(&case["t"]), &what);
            close_stat(r.df, f(&case["df"]), &what);
            close_p(r.p, f(&case["p"]), &what);
        }
    }

    #[test]
    fn anova_equals_scipy() {
        let g = golden();
        for case in g["anova"].as_array().unwrap() {
            let groups: Vec<Moments> =
                case["groups"].as_array().unwrap().iter().map(|s| Moments::of(sample_of(s))).collect();
            let what = format!("anova over {} groups", groups.len());
            let r = anova(&groups).unwrap();
            close_stat(r.f, f(&case["f"]), &what);
            assert_eq!(r.df_between, f(&case["df_between"]));
            assert_eq!(r.df_within, f(&case["df_within"]));
            close_p(r.p, f(&case["p"]), &what);
        }
    }

    fn pairs(case: &serde_json::Value) -> (Vec<f64>, Vec<f64>) {
        let (seed, n, slope) = (f(&case["seed"]), case["n"].as_u64().unwrap() as usize, f(&case["slope"]));
        let ties = case["ties"].as_bool().unwrap();
        let x = golden_sample(seed, n, 3.5, 1.0, ties);
        let noise = golden_sample(seed + 100.0, n, 2.0, 1.0, ties);
        let y = x.iter().zip(&noise).map(|(x, e)| x * slope + e).collect();
        (x, y)
    }

    #[test]
    fn correlations_equal_scipy() {
        let g = golden();
        for case in g["pearson"].as_array().unwrap() {
            let (x, y) = pairs(case);
            let mut c = CoMoments::default();
            for (a, b) in x.iter().zip(&y) {
                c.push(*a, *b);
            }
            let r = pearson(&c).unwrap();
            let what = format!("pearson n = {}", x.len());
            close_stat(r.r, f(&case["r"]), &what);
            close_p(r.p, f(&case["p"]), &what);
        }
        for case in g["spearman"].as_array().unwrap() {
            let (x, y) = pairs(case);
            let r = spearman(&x, &y).unwrap();
            let what = format!("spearman n = {} ties {}", x.len(), case["ties"]);
            close_stat(r.r, f(&case["rho"]), &what);
            close_p(r.p, f(&case["p"]), &what);
        }
    }

    #[test]
    fn chi_square_equals_scipy() {
        let g = golden();
        for case in g["chi2"].as_array().unwrap() {
            let table: Vec<Vec<u64>> = case["table"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect())
                .collect();
            let r = chi_square(&table).unwrap();
            let what = format!("chi-square {table:?}");
            close_stat(r.chi2, f(&case["chi2"]), &what);
            assert_eq!(r.df, f(&case["df"]));
            close_p(r.p, f(&case["p"]), &what);
        }
    }

    /// The survival functions equal scipy's on both sides of the switches to the limits.
    #[test]
    fn distributions_equal_scipy_across_the_switch_to_their_limits() {
        let g = golden();
        let (mut below, mut above) = (0, 0);
        for case in g["t_sf"].as_array().unwrap() {
            let (t, df) = (f(&case["t"]), f(&case["df"]));
            close_p(t_sf(t, df), f(&case["p"]), &format!("t_sf({t}, {df})"));
            if df > T_LIMIT_DF {
                above += 1
            } else {
                below += 1
            }
        }
        for case in g["f_sf"].as_array().unwrap() {
            let (x, d1, d2) = (f(&case["f"]), f(&case["d1"]), f(&case["d2"]));
            close_p(f_sf(x, d1, d2), f(&case["p"]), &format!("f_sf({x}, {d1}, {d2})"));
            if d2 > F_LIMIT_DF {
                above += 1
            } else {
                below += 1
            }
        }
        for case in g["chi2_sf"].as_array().unwrap() {
            let (x, k) = (f(&case["x"]), f(&case["k"]));
            close_p(chi2_sf(x, k), f(&case["p"]), &format!("chi2_sf({x}, {k})"));
        }
        assert!(below >= 20 && above >= 20, "both sides tested: {below} / {above}");
        // Without the switch, statrs misses scipy there by more than the tolerance.
        let t = StudentsT::new(0.0, 1.0, 1e12).unwrap().sf(2.0);
        assert!((t - t_sf(2.0, 1e12)).abs() / t_sf(2.0, 1e12) > 1e-4);
    }

    /// Summaries merged from partitions equal the summary of everything, and the tests on them
    /// are the same.
    #[test]
    fn merged_partitions_equal_one_pass() {
        let xs = golden_sample(1.0, 10_000, 3.5, 1.0, true);
        let ys = golden_sample(2.0, 10_000, 2.0, 0.5, false);
        let whole = Moments::of(xs.iter().copied());
        let mut merged = Moments::default();
        let mut co_whole = CoMoments::default();
        let mut co_merged = CoMoments::default();
        for chunk in [0..1, 1..3_000, 3_000..3_000, 3_000..10_000] {
            let part = Moments::of(xs[chunk.clone()].iter().copied());
            merged.merge(&part);
            let mut co = CoMoments::default();
            for i in chunk {
                co.push(xs[i], ys[i]);
            }
            co_merged.merge(&co);
        }
        for (x, y) in xs.iter().zip(&ys) {
            co_whole.push(*x, *y);
        }
        assert_eq!(merged.n, whole.n);
        assert!((merged.mean - whole.mean).abs() < 1e-12 && (merged.m2 / whole.m2 - 1.0).abs() < 1e-12);
        let (a, b) = (pearson(&co_whole).unwrap(), pearson(&co_merged).unwrap());
        assert!((a.r - b.r).abs() < 1e-12 && (a.p / b.p - 1.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_inputs_give_none_not_nan() {
        let one = Moments::of([1.0]);
        let two = Moments::of([1.0, 2.0]);
        let flat = Moments::of([3.0, 3.0, 3.0]);
        assert!(welch(&one, &two).is_none());
        assert!(welch(&flat, &flat).is_none());
        assert!(welch(&flat, &two).is_some());
        assert!(anova(&[two]).is_none());
        assert!(anova(&[flat, flat]).is_none());
        assert!(chi_square(&[vec![1, 0], vec![2, 0]]).is_none());
        assert!(chi_square(&[vec![1, 2]]).is_none());
        let mut c = CoMoments::default();
        c.push(1.0, 2.0);
        c.push(2.0, 2.0);
        c.push(3.0, 2.0);
        assert!(pearson(&c).is_none());
        assert_eq!(ranks(&[2.0, 1.0, 2.0, 3.0]), vec![2.5, 1.0, 2.5, 4.0]);
        let perfect = spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]).unwrap();
        assert_eq!((perfect.r, perfect.p), (1.0, 0.0));
    }
}
