//! `streamflix eval`: the recommender's accuracy on a MovieLens directory or a given split.
//!
//! May import: every layer of the crate, and the replay crate.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use streamflix_schemas::Rating;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use streamflix_replay::dataset::{Dataset, EventRef};
use streamflix_replay::engine::{self, ReplayConfig};
use streamflix_replay::sink::{Outgoing, Sink, SinkError, Topic};
use streamflix_schemas::{ChurnStatus, StreamRecord};

use crate::analytics::bgnbd::{fit, p_alive, Fit, Histogram, Params, Pattern, Variant, SPREAD};
use crate::analytics::churn_eval::{
    alert_metrics, churned_after, metrics, AlertMetrics, Metrics, Recorder, BURN_IN_DAYS, THRESHOLDS,
};
use crate::analytics::churn_model::{ChurnModel, FitState, HORIZON_DAYS};
use crate::cli::args::{EvalArgs, EvalChurnArgs, EvalWhat};
use crate::cli::start::{find_in, load_catalog, read_ratings};
use crate::core::calendar::day_label;
use crate::core::calendar::day_of;
use crate::core::config::CoreConfig;
use crate::core::processor::{Output, Processor, Source};
use crate::model::eval::{
    batch, random_split, streaming, temporal, time_split, EvalConfig, Report, TemporalModel,
};

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
        min_movie_ratings: args.min_movie_ratings as usize,
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
    let temporal = args.temporal.then(|| {
        eprintln!(
            "temporal: streaming {} ratings against a batch model refitted every {} event-days…",
            stest.len(),
            args.retrain_days
        );
        let bar = indicatif::ProgressBar::new(stest.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} events, eta {eta}")
                .expect("a valid template"),
        );
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let t = temporal(&cfg, &strain, &stest, args.retrain_days, |done, _| bar.set_position(done as u64));
        bar.finish_and_clear();
        let line = |name: &str, m: &TemporalModel| {
            eprintln!(
                "temporal: {name} RMSE {:.4} on {} events ({:.1} %), recall@10 {:.3}, NDCG@10 {:.4} ({} of {} sampled ranked)",
                m.errors.rmse,
                m.errors.scored,
                100.0 * m.scored_share,
                m.recall_at_10,
                m.ndcg_at_10,
                m.ranked,
                t.recall_sample
            )
        };
        line("streaming", &t.streaming);
        line(&format!("batch every {} days", t.retrain_days), &t.batch_retrained);
        eprintln!(
            "temporal: on the {} events both score: streaming RMSE {:.4}, batch {:.4} ({} refits, {:.1}s)",
            t.common_events, t.streaming_on_common.rmse, t.batch_on_common.rmse, t.retrains, t.retrain_seconds
        );
        t
    });
    let report = Report {
        ratings: kept as u64,
        rank: cfg.als.rank,
        lambda: cfg.als.lambda,
        iters: cfg.iters,
        rmse: b.errors.rmse,
        mae: b.errors.mae,
        batch: b,
        streaming: s,
        temporal,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Feeds replayed records straight into a processor (one thread, no channel) and keeps the
/// `churned` alerts.
struct Feed<'a> {
    processor: &'a mut Processor,
    out: Vec<Output>,
    churned: Vec<(u32, i64)>,
    progress: &'a indicatif::ProgressBar,
    records: u64,
}

impl Feed<'_> {
    fn drain(&mut self) {
        for o in self.out.drain(..) {
            if let Output::Alert(a) = o {
                if a.status == ChurnStatus::Churned {
                    self.churned.push((a.user_id, a.at));
                }
            }
        }
    }
}

