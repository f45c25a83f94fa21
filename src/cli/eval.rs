//! `streamflix eval`: the recommender's accuracy on a MovieLens directory or a given split.
//!
//! May import: every layer of the crate, and the replay crate.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use streamflix_schemas::Rating;

use crate::analytics::bgnbd::{p_alive, Fit, Variant};
use crate::analytics::churn_eval::{evaluate, Metrics};
use crate::cli::args::{EvalArgs, EvalChurnArgs, EvalWhat};
use crate::cli::start::{find_in, load_catalog, read_ratings};
use crate::core::calendar::day_label;
use crate::model::eval::{batch, random_split, streaming, time_split, EvalConfig, Report};

/// Runs `streamflix eval`.
///
/// # Errors
/// Bad arguments or unreadable data.
pub fn eval(args: &EvalArgs) -> Result<()> {
    if let Some(EvalWhat::Churn(c)) = &args.what {
        return churn(c);
    }
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

/// Runs `streamflix eval churn`.
fn churn(args: &EvalChurnArgs) -> Result<()> {
    let started = Instant::now();
    let catalog = load_catalog(&find_in(&args.data, "movies")?)?;
    let ratings = read_ratings(&find_in(&args.data, "ratings")?)?;
    let tags = match streamflix_replay::movielens::find(&args.data, "tags") {
        Some(path) => {
            let (tags, report) = streamflix_replay::movielens::read_tags(&path)?;
            for line in report.describe() {
                eprintln!("warning: {line}");
            }
            tags
        }
        None => Vec::new(),
    };
    // As the processor does, events of movies not in the catalog are not activity.
    let known = |m: u32| catalog.genres_of(m).is_some();
    let events: Vec<(u32, i64)> = ratings
        .iter()
        .filter(|r| known(r.movie))
        .map(|r| (r.user, r.ts))
        .chain(tags.iter().filter(|t| known(t.movie)).map(|t| (t.user, t.ts)))
        .collect();
    eprintln!(
        "read {} events in {:.1}s; scoring every close…",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let e = evaluate(&events, args.fit_every);
    if e.pairs == 0 {
        bail!(
            "not enough data: scoring needs {} days of burn-in and {} days of labels",
            crate::analytics::churn_eval::BURN_IN_DAYS,
            crate::analytics::churn_eval::HORIZON_DAYS
        );
    }
    let num = |x: f64| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null };
    let per = |f: &dyn Fn(&Metrics) -> serde_json::Value| -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, metrics) in &e.metrics {
            m.insert((*name).into(), f(metrics));
        }
        serde_json::Value::Object(m)
    };
    let fit_json = |f: &Option<Fit>| match f {
        Some(f) => serde_json::json!({
            "r": f.params.r, "alpha": f.params.alpha, "a": f.params.a, "b": f.params.b,
            "log_likelihood": f.log_likelihood, "evaluations": f.evaluations,
        }),
        None => serde_json::Value::Null,
    };
    let calibration = |m: &Metrics| {
        match &m.calibration {
        Some(bins) => bins
            .iter()
            .enumerate()
            .map(|(k, &(n, p, o))| {
                serde_json::json!({"bin": format!("{:.1}-{:.1}", k as f64 / 10.0, (k + 1) as f64 / 10.0), "pairs": n, "mean_predicted": num(p), "observed": num(o)})
            })
            .collect(),
        None => serde_json::Value::Null,
    }
    };
    let (first, last) = e.closes.unwrap_or((0, 0));
    let report = serde_json::json!({
        "closes": {"first": day_label(first), "last": day_label(last), "scored": e.scored_closes},
        "pairs": e.pairs,
        "churned": e.churned,
        "churn_rate": e.churned as f64 / e.pairs as f64,
        "auc": per(&|m| num(m.auc)),
        "pr_auc": per(&|m| num(m.pr_auc)),
        "lift_top_decile": per(&|m| num(m.lift_top_decile)),
        "brier": per(&|m| m.brier.map_or(serde_json::Value::Null, num)),
        "calibration": per(&|m| calibration(m)),
        "last_day": day_label(e.last_day),
        "bgnbd": fit_json(&e.bgnbd),
        "mbgnbd": fit_json(&e.mbgnbd),
        "churn_model": {
            "features": crate::analytics::churn_eval::FEATURES,
            "weights": e.model.w,
            "examples": e.model.t,
            "l2": crate::analytics::churn_eval::L2,
            "learning_rate": format!("{} / sqrt(1 + t / 1000)", crate::analytics::churn_eval::ETA0),
        },
        "patterns": e.histogram.rows().len(),
        "users": e.histogram.users(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(path) = &args.patterns {
        let mut out = String::from("x,t_x,T,users,p_alive_bg,p_alive_mbg\n");
        for &(p, n) in e.histogram.rows() {
            let pa = |f: &Option<Fit>, v| f.map_or(f64::NAN, |f| p_alive(v, f.params, p));
            out += &format!(
                "{},{},{},{n},{:?},{:?}\n",
                p.x,
                p.t_x,
                p.t,
                pa(&e.bgnbd, Variant::Bg),
                pa(&e.mbgnbd, Variant::Mbg)
            );
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
