//! How well a score ranks the users who are about to churn (`streamflix eval churn`).
//!
//! The protocol: at every daily close `D` from the 60th day of the data on (a burn-in), until
//! the last day that has 30 days of data after it, every user active in the 30 days up to `D`
//! is scored; the label is *churned* when the user has no activity in the 30 days after `D`
//! (`D+1 … D+30`). Activity is a rating or a tag; days are UTC days. Scores (higher = more
//! likely to churn):
//!
//! - `recency`: days from the user's last event to the end of `D` (the baseline);
//! - `p_alive`: 1 − P(alive) under MBG/NBD, fitted every `fit_every` closes (the best of the
//!   previous fit and spread starts);
//! - `p_alive_bg`: the same under BG/NBD (the published model, for reference);
//! - `churn_risk`: an online logistic regression over [`FEATURES`], which predicts at a close and
//!   learns each prediction's label only at the close 30 days later (no peeking), by SGD with
//!   learning rate [`ETA0`]`/sqrt(1 + t/1000)` and L2 [`L2`], examples in a fixed order.
//!
//! Every fit uses the patterns of all users seen by then, and only data up to its close: no
//! score looks ahead. The metrics are computed over all (close, user) pairs together.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses
//! `crate::analytics::bgnbd`.

use crate::analytics::bgnbd::{fit, p_alive, Fit, Histogram, Pattern, Variant, SPREAD};

const DAY: i64 = 86_400;
/// Days without activity after a close that make its label *churned*.
pub const HORIZON_DAYS: i64 = 30;
/// Days of data before the first scored close.
pub const BURN_IN_DAYS: i64 = 60;

/// What one user has done up to the close being processed.
#[derive(Debug, Clone, Copy, Default)]
struct UserDays {
    first_day: i64,
    last_day: i64,
    last_ts: i64,
    /// Distinct active days so far (also the index of the next one in the user's day list).
    active_days: usize,
    seen: bool,
}

/// The `churn_risk` model's inputs, in order (see [`features`]).
pub const FEATURES: [&str; 8] = [
    "bias",
    "recency_days / 30",
    "ln(1 + events_7d)",
    "ln(1 + events_30d)",
    "ln(1 + events_90d)",
    "ln(1 + tenure_days)",
    "ln(1 + active_days)",
    "p_alive (MBG/NBD)",
];
const F: usize = FEATURES.len();
/// L2 regularisation of the logistic model (not of its bias), per example.
pub const L2: f64 = 1e-6;
/// Learning rate of example `t` (from 0): `ETA0 / sqrt(1 + t / 1000)`.
pub const ETA0: f64 = 0.1;

/// An online logistic regression: predicts at a close, learns each prediction's label 30 days
/// later, by stochastic gradient descent, in a fixed order (deterministic).
#[derive(Debug, Clone)]
pub struct Logistic {
    /// Weights, in [`FEATURES`] order.
    pub w: [f64; F],
    /// Examples learned.
    pub t: u64,
}

impl Logistic {
    fn new() -> Logistic {
        Logistic { w: [0.0; F], t: 0 }
    }

    fn predict(&self, x: &[f64; F]) -> f64 {
        let z: f64 = self.w.iter().zip(x).map(|(w, x)| w * x).sum();
        1.0 / (1.0 + (-z).exp())
    }

    fn learn(&mut self, x: &[f64; F], y: bool) {
        let eta = ETA0 / (1.0 + self.t as f64 / 1_000.0).sqrt();
        let err = self.predict(x) - f64::from(u8::from(y));
        for (i, (w, xi)) in self.w.iter_mut().zip(x).enumerate() {
            let decay = if i == 0 { 0.0 } else { L2 * *w };
            *w -= eta * (err * xi + decay);
        }
        self.t += 1;
    }
}

/// One scored (close, user) pair.
#[derive(Debug, Clone, Copy)]
struct Scored {
    risk: f64,
    recency: f64,
    risk_mbg: f64,
    risk_bg: f64,
    churned: bool,
}

/// Ranking metrics of one score.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// ROC AUC (ties count one half).
    pub auc: f64,
    /// Average precision (the area under the precision–recall curve; tied scores enter together).
    pub pr_auc: f64,
    /// Churn rate among the top 10 % by score over the overall rate.
    pub lift_top_decile: f64,
    /// Mean squared error of the score as a probability of churn (`None` for scores that are not
    /// probabilities).
    pub brier: Option<f64>,
    /// Ten bins of the predicted probability `[k/10, (k+1)/10)`: pairs, mean prediction, observed
    /// churn rate (`None` for scores that are not probabilities).
    pub calibration: Option<Vec<(u64, f64, f64)>>,
}

