//! `streamflix eval`: the recommender's accuracy on a MovieLens directory or a given split.
//!
//! May import: every layer of the crate, and the replay crate.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use streamflix_schemas::Rating;

use crate::cli::args::EvalArgs;
use crate::cli::start::{find_in, load_catalog, read_ratings};
use crate::model::eval::{batch, random_split, streaming, time_split, EvalConfig, Report};

/// Runs `streamflix eval`.
///
/// # Errors
/// Bad arguments or unreadable data.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let cfg = EvalConfig {
        als: args.als.config()?,
        iters: args.iters as usize,
        seed: args.seed,
        recall_sample: args.recall_sample,
    };
    let started = Instant::now();
    let (movies, given) = match (&args.data, &args.train, &args.test) {
        (Some(dir), _, _) => {
            let movies = match &args.movies {
                Some(m) => m.clone(),
                None => find_in(dir, "movies")?,
            };
            let ratings = find_in(dir, "ratings")?;
            (movies, (read_ratings(&ratings)?, None))
        }
        (None, Some(train), Some(test)) => {
            let movies = args.movies.clone().context("--movies is required with --train/--test")?;
            (movies, (read_ratings(train)?, Some(read_ratings(test)?)))
        }
        _ => bail!("give --data DIR, or --train FILE --test FILE --movies FILE"),
    };
    let catalog = load_catalog(&movies)?;
    let known = |r: &Rating| catalog.genres_of(r.movie).is_some();
    let (first, second) = given;
    let total = first.len() + second.as_ref().map_or(0, Vec::len);
    let (first, second): (Vec<_>, Option<Vec<_>>) =
        (first.into_iter().filter(known).collect(), second.map(|s| s.into_iter().filter(known).collect()));
    let kept = first.len() + second.as_ref().map_or(0, Vec::len);
    if kept < total {
        eprintln!("warning: {} ratings of movies not in {} dropped", total - kept, movies.display());
    }
    eprintln!("read {kept} ratings in {:.1}s", started.elapsed().as_secs_f64());
    let ((btrain, btest, split), (strain, stest)) = match second {
        Some(test) => ((first.clone(), test.clone(), "given train/test files".to_string()), (first, test)),
        None => {
            let (a, b) = random_split(&first, cfg.seed);
            let (c, d) = time_split(&first, 0.8);
            ((a, b, format!("random 80/20, seed {}", cfg.seed)), (c, d))
        }
    };
    if btrain.is_empty() || btest.is_empty() {
        bail!("not enough ratings to evaluate ({kept})");
    }
    eprintln!(
        "batch: fitting rank {} λ {} × {} iterations on {} ratings…",
        cfg.als.rank,
        cfg.als.lambda,
        cfg.iters,
        btrain.len()
    );
    let (_, b) = batch(&cfg, &btrain, &btest, &split);
    eprintln!(
        "batch: RMSE {:.4} MAE {:.4} on {} pairs ({:.1}s fit)",
        b.errors.rmse, b.errors.mae, b.errors.scored, b.fit_seconds
    );
    eprintln!("streaming: training on {} ratings, then streaming {}…", strain.len(), stest.len());
    let s = streaming(&cfg, &strain, &stest);
    eprintln!(
        "streaming: RMSE {:.4} (frozen batch on the same events {:.4}), p99 update {:.1}µs",
        s.on_batch_events.rmse, s.batch_on_same_events.rmse, s.update_latency.p99_us
    );
    let report = Report {
        ratings: kept as u64,
        rank: cfg.als.rank,
        lambda: cfg.als.lambda,
        iters: cfg.iters,
        rmse: b.errors.rmse,
        mae: b.errors.mae,
        batch: b,
        streaming: s,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
