//! `churn_risk`: the probability that a user has no activity in the next 30 event-days, from an
//! online logistic regression over the user's features at a daily close.
//!
//! **Learning.** A prediction made at close `D` gets its label at close `D + 30` (no activity on
//! `D+1 … D+30`), and the model learns only from labels that have matured, so it can run from the
//! first day of a replay. It learns one close's matured examples at a time, as a Bayesian update
//! with a Gaussian (Laplace) approximation of the posterior: the weights `w` and their precision
//! matrix `H` summarise everything learned so far; a batch of examples moves `w` to the maximum
//! of `log-likelihood(batch) − ½ (w − w₀)ᵀ H (w − w₀)` (Newton's method, halving a step that
//! does not improve), and `H` gains the batch's Hessian. Fed all examples, this is close to the
//! logistic regression fitted on all of them at once, without a learning rate to choose. The
//! precision decays by half every [`HALF_LIFE_CLOSES`] closes, so the model keeps following a
//! platform that changes over the years.
//!
//! **Prior.** Before any label has matured, `churn_risk` is `1 − P(alive)` (MBG/NBD): the weight
//! of `logit(1 − P(alive))` starts at 1 and every other weight at 0, with precision
//! [`PRIOR_PRECISION`] each (the L2 regularisation of a batch fit, centred on that start).
//!
//! **Inputs** ([`FEATURES`], all of order one): the bias, recency, events in 7/30/90 days,
//! tenure, active days, closed sessions, binge share, mean rating, genre diversity and
//! `logit(1 − P(alive))`. The contribution of an input to a score is its weight times its value
//! (the bias excluded); the three largest are what an `at_risk` alert names.
//!
//! **Segments.** At a month's last close the model also segments the users active in the last
//! [`SEGMENT_WITHIN_DAYS`] days by RFM quintiles
//! ([`crate::analytics::segments`]): the breakpoints, each user's scores and segment (on the
//! close's table rows, `at_risk` alerts and `GET /users/{id}`), sizes and moves since the
//! previous month end (`GET /segments`).
//!
//! **In the processor** ([`ChurnModel`]) the model runs at every complete daily close, inside
//! the processor's deterministic sequence: it learns the examples that matured at this close,
//! refits MBG/NBD every [`FIT_EVERY`] closes over every user's pattern (warm-started from the
//! previous fit, with the spread starts), scores every user active in the trailing 30 days and
//! decides the `at_risk` alerts: a user whose `churn_risk` reaches the threshold gets one per
//! activity episode (the episode ends when the user churns by the 30-day rule). Examples: of
//! each close's scored users, the [`LEARN_PER_CLOSE`] with the smallest hash of (user, day)
//! (all of them on a small platform), so the state waiting for labels stays bounded. Its whole
//! state is checkpointed ([`ChurnModel::encode`]), so a restart continues it exactly.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses
//! `crate::analytics::bgnbd`, `crate::analytics::segments`, `crate::core::calendar`,
//! `crate::core::daily`, `crate::core::features`,
//! `crate::core::processor`, `streamflix-schemas`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use streamflix_schemas::{AtRiskAlert, RiskReason, AT_RISK_VERSION};

use crate::analytics::bgnbd::{p_alive, probe, refit, Histogram, Params, Pattern, Variant, SPREAD};
use crate::analytics::segments::{self, segment, Breakpoints, Rfm, QUANTILES, SEGMENTS};
use crate::core::calendar::{day_label, day_of};
use crate::core::daily::is_month_end;
use crate::core::features::FeatureRow;
use crate::core::processor::{ChurnScorer, ScorerGauges, ScoringClose, UserState};
use rustc_hash::FxHashMap;

/// The model's inputs, in order (see [`inputs`]).
pub const FEATURES: [&str; 12] = [
    "bias",
    "recency_days / 30",
    "ln(1 + events_7d)",
    "ln(1 + events_30d)",
    "ln(1 + events_90d)",
    "ln(1 + tenure_days)",
    "ln(1 + active_days)",
    "ln(1 + sessions)",
    "binge_share",
    "rating_mean - 3",
    "genre_diversity",
    "logit(1 - p_alive)",
];
/// Inputs per example.
pub const F: usize = FEATURES.len();
/// Index of `logit(1 − P(alive))` in [`FEATURES`].
const LOGIT_P: usize = F - 1;
/// Precision of the prior on each weight (the L2 regularisation, per weight).
pub const PRIOR_PRECISION: f64 = 1.0;
/// Closes after which what was learned counts half.
pub const HALF_LIFE_CLOSES: f64 = 365.0;
/// `logit(1 − P(alive))` is clamped to ±this (P(alive) of 0 or 1 exactly).
const LOGIT_CLAMP: f64 = 12.0;

