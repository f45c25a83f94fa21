//! The driver and the transports: records in, outputs out, checkpoints on a schedule.
//!
//! Owns: the [`pipeline::Pipeline`] that feeds records to the processor, publishes its outputs
//! and checkpoints through a writer thread; the output sinks ([`output`]); the day close's Parquet
//! writer ([`snapshots`]); the transports that
//! feed it: the in-process replay channel ([`embedded`]) and Kafka ([`kafka`]: the consume loop,
//! the librdkafka FFI in one file, the producer). Transports reach the pipeline through the
//! [`pipeline::RecordHandler`] trait, not its internals.
//!
//! May import: every layer below (`crate::core`, `crate::model`, `crate::analytics`,
//! `crate::state`, `crate::serve`), `streamflix-schemas`; the replay crate only in [`embedded`]
//! (the replay engine it embeds) and [`kafka`] (the Kafka client options both binaries share).
//! Never `crate::cli`.

pub mod embedded;
pub mod kafka;
pub mod output;
pub mod pipeline;
pub mod priority;
pub mod snapshots;
