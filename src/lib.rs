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
//!
//! The layers are private: the binary reaches the library through [`cli`], and what else is
//! public is re-exported here on purpose (the ALS model, for `benches/als_stream.rs`). Inside
//! the crate, `pub` means "for the layers above"; the layering test keeps that honest.

mod analytics;
pub mod cli;
mod core;
mod io;
mod model;
mod serve;
mod state;

// What the benchmarks use of the library (benches/als_stream.rs): the model alone.
pub use model::als::{Als, AlsConfig, PREFETCH_AHEAD};
