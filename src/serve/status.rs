//! The live status the driver shares with the HTTP server.
//!
//! May import: `crate::core`.

use std::sync::atomic::{AtomicBool, AtomicU64};

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
}
