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
        let mut users: Vec<(u32, UserPoint)> = Vec::with_capacity(meta.users as usize);
        let mut firsts: Vec<(u32, UserFirst)> = Vec::with_capacity(meta.users as usize);
        let mut data_from: Option<i64> = None;
        for kv in store.all_users() {
            let (u, st) = kv?;
            data_from = Some(data_from.map_or(st.activity.first_seen, |f| f.min(st.activity.first_seen)));
            if let Some(p) = user_point(&st.activity, as_of) {
                users.push((u, p));
            }
            if let Some(f) = user_first(&st.activity) {
                firsts.push((u, f));
            }
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
        // In user order: the report is a function of the state, not of the store's key order.
        users.sort_unstable_by_key(|(u, _)| *u);
        let points: Vec<UserPoint> = users.into_iter().map(|(_, p)| p).collect();
        firsts.sort_unstable_by_key(|(u, _)| *u);
        let firsts: Vec<UserFirst> = firsts.into_iter().map(|(_, f)| f).collect();
        let r = report(&engagement, &meta.genres, &points, &firsts, &movies, data_from, meta.watermark);
        return Ok(Some((meta.checkpoints, r)));
    }
    Err(StoreError::Busy(format!("checkpoints landed during {ATTEMPTS} reads of the report in a row")))
}
