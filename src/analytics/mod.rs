//! The data-science layer: what analysts, marketing and product teams consume, computed on the
//! same deterministic event-time path as the core (daily close and its tables, statistics,
//! churn prediction, segments, trending, experiments).
//!
//! Owns: the day close's tables as Arrow batches ([`tables`]); the BG/NBD and MBG/NBD models of
//! whether a user is still alive ([`bgnbd`]); the churn model the processor runs at each day
//! close ([`churn_model`]) and its evaluation ([`churn_eval`]); hypothesis tests and
//! correlations from mergeable summaries, equal to scipy's ([`stats`]), and the insights report
//! built on them ([`insights`]), drawn as one HTML page ([`report_html`]). Every aggregate here is to be a
//! mergeable partial per input partition (counts, `(n, mean, M2)`, day buckets), so a scale-out
//! can combine them.
//!
//! May import: `crate::core`, `crate::model`, `streamflix-schemas`, `statrs`, `postcard` (the
//! churn model's state). Never `crate::state`,
//! `crate::serve`, `crate::io` or `crate::cli`, nor the replay crate.

pub mod bgnbd;
pub mod churn_eval;
pub mod churn_model;
pub mod insights;
pub mod report_html;
pub mod segments;
pub mod stats;
pub mod tables;