/// The inputs of a user's row at a close, with the user's P(alive).
pub fn inputs(row: &FeatureRow, p_alive: f64) -> [f64; F] {
    let ln1p = |n: u64| (n as f64).ln_1p();
    let tenure_days = ((row.as_of - row.first_seen).max(0) as f64) / 86_400.0;
    let binge_share = if row.sessions == 0 { 0.0 } else { row.binge_sessions as f64 / row.sessions as f64 };
    let q = (1.0 - p_alive).clamp(1e-12, 1.0 - 1e-12);
    [
        1.0,
        row.recency_days / 30.0,
        ln1p(row.events_7d),
        ln1p(row.events_30d),
        ln1p(row.events_90d),
        tenure_days.ln_1p(),
        ln1p(row.active_days),
        ln1p(row.sessions),
        binge_share,
        row.rating_mean.map_or(0.0, |m| m - 3.0),
        row.genre_diversity,
        (q / (1.0 - q)).ln().clamp(-LOGIT_CLAMP, LOGIT_CLAMP),
    ]
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The online logistic regression (see the module's documentation).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Learner {
    /// Weights, in [`FEATURES`] order.
    pub w: [f64; F],
    /// Their precision matrix (row-major).
    pub h: Vec<f64>,
    /// Examples learned.
    pub examples: u64,
    /// Batches learned.
    pub batches: u64,
}

impl Default for Learner {
    fn default() -> Self {
        Learner::new()
    }
}

impl Learner {
    /// The prior: `churn_risk = 1 − P(alive)`.
    pub fn new() -> Learner {
        let mut w = [0.0; F];
        w[LOGIT_P] = 1.0;
        let mut h = vec![0.0; F * F];
        for i in 0..F {
            h[i * F + i] = PRIOR_PRECISION;
        }
        Learner { w, h, examples: 0, batches: 0 }
    }

    /// The predicted probability of churn.
    pub fn predict(&self, x: &[f64; F]) -> f64 {
        sigmoid(self.w.iter().zip(x).map(|(w, x)| w * x).sum())
    }

    /// Each input's contribution to the score's log-odds (0 for the bias).
    pub fn contributions(&self, x: &[f64; F]) -> [f64; F] {
        let mut c = [0.0; F];
        for i in 1..F {
            c[i] = self.w[i] * x[i];
        }
        c
    }

    /// Learns one close's matured examples (in a fixed order), then lets one close of forgetting
    /// pass. An empty batch only forgets.
    pub fn learn(&mut self, batch: &[([f64; F], bool)]) {
        let decay = 0.5f64.powf(1.0 / HALF_LIFE_CLOSES);
        if !batch.is_empty() {
            let (w0, h0) = (self.w, self.h.clone());
            // Negative log-posterior of the batch around (w0, h0).
            let objective = |w: &[f64; F]| -> f64 {
                let mut f = 0.0;
                for (x, y) in batch {
                    let z: f64 = w.iter().zip(x).map(|(w, x)| w * x).sum();
                    // −log σ(z) = ln(1 + e^−z), −log(1 − σ(z)) = ln(1 + e^z), computed stably.
                    let s = if *y { -z } else { z };
                    f += if s > 0.0 { s + (-s).exp().ln_1p() } else { s.exp().ln_1p() };
                }
                let d: Vec<f64> = w.iter().zip(&w0).map(|(a, b)| a - b).collect();
                for i in 0..F {
                    for j in 0..F {
                        f += 0.5 * d[i] * h0[i * F + j] * d[j];
                    }
                }
                f
            };
            let mut w = w0;
            let mut fw = objective(&w);
            let mut hess = h0.clone();
            for _ in 0..20 {
                let mut g = [0.0; F];
                hess.clone_from(&h0);
                for i in 0..F {
                    for j in 0..F {
                        g[i] += h0[i * F + j] * (w[j] - w0[j]);
                    }
                }
                for (x, y) in batch {
                    let p = self.predict_with(&w, x);
                    let e = p - f64::from(u8::from(*y));
                    let v = p * (1.0 - p);
                    for i in 0..F {
                        g[i] += e * x[i];
                        for j in 0..=i {
                            hess[i * F + j] += v * x[i] * x[j];
                        }
                    }
                }
                for i in 0..F {
                    for j in 0..i {
                        hess[j * F + i] = hess[i * F + j];
                    }
                }
                let Some(step) = solve(&hess, &g) else { break };
                let mut t = 1.0;
                let mut moved = false;
                for _ in 0..30 {
                    let cand: [f64; F] = std::array::from_fn(|i| w[i] - t * step[i]);
                    let fc = objective(&cand);
                    if fc <= fw {
                        moved = fw - fc > 1e-12 * fw.abs().max(1.0);
                        (w, fw) = (cand, fc);
                        break;
                    }
                    t *= 0.5;
                }
                if !moved {
                    break;
                }
            }
            // The posterior's precision: the prior's plus the batch's Hessian at the new weights.
            hess.clone_from(&h0);
            for (x, _) in batch {
                let p = self.predict_with(&w, x);
                let v = p * (1.0 - p);
                for i in 0..F {
                    for j in 0..F {
                        hess[i * F + j] += v * x[i] * x[j];
                    }
                }
            }
            self.w = w;
            self.h = hess;
            self.examples += batch.len() as u64;
            self.batches += 1;
        }
        // Forgetting, never below the prior's precision on the diagonal.
        for i in 0..F {
            for j in 0..F {
                self.h[i * F + j] *= decay;
            }
            self.h[i * F + i] = self.h[i * F + i].max(PRIOR_PRECISION);
        }
    }

    fn predict_with(&self, w: &[f64; F], x: &[f64; F]) -> f64 {
        sigmoid(w.iter().zip(x).map(|(w, x)| w * x).sum())
    }
}

/// Solves `a · s = g` for a symmetric positive definite `a` (Cholesky); `None` if it is not.
fn solve(a: &[f64], g: &[f64; F]) -> Option<[f64; F]> {
    let mut l = vec![0.0; F * F];
    for i in 0..F {
        for j in 0..=i {
            let mut s = a[i * F + j];
            for k in 0..j {
                s -= l[i * F + k] * l[j * F + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * F + i] = s.sqrt();
            } else {
                l[i * F + j] = s / l[j * F + j];
            }
        }
    }
    let mut y = [0.0; F];
    for i in 0..F {
        let mut s = g[i];
        for k in 0..i {
            s -= l[i * F + k] * y[k];
        }
        y[i] = s / l[i * F + i];
    }
    let mut x = [0.0; F];
    for i in (0..F).rev() {
        let mut s = y[i];
        for k in i + 1..F {
            s -= l[k * F + i] * x[k];
        }
        x[i] = s / l[i * F + i];
    }
    Some(x)
}

/// Days without activity after a close that make its prediction's label *churned*.
pub const HORIZON_DAYS: i64 = 30;
/// Closes between two MBG/NBD fits.
pub const FIT_EVERY: u32 = 7;
/// Users whose patterns a fit uses: the ones with the smallest [`sample_key`] of their id (a
/// bottom-k sample: the same users every fit, as long as none with a smaller key arrives, and
/// mergeable over partitions). Four parameters need nothing like every user.
pub const FIT_USERS: usize = 5_000;
/// Every this many fits (and at the first) the fit also starts from the spread starts, not only
/// from the previous fit: the likelihood can have several maxima.
pub const SPREAD_EVERY_FITS: u64 = 13;
/// BFGS iterations each spread start gets before the best of them is continued.
pub const PROBE_ITERATIONS: u32 = 10;
/// Days between two scorings of an active user: each close scores the active users whose
/// [`due_day`] is today, a seventh of them (an `at_risk` alert can come up to 6 days after the
/// score crossed the threshold).
pub const SCORE_EVERY: i64 = 7;
/// Examples kept per close for learning (see the module's documentation).
pub const LEARN_PER_CLOSE: usize = 256;
/// The default `at_risk` threshold on `churn_risk`.
pub const DEFAULT_THRESHOLD: f64 = 0.8;
/// The first byte of an encoded [`ChurnModel`].
const MODEL_VERSION: u8 = 2;

/// An encoded model that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("churn model: {0}")]
pub struct DecodeError(String);

/// The last MBG/NBD fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// `(r, alpha, a, b)`.
    pub params: [f64; 4],
    /// The close it was fitted at.
    pub day: i64,
    /// Its log-likelihood.
    pub log_likelihood: f64,
    /// Likelihood evaluations it took.
    pub evaluations: u32,
    /// Users (patterns) it was fitted on.
    pub users: u64,
    /// Where the next refit starts its inverse-Hessian estimate.
    pub inverse_hessian: [[f64; 4]; 4],
}

