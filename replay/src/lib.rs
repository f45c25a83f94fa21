//! streamflix-replay: MovieLens history, replayed into Kafka as a live stream.
//!
//! The pipeline is read → sort → pace → sink:
//! [`movielens`] reads the files (every dialect and quirk), [`dataset`] sorts them into the
//! replay order that numbers every event, [`engine`] walks that order with a [`pacing::Pacer`],
//! interleaving clock heartbeats, into a [`sink::Sink`] — Kafka ([`kafka`]), an in-process
//! channel (the embedded mode), JSON lines, or nothing. [`generate`] writes synthetic MovieLens
//! with ground truth; [`shape`] measures how MovieLens-like a dataset is.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses none of them.

#![forbid(unsafe_code)]

pub mod cli;
pub mod dataset;
pub mod engine;
pub mod generate;
pub mod kafka;
pub mod movielens;
pub mod pacing;
pub mod partition;
pub mod shape;
pub mod sink;
pub mod time;
