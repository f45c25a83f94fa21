//! The insights report over the committed store: what `GET /report`, `GET /report.json` and
//! `streamflix report` show.
//!
//! May import: what `serve/mod.rs` allows its layer; this module uses `crate::analytics::insights`, `crate::state::checkpoint`.

use crate::analytics::insights::{report, user_first, user_point, MoviePoint, Report, UserFirst, UserPoint};
use crate::state::checkpoint::{Store, StoreError};

/// Tries at reading one whole checkpoint while the processor may be writing the next.
const ATTEMPTS: usize = 5;

/// The report at the committed checkpoint (`None` before the first one), and that checkpoint's
/// number. Users, aggregates and meta are read separately; if a checkpoint lands in between, the
/// read starts over, so every number describes the same checkpoint.
///
/// # Errors
/// I/O or corruption, or checkpoints landing faster than the report reads (five times in a row).
pub fn committed_report(store: &Store) -> Result<Option<(u64, Report)>, StoreError> {
    for _ in 0..ATTEMPTS {
        let Some(meta) = store.meta()? else { return Ok(None) };
        let as_of = meta.watermark.unwrap_or(0);
        // The store yields users by id (big-endian keys): the report is a function of the state.
        let mut users: Vec<UserPoint> = Vec::with_capacity(meta.users as usize);
        let mut firsts: Vec<UserFirst> = Vec::with_capacity(meta.users as usize);
        let mut data_from: Option<i64> = None;
        for kv in store.all_users() {
            let (_, st) = kv?;
            let a = &st.activity;
            data_from = Some(data_from.map_or(a.first_seen, |f| f.min(a.first_seen)));
            users.extend(user_point(a, as_of));
            firsts.extend(user_first(a));
        }
        let engagement = store.engagement()?;
        let movies: Vec<MoviePoint> = engagement
            .movie_ratings
            .sorted()
            .into_iter()
            .map(|(_, ratings, mean)| MoviePoint { ratings, mean })
            .collect();
        if store.meta()?.map(|m| m.checkpoints) != Some(meta.checkpoints) {
            continue;
        }
        let r = report(&engagement, &meta.genres, &users, &firsts, &movies, data_from, meta.watermark);
        return Ok(Some((meta.checkpoints, r)));
    }
    Err(StoreError::Busy(format!("checkpoints landed during {ATTEMPTS} reads of the report in a row")))
}
