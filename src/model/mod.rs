//! The recommender: an ALS model that learns from every rating, and what it answers.
//!
//! Owns: the model ([`als`]: per-side storage, the kernels that hold every `unsafe`/SIMD routine,
//! the pinned initial factors), recommendations, similar titles and groups ([`recommend`]), the
//! thread that teaches it the processor's ratings and the rebuild from the rating log
//! ([`learner`]), and offline evaluation ([`eval`]).
//!
//! May import: `crate::core`, `streamflix-schemas`. Never `crate::analytics`, `crate::state`,
//! `crate::serve`, `crate::io` or `crate::cli`, nor the replay crate.

pub mod als;
pub mod eval;
pub mod learner;
pub mod recommend;

/// The live recommender, shared between the thread that teaches it and the readers (HTTP).
pub type ModelHandle = std::sync::Arc<std::sync::RwLock<recommend::Recommender>>;
