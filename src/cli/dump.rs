//! `streamflix dump`: committed state from a state directory, as JSON lines.
//!
//! May import: every layer of the crate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::analytics::churn_model::ChurnModel;
use crate::cli::args::DumpWhat;
use crate::core::catalog::Catalog;
use crate::model::als::Which;
use crate::model::learner;
use crate::state::checkpoint::Store;
use crate::state::codec::fnv1a;

/// Runs `streamflix dump`.
///
/// # Errors
/// No state there, or it does not read.
pub fn dump(state: &Path, what: DumpWhat) -> Result<()> {
    if !state.exists() {
        bail!("no state directory at {}", state.display());
    }
    // Opened through the guard: a state found damaged while dumping is left as it was.
    let (store, ()) = Store::open_then(state, |store| write(store, state, what))?;
    drop(store);
    crate::cli::start::seal(state);
    Ok(())
}

/// Writes `what` of `store` to stdout.
fn write(store: &Store, state: &Path, what: DumpWhat) -> Result<()> {
    use std::io::Write;
    let meta = store.meta()?.with_context(|| format!("{} has no checkpoint", state.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r: Result<()> = (|| {
        match what {
            DumpWhat::Meta => writeln!(out, "{}", serde_json::to_string(&meta)?)?,
            DumpWhat::Users => {
                for kv in store.all_users() {
                    let (u, st) = kv?;
                    let f = st.features(meta.watermark.unwrap_or(st.activity.last), &meta.genres);
                    let v = serde_json::json!({
                        "user_id": u,
                        "status": if st.churn.churned { "churned" } else { "active" },
                        "churn_episodes": st.churn.episodes,
                        "features": f,
                    });
                    writeln!(out, "{v}")?;
                }
            }
            DumpWhat::Sessions => {
                for s in store.all_sessions(&meta.genres) {
                    writeln!(out, "{}", serde_json::to_string(&s?)?)?;
                }
            }
            DumpWhat::Alerts => {
                for a in store.alerts(None, usize::MAX, None)? {
                    writeln!(out, "{}", serde_json::to_string(&a)?)?;
                }
            }
            DumpWhat::ChurnModel => {
                let bytes = store.churn_model()?.with_context(|| {
                    format!("{} has no churn model (run with --no-churn-model?)", state.display())
                })?;
                let model = ChurnModel::from_bytes(&bytes)?;
                let mut v = model.report();
                v["segments"] = model.segments_report().unwrap_or_default();
                v["state_bytes"] = serde_json::json!(bytes.len());
                v["state_fnv1a"] = serde_json::json!(format!("{:016x}", fnv1a(&bytes)));
                writeln!(out, "{v}")?;
            }
            DumpWhat::Model => {
                // The model a restart rebuilds, the same way (genres play no part in the factors).
                let catalog = Arc::new(Catalog::default());
                let model = learner::rebuild(&meta.config, &catalog, store.ratings())?;
                let als = model.als();
                for (which, name) in [(Which::Users, "user"), (Which::Items, "movie")] {
                    let side = als.side(which);
                    let m = side.matrix(als.rank());
                    for i in 0..side.len() {
                        let v = serde_json::json!({ name: side.id(i), "ratings": side.ratings(i).len(), "factor": m.row(i).to_vec() });
                        writeln!(out, "{v}")?;
                    }
                }
                let summary = serde_json::json!({ "ratings": als.ratings(), "sweeps": als.sweeps_done() });
                writeln!(out, "{summary}")?;
            }
        }
        out.flush()?;
        Ok(())
    })();
    // A closed pipe (`| head`) is not an error.
    match r {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}
