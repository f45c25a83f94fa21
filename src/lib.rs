//! streamflix: the stream processor.
//!
//! This crate will hold the pure core (sessions, rolling features, churn, ALS), the sled state,
//! the Kafka transport and the HTTP server. Today it holds the embedded pipeline's consumer side
//! ([`embedded`]): what arrives over the in-process channel from the replay engine.

pub mod embedded;
