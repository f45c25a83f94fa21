//! Prometheus metrics: the engine (throughput, lag, latency, checkpoints, HTTP) and the
//! engagement view (active users, binges, genre demand, retention, churn), served at `/metrics`.
//!
//! Names follow Prometheus conventions (`_total` counters, base units: seconds and bytes), and
//! every label has a bounded set of values (topics and partitions, DLQ reasons, catalog genres,
//! 12 cohorts × ≤ 12 months, hours, weekdays, routes, statuses).
//!
//! Engagement metrics are set from the state a checkpoint commits, right after it is committed,
//! so they always equal what the HTTP API answers at the same watermark. Counters that mirror
//! checkpointed totals (ratings by value, alerts, sessions…) continue from the restored totals
//! after a restart instead of starting from zero.
//!
//! May import: what `serve/mod.rs` allows its layer; this module uses `crate::analytics::insights`, `crate::core::calendar`, `crate::core::engagement`, `crate::core::processor`, `crate::core::validate`, `crate::model::als`, `crate::model::recommend`, `crate::state::checkpoint`.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::calendar::month_label;
use crate::core::processor::{Counters, Processor, RecordOutcome, ScorerGauges};
use crate::state::checkpoint::CheckpointStats;

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Every metric streamflix exports.
pub struct Metrics {
    registry: Registry,
    records: IntCounterVec,
    dead_letters: IntCounterVec,
    /// `streamflix_record_processing_seconds`, one record in 64 timed.
    pub record_seconds: Histogram,
    /// `streamflix_consumer_lag_records{topic, partition}`.
    pub lag: IntGaugeVec,
    watermark: Gauge,
    checkpoint_seconds: Histogram,
    checkpoint_bytes: IntGauge,
    checkpoint_written: IntCounter,
    checkpoints: IntCounter,
    checkpoint_time: Gauge,
    /// `streamflix_snapshot_last_closed_day_timestamp_seconds`: start of the latest day whose
    /// tables are written.
    pub snapshot_last_day: Gauge,
    /// `streamflix_snapshot_close_duration_seconds`: writing one closed day's tables.
    pub snapshot_close_seconds: Histogram,
    /// `streamflix_snapshot_written_bytes_total{table}`.
    pub snapshot_bytes: IntCounterVec,
    state_users: IntGauge,
    state_open_sessions: IntGauge,
    state_pending: IntGauge,
    /// `streamflix_state_disk_bytes`.
    pub state_disk: IntGauge,
    /// `streamflix_http_requests_total{route, status}`.
    pub http_requests: IntCounterVec,
    /// `streamflix_http_request_duration_seconds{route}`.
    pub http_seconds: HistogramVec,
    /// `streamflix_replay_records_total` (embedded mode).
    pub replay_records: IntCounter,
    /// `streamflix_replay_event_time_seconds` (embedded mode).
    pub replay_event_time: Gauge,
    /// `streamflix_input_connected`: 1 while a broker connection is up (always 1 embedded).
    pub input_connected: IntGauge,
    /// `streamflix_input_fetch_age_seconds`: since the input last received from its broker.
    pub input_fetch_age: Gauge,
    events: IntCounterVec,
    active_users: IntGaugeVec,
    binge_watchers: IntGaugeVec,
    sessions_closed: IntCounter,
    binge_sessions: IntCounter,
    /// `streamflix_session_length_seconds`.
    pub session_length: Histogram,
    genre_ratings: IntGaugeVec,
    ratings_by_value: IntCounterVec,
    churned_users: IntGauge,
    churn_alerts: IntCounterVec,
    segment_users: IntGaugeVec,
    at_risk_users: IntGauge,
    retention: GaugeVec,
    cohort_users: IntGaugeVec,
    insight_p: GaugeVec,
    insight_effect: GaugeVec,
    events_by_hour: IntCounterVec,
    events_by_weekday: IntCounterVec,
    /// `streamflix_als_update_duration_seconds`, observed by the learner (one update in
    /// [`crate::model::recommend::TIME_EVERY`]).
    pub als_update: Histogram,
    als_rmse: Gauge,
    als_mae: Gauge,
    als_scored: IntCounter,
    als_entities: IntGaugeVec,
    als_sweeps: IntCounter,
    /// Retention label sets currently exported (stale ones are removed, not the whole family).
    retention_labels: std::sync::Mutex<Vec<(String, String)>>,
}