impl FitState {
    /// The parameters.
    pub fn params(&self) -> Params {
        let [r, alpha, a, b] = self.params;
        Params { r, alpha, a, b }
    }
}

/// A user's score at a close: the inputs, P(alive) and `churn_risk` ([`ChurnModel::score`]).
pub type Score = ([f64; F], f64, f64);

/// One segmented user at a segmentation: scores, segment and the model's view of them then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The user.
    pub user: u32,
    /// `[R, F, M, segment]` (the segment an index into [`SEGMENTS`]).
    pub scores: [u8; 4],
    /// The user had churned (no activity for the churn period).
    pub churned: bool,
    /// `churn_risk` and P(alive) at the segmentation; `None` before the first MBG/NBD fit.
    pub risk: Option<(f64, f64)>,
    /// The up to three inputs that contributed most to `churn_risk`, as indexes into
    /// [`FEATURES`] (0, the bias, for none).
    pub reasons: [u8; 3],
}

impl Assignment {
    /// What an offer to this user is worth, for ranking targets: the user's engagement,
    /// `(F + M) / 10` (0.2–1), times the risk of losing them, `churn_risk`.
    pub fn priority(&self) -> f64 {
        let value = f64::from(self.scores[1] + self.scores[2]) / 10.0;
        value * self.risk.map_or(0.0, |(risk, _)| risk)
    }
}

/// Users are segmented when their last activity is within this many days of the close
/// (`recency_days < 365`): everyone ever seen would make a 24-year replay mostly "Lost".
pub const SEGMENT_WITHIN_DAYS: i64 = 365;

