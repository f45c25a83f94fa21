//! The pure core: records in, per-user state and effects out.
//!
//! Deterministic, with no I/O, no threads, no clock and no network: every function here takes
//! state and an event (or a watermark) and returns or pushes effects. Given the same records per
//! partition, [`processor::Processor`] reaches the same state and outputs however the partitions
//! interleave. Unit and property tests exercise it without Kafka or sled.
//!
//! Owns: record validation ([`validate`]), the catalog ([`catalog`]), calendar arithmetic
//! ([`calendar`]), sessions ([`sessions`]), rolling per-user features ([`features`]), the churn
//! rule ([`churn`]), platform aggregates ([`engagement`]), the queue of events waiting for the
//! watermark ([`pending`]), the settings ([`config`]) and the processor that applies it all
//! ([`processor`]). The recommender is reached only through [`processor::RatingObserver`].
//!
//! May import: `streamflix-schemas`, and `crate::core` itself. Never `crate::model`,
//! `crate::analytics`, `crate::state`, `crate::serve`, `crate::io` or `crate::cli`, nor the replay
//! crate (`tests/layers.rs` checks it).

pub mod calendar;
pub mod catalog;
pub mod churn;
pub mod config;
pub mod daily;
pub mod engagement;
pub mod features;
pub mod pending;
pub mod processor;
pub mod sessions;
pub mod summary;
pub mod validate;