/// Registers a freshly built metric (the names and help texts are constants: failing is a bug).
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let m = metric.expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    registered(r, IntCounter::new(name, help))
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    registered(r, IntGauge::new(name, help))
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    registered(r, Gauge::new(name, help))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    registered(r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)))
}

/// Raises a counter that mirrors a checkpointed total to `value` (never lowers it).
pub(crate) fn mirror(c: &IntCounter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let latency_buckets = vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2];
        let m = Metrics {
            records: counter_vec(
                &r,
                "streamflix_records_total",
                "Input records read, by topic and outcome (accepted, heartbeat, dead_letter).",
                &["topic", "outcome"],
            ),
            dead_letters: counter_vec(
                &r,
                "streamflix_dead_letters_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            record_seconds: histogram(
                &r,
                "streamflix_record_processing_seconds",
                "Time to decode, validate and apply one input record (one record in 64 is timed).",
                latency_buckets.clone(),
            ),
            lag: int_gauge_vec(
                &r,
                "streamflix_consumer_lag_records",
                "Records in the input not yet processed, per partition (Kafka: high watermark minus position; embedded: replayed but not yet processed).",
                &["topic", "partition"],
            ),
            watermark: gauge(
                &r,
                "streamflix_watermark_timestamp_seconds",
                "Global event-time watermark of the committed state, Unix seconds.",
            ),
            checkpoint_seconds: histogram(
                &r,
                "streamflix_checkpoint_duration_seconds",
                "Time to encode (processing thread), write and fsync (checkpoint writer thread) one checkpoint.",
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            checkpoint_bytes: int_gauge(&r, "streamflix_checkpoint_last_bytes", "Bytes written by the latest checkpoint."),
            checkpoint_written: counter(
                &r,
                "streamflix_checkpoint_written_bytes_total",
                "Bytes written by checkpoints of this process.",
            ),
            checkpoints: counter(&r, "streamflix_checkpoints_total", "Checkpoints written by this process."),
            snapshot_last_day: gauge(
                &r,
                "streamflix_snapshot_last_closed_day_timestamp_seconds",
                "Event time (00:00 UTC, Unix seconds) of the latest closed day whose tables are written.",
            ),
            snapshot_close_seconds: histogram(
                &r,
                "streamflix_snapshot_close_duration_seconds",
                "Time to encode and write one closed day's tables (snapshot writer thread).",
                vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            snapshot_bytes: counter_vec(
                &r,
                "streamflix_snapshot_written_bytes_total",
                "Parquet bytes written by the day close of this process, per table.",
                &["table"],
            ),
            checkpoint_time: gauge(
                &r,
                "streamflix_checkpoint_last_success_timestamp_seconds",
                "Wall-clock time of the latest committed checkpoint, Unix seconds.",
            ),
            state_users: int_gauge(&r, "streamflix_state_users", "Users in the processor state."),
            state_open_sessions: int_gauge(
                &r,
                "streamflix_state_open_sessions",
                "Sessions not yet closed by the watermark, over all users.",
            ),
            state_pending: int_gauge(
                &r,
                "streamflix_state_pending_events",
                "Accepted events waiting for the watermark to pass them.",
            ),
            state_disk: int_gauge(&r, "streamflix_state_disk_bytes", "Size of the sled state directory on disk."),
            http_requests: counter_vec(
                &r,
                "streamflix_http_requests_total",
                "HTTP requests, by route template and status code.",
                &["route", "status"],
            ),
            http_seconds: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("streamflix_http_request_duration_seconds", "HTTP request duration, by route template.")
                        .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
                    &["route"],
                ),
            ),
            replay_records: counter(
                &r,
                "streamflix_replay_records_total",
                "Records the embedded replay has sent to the processor.",
            ),
            replay_event_time: gauge(
                &r,
                "streamflix_replay_event_time_seconds",
                "Event time of the latest record the embedded replay sent, Unix seconds.",
            ),
            input_connected: int_gauge(
                &r,
                "streamflix_input_connected",
                "1 while the Kafka input has a broker connection up, else 0 (always 1 in embedded mode).",
            ),
            input_fetch_age: gauge(
                &r,
                "streamflix_input_fetch_age_seconds",
                "Seconds since the Kafka input last received anything from a broker (0 in embedded mode).",
            ),
            events: counter_vec(
                &r,
                "streamflix_events_total",
                "Events applied to the state (in event-time order), by kind (rating, tag).",
                &["kind"],
            ),
            active_users: int_gauge_vec(
                &r,
                "streamflix_active_users",
                "Users whose latest activity is within the window before the watermark (event time).",
                &["window"],
            ),
            binge_watchers: int_gauge_vec(
                &r,
                "streamflix_binge_watchers",
                "Users with a binge session ending within the window before the watermark.",
                &["window"],
            ),
            sessions_closed: counter(&r, "streamflix_sessions_closed_total", "Sessions closed by the watermark."),
            binge_sessions: counter(&r, "streamflix_binge_sessions_total", "Closed sessions that were binges."),
            session_length: histogram(
                &r,
                "streamflix_session_length_seconds",
                "Length (first to last event) of sessions closed by this process.",
                vec![0.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0],
            ),
            genre_ratings: int_gauge_vec(
                &r,
                "streamflix_genre_ratings_30d",
                "Ratings of movies of each genre in the 30 event-days ending with the watermark's day.",
                &["genre"],
            ),
            ratings_by_value: counter_vec(
                &r,
                "streamflix_ratings_by_value_total",
                "Ratings applied, by value (0.5 to 5.0).",
                &["rating"],
            ),
            churned_users: int_gauge(
                &r,
                "streamflix_churned_users",
                "Users churned at the watermark (no activity for the churn period).",
            ),
            churn_alerts: counter_vec(
                &r,
                "streamflix_churn_alerts_total",
                "Churn alerts published, by status (churned, reactivated, at_risk).",
                &["status"],
            ),
            segment_users: int_gauge_vec(
                &r,
                "streamflix_segment_users",
                "Users per RFM segment at the churn model's last segmentation (a month's last close; users active in the year up to it).",
                &["segment"],
            ),
            at_risk_users: int_gauge(
                &r,
                "streamflix_at_risk_users",
                "Active users with an at_risk alert in their current activity episode (churn model).",
            ),
            retention: registered(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "streamflix_retention_ratio",
                        "Share of a signup cohort (month of first event) active in the month months_since after signup; the 12 cohorts up to the watermark's month.",
                    ),
                    &["cohort", "months_since"],
                ),
            ),
            cohort_users: int_gauge_vec(
                &r,
                "streamflix_cohort_users",
                "Users per signup cohort (month of first event); the 12 cohorts up to the watermark's month.",
                &["cohort"],
            ),
            insight_p: registered(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "streamflix_insight_p_value",
                        "p-value of each insights-report test kept from event-time summaries (docs/insights.md), at the committed watermark.",
                    ),
                    &["test"],
                ),
            ),
            insight_effect: registered(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "streamflix_insight_effect",
                        "Effect size of each insights-report test: difference and relative_difference of the means (t-tests), eta_squared (ANOVA).",
                    ),
                    &["test", "measure"],
                ),
            ),
            events_by_hour: counter_vec(
                &r,
                "streamflix_events_by_hour_total",
                "Events applied, by UTC hour of day of their event time.",
                &["hour"],
            ),
            events_by_weekday: counter_vec(
                &r,
                "streamflix_events_by_weekday_total",
                "Events applied, by UTC weekday of their event time.",
                &["weekday"],
            ),
            als_update: histogram(
                &r,
                "streamflix_als_update_duration_seconds",
                &format!(
                    "Time of one ALS update (user and movie re-solved, sweep step); one update in {} is timed.",
                    crate::model::recommend::TIME_EVERY
                ),
                latency_buckets,
            ),
            als_rmse: gauge(
                &r,
                "streamflix_als_prequential_rmse",
                "RMSE of each rating predicted before it was learned (users and movies seen before).",
            ),
            als_mae: gauge(&r, "streamflix_als_prequential_mae", "MAE of each rating predicted before it was learned."),
            als_scored: counter(
                &r,
                "streamflix_als_prequential_scored_total",
                "Ratings predicted before being learned (the RMSE's sample), since the model was built.",
            ),
            als_entities: int_gauge_vec(&r, "streamflix_als_entities", "Users and movies with ALS factors.", &["kind"]),
            als_sweeps: counter(
                &r,
                "streamflix_als_sweeps_total",
                "Complete incremental ALS sweeps since the model was built.",
            ),
            retention_labels: std::sync::Mutex::new(Vec::new()),
            registry: r,
        };
        // Known label values start at zero, so rates and dashboards have a series before the
        // first occurrence.
        for reason in crate::core::validate::Reason::ALL {
            m.dead_letters.with_label_values(&[reason.as_str()]);
        }
        for status in ["churned", "reactivated", "at_risk"] {
            m.churn_alerts.with_label_values(&[status]);
        }
        for kind in ["rating", "tag"] {
            m.events.with_label_values(&[kind]);
        }
        m
    }

    /// The `streamflix_records_total` counters of `topic`, indexed by [`RecordOutcome`].
    pub fn record_counters(&self, topic: &str) -> [IntCounter; 3] {
        RecordOutcome::ALL.map(|o| self.records.with_label_values(&[topic, o.as_str()]))
    }

    /// Records a checkpoint once it is written (its state metrics are set alongside, from the
    /// values taken with it: [`Metrics::set_values`]).
    pub fn on_checkpoint_written(&self, stats: &CheckpointStats) {
        self.checkpoints.inc();
        self.checkpoint_seconds.observe(stats.duration.as_secs_f64());
        self.checkpoint_bytes.set(stats.bytes as i64);
        self.checkpoint_written.inc_by(stats.bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.checkpoint_time.set(now);
    }

    /// Sets every state and engagement metric from `p`, whose state must be a checkpoint's (just
    /// restored, or just written).
    pub fn set_state(&self, p: &Processor, disk_bytes: u64) {
        self.state_disk.set(disk_bytes as i64);
        self.set_values(&StateValues::of(p));
    }

    /// Sets every state and engagement metric from values taken from the processor (see
    /// [`StateValues`]).
    pub fn set_values(&self, v: &StateValues) {
        self.state_pending.set(v.pending as i64);
        let snap = &v.snapshot;
        self.state_users.set(snap.users as i64);
        self.state_open_sessions.set(snap.open_sessions as i64);
        if let Some(wm) = snap.watermark {
            self.watermark.set(wm as f64);
        }
        for (w, v) in [("1d", snap.active_1d), ("7d", snap.active_7d), ("30d", snap.active_30d)] {
            self.active_users.with_label_values(&[w]).set(v as i64);
        }
        self.binge_watchers.with_label_values(&["30d"]).set(snap.binge_watchers_30d as i64);
        self.set_counters(&v.counters);
        if let Some(g) = &v.scorer {
            self.set_scorer(g);
        }

        for (test, p, effects) in &v.insights {
            self.insight_p.with_label_values(&[test]).set(*p);
            for (measure, x) in effects {
                self.insight_effect.with_label_values(&[test, measure]).set(*x);
            }
        }
        for (g, n) in &v.genre_demand {
            self.genre_ratings.with_label_values(&[g]).set(*n as i64);
        }
        for (i, &n) in v.ratings_by_value.iter().enumerate() {
            mirror(&self.ratings_by_value.with_label_values(&[&format!("{:.1}", (i + 1) as f64 / 2.0)]), n);
        }
        for (h, &n) in v.events_by_hour.iter().enumerate() {
            mirror(&self.events_by_hour.with_label_values(&[&format!("{h:02}")]), n);
        }
        for (d, &n) in WEEKDAYS.iter().zip(&v.events_by_weekday) {
            mirror(&self.events_by_weekday.with_label_values(&[d]), n);
        }
        // Cohorts move with the watermark: set the current ones, then remove those that left the
        // window (not a reset, which a concurrent scrape would see as no retention at all).
        let mut current = Vec::new();
        for (label, ratio, users) in &v.retention {
            self.retention.with_label_values(&[&label.0, &label.1]).set(*ratio);
            self.cohort_users.with_label_values(&[&label.0]).set(*users as i64);
            current.push(label.clone());
        }
        let mut exported = self.retention_labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for old in exported.iter().filter(|l| !current.contains(l)) {
            let _ = self.retention.remove_label_values(&[&old.0, &old.1]);
            if !current.iter().any(|l| l.0 == old.0) {
                let _ = self.cohort_users.remove_label_values(&[&old.0]);
            }
        }
        *exported = current;
    }

    fn set_counters(&self, c: &Counters) {
        mirror(&self.events.with_label_values(&["rating"]), c.ratings);
        mirror(&self.events.with_label_values(&["tag"]), c.tags);
        for (reason, &n) in &c.dead_letters {
            mirror(&self.dead_letters.with_label_values(&[reason]), n);
        }
        mirror(&self.sessions_closed, c.sessions_closed);
        mirror(&self.binge_sessions, c.binge_sessions);
        mirror(&self.churn_alerts.with_label_values(&["churned"]), c.churned_alerts);
        mirror(&self.churn_alerts.with_label_values(&["reactivated"]), c.reactivated_alerts);
        self.churned_users.set(c.churned_now as i64);
    }

    fn set_scorer(&self, g: &ScorerGauges) {
        for &(segment, n) in &g.segment_users {
            self.segment_users.with_label_values(&[segment]).set(n as i64);
        }
        self.at_risk_users.set(g.at_risk_users as i64);
        mirror(&self.churn_alerts.with_label_values(&["at_risk"]), g.at_risk_alerts);
    }

    /// Sets the recommender's metrics from `model` (under its read lock; [`Metrics::render`]
    /// then runs without it).
    pub fn set_model(&self, model: &crate::model::recommend::Recommender) {
        let st = model.stats();
        self.als_rmse.set(st.rmse());
        self.als_mae.set(st.mae());
        mirror(&self.als_scored, st.scored);
        let als = model.als();
        self.als_entities
            .with_label_values(&["user"])
            .set(als.side(crate::model::als::Which::Users).len() as i64);
        self.als_entities
            .with_label_values(&["movie"])
            .set(als.side(crate::model::als::Which::Items).len() as i64);
        mirror(&self.als_sweeps, als.sweeps_done());
    }

    /// The exposition, in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Text encoding of gathered families cannot fail for metrics built with valid names.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// One test of the insights report as gauges: its name, p-value and effect sizes.
type Insight = (&'static str, f64, Vec<(&'static str, f64)>);

