//! `streamflix report`: the insights report from a state directory's committed state.
//!
//! May import: every layer of the crate.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::analytics::insights::{markdown, Report};
use crate::analytics::report_html::html;
use crate::cli::args::ReportFormat;
use crate::serve::report::committed_report;
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
    let (store, r) = Store::open_then(state, |store| -> Result<Report> {
        let (_, r) =
            committed_report(store)?.with_context(|| format!("{} has no checkpoint", state.display()))?;
        Ok(r)
    })?;
    drop(store);
    crate::cli::start::seal(state);
    let text = render(&r, format)?;
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The report in `format`.
///
/// # Errors
/// JSON encoding (not expected).
pub fn render(r: &Report, format: ReportFormat) -> Result<String> {
    Ok(match format {
        ReportFormat::Json => serde_json::to_string_pretty(r)? + "\n",
        ReportFormat::Md => markdown(r),
        ReportFormat::Html => html(r),
    })
}