/// The evaluation's result.
#[derive(Debug, Clone)]
pub struct ChurnEval {
    /// First and last scored close (days since the epoch); `None` when the data are too short.
    pub closes: Option<(i64, i64)>,
    /// Closes scored (closes before the first possible fit are skipped).
    pub scored_closes: u64,
    /// (close, user) pairs scored, and of them churned.
    pub pairs: u64,
    /// Of them, churned.
    pub churned: u64,
    /// Per score: `recency`, `p_alive` (MBG/NBD), `p_alive_bg`.
    pub metrics: Vec<(&'static str, Metrics)>,
    /// The day of the last event: the fits below are as of its close.
    pub last_day: i64,
    /// BG/NBD and MBG/NBD fitted at the last day's close, on every user.
    pub bgnbd: Option<Fit>,
    /// See `bgnbd`.
    pub mbgnbd: Option<Fit>,
    /// The histogram those fits used.
    pub histogram: Histogram,
    /// The `churn_risk` model at the end.
    pub model: Logistic,
}

/// Evaluates on `events` (user, event time), in any order. `fit_every`: closes between fits.
pub fn evaluate(events: &[(u32, i64)], fit_every: u32) -> ChurnEval {
    let mut events = events.to_vec();
    events.sort_unstable_by_key(|&(u, ts)| (ts, u));
    let users = events.iter().map(|&(u, _)| u as usize + 1).max().unwrap_or(0);
    // Each user's distinct active days, ascending (for the labels' look-ahead).
    let mut days: Vec<Vec<i64>> = vec![Vec::new(); users];
    let mut counts: Vec<Vec<u32>> = vec![Vec::new(); users];
    for &(u, ts) in &events {
        let d = ts.div_euclid(DAY);
        let v = &mut days[u as usize];
        if v.last() == Some(&d) {
            *counts[u as usize].last_mut().expect("a count per day") += 1;
        } else {
            v.push(d);
            counts[u as usize].push(1);
        }
    }
    let (first_day, last_day) = match (events.first(), events.last()) {
        (Some(f), Some(l)) => (f.1.div_euclid(DAY), l.1.div_euclid(DAY)),
        _ => (0, -1),
    };
    let first_close = first_day + BURN_IN_DAYS;
    let last_close = last_day - HORIZON_DAYS;
    let mut state = vec![UserDays::default(); users];
    let mut seen: Vec<u32> = Vec::new();
    let mut scored: Vec<Scored> = Vec::new();
    let mut stamp = vec![i64::MIN; users];
    let mut fits: Option<(Fit, Fit)> = None;
    let mut scored_closes = 0u64;
    let mut next = 0usize;
    // Distinct users active on each day of the trailing window, oldest first.
    let mut window: std::collections::VecDeque<Vec<u32>> = std::collections::VecDeque::new();
    let apply_day = |d: i64, next: &mut usize, state: &mut [UserDays], seen: &mut Vec<u32>| -> Vec<u32> {
        let mut today = Vec::new();
        while let Some(&(u, ts)) = events.get(*next) {
            if ts.div_euclid(DAY) != d {
                break;
            }
            *next += 1;
            let s = &mut state[u as usize];
            if !s.seen {
                *s = UserDays { first_day: d, last_day: d, last_ts: ts, active_days: 0, seen: true };
                seen.push(u);
            }
            if s.active_days == 0 || s.last_day != d {
                s.active_days += 1;
                today.push(u);
            }
            s.last_day = d;
            s.last_ts = ts;
        }
        today
    };
    let histogram_at = |d: i64, state: &[UserDays], seen: &[u32]| {
        Histogram::from_patterns(seen.iter().filter_map(|&u| {
            let s = &state[u as usize];
            Pattern::of(s.active_days as u64, s.first_day, s.last_day, d)
        }))
    };
    let starts = |f: Option<Fit>| f.map(|f| f.params).into_iter().chain(SPREAD).collect::<Vec<_>>();
    let mut closes_since_fit = fit_every;
    let mut model = Logistic::new();
    // Predictions waiting for their label: (close, inputs, label), learned 30 days after.
    let mut waiting: std::collections::VecDeque<(i64, [f64; F], bool)> = std::collections::VecDeque::new();
    for d in first_day..=last_day {
        let today = apply_day(d, &mut next, &mut state, &mut seen);
        window.push_back(today);
        if window.len() > HORIZON_DAYS as usize {
            window.pop_front();
        }
        if d < first_close || d > last_close {
            continue;
        }
        if closes_since_fit >= fit_every || fits.is_none() {
            let h = histogram_at(d, &state, &seen);
            // From the previous fit and every spread start, the best: the likelihood can have
            // several maxima, and a fit that only followed the previous one could stay on a
            // lower one as the data move.
            let (bg0, mbg0) = (starts(fits.map(|f| f.0)), starts(fits.map(|f| f.1)));
            if let (Some(b), Some(m)) = (fit(Variant::Bg, &h, &bg0), fit(Variant::Mbg, &h, &mbg0)) {
                fits = Some((b, m));
                closes_since_fit = 0;
            }
        }
        closes_since_fit += 1;
        // Labels that have matured by this close (their 30 days are over) are learned first.
        while let Some(&(c, x, y)) = waiting.front() {
            if c + HORIZON_DAYS > d {
                break;
            }
            model.learn(&x, y);
            waiting.pop_front();
        }
        let Some((bg, mbg)) = fits else { continue };
        scored_closes += 1;
        for users_of_day in &window {
            for &u in users_of_day {
                if stamp[u as usize] == d {
                    continue;
                }
                stamp[u as usize] = d;
                let s = &state[u as usize];
                let Some(p) = Pattern::of(s.active_days as u64, s.first_day, s.last_day, d) else { continue };
                let next_active = days[u as usize].get(s.active_days).copied();
                let recency = ((d + 1) * DAY - 1 - s.last_ts) as f64 / DAY as f64;
                let alive = p_alive(Variant::Mbg, mbg.params, p);
                let window = |w: i64| -> f64 {
                    let (ds, cs) = (&days[u as usize][..s.active_days], &counts[u as usize][..s.active_days]);
                    ds.iter()
                        .zip(cs)
                        .rev()
                        .take_while(|(&day, _)| day > d - w)
                        .map(|(_, &c)| f64::from(c))
                        .sum()
                };
                let x = [
                    1.0,
                    recency / 30.0,
                    window(7).ln_1p(),
                    window(30).ln_1p(),
                    window(90).ln_1p(),
                    ((d - s.first_day) as f64).ln_1p(),
                    (s.active_days as f64).ln_1p(),
                    alive,
                ];
                let churned = next_active.is_none_or(|n| n > d + HORIZON_DAYS);
                waiting.push_back((d, x, churned));
                scored.push(Scored {
                    risk: model.predict(&x),
                    recency,
                    risk_mbg: 1.0 - alive,
                    risk_bg: 1.0 - p_alive(Variant::Bg, bg.params, p),
                    churned,
                });
            }
        }
    }
    // The fits at the last day's close, on every user: from the last fit and every spread
    // start, the best.
    let histogram = histogram_at(last_day, &state, &seen);
    let bgnbd = fit(Variant::Bg, &histogram, &starts(fits.map(|f| f.0)));
    let mbgnbd = fit(Variant::Mbg, &histogram, &starts(fits.map(|f| f.1)));
    let labels: Vec<bool> = scored.iter().map(|s| s.churned).collect();
    let metrics = if scored.is_empty() {
        Vec::new()
    } else {
        vec![
            ("churn_risk", metrics(&scored.iter().map(|s| s.risk).collect::<Vec<_>>(), &labels, true)),
            ("recency", metrics(&scored.iter().map(|s| s.recency).collect::<Vec<_>>(), &labels, false)),
            ("p_alive", metrics(&scored.iter().map(|s| s.risk_mbg).collect::<Vec<_>>(), &labels, true)),
            ("p_alive_bg", metrics(&scored.iter().map(|s| s.risk_bg).collect::<Vec<_>>(), &labels, true)),
        ]
    };
    ChurnEval {
        closes: (first_close <= last_close).then_some((first_close, last_close)),
        scored_closes,
        pairs: scored.len() as u64,
        churned: labels.iter().filter(|&&c| c).count() as u64,
        metrics,
        last_day,
        bgnbd,
        mbgnbd,
        histogram,
        model,
    }
}

/// The ranking metrics of `score` (higher = churn) against `labels`.
pub fn metrics(score: &[f64], labels: &[bool], probability: bool) -> Metrics {
    let n = score.len();
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = n - pos;
    // Ascending by score; ties form groups.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| score[i].total_cmp(&score[j]));
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (start, end) in `order`
    let mut start = 0;
    for k in 1..=n {
        if k == n || score[order[k]] != score[order[start]] {
            groups.push((start, k));
            start = k;
        }
    }
    // AUC by the rank sum of the positives (average ranks for ties).
    let mut rank_sum = 0.0;
    for &(a, b) in &groups {
        let avg = (a + b + 1) as f64 / 2.0;
        rank_sum += avg * order[a..b].iter().filter(|&&i| labels[i]).count() as f64;
    }
    let auc = if pos == 0 || neg == 0 {
        f64::NAN
    } else {
        (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
    };
    // Average precision, descending, a tied group entering at once.
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    for &(a, b) in groups.iter().rev() {
        let p = order[a..b].iter().filter(|&&i| labels[i]).count();
        tp += p;
        seen += b - a;
        ap += p as f64 * tp as f64 / seen as f64;
    }
    let pr_auc = if pos == 0 { f64::NAN } else { ap / pos as f64 };
    // Lift: the top 10 % by score (ties at the cut broken by input order, for determinism).
    let mut desc: Vec<usize> = (0..n).collect();
    desc.sort_by(|&i, &j| score[j].total_cmp(&score[i]).then(i.cmp(&j)));
    let top = (n / 10).max(1).min(n);
    let top_rate = desc[..top].iter().filter(|&&i| labels[i]).count() as f64 / top as f64;
    let lift_top_decile = top_rate / (pos as f64 / n as f64);
    let (brier, calibration) = if probability {
        let brier =
            score.iter().zip(labels).map(|(&s, &l)| (s - f64::from(u8::from(l))).powi(2)).sum::<f64>()
                / n as f64;
        let mut bins = vec![(0u64, 0.0f64, 0.0f64); 10];
        for (&s, &l) in score.iter().zip(labels) {
            let b = ((s * 10.0).floor() as usize).min(9);
            bins[b].0 += 1;
            bins[b].1 += s;
            bins[b].2 += f64::from(u8::from(l));
        }
        let bins = bins
            .into_iter()
            .map(|(c, s, l)| if c == 0 { (0, f64::NAN, f64::NAN) } else { (c, s / c as f64, l / c as f64) })
            .collect();
        (Some(brier), Some(bins))
    } else {
        (None, None)
    };
    Metrics { auc, pr_auc, lift_top_decile, brier, calibration }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_average_precision_of_small_cases() {
        // Perfect ranking.
        let m = metrics(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true], true);
        assert_eq!((m.auc, m.pr_auc), (1.0, 1.0));
        // All tied: AUC one half, precision the base rate.
        let m = metrics(&[0.5; 4], &[false, true, false, true], true);
        assert_eq!((m.auc, m.pr_auc), (0.5, 0.5));
        // One inversion of four pairs.
        let m = metrics(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true], false);
        assert_eq!(m.auc, 0.75);
        // Descending: 0.9 (+) → P 1; 0.6 (−); 0.5 (+) → P 2/3. AP = (1 + 2/3) / 2.
        assert!((m.pr_auc - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!(m.brier.is_none());
    }

    /// The online model learns a separable rule from its examples, in order.
    #[test]
    fn the_logistic_model_learns_a_simple_rule() {
        let mut m = Logistic::new();
        let x = |k: u32| -> [f64; F] {
            let v = f64::from(k % 100) / 100.0;
            [1.0, v, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0 - v]
        };
        for k in 0..20_000 {
            m.learn(&x(k * 37), f64::from(k * 37 % 100) / 100.0 > 0.6);
        }
        assert_eq!(m.t, 20_000);
        assert!(m.predict(&x(90)) > 0.8 && m.predict(&x(20)) < 0.2, "{:?}", m.w);
    }

    /// Users who keep coming back score lower risk than users who came once, and the labels
    /// look 30 days ahead only.
    #[test]
    fn evaluation_scores_regulars_below_one_timers() {
        let t0 = 1_000_000_000 / DAY * DAY;
        let mut events = Vec::new();
        for u in 0..200u32 {
            if u % 2 == 0 {
                // A regular: every third day for 400 days.
                for k in 0..134 {
                    events.push((u, t0 + (i64::from(u) % 50 + 3 * k) * DAY + 3_600));
                }
            } else {
                // Two visits, a week apart, then gone.
                let start = t0 + (i64::from(u) * 2 % 300) * DAY;
                events.push((u, start));
                events.push((u, start + 7 * DAY));
            }
        }
        let e = evaluate(&events, 7);
        assert!(e.pairs > 1_000 && e.churned > 50, "{} pairs, {} churned", e.pairs, e.churned);
        // Only the labels matured by the last close were learned: those of closes 30 days before.
        assert!(e.model.t > 0 && e.model.t < e.pairs, "{} of {} learned", e.model.t, e.pairs);
        for (name, m) in &e.metrics {
            assert!(m.auc > 0.8, "{name}: AUC {}", m.auc);
        }
        assert!(e.bgnbd.is_some() && e.mbgnbd.is_some());
    }
}