/// The insights report's tests that come from the event-time summaries alone (O(genres), no scan
/// of users): Action vs Drama, the ANOVA across genres, weekend vs weekday. The user-level tests
/// (correlations, returns, genre retention) need every user and the rating log and are served
/// by `GET /report.json` only.
fn insights(e: &crate::core::engagement::Engagement, genres: &[String]) -> Vec<Insight> {
    let r = crate::analytics::insights::summary_tests(e, genres);
    let mut out = Vec::new();
    for (name, c) in [
        ("action_vs_drama.ratings", &r.action_vs_drama.ratings),
        ("action_vs_drama.session_minutes", &r.action_vs_drama.session_minutes),
        ("weekend_vs_weekday.session_minutes", &r.weekend_vs_weekday.session_minutes),
        ("weekend_vs_weekday.session_events", &r.weekend_vs_weekday.session_events),
    ] {
        if let Some(c) = c {
            let mut effects = vec![("difference", c.test.diff)];
            if let Some(rel) = c.test.rel_diff {
                effects.push(("relative_difference", rel));
            }
            out.push((name, c.test.p, effects));
        }
    }
    if let Some(a) = &r.anova_genres.ratings {
        out.push(("anova_genres.ratings", a.test.p, vec![("eta_squared", a.test.eta_squared)]));
    }
    out
}

