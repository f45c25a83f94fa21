//! `streamflix run`: a MovieLens directory through the processor in one process (embedded mode),
//! also the engine of `streamflix demo`.
//!
//! May import: every layer of the crate, and the replay crate.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::ReplayConfig;

use crate::cli::args::EmbeddedArgs;
use crate::cli::report;
use crate::cli::start::{self, find_in, load_catalog, Start, Started};
use crate::io::output::{JsonLinesSink, NullSink, OutputSink};

/// Replays the MovieLens directory `dir` through the in-process channel into the processor; with
/// `demo`, prints where to look afterwards.
///
/// # Errors
/// Bad settings or data, a store or output failure.
pub fn embedded(dir: &Path, e: &EmbeddedArgs, demo: bool) -> Result<()> {
    let (cfg, serve) = (e.core.config()?, &e.serve);
    let movies = find_in(dir, "movies")?;
    let catalog = Arc::new(load_catalog(&movies)?);
    let started = Instant::now();
    let ds = Dataset::load(dir, true)?;
    for r in &ds.reports {
        for line in r.describe() {
            eprintln!("warning: {line}");
        }
    }
    if ds.is_empty() {
        bail!("{}: no ratings or tags to process", dir.display());
    }
    println!("read and sorted {} events in {:.2}s", ds.len(), started.elapsed().as_secs_f64());
    let tmp;
    let state_dir = match &e.state {
        Some(s) => s.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let partitions = crate::io::embedded::partition_list(e.partitions);
    let sink: Box<dyn OutputSink> = match &e.out {
        Some(d) => Box::new(JsonLinesSink::open(d, catalog.genre_names().to_vec())?),
        None => Box::new(NullSink),
    };
    // The files the dataset was read from (ratings, and tags if any), and the catalog.
    let files: Vec<_> = ds.reports.iter().map(|r| r.path.clone()).chain([movies]).collect();
    let input = start::files_identity(&files)?;
    let snapshots = e.snapshots.settings(e.state.as_ref().map(|s| s.join("snapshots")));
    let start =
        Start { mode: "embedded", state: &state_dir, input, cfg, catalog, partitions, serve, snapshots };
    let Started { mut pipeline, services } = start::start(start, sink)?;
    let replay_cfg = ReplayConfig { speed: e.speed, ..Default::default() };
    if let Some(s) = e.speed {
        if !(s.is_finite() && s > 0.0) {
            bail!("--speed must be a positive number, got {s}");
        }
    }
    let progress = indicatif::ProgressBar::new(ds.len());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} events {per_sec} eta {eta} — {msg}")
            .expect("valid template"),
    );
    let outcome = crate::io::embedded::run(
        &ds,
        &mut pipeline,
        &replay_cfg,
        e.partitions,
        services.shutdown.flag(),
        &progress,
    )?;
    progress.finish_and_clear();
    report::summary(&pipeline, outcome.records, outcome.seconds);
    if outcome.interrupted {
        println!(
            "interrupted; checkpoint written{}",
            if e.state.is_some() { ", run again to continue" } else { "" }
        );
    }
    if demo {
        report::demo_hints(&pipeline);
    }
    services.finish(serve.exit_when_done || outcome.interrupted)?;
    drop(pipeline);
    if e.state.is_some() {
        start::seal(&state_dir);
    }
    Ok(())
}
