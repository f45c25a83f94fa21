//! Mergeable summaries of samples: what the statistics are computed from.
//!
//! [`Moments`] `(n, mean, M2)` (Welford's update, Chan et al.'s merge) and [`CoMoments`] of
//! pairs; each can be added to one value at a time and merged with another partition's, so a
//! scale-out over partitions can combine them. The tests on them are in `analytics::stats`.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses nothing of the crate.

use serde::{Deserialize, Serialize};

/// Count, mean and sum of squared deviations of a sample: mergeable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Σ (x − mean)².
    pub m2: f64,
}

impl Moments {
    /// The summary of `xs`.
    #[allow(dead_code)] // the processor adds values one at a time; tests and tools use this
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Moments {
        let mut m = Moments::default();
        for x in xs {
            m.push(x);
        }
        m
    }

    /// Adds one value (Welford).
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Adds another partition's summary (Chan, Golub & LeVeque).
    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.n as f64 * o.n as f64 / n as f64);
        self.n = n;
    }

    /// Sample variance (n − 1 in the denominator); `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.m2 / (self.n - 1) as f64)
    }
}

/// Co-moments of paired values (x, y): mergeable, for Pearson's r.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CoMoments {
    /// Pairs.
    pub n: u64,
    /// Mean of x.
    pub mean_x: f64,
    /// Mean of y.
    pub mean_y: f64,
    /// Σ (x − mean x)².
    pub m2_x: f64,
    /// Σ (y − mean y)².
    pub m2_y: f64,
    /// Σ (x − mean x)(y − mean y).
    pub c_xy: f64,
}

impl CoMoments {
    /// Adds one pair.
    #[inline]
    pub fn push(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
    }

    /// Adds another partition's co-moments.
    #[allow(dead_code)] // for the scale-out over partitions; tested
    pub fn merge(&mut self, o: &CoMoments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = (self.n + o.n) as f64;
        let (na, nb) = (self.n as f64, o.n as f64);
        let (dx, dy) = (o.mean_x - self.mean_x, o.mean_y - self.mean_y);
        self.mean_x += dx * nb / n;
        self.mean_y += dy * nb / n;
        self.m2_x += o.m2_x + dx * dx * na * nb / n;
        self.m2_y += o.m2_y + dy * dy * na * nb / n;
        self.c_xy += o.c_xy + dx * dy * na * nb / n;
        self.n += o.n;
    }
}
