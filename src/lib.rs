//! streamflix: the stream processor.
//!
//! The crate is layered; each layer may import only the layers listed before it (the rule is in
//! each folder's `mod.rs` and checked by `tests/layers.rs`; `docs/architecture.md`
//! explains it):
//!
//! 1. [`core`]: the pure core, records in, per-user state and effects out (no I/O);
//! 2. [`model`]: the ALS recommender;
//! 3. [`analytics`]: the data-science layer (reserved for the next issues);
//! 4. [`state`]: the sled store and its codec;
//! 5. [`serve`]: HTTP and metrics;
//! 6. [`io`]: the driver and the transports (Kafka, the embedded channel, output files);
//! 7. [`cli`]: the command line of the `streamflix` binary, which only calls [`cli::main`].

pub mod analytics;
pub mod cli;
pub mod core;
pub mod io;
pub mod model;
pub mod serve;
pub mod state;
