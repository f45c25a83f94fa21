//! What the processing commands print when they finish.
//!
//! May import: every layer of the crate.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use crate::analytics::churn_model::ChurnModel;
use crate::core::calendar::format_datetime;
use crate::io::pipeline::Pipeline;
use crate::model::als::Which;

/// Prints what a run did: records, users, sessions, churn, checkpoints, the model.
pub fn summary(p: &Pipeline, records: u64, seconds: f64) {
    let c = p.processor.counters();
    let t = &p.checkpoint_totals;
    println!(
        "processed {records} records in {seconds:.2}s ({:.0} records/s): {} ratings, {} tags, {} heartbeats, {} dead letters",
        records as f64 / seconds.max(1e-9),
        c.ratings,
        c.tags,
        c.heartbeats,
        c.dead_total()
    );
    for (reason, n) in &c.dead_letters {
        println!("  dead letters {reason}: {n}");
    }
    println!(
        "{} users; {} sessions closed ({} binges); {} churned now ({} churn alerts, {} reactivations); watermark {}",
        p.processor.users().len(),
        c.sessions_closed,
        c.binge_sessions,
        c.churned_now,
        c.churned_alerts,
        c.reactivated_alerts,
        p.processor.watermark().map(format_datetime).unwrap_or_else(|| "-".into())
    );
    println!(
        "checkpoints: {} this run, {:.1} MB written in {:.2}s; state on disk {:.1} MB",
        p.status.checkpoints.load(Ordering::Relaxed),
        t.bytes as f64 / 1e6,
        t.duration.as_secs_f64(),
        p.store().size_on_disk() as f64 / 1e6
    );
    if let Some(w) = p.snapshots() {
        let st = w.stats();
        let (secs, day, rows) = st.slowest_write;
        println!(
            "snapshots: {} days closed, {:.1} MB of Parquet in {} ({:.2}s writing{}; slowest write {:.3}s, {} with {rows} rows; \
             largest close {} users: {:.3}s computing rows + {:.3}s writing)",
            st.closes,
            st.bytes as f64 / 1e6,
            w.settings().dir.display(),
            st.write_seconds,
            st.cpu_seconds.map(|c| format!(", {c:.2}s CPU")).unwrap_or_default(),
            secs,
            crate::core::calendar::day_label(day),
            st.largest_full.0,
            p.largest_close.1,
            st.largest_full.1,
        );
    }
    let (secs, day, users) = p.slowest_close;
    if secs > 0.0 {
        println!(
            "day closes: the slowest record that closed days took {secs:.4}s (up to {}, {users} users)",
            crate::core::calendar::day_label(day)
        );
    }
    match p.store().churn_model().map(|b| b.map(|b| ChurnModel::from_bytes(&b))) {
        Ok(Some(Ok(m))) => println!(
            "churn model: {} at_risk alerts (threshold {}); {} matured labels learned; MBG/NBD fitted {} times; see /models/churn",
            m.alerts, m.threshold, m.learner.examples, m.fits
        ),
        Ok(Some(Err(e))) => println!("churn model: {e}"),
        Ok(None) if p.processor.has_scorer() => println!("churn model: no day closed yet"),
        Ok(None) => println!("churn model: off (--no-churn-model)"),
        Err(e) => println!("churn model: {e}"),
    }
    let Some(model) = p.model() else {
        println!("recommender: off (--no-recommender); {} ratings logged for a later run with it", c.ratings);
        return;
    };
    let model = model.read().unwrap_or_else(PoisonError::into_inner);
    let (st, als) = (model.stats(), model.als());
    println!(
        "recommender: {} ratings learned ({} users, {} movies, rank {}, {} sweeps); prequential RMSE {:.4} MAE {:.4}; \
         update p50 {}, p99 {} ({:.1} µs mean)",
        als.ratings(),
        als.side(Which::Users).len(),
        als.side(Which::Items).len(),
        als.rank(),
        als.sweeps_done(),
        st.rmse(),
        st.mae(),
        bound(st.latency_quantile_us(0.5)),
        bound(st.latency_quantile_us(0.99)),
        st.update_seconds * 1e6 / st.updates().max(1) as f64
    );
}

fn bound(us: Option<f64>) -> String {
    us.map_or_else(|| "> 1024 µs".to_string(), |b| format!("≤ {b} µs"))
}

/// Prints where to look after the demo: favourite genres, an active and a churned user.
pub fn demo_hints(p: &Pipeline) {
    let users = p.processor.users();
    let churned = users.iter().filter(|(_, s)| s.churn.churned).map(|(u, _)| *u).min();
    let active = users.iter().filter(|(_, s)| !s.churn.churned).map(|(u, _)| *u).min();
    let wm = p.processor.watermark().unwrap_or(0);
    let names = p.processor.catalog().genre_names();
    let mut fav: std::collections::BTreeMap<String, u64> = Default::default();
    for st in users.values().filter(|s| !s.churn.churned) {
        if let Some(g) = st.features(wm, names).favourite_genre {
            *fav.entry(g).or_default() += 1;
        }
    }
    let mut fav: Vec<_> = fav.into_iter().collect();
    fav.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = fav.iter().take(5).map(|(g, n)| format!("{g} ({n})")).collect();
    println!("favourite genres of active users: {}", top.join(", "));
    if let Some(u) = active {
        println!("an active user: /users/{u}  and its sessions: /users/{u}/sessions?limit=5");
    }
    if let Some(u) = churned {
        println!("a churned user: /users/{u}; all churned users: /churn?status=churned&limit=20");
    }
}
