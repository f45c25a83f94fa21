//! RFM segments for marketing: each user's recency, frequency and "monetary" scores 1–5 by
//! quintile, and the usual named segments.
//!
//! MovieLens has no money, so M is engagement depth: **R** = days since the last activity
//! (`recency_days`), **F** = events in the trailing 90 days (`events_90d`), **M** = distinct
//! active days in the trailing 90 days (`active_days_90d`).
//!
//! **Breakpoints** are the 20/40/60/80 % quantiles of each value over the users given to
//! [`Breakpoints::of`] (the churn model gives it the users with events in the 90 days), with
//! the "lower" rule (the value at sorted index `⌊(n − 1) · p⌋`, numpy's and pandas'
//! `interpolation="lower"`), so every breakpoint is a value some user has and a pandas
//! computation on the same rows gives the same numbers exactly. **Scores:** F and M are
//! `1 + #{breakpoints below the value}` (more is better); R is `1 + #{breakpoints above the
//! value}` (more recent is better). Ties stay together: where most users have 0 events in 90
//! days, the low breakpoints are all 0 and those users all score 1.
//!
//! **Segments** ([`SEGMENTS`]) from R and `FM = ⌊(F + M) / 2⌋`:
//!
//! | segment | R | FM |
//! |---|---|---|
//! | Champions | 5 | 4–5 |
//! | Loyal | 3–4 | 4–5 |
//! | Potential Loyalist | 4–5 | 2–3 |
//! | New | 5 | 1 |
//! | Promising | 4 | 1 |
//! | Need Attention | 3 | 3 |
//! | About to Sleep | 3 | 1–2 |
//! | At Risk | 1–2 | 3–4 |
//! | Can't Lose Them | 1–2 | 5 |
//! | Hibernating | 2 | 1–2 |
//! | Lost | 1 | 1–2 |
//!
//! Every (R, FM) pair falls in exactly one segment.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses nothing of the crate.

/// The segments, in the order of their index.
pub const SEGMENTS: [&str; 11] = [
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
];

/// The name of the segment with index `i` (as [`segment`] returns and scores store it).
pub fn name(i: u8) -> &'static str {
    SEGMENTS[usize::from(i)]
}

/// The index of the segment called `name`, compared without case or punctuation
/// (`cant-lose-them` is "Can't Lose Them").
pub fn by_name(name: &str) -> Option<u8> {
    let squash =
        |n: &str| n.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    SEGMENTS.iter().position(|n| squash(n) == squash(name)).map(|i| i as u8)
}

/// The quantiles the breakpoints are taken at.
pub const QUANTILES: [f64; 4] = [0.2, 0.4, 0.6, 0.8];

/// One user's RFM inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rfm {
    /// Days since the last activity.
    pub recency_days: f64,
    /// Events in the trailing 90 days.
    pub events_90d: u64,
    /// Distinct active days in the trailing 90 days.
    pub active_days_90d: u64,
}

/// The breakpoints of R, F and M.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Breakpoints {
    /// Recency (days).
    pub r: [f64; 4],
    /// Events in 90 days.
    pub f: [u64; 4],
    /// Active days in 90 days.
    pub m: [u64; 4],
}

