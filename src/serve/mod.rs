//! What the outside world reads while the processor runs: HTTP routes and Prometheus metrics.
//!
//! Owns: the HTTP API over the committed store and the live model ([`http`]), the metric
//! registry and its families ([`metrics`]), the insights report over the committed store
//! ([`report`]), and the live [`Status`] the driver shares with the
//! server. Reads only: the processor's state reaches the server through the store (committed
//! checkpoints), never through the processing thread.
//!
//! May import: `crate::core`, `crate::model`, `crate::analytics`, `crate::state`,
//! `streamflix-schemas`. Never `crate::io` or `crate::cli`, nor the replay crate.

pub mod http;
pub mod metrics;
pub mod report;
pub mod snapshots;
mod status;

pub use status::Status;