/// A month end's RFM segmentation of the users active within [`SEGMENT_WITHIN_DAYS`] (see [`crate::analytics::segments`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segmentation {
    /// The close (a month's last day).
    pub day: i64,
    /// Users segmented.
    pub users: u64,
    /// Of them, the users the breakpoints are taken over: those with events in the 90 days.
    pub breakpoint_users: u64,
    /// The quintile breakpoints.
    pub breakpoints: Breakpoints,
    /// Per segment (in [`SEGMENTS`] order): users, and their mean recency (days), events and
    /// active days in 90 days.
    pub sizes: Vec<(u64, f64, f64, f64)>,
    /// Users that moved from one segment to another since the previous segmentation:
    /// `(from, to, users)`, from ≠ to, by `(from, to)`. Users new since are not counted.
    pub moves: Vec<(u8, u8, u64)>,
    /// Users segmented now but not at the previous segmentation (new, or back after a year).
    pub entered: u64,
    /// Users segmented at the previous segmentation but not now (inactive for a year).
    pub left: u64,
}

/// One close's examples waiting for their label: the close, and (user, inputs) pairs by user.
type Waiting = (i64, Vec<(u32, [f64; F])>);

/// The churn model as the processor runs it (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    /// `churn_risk` at or above which an active user gets an `at_risk` alert.
    pub threshold: f64,
    /// The last fit.
    pub fit: Option<FitState>,
    /// Closes since that fit.
    pub since_fit: u32,
    /// Fits made.
    pub fits: u64,
    /// The online logistic regression.
    pub learner: Learner,
    waiting: VecDeque<Waiting>,
    /// Users alerted in their current activity episode, with the number of `churned` alerts they
    /// had then (the episode), ascending.
    alerted: Vec<(u32, u32)>,
    /// The fits' users: the [`FIT_USERS`] smallest `(sample_key(user, 0), user)` of the users
    /// active at any close so far, ascending (every user is active at the closes of their first
    /// days, so this is the bottom of all users).
    fit_sample: Vec<(u64, u32)>,
    /// The last segmentation (at a month's last close).
    pub segmentation: Option<Segmentation>,
    /// The segmented users at the last segmentation, by user.
    assignments: Vec<Assignment>,
    /// Complete closes run.
    pub closes: u64,
    /// The last of them.
    pub last_day: Option<i64>,
    /// Users scored at the last close.
    pub scored: u64,
    /// `at_risk` alerts decided.
    pub alerts: u64,
}

impl ChurnModel {
    /// A model that has learned nothing, alerting at `threshold`.
    pub fn new(threshold: f64) -> ChurnModel {
        ChurnModel {
            threshold,
            fit: None,
            since_fit: 0,
            fits: 0,
            learner: Learner::new(),
            waiting: VecDeque::new(),
            alerted: Vec::new(),
            fit_sample: Vec::new(),
            segmentation: None,
            assignments: Vec::new(),
            closes: 0,
            last_day: None,
            scored: 0,
            alerts: 0,
        }
    }

    /// The state as bytes (a version byte, then postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![MODEL_VERSION];
        v.extend(postcard::to_allocvec(self).expect("the model serialises"));
        v
    }

    /// The state [`ChurnModel::to_bytes`] wrote.
    ///
    /// # Errors
    /// Bytes of another version, or damaged.
    pub fn from_bytes(bytes: &[u8]) -> Result<ChurnModel, DecodeError> {
        match bytes.split_first() {
            Some((&MODEL_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError(e.to_string()))
            }
            Some((v, _)) => Err(DecodeError(format!("version {v}, this build reads {MODEL_VERSION}"))),
            None => Err(DecodeError("empty".into())),
        }
    }

    /// Examples waiting for their labels.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(|(_, v)| v.len()).sum()
    }

    /// The model as JSON (`GET /models/churn`, `eval churn`'s `churn_model`): its settings,
    /// coefficients, the last MBG/NBD fit and what it has done.
    pub fn report(&self) -> serde_json::Value {
        let fit = self.fit.map(|f| {
            serde_json::json!({
                "r": f.params[0], "alpha": f.params[1], "a": f.params[2], "b": f.params[3],
                "day": day_label(f.day), "users": f.users, "log_likelihood": f.log_likelihood,
                "evaluations": f.evaluations,
            })
        });
        let weights: serde_json::Map<String, serde_json::Value> = FEATURES
            .iter()
            .zip(self.learner.w)
            .map(|(n, w)| ((*n).to_string(), serde_json::json!(w)))
            .collect();
        serde_json::json!({
            "threshold": self.threshold,
            "features": FEATURES,
            "weights": weights,
            "learning": {
                "examples": self.learner.examples,
                "batches": self.learner.batches,
                "waiting": self.waiting(),
                "prior_precision": PRIOR_PRECISION,
                "half_life_closes": HALF_LIFE_CLOSES,
                "examples_per_close": LEARN_PER_CLOSE,
                "horizon_days": HORIZON_DAYS,
            },
            "mbgnbd": fit,
            "fits": self.fits,
            "fit_every_closes": FIT_EVERY,
            "fit_users": FIT_USERS,
            "score_every_days": SCORE_EVERY,
            "closes": self.closes,
            "last_close": self.last_day.map(day_label),
            "scored_last_close": self.scored,
            "at_risk_alerts": self.alerts,
        })
    }

    /// A user's pattern at the close of `day`.
    fn pattern(st: &UserState, day: i64) -> Option<Pattern> {
        let a = &st.activity;
        Pattern::of(a.active_days, day_of(a.first_seen), day_of(a.last), day)
    }

    /// The histogram of the fit's users' patterns at the close of `day`.
    pub fn fit_histogram(&self, users: &FxHashMap<u32, UserState>, day: i64) -> Histogram {
        Histogram::from_patterns(
            self.fit_sample
                .iter()
                .filter_map(|(_, u)| users.get(u).and_then(|st| ChurnModel::pattern(st, day))),
        )
    }

    /// A user's feature row and pattern at a close.
    pub fn inputs_of(st: &UserState, user: u32, c: &ScoringClose<'_>) -> Option<(FeatureRow, Pattern)> {
        let pattern = ChurnModel::pattern(st, c.day)?;
        Some((st.activity.row(user, c.as_of, st.churn.churned, c.genres.len()), pattern))
    }

    /// Scores one user at a close: the inputs, P(alive) and `churn_risk`.
    pub fn score(&self, row: &FeatureRow, pattern: Pattern) -> Option<Score> {
        let fit = self.fit?;
        let alive = p_alive(Variant::Mbg, fit.params(), pattern);
        let x = inputs(row, alive);
        Some((x, alive, self.learner.predict(&x)))
    }
}

