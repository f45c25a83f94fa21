//! How well the churn model ranks the users who are about to churn, and how early its
//! `at_risk` alerts come (`streamflix eval churn`).
//!
//! The evaluation runs the processor itself over the data, with the churn model exactly as a
//! run uses it, wrapped in a [`Recorder`]: after each complete close the recorder scores every
//! user active in the 30 days up to the close (not only those the model scores that day). The
//! protocol: closes from the 60th day of the data on (a burn-in), until the last day that has 30
//! days of data after it; a (close `D`, user) pair's label is *churned* when the user has no
//! activity on `D+1 … D+30` (activity: a rating or a tag; UTC days). Scores (higher = more
//! likely to churn):
//!
//! - `churn_risk`: the model ([`crate::analytics::churn_model`]);
//! - `recency`: days from the user's last event to the end of `D` (the baseline);
//! - `p_alive`: 1 − P(alive) under MBG/NBD, the model's fit;
//! - `p_alive_bg`: the same under BG/NBD (the published model, for reference), refitted whenever
//!   the model refits, on the same users, the same way.
//!
//! No score looks ahead: each uses the model as it stands after the close. The metrics are
//! computed over all (close, user) pairs together. Alerts: the model's `at_risk` alerts are
//! matched to the processor's `churned` alerts by episode (see [`alert_metrics`]); the recorder
//! also replays the alert rule at other thresholds over the same scores (the rule does not feed
//! back into the model, so this is what a run at that threshold would alert).
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses
//! `crate::analytics::bgnbd`, `crate::analytics::churn_model`, `crate::core::calendar`,
//! `crate::core::processor`, `streamflix-schemas`.

use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use streamflix_schemas::AtRiskAlert;

use crate::analytics::bgnbd::{p_alive, Variant};
use crate::analytics::churn_model::{due_day, next_fit, ChurnModel, FitState, HORIZON_DAYS};
use crate::core::calendar::DAY;
use crate::core::processor::{ChurnScorer, ScorerGauges, ScoringClose};

/// Days of data before the first scored close.
pub const BURN_IN_DAYS: i64 = 60;
/// The thresholds whose alerts the evaluation replays.
pub const THRESHOLDS: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95];

/// One scored (close, user) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// The close.
    pub day: i64,
    /// The user.
    pub user: u32,
    /// `churn_risk`.
    pub risk: f64,
    /// Days since the last event.
    pub recency: f64,
    /// 1 − P(alive), MBG/NBD.
    pub risk_mbg: f64,
    /// 1 − P(alive), BG/NBD.
    pub risk_bg: f64,
}

/// An `at_risk` alert: user, episode (the user's `churned` alerts before it), close.
pub type AlertAt = (u32, u32, i64);

/// What the recorder collected.
#[derive(Debug)]
pub struct Recording {
    /// The model, as the processor ran it.
    pub model: ChurnModel,
    /// BG/NBD, refitted with the model.
    pub bg: Option<FitState>,
    bg_fits: u64,
    seen_fits: u64,
    /// Closes whose pairs are scored (inclusive).
    window: (i64, i64),
    /// Scored pairs, by close.
    pub pairs: Vec<Pair>,
    /// The model's alerts.
    pub alerts: Vec<AlertAt>,
    /// Per [`THRESHOLDS`] entry: the alerts a run at that threshold would send.
    pub replayed: Vec<Vec<AlertAt>>,
    replayed_alerted: Vec<FxHashMap<u32, u32>>,
}

/// The churn model wrapped to record scores at every close (see the module's documentation).
pub struct Recorder(pub Arc<Mutex<Recording>>);

impl Recorder {
    /// A recorder around `model`, scoring pairs at closes `first..=last`.
    pub fn new(model: ChurnModel, first: i64, last: i64) -> Recorder {
        Recorder(Arc::new(Mutex::new(Recording {
            model,
            bg: None,
            bg_fits: 0,
            seen_fits: 0,
            window: (first, last),
            pairs: Vec::new(),
            alerts: Vec::new(),
            replayed: vec![Vec::new(); THRESHOLDS.len()],
            replayed_alerted: vec![FxHashMap::default(); THRESHOLDS.len()],
        })))
    }
}

impl ChurnScorer for Recorder {
    fn close(&mut self, c: &ScoringClose<'_>) -> Vec<AtRiskAlert> {
        let mut r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let r = &mut *r;
        let alerts = r.model.close_day(c);
        r.alerts.extend(alerts.iter().map(|a| (a.user_id, c.users[&a.user_id].churn.episodes, c.day)));
        if r.model.fits != r.seen_fits {
            r.seen_fits = r.model.fits;
            let h = r.model.fit_histogram(c.users, c.day);
            if let Some(f) = next_fit(Variant::Bg, r.bg, r.bg_fits, &h, c.day) {
                r.bg = Some(f);
                r.bg_fits += 1;
            }
        }
        let scoring = (r.window.0..=r.window.1).contains(&c.day);
        for u in c.active() {
            let due = due_day(u, c.day);
            if !(scoring || due) {
                continue;
            }
            let st = &c.users[&u];
            let Some((row, pattern)) = ChurnModel::inputs_of(st, u, c) else { continue };
            let Some((_, alive, risk)) = r.model.score(&row, pattern) else { continue };
            if due {
                for (k, &t) in THRESHOLDS.iter().enumerate() {
                    let e = st.churn.episodes;
                    if risk >= t && r.replayed_alerted[k].get(&u) != Some(&e) {
                        r.replayed_alerted[k].insert(u, e);
                        r.replayed[k].push((u, e, c.day));
                    }
                }
            }
            if scoring {
                let bg = r.bg.map_or(f64::NAN, |f| 1.0 - p_alive(Variant::Bg, f.params(), pattern));
                r.pairs.push(Pair {
                    day: c.day,
                    user: u,
                    risk,
                    recency: row.recency_days,
                    risk_mbg: 1.0 - alive,
                    risk_bg: bg,
                });
            }
        }
        alerts
    }