/// The values of the state and engagement metrics, taken from the processor when a checkpoint is
/// taken and set once it is written ([`Metrics::set_values`]), so that they always describe
/// committed state, as the HTTP API does.
#[derive(Debug, Clone)]
pub struct StateValues {
    pending: usize,
    snapshot: crate::core::engagement::Snapshot,
    counters: Counters,
    genre_demand: Vec<(String, u64)>,
    ratings_by_value: [u64; 10],
    events_by_hour: [u64; 24],
    events_by_weekday: [u64; 7],
    /// ((cohort month, months since), retention ratio, cohort users).
    retention: Vec<((String, String), f64, u64)>,
    /// (test, p-value, [(measure, effect size)]).
    insights: Vec<Insight>,
    scorer: Option<ScorerGauges>,
}

impl StateValues {
    /// The values for `p`'s current state (an O(users) scan: [`Processor::snapshot`]).
    pub fn of(p: &Processor) -> StateValues {
        let snapshot = p.snapshot();
        let e = p.engagement();
        let genres = p.catalog().genre_names();
        let demand = e.genre_demand(snapshot.watermark.unwrap_or(0), genres.len());
        let retention = snapshot.watermark.map_or_else(Vec::new, |wm| {
            e.retention(wm)
                .into_iter()
                .map(|(c, k, ratio)| {
                    let users = e.cohorts.get(&c).map_or(0, |c| c.users);
                    ((month_label(c), k.to_string()), ratio, users)
                })
                .collect()
        });
        let insights = insights(e, genres);
        StateValues {
            insights,
            pending: p.pending_len(),
            snapshot,
            counters: p.counters().clone(),
            genre_demand: genres.iter().cloned().zip(demand).collect(),
            ratings_by_value: e.ratings_by_value,
            events_by_hour: e.events_by_hour,
            events_by_weekday: e.events_by_weekday,
            retention,
            scorer: p.scorer_gauges(),
        }
    }
}