/// The values at sorted index `⌊(n − 1) · p⌋` of `v` (not empty) for each of [`QUANTILES`], by
/// selection (reorders `v`; no full sort).
fn lower<T: Copy>(v: &mut [T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> [T; 4] {
    let n = v.len();
    let at = QUANTILES.map(|p| (((n - 1) as f64 * p).floor() as usize).min(n - 1));
    let mut from = 0;
    let mut out = [v[0]; 4];
    for (k, &i) in at.iter().enumerate() {
        // Everything before `from` is ≤ what follows, so the i-th smallest is in v[from..].
        if i >= from {
            v[from..].select_nth_unstable_by(i - from, &cmp);
            from = i + 1;
        }
        out[k] = v[i];
    }
    out
}

impl Breakpoints {
    /// The breakpoints over `users`; `None` without users.
    pub fn of(users: &[Rfm]) -> Option<Breakpoints> {
        if users.is_empty() {
            return None;
        }
        let mut r: Vec<f64> = users.iter().map(|u| u.recency_days).collect();
        let mut f: Vec<u64> = users.iter().map(|u| u.events_90d).collect();
        let mut m: Vec<u64> = users.iter().map(|u| u.active_days_90d).collect();
        Some(Breakpoints {
            r: lower(&mut r, f64::total_cmp),
            f: lower(&mut f, Ord::cmp),
            m: lower(&mut m, Ord::cmp),
        })
    }

    /// A user's `[R, F, M]` scores, each 1–5.
    pub fn scores(&self, u: &Rfm) -> [u8; 3] {
        let count = |n: usize| 1 + n as u8;
        [
            count(self.r.iter().filter(|&&b| u.recency_days < b).count()),
            count(self.f.iter().filter(|&&b| u.events_90d > b).count()),
            count(self.m.iter().filter(|&&b| u.active_days_90d > b).count()),
        ]
    }
}

/// The segment (an index into [`SEGMENTS`]) of `[R, F, M]` scores.
pub fn segment(scores: [u8; 3]) -> usize {
    let [r, f, m] = scores;
    let fm = (f + m) / 2;
    match (r.clamp(1, 5), fm.clamp(1, 5)) {
        (5, 4 | 5) => 0,
        (3 | 4, 4 | 5) => 1,
        (4 | 5, 2 | 3) => 2,
        (5, _) => 3,
        (4, _) => 4,
        (3, 3) => 5,
        (3, _) => 6,
        (_, 5) => 8,
        (_, 3 | 4) => 7,
        (2, _) => 9,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_score_pair_has_exactly_the_documented_segment() {
        let expect = |r: u8, fm: u8| -> &str {
            match (r, fm) {
                (5, 4 | 5) => "Champions",
                (3 | 4, 4 | 5) => "Loyal",
                (4 | 5, 2 | 3) => "Potential Loyalist",
                (5, 1) => "New",
                (4, 1) => "Promising",
                (3, 3) => "Need Attention",
                (3, 1 | 2) => "About to Sleep",
                (1 | 2, 3 | 4) => "At Risk",
                (1 | 2, 5) => "Can't Lose Them",
                (2, 1 | 2) => "Hibernating",
                (1, 1 | 2) => "Lost",
                _ => unreachable!(),
            }
        };
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    let s = SEGMENTS[segment([r, f, m])];
                    assert_eq!(s, expect(r, (f + m) / 2), "R{r} F{f} M{m}");
                }
            }
        }
    }

    #[test]
    fn breakpoints_are_lower_quantiles_and_scores_follow_them() {
        // Ten users (in shuffled order): recency 1..=10 days, events 0,0,0,0,0,1,2,3,4,5, active
        // days the same.
        let users: Vec<Rfm> = (0..10u64)
            .map(|i| Rfm {
                recency_days: (i + 1) as f64,
                events_90d: i.saturating_sub(4),
                active_days_90d: i.saturating_sub(4),
            })
            .collect();
        let shuffled: Vec<Rfm> = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4].iter().map(|&i| users[i]).collect();
        let b = Breakpoints::of(&shuffled).unwrap();
        // Index ⌊9p⌋: 1, 3, 5, 7.
        assert_eq!(b.r, [2.0, 4.0, 6.0, 8.0]);
        assert_eq!(b.f, [0, 0, 1, 3]);
        let most_recent = b.scores(&users[0]);
        assert_eq!(most_recent, [5, 1, 1]);
        assert_eq!(b.scores(&users[9]), [1, 5, 5]);
        assert_eq!(b.scores(&users[5]), [2, 3, 3], "1 event: above the two zero breakpoints only");
        assert_eq!(SEGMENTS[segment(most_recent)], "New");
        assert_eq!(SEGMENTS[segment(b.scores(&users[9]))], "Can't Lose Them");
        assert!(Breakpoints::of(&[]).is_none());
    }
}