/// The fit after `previous` (the `fits`-th) on `h` at the close of `day`: a [`refit`] from the
/// previous fit and its inverse Hessian, or, at the first fit and every
/// [`SPREAD_EVERY_FITS`]-th, from the previous fit and the spread starts. `None` when the
/// histogram has no maximum (no user with a repeat day yet).
pub fn next_fit(
    v: Variant,
    previous: Option<FitState>,
    fits: u64,
    h: &Histogram,
    day: i64,
) -> Option<FitState> {
    let warm = previous.and_then(|f| refit(v, h, &[f.params()], Some(f.inverse_hessian)));
    let f = match warm {
        Some(w) if !fits.is_multiple_of(SPREAD_EVERY_FITS) => w,
        warm => {
            // The spread starts, each for a few iterations; the best of them goes on to
            // convergence, and wins if it beats the warm refit.
            let spread = probe(v, h, &SPREAD, PROBE_ITERATIONS)
                .and_then(|p| refit(v, h, &[p.params], Some(p.inverse_hessian)));
            match (warm, spread) {
                (Some(w), Some(s)) => {
                    if s.log_likelihood > w.log_likelihood {
                        s
                    } else {
                        w
                    }
                }
                (w, s) => w.or(s)?,
            }
        }
    };
    let p = f.params;
    Some(FitState {
        params: [p.r, p.alpha, p.a, p.b],
        day,
        log_likelihood: f.log_likelihood,
        evaluations: f.evaluations,
        users: h.users(),
        inverse_hessian: f.inverse_hessian,
    })
}

/// Whether `user` is scored at the close of `day` (once every [`SCORE_EVERY`] days, on a
/// weekday of its own).
pub fn due_day(user: u32, day: i64) -> bool {
    (day + (sample_key(user, 0) % SCORE_EVERY as u64) as i64).rem_euclid(SCORE_EVERY) == 0
}

