//! The live status the driver shares with the HTTP server.
//!
//! May import: `crate::core`.
//!
//! Times are Unix milliseconds passed in by the caller: this module reads no clock.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::core::processor::PartitionState;

/// Live status shared with the HTTP server (which otherwise reads committed state from sled).
#[derive(Debug, Default)]
pub struct Status {
    /// A checkpoint is loaded or written: `/readyz` answers 200.
    pub ready: AtomicBool,
    /// Checkpoints written by this process.
    pub checkpoints: AtomicU64,
    /// The input positions of the last checkpoint this process wrote.
    pub positions: std::sync::Mutex<Vec<PartitionState>>,
    /// The input's connection to its broker (Kafka mode).
    pub input: InputHealth,
}

/// Whether the input is in contact with its broker, for `/readyz` and the metrics. Kafka mode
/// only: the embedded input has no broker and is always "connected".
#[derive(Debug, Default)]
pub struct InputHealth {
    /// Set by the Kafka input when it starts: the fields below are meaningful.
    pub tracked: AtomicBool,
    /// A broker connection is up (librdkafka's statistics, every second).
    pub connected: AtomicBool,
    /// When the brokers the input fetches from last sent anything (the oldest of their last
    /// receives, from librdkafka's statistics), Unix milliseconds; 0 before the first.
    pub last_fetch_ms: AtomicI64,
    /// Since when the input is tracked, Unix milliseconds (the age before the first fetch).
    pub since_ms: AtomicI64,
    /// After this long without a fetch, `/readyz` answers 503 (milliseconds).
    pub timeout_ms: AtomicI64,
}

impl InputHealth {
    /// Starts tracking a broker input, with `/readyz` failing after `timeout_ms` without a fetch.
    pub fn track(&self, now_ms: i64, timeout_ms: i64) {
        self.since_ms.store(now_ms, Ordering::Relaxed);
        self.timeout_ms.store(timeout_ms, Ordering::Relaxed);
        self.tracked.store(true, Ordering::Relaxed);
    }

    /// Records that the brokers the input fetches from last sent something at `at_ms` (the
    /// oldest of their last receives).
    pub fn fetched(&self, at_ms: i64) {
        self.last_fetch_ms.store(at_ms, Ordering::Relaxed);
    }

    /// Seconds since the last receive from the broker (since tracking began, before the first);
    /// `None` when not tracked (embedded mode).
    pub fn fetch_age(&self, now_ms: i64) -> Option<f64> {
        if !self.tracked.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_fetch_ms.load(Ordering::Relaxed).max(self.since_ms.load(Ordering::Relaxed));
        Some((now_ms - last).max(0) as f64 / 1000.0)
    }

    /// Whether a broker connection is up (always, when not tracked).
    pub fn connected(&self) -> bool {
        !self.tracked.load(Ordering::Relaxed) || self.connected.load(Ordering::Relaxed)
    }

    /// Why the input is not ready, if it is not: no receive from the broker for longer than the
    /// timeout (the broker is down, unreachable or frozen; the lag is then unknown).
    pub fn stalled(&self, now_ms: i64) -> Option<String> {
        let age = self.fetch_age(now_ms)?;
        let timeout = self.timeout_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        (age > timeout).then(|| {
            format!(
                "not ready: nothing received from the broker for {age:.0} s (more than {timeout:.0} s); {}; the input lag is unknown",
                if self.connected() { "a connection is open but not answering" } else { "no broker connection is up" }
            )
        })
    }
}
