//! `streamflix demo`: generate a dataset (unless `--data` is given) and run it embedded.
//!
//! May import: every layer of the crate, and the replay crate (the generator).

use std::time::Instant;

use anyhow::Result;
use streamflix_replay::generate::{generate, GenerateConfig};

use crate::cli::args::DemoArgs;
use crate::cli::run;

/// Runs `streamflix demo`.
///
/// # Errors
/// Bad settings, the generator or the run failed.
pub fn demo(args: &DemoArgs) -> Result<()> {
    let DemoArgs { data, users, ratings, seed, embedded } = args;
    embedded.core.config()?; // refuse bad settings before generating
    let tmp;
    let dir = match data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            let g = GenerateConfig {
                users: *users,
                movies: (users * 4).max(1_000),
                ratings: *ratings,
                tags: ratings / 25,
                seed: *seed,
                ..Default::default()
            };
            let started = Instant::now();
            let s = generate(&g, tmp.path(), |_| {})?;
            println!(
                "generated {} ratings and {} tags from {} users in {:.1}s ({} inactive at the end, {} came back after 30+ days)",
                s.ratings, s.tags, s.users, started.elapsed().as_secs_f64(), s.churned_at_end, s.returned
            );
            tmp.path().to_path_buf()
        }
    };
    run::embedded(&dir, embedded, true)
}