/// A fixed pseudo-random order of (user, day): which examples a close keeps.
fn sample_key(user: u32, day: i64) -> u64 {
    let mut z = ((day as u64) << 32 ^ u64::from(user)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ChurnScorer for ChurnModel {
    fn close(&mut self, c: &ScoringClose<'_>) -> Vec<AtRiskAlert> {
        self.close_day(c)
    }

    fn encode(&self) -> Vec<u8> {
        self.to_bytes()
    }

    fn segment(&self, user: u32) -> Option<[u8; 4]> {
        self.segment_of(user)
    }

    fn gauges(&self) -> ScorerGauges {
        ScorerGauges {
            segment_users: self
                .segmentation
                .as_ref()
                .map(|s| SEGMENTS.iter().zip(&s.sizes).map(|(&name, size)| (name, size.0)).collect())
                .unwrap_or_default(),
            at_risk_users: self.alerted.len() as u64,
            at_risk_alerts: self.alerts,
        }
    }
}

impl ChurnModel {
    /// A user's `[R, F, M, segment]` at the last segmentation.
    pub fn segment_of(&self, user: u32) -> Option<[u8; 4]> {
        self.assignment(user).map(|a| a.scores)
    }

    /// A user's [`Assignment`] at the last segmentation.
    pub fn assignment(&self, user: u32) -> Option<&Assignment> {
        self.assignments.binary_search_by_key(&user, |a| a.user).ok().map(|i| &self.assignments[i])
    }

    /// The segmented users (optionally of one segment, an index into [`SEGMENTS`]) with
    /// P(alive) ≥ `min_p_alive`, by [`Assignment::priority`] (highest first, then by user), at
    /// most `limit`.
    pub fn targets(&self, segment: Option<usize>, min_p_alive: f64, limit: usize) -> Vec<&Assignment> {
        let mut v: Vec<&Assignment> = self
            .assignments
            .iter()
            .filter(|a| segment.is_none_or(|s| usize::from(a.scores[3]) == s))
            .filter(|a| a.risk.is_some_and(|(_, alive)| alive >= min_p_alive))
            .collect();
        v.sort_by(|a, b| b.priority().total_cmp(&a.priority()).then(a.user.cmp(&b.user)));
        v.truncate(limit);
        v
    }

    /// Segments the users active within [`SEGMENT_WITHIN_DAYS`] at the close `c` (a month's last
    /// day): breakpoints, assignments, sizes with mean inputs, and the moves since the previous
    /// segmentation.
    fn segment_all(&mut self, c: &ScoringClose<'_>) {
        let mut all: Vec<(u32, bool, Rfm, Option<Score>)> = c
            .users
            .iter()
            .filter(|(_, st)| day_of(st.activity.last) > c.day - SEGMENT_WITHIN_DAYS)
            .map(|(&u, st)| {
                let (row, pattern) = match ChurnModel::inputs_of(st, u, c) {
                    Some((row, p)) => (row, Some(p)),
                    None => (st.activity.row(u, c.as_of, st.churn.churned, c.genres.len()), None),
                };
                let rfm = Rfm {
                    recency_days: row.recency_days,
                    events_90d: row.events_90d,
                    active_days_90d: row.active_days_90d,
                };
                (u, st.churn.churned, rfm, pattern.and_then(|p| self.score(&row, p)))
            })
            .collect();
        all.sort_unstable_by_key(|e| e.0);
        // Quintiles over the users with something in the 90 days F and M count over: the rest
        // would tie at 0 and leave F and M no quintiles to speak of. They score R 1, F 1, M 1.
        let rfm: Vec<Rfm> = all.iter().map(|e| e.2).filter(|r| r.events_90d > 0).collect();
        let Some(breakpoints) = Breakpoints::of(&rfm) else {
            // Nobody active within the 90 days: no segments until somebody is.
            (self.segmentation, self.assignments) = (None, Vec::new());
            return;
        };
        let mut stayed = 0u64;
        let mut sizes = vec![(0u64, 0.0, 0.0, 0.0); SEGMENTS.len()];
        let mut moves: std::collections::BTreeMap<(u8, u8), u64> = std::collections::BTreeMap::new();
        let assignments: Vec<Assignment> = all
            .iter()
            .map(|&(u, churned, r, ref score)| {
                let [rs, fs, ms] = breakpoints.scores(&r);
                let seg = segment([rs, fs, ms]);
                let e = &mut sizes[seg];
                e.0 += 1;
                e.1 += r.recency_days;
                e.2 += r.events_90d as f64;
                e.3 += r.active_days_90d as f64;
                if let Some(prev) = self.segment_of(u) {
                    stayed += 1;
                    if usize::from(prev[3]) != seg {
                        *moves.entry((prev[3], seg as u8)).or_default() += 1;
                    }
                }
                let mut reasons = [0u8; 3];
                if let Some((x, _, _)) = score {
                    for (slot, i) in reasons.iter_mut().zip(self.top_reasons(x)) {
                        *slot = i as u8;
                    }
                }
                Assignment {
                    user: u,
                    scores: [rs, fs, ms, seg as u8],
                    churned,
                    risk: score.map(|(_, alive, risk)| (risk, alive)),
                    reasons,
                }
            })
            .collect();
        for e in &mut sizes {
            if e.0 > 0 {
                let n = e.0 as f64;
                (e.1, e.2, e.3) = (e.1 / n, e.2 / n, e.3 / n);
            }
        }
        self.segmentation = Some(Segmentation {
            day: c.day,
            users: all.len() as u64,
            breakpoint_users: rfm.len() as u64,
            breakpoints,
            sizes,
            moves: moves.into_iter().map(|((f, t), n)| (f, t, n)).collect(),
            entered: all.len() as u64 - stayed,
            left: self.assignments.len() as u64 - stayed,
        });
        self.assignments = assignments;
    }

    /// The indexes (into [`FEATURES`]) of the up to three inputs of `x` that raise `churn_risk`
    /// most, largest first (ties: the earlier input).
    fn top_reasons(&self, x: &[f64; F]) -> Vec<usize> {
        let contributions = self.learner.contributions(x);
        let mut order: Vec<usize> = (1..F).collect();
        order.sort_by(|&i, &j| contributions[j].total_cmp(&contributions[i]).then(i.cmp(&j)));
        order.into_iter().filter(|&i| contributions[i] > 0.0).take(3).collect()
    }

    /// The last segmentation as JSON (`GET /segments`).
    pub fn segments_report(&self) -> Option<serde_json::Value> {
        let s = self.segmentation.as_ref()?;
        let b = &s.breakpoints;
        let segments: Vec<serde_json::Value> = SEGMENTS
            .iter()
            .zip(&s.sizes)
            .enumerate()
            .map(|(i, (name, &(n, r, f, m)))| {
                let moved_in: u64 =
                    s.moves.iter().filter(|&&(_, t, _)| usize::from(t) == i).map(|m| m.2).sum();
                let moved_out: u64 =
                    s.moves.iter().filter(|&&(f, _, _)| usize::from(f) == i).map(|m| m.2).sum();
                serde_json::json!({
                    "segment": name, "users": n, "share": n as f64 / s.users.max(1) as f64,
                    "mean_recency_days": r, "mean_events_90d": f, "mean_active_days_90d": m,
                    "moved_in": moved_in, "moved_out": moved_out,
                })
            })
            .collect();
        Some(serde_json::json!({
            "as_of": day_label(s.day),
            "users": s.users,
            "segmented": format!("users active in the {SEGMENT_WITHIN_DAYS} days up to the close"),
            "breakpoint_users": s.breakpoint_users,
            "breakpoints_over": "users with events in the 90 days up to the close; the others score R 1, F 1, M 1 (Lost)",
            "entered": s.entered,
            "left": s.left,
            "breakpoints": {"recency_days": b.r, "events_90d": b.f, "active_days_90d": b.m, "quantiles": QUANTILES},
            "segments": segments,
            "moves": s.moves.iter().map(|&(f, t, n)| serde_json::json!({"from": segments::name(f), "to": segments::name(t), "users": n})).collect::<Vec<_>>(),
        }))
    }

    /// One complete close (see the module's documentation): learns the matured examples, refits
    /// when due, scores the due active users and returns the `at_risk` alerts, by user.
    pub fn close_day(&mut self, c: &ScoringClose<'_>) -> Vec<AtRiskAlert> {
        let day = c.day;
        // 1. The examples of the close 30 days ago have their labels now: churned if the user's
        // last activity is on or before that close's day. (Older ones, left by a gap in the
        // closes, cannot be labelled any more and are dropped.)
        let mut batch = Vec::new();
        while let Some((d, _)) = self.waiting.front() {
            if d + HORIZON_DAYS > day {
                break;
            }
            let (d, examples) = self.waiting.pop_front().expect("a front");
            if d + HORIZON_DAYS == day {
                for (u, x) in examples {
                    let last = c.users.get(&u).map_or(i64::MIN, |st| day_of(st.activity.last));
                    batch.push((x, last <= d));
                }
            }
        }
        self.learner.learn(&batch);
        // 2. MBG/NBD, every FIT_EVERY closes, over a sample of the users' patterns.
        for u in c.active() {
            let k = (sample_key(u, 0), u);
            let full = self.fit_sample.len() >= FIT_USERS;
            if full && self.fit_sample.last().is_some_and(|&last| k >= last) {
                continue;
            }
            if let Err(i) = self.fit_sample.binary_search(&k) {
                self.fit_sample.insert(i, k);
                self.fit_sample.truncate(FIT_USERS);
            }
        }
        if self.fit.is_none() || self.since_fit + 1 >= FIT_EVERY {
            let h = self.fit_histogram(c.users, day);
            if let Some(f) = next_fit(Variant::Mbg, self.fit, self.fits, &h, day) {
                self.fit = Some(f);
                self.fits += 1;
                self.since_fit = 0;
            } else {
                self.since_fit += 1;
            }
        } else {
            self.since_fit += 1;
        }
        self.closes += 1;
        self.last_day = Some(day);
        // 3. At a month's last close, the year's users are segmented (alerts below name it).
        if is_month_end(day) {
            self.segment_all(c);
        }
        // 4. Every active user: scored, maybe kept as an example, maybe alerted.
        let mut alerted = std::mem::take(&mut self.alerted);
        // Episodes end at churn: only users still in the episode they were alerted in stay.
        alerted
            .retain(|&(u, e)| c.users.get(&u).is_some_and(|st| st.churn.episodes == e && !st.churn.churned));
        let mut keep: Vec<(u64, u32, [f64; F])> = Vec::new();
        let mut alerts = Vec::new();
        self.scored = 0;
        if self.fit.is_some() {
            for u in c.active() {
                if !due_day(u, day) {
                    continue;
                }
                let Some(st) = c.users.get(&u) else { continue };
                let Some((row, pattern)) = ChurnModel::inputs_of(st, u, c) else { continue };
                let Some((x, alive, risk)) = self.score(&row, pattern) else { continue };
                self.scored += 1;
                keep.push((sample_key(u, day), u, x));
                if risk >= self.threshold && alerted.binary_search_by_key(&u, |&(a, _)| a).is_err() {
                    alerts.push((st.churn.episodes, self.alert(c, st, u, &x, alive, risk)));
                }
            }
        }
        alerts.sort_by_key(|(_, a)| a.user_id);
        for (e, a) in &alerts {
            if let Err(i) = alerted.binary_search_by_key(&a.user_id, |&(a, _)| a) {
                alerted.insert(i, (a.user_id, *e));
            }
        }
        self.alerted = alerted;
        let alerts: Vec<AtRiskAlert> = alerts.into_iter().map(|(_, a)| a).collect();
        self.alerts += alerts.len() as u64;
        if keep.len() > LEARN_PER_CLOSE {
            keep.select_nth_unstable_by_key(LEARN_PER_CLOSE, |&(k, u, _)| (k, u));
            keep.truncate(LEARN_PER_CLOSE);
        }
        keep.sort_unstable_by_key(|&(_, u, _)| u);
        if !keep.is_empty() {
            self.waiting.push_back((day, keep.into_iter().map(|(_, u, x)| (u, x)).collect()));
        }
        alerts
    }

    fn alert(
        &self,
        c: &ScoringClose<'_>,
        st: &UserState,
        u: u32,
        x: &[f64; F],
        alive: f64,
        risk: f64,
    ) -> AtRiskAlert {
        let contributions = self.learner.contributions(x);
        AtRiskAlert {
            v: AT_RISK_VERSION,
            alert_id: format!("{u}-{}-at_risk", day_label(c.day)),
            user_id: u,
            status: "at_risk".into(),
            at: c.as_of,
            last_activity: st.activity.last,
            churn_risk: risk,
            threshold: self.threshold,
            p_alive: alive,
            segment: self.segment_of(u).map(|s| segments::name(s[3]).to_string()),
            reasons: self
                .top_reasons(x)
                .into_iter()
                .map(|i| RiskReason {
                    feature: FEATURES[i].into(),
                    value: x[i],
                    contribution: contributions[i],
                })
                .collect(),
            features: st.features(c.as_of, c.genres),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed a separable rule in batches, the model learns it; the prior is `1 − P(alive)`.
    #[test]
    fn learns_a_rule_from_batches_and_starts_at_the_prior() {
        let m = Learner::new();
        let mut x = [0.0; F];
        x[0] = 1.0;
        x[LOGIT_P] = (0.8f64 / 0.2).ln();
        assert!((m.predict(&x) - 0.8).abs() < 1e-12);
        let mut m = Learner::new();
        let ex = |k: u32| -> ([f64; F], bool) {
            let v = f64::from(k % 100) / 100.0;
            let mut x = [0.0; F];
            x[0] = 1.0;
            x[1] = v;
            (x, v > 0.6)
        };
        for b in 0..50u32 {
            let batch: Vec<_> = (0..200).map(|k| ex(b * 200 + k * 37)).collect();
            m.learn(&batch);
        }
        assert_eq!((m.examples, m.batches), (10_000, 50));
        let at = |v: f64| {
            let mut x = [0.0; F];
            x[0] = 1.0;
            x[1] = v;
            m.predict(&x)
        };
        assert!(at(0.9) > 0.9 && at(0.2) < 0.1, "{:?}", m.w);
        // The same batches give the same bits.
        let mut again = Learner::new();
        for b in 0..50u32 {
            let batch: Vec<_> = (0..200).map(|k| ex(b * 200 + k * 37)).collect();
            again.learn(&batch);
        }
        assert_eq!(again, m);
    }

    /// The checkpointed bytes give the model back; other bytes are an error, never a panic or a
    /// fresh model.
    #[test]
    fn model_bytes_round_trip_and_damage_is_an_error() {
        let mut m = ChurnModel::new(0.7);
        let mut x = [0.0; F];
        x[0] = 1.0;
        m.learner.learn(&[(x, true), (x, false)]);
        m.waiting.push_back((10, vec![(3, x)]));
        m.alerted.push((3, 0));
        let bytes = m.to_bytes();
        assert_eq!(ChurnModel::from_bytes(&bytes).unwrap(), m);
        assert!(ChurnModel::from_bytes(&[]).is_err());
        assert!(ChurnModel::from_bytes(&bytes[..bytes.len() / 2]).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(ChurnModel::from_bytes(&other).unwrap_err().to_string().contains("version 9"));
    }

    /// Users are due once a week each, spread over the weekdays.
    #[test]
    fn each_user_is_due_one_day_in_seven() {
        for u in 0..200u32 {
            assert_eq!((100..107).filter(|&d| due_day(u, d)).count(), 1, "user {u}");
        }
        let monday: usize = (0..7_000u32).filter(|&u| due_day(u, 7)).count();
        assert!((800..1_200).contains(&monday), "{monday} of 7000 due on one day");
    }

    /// One batch learned with a flat prior reaches the batch's maximum-likelihood fit: the
    /// gradient of the log-likelihood there is (close to) zero.
    #[test]
    fn a_batch_update_is_a_newton_fit() {
        let mut m = Learner::new();
        let batch: Vec<([f64; F], bool)> = (0..2_000u32)
            .map(|k| {
                let v = f64::from(k.wrapping_mul(2_654_435_761) % 1_000) / 1_000.0;
                let mut x = [0.0; F];
                x[0] = 1.0;
                x[2] = v;
                (x, (k.wrapping_mul(40_503) % 100) < (20 + (v * 60.0) as u32))
            })
            .collect();
        m.learn(&batch);
        let w0 = Learner::new().w;
        let mut g = [0.0; F];
        for (x, y) in &batch {
            let e = m.predict(x) - f64::from(u8::from(*y));
            for i in 0..F {
                g[i] += e * x[i];
            }
        }
        // Stationarity of the penalised objective: g + prior · (w − w0) = 0.
        for i in 0..F {
            let total = g[i] + PRIOR_PRECISION * (m.w[i] - w0[i]);
            assert!(total.abs() < 1e-6, "{i}: {total}");
        }
    }
}