impl Sink for Feed<'_> {
    fn partitions(&self, _: Topic) -> u32 {
        1
    }

    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        let offset = match &out.record {
            StreamRecord::Rating(r) => r.seq,
            StreamRecord::Tag(t) => t.seq,
            StreamRecord::Heartbeat(h) => h.next_seq,
        };
        let src = Source { index: out.topic as usize, offset, next: out.record.next_seq() };
        self.processor.process_record(src, None, &out.record, None, &mut self.out);
        self.drain();
        self.records += 1;
        if self.records.is_multiple_of(65_536) {
            self.progress.set_position(self.records);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Runs `streamflix eval churn`: the processor with the churn model over the data, every active
/// user scored at every close (see `analytics::churn_eval`).
fn churn(args: &EvalChurnArgs) -> Result<()> {
    let started = Instant::now();
    let catalog = Arc::new(load_catalog(&find_in(&args.data, "movies")?)?);
    let ds = Dataset::load(&args.data, true)?;
    for r in &ds.reports {
        for line in r.describe() {
            eprintln!("warning: {line}");
        }
    }
    // Each user's active days, as the processor counts activity (events of movies not in the
    // catalog go to the dead-letter queue).
    let mut days: FxHashMap<u32, Vec<i64>> = FxHashMap::default();
    let mut span: Option<(i64, i64)> = None;
    for (_, e) in ds.events() {
        let movie = match e {
            EventRef::Rating(r) => r.movie,
            EventRef::Tag(t) => t.movie,
        };
        if catalog.genres_of(movie).is_none() {
            continue;
        }
        let d = day_of(e.ts());
        let v = days.entry(e.user()).or_default();
        if v.last() != Some(&d) {
            v.push(d);
        }
        span = Some(span.map_or((d, d), |(a, b)| (a.min(d), b.max(d))));
    }
    let (first_day, last_day) = span.unwrap_or((0, -1));
    let (first_close, last_close) = (first_day + BURN_IN_DAYS, last_day - HORIZON_DAYS);
    if first_close > last_close {
        bail!(
            "not enough data: scoring needs {BURN_IN_DAYS} days of burn-in and {HORIZON_DAYS} days of labels after it"
        );
    }
    eprintln!(
        "read {} events in {:.1}s; processing, scoring every user at every close from {} to {}…",
        ds.len(),
        started.elapsed().as_secs_f64(),
        day_label(first_close),
        day_label(last_close)
    );
    let recorder = Recorder::new(ChurnModel::new(args.threshold), first_close, last_close);
    let recording = recorder.0.clone();
    let mut processor =
        Processor::new(CoreConfig::default(), catalog.clone(), crate::io::embedded::partition_list(1));
    processor.set_scorer(Some(Box::new(recorder)));
    let progress = indicatif::ProgressBar::new(ds.len());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} records {per_sec} eta {eta}")
            .expect("valid template"),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut feed = Feed {
        processor: &mut processor,
        out: Vec::new(),
        churned: Vec::new(),
        progress: &progress,
        records: 0,
    };
    engine::replay(&ds, &mut feed, &ReplayConfig::default(), &AtomicBool::new(false), &progress)
        .context("replaying the data into the processor")?;
    feed.processor.finish(&mut feed.out);
    feed.drain();
    progress.finish_and_clear();
    let churned = std::mem::take(&mut feed.churned);
    let r = recording.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let labels: Vec<bool> = r
        .pairs
        .iter()
        .map(|p| churned_after(days.get(&p.user).map_or(&[][..], Vec::as_slice), p.day))
        .collect();
    if labels.is_empty() {
        bail!("no user was active at any close from {} to {}", day_label(first_close), day_label(last_close));
    }
    let scores: [(&str, Vec<f64>, bool); 4] = [
        ("churn_risk", r.pairs.iter().map(|p| p.risk).collect(), true),
        ("recency", r.pairs.iter().map(|p| p.recency).collect(), false),
        ("p_alive", r.pairs.iter().map(|p| p.risk_mbg).collect(), true),
        ("p_alive_bg", r.pairs.iter().map(|p| p.risk_bg).collect(), true),
    ];
    let all: Vec<(&str, Metrics)> = scores.iter().map(|(n, s, p)| (*n, metrics(s, &labels, *p))).collect();
    // The fits at the last day of the data, on every user, from the model's last fits and the
    // spread starts (the published optimizer settings: what scipy checks).
    let users = feed.processor.users();
    let histogram = Histogram::from_patterns(users.values().filter_map(|st| {
        let a = &st.activity;
        Pattern::of(a.active_days, day_of(a.first_seen), day_of(a.last), last_day)
    }));
    let starts =
        |f: Option<FitState>| f.map(|f| f.params()).into_iter().chain(SPREAD).collect::<Vec<Params>>();
    let bgnbd = fit(Variant::Bg, &histogram, &starts(r.bg));
    let mbgnbd = fit(Variant::Mbg, &histogram, &starts(r.model.fit));
    let churned_pairs = labels.iter().filter(|&&l| l).count();
    let num = |x: f64| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null };
    let per = |f: &dyn Fn(&Metrics) -> serde_json::Value| -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, metrics) in &all {
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
    let alert_json = |threshold: f64, m: &AlertMetrics| {
        serde_json::json!({
            "threshold": threshold, "at_risk": m.alerts, "churned": m.churned, "reach": num(m.reach),
            "reach_7d": num(m.reach_7d), "median_lead_days": num(m.median_lead_days), "precision": num(m.precision),
        })
    };
    let model = &r.model;
    let report = serde_json::json!({
        "closes": {"first": day_label(first_close), "last": day_label(last_close)},
        "pairs": labels.len(),
        "churned": churned_pairs,
        "churn_rate": churned_pairs as f64 / labels.len() as f64,
        "auc": per(&|m| num(m.auc)),
        "pr_auc": per(&|m| num(m.pr_auc)),
        "lift_top_decile": per(&|m| num(m.lift_top_decile)),
        "brier": per(&|m| m.brier.map_or(serde_json::Value::Null, num)),
        "calibration": per(&|m| calibration(m)),
        "alerts": alert_json(model.threshold, &alert_metrics(&r.alerts, &churned)),
        "alerts_by_threshold": THRESHOLDS.iter().zip(&r.replayed).map(|(&t, a)| alert_json(t, &alert_metrics(a, &churned))).collect::<Vec<_>>(),
        "last_day": day_label(last_day),
        "bgnbd": fit_json(&bgnbd),
        "mbgnbd": fit_json(&mbgnbd),
        "churn_model": model.report(),
        "patterns": histogram.rows().len(),
        "users": histogram.users(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(path) = &args.patterns {
        let mut out = String::from("x,t_x,T,users,p_alive_bg,p_alive_mbg\n");
        for &(p, n) in histogram.rows() {
            let pa = |f: &Option<Fit>, v| f.map_or(f64::NAN, |f| p_alive(v, f.params, p));
            out += &format!(
                "{},{},{},{n},{:?},{:?}\n",
                p.x,
                p.t_x,
                p.t,
                pa(&bgnbd, Variant::Bg),
                pa(&mbgnbd, Variant::Mbg)
            );
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