    fn encode(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).model.to_bytes()
    }

    fn segment(&self, user: u32) -> Option<[u8; 4]> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).model.segment_of(user)
    }

    fn gauges(&self) -> ScorerGauges {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).model.gauges()
    }
}

/// Whether a user with the sorted active `days` had no activity on `day+1 … day+30`.
pub fn churned_after(days: &[i64], day: i64) -> bool {
    let i = days.partition_point(|&d| d <= day);
    days.get(i).is_none_or(|&next| next > day + HORIZON_DAYS)
}

/// How early alerts came, against the `churned` alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMetrics {
    /// `at_risk` alerts.
    pub alerts: u64,
    /// Churn episodes (`churned` alerts).
    pub churned: u64,
    /// Share of them with an `at_risk` alert in the episode, before the `churned` one.
    pub reach: f64,
    /// Share of them with one 7 or more days before the `churned` alert.
    pub reach_7d: f64,
    /// Median days from the `at_risk` alert to the `churned` one, over the episodes reached.
    pub median_lead_days: f64,
    /// Share of `at_risk` alerts after which the user had no activity at all before the
    /// `churned` alert (it came within the churn period of the alert's close): the alert was
    /// right that the user was leaving then. Alerts in episodes still open at the end of the
    /// data, or followed by more activity, count as wrong.
    pub precision: f64,
}

/// Matches `at_risk` alerts to `churned` alerts `(user, at)` by episode: a user's `k`-th
/// `churned` alert (from 0) ends episode `k`. Lead time: the `churned` alert's time minus the end
/// of the close that sent the `at_risk` one.
pub fn alert_metrics(at_risk: &[AlertAt], churned: &[(u32, i64)]) -> AlertMetrics {
    let mut by_user: FxHashMap<u32, Vec<i64>> = FxHashMap::default();
    for &(u, at) in churned {
        by_user.entry(u).or_default().push(at);
    }
    for v in by_user.values_mut() {
        v.sort_unstable();
    }
    // The first alert of each episode.
    let mut first: FxHashMap<(u32, u32), i64> = FxHashMap::default();
    for &(u, e, day) in at_risk {
        let at = (day + 1) * DAY - 1;
        first.entry((u, e)).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }
    let mut leads: Vec<f64> = Vec::new();
    let mut followed = 0u64;
    for &(u, e, day) in at_risk {
        let at = (day + 1) * DAY - 1;
        if by_user.get(&u).and_then(|v| v.get(e as usize)).is_some_and(|&c| c - at <= HORIZON_DAYS * DAY) {
            followed += 1;
        }
    }
    for (&(u, e), &at) in &first {
        if let Some(&c) = by_user.get(&u).and_then(|v| v.get(e as usize)) {
            leads.push((c - at) as f64 / DAY as f64);
        }
    }
    leads.sort_by(f64::total_cmp);
    let n = churned.len().max(1) as f64;
    let median = match leads.len() {
        0 => f64::NAN,
        k if k % 2 == 1 => leads[k / 2],
        k => (leads[k / 2 - 1] + leads[k / 2]) / 2.0,
    };
    AlertMetrics {
        alerts: at_risk.len() as u64,
        churned: churned.len() as u64,
        reach: leads.len() as f64 / n,
        reach_7d: leads.iter().filter(|&&l| l >= 7.0).count() as f64 / n,
        median_lead_days: median,
        precision: if at_risk.is_empty() { f64::NAN } else { followed as f64 / at_risk.len() as f64 },
    }
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

    /// Alerts are matched to churns by episode; leads and reach follow.
    #[test]
    fn alerts_are_matched_to_churns_by_episode() {
        let d = |day: i64| day * DAY;
        // User 1: churns twice (episodes 0 and 1); alerted in episode 0 at day 10 (lead 20 days)
        // and in episode 1 at day 98 (lead 2 days). User 2: churns once, never alerted. User 3:
        // alerted, still active at the end. User 4: alerted 40 days before churning (it was
        // active after the alert: not a right alert, but reached).
        let churned = [(1, d(31) - 1), (1, d(101) - 1), (2, d(50)), (4, d(141) - 1)];
        let at_risk = [(1, 0, 10), (1, 1, 98), (3, 0, 40), (4, 0, 100)];
        let m = alert_metrics(&at_risk, &churned);
        assert_eq!((m.alerts, m.churned), (4, 4));
        assert!((m.reach - 3.0 / 4.0).abs() < 1e-12);
        assert!((m.reach_7d - 2.0 / 4.0).abs() < 1e-12);
        assert!((m.median_lead_days - 20.0).abs() < 1e-9, "{}", m.median_lead_days);
        assert!((m.precision - 2.0 / 4.0).abs() < 1e-12);
        assert!(churned_after(&[1, 5, 40], 5) && !churned_after(&[1, 5, 35], 5) && churned_after(&[1], 1));
    }
}
