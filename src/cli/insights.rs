//! `streamflix report`: the insights report from a state directory's committed state.
//!
//! May import: every layer of the crate.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::analytics::insights::{markdown, report as build, UserPoint};
use crate::cli::args::ReportFormat;
use crate::state::checkpoint::Store;

/// Runs `streamflix report`.
///
/// # Errors
/// No state there, it does not read, or the output cannot be written.
pub fn report(state: &Path, format: ReportFormat, out: Option<&Path>) -> Result<()> {
    if !state.exists() {
        bail!("no state directory at {}", state.display());
    }
    // Opened through the guard, as `dump`: a state found damaged is left as it was.
    let (store, text) = Store::open_then(state, |store| render(store, state, format))?;
    drop(store);
    crate::cli::start::seal(state);
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn render(store: &Store, state: &Path, format: ReportFormat) -> Result<String> {
    let loaded = store.load()?.with_context(|| format!("{} has no checkpoint", state.display()))?;
    let meta = &loaded.meta;
    let mut users: Vec<(u32, UserPoint)> = Vec::new();
    for (&u, st) in &loaded.users {
        let f = st.features(meta.watermark.unwrap_or(st.activity.last), &meta.genres);
        if let Some(mean) = f.rating_mean.filter(|_| f.ratings > 0) {
            // Ratings are half stars, so their sum is a multiple of 0.5 that the running mean
            // gives back exactly; sum / n is then the exact mean, and users with equal means
            // tie in Spearman's ranks (a running mean can differ from it in the last bit).
            let n = f.ratings as f64;
            let rating_mean = (mean * n * 2.0).round() / 2.0 / n;
            users.push((u, UserPoint { ratings: f.ratings, rating_mean, recency_days: f.recency_days }));
        }
    }
    // In user order: the report is a function of the state, not of the map's order.
    users.sort_unstable_by_key(|(u, _)| *u);
    let points: Vec<UserPoint> = users.into_iter().map(|(_, p)| p).collect();
    let r = build(&loaded.engagement, &meta.genres, &points, meta.watermark);
    Ok(match format {
        ReportFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
        ReportFormat::Md => markdown(&r),
    })
}
