//! streamflix: the stream processor.
//!
//! The pure core ([`sessions`], [`features`], [`churn`], [`validate`], [`processor`]) turns
//! records into per-user state and effects without I/O. Around it: the sled checkpoint
//! ([`checkpoint`]), the transports ([`kafka`], [`embedded`]), the outputs ([`output`]), the HTTP
//! server ([`server`]) and the driver loop that ties them together ([`pipeline`]).

pub mod als;
pub mod catalog;
pub mod checkpoint;
pub mod churn;
pub mod config;
pub mod embedded;
pub mod engagement;
pub mod eval;
pub mod features;
pub mod kafka;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod processor;
pub mod recommend;
pub mod server;
pub mod sessions;
pub mod validate;
