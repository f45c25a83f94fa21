//! The `streamflix` command line: every subcommand's arguments, parsed by clap, and their
//! validation into the typed configs the library takes.
//!
//! May import: every layer of the crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use streamflix_replay::cli::key_value;

use crate::analytics::tables::Table;
use crate::core::config::{parse_duration, AlsConfig, CoreConfig};
use crate::io::pipeline::CheckpointPolicy;
use crate::io::snapshots::{Period, SnapshotSettings};
use crate::serve::http::HttpOptions;

/// Streaming engagement analytics for a video platform, fed by MovieLens-style rating events:
/// sessions, rolling RFM features and churn alerts per user, in event time, with exactly-once
/// state in sled and an HTTP API.
#[derive(Parser, Debug)]
#[command(name = "streamflix", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline in one process, no broker: generate a dataset (unless --data is given),
    /// replay it through an in-process channel into the processor, print a summary, and serve
    /// the HTTP API until Ctrl-C (or exit with --exit-when-done).
    Demo(DemoArgs),
    /// Process a MovieLens directory in embedded mode (replay and processor in one process, no
    /// broker). With --state, a restart continues from the last checkpoint. Serves the HTTP API
    /// and keeps serving after the input is exhausted, until interrupted.
    Run(RunArgs),
    /// Consume <prefix>.ratings and <prefix>.tags from Kafka; publish <prefix>.sessions,
    /// <prefix>.churn-alerts and <prefix>.dlq; checkpoint to --state; serve the HTTP API.
    Process(ProcessArgs),
    /// Evaluate the ALS recommender on a MovieLens directory (or a given split) and print JSON:
    /// batch RMSE/MAE on a seeded random 80/20 split, and streaming (prequential) RMSE/MAE,
    /// recall@10 and update latency after training on the first 80 % by time. `eval churn`
    /// evaluates the churn scores instead.
    Eval(EvalArgs),
    /// Print committed state from a state directory as JSON lines.
    Dump {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        /// What to print.
        #[arg(value_enum, default_value = "users")]
        what: DumpWhat,
    },
    /// The insights report from a state directory's committed state: Welch's t-tests (Action vs
    /// Drama ratings and session spans, weekend vs weekday sessions), a one-way ANOVA of ratings
    /// across genres and user-level correlations (Pearson and Spearman), each with its numbers
    /// and a one-line conclusion; definitions in docs/insights.md.
    Report {
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `streamflix report --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ReportFormat {
    /// Markdown, for people.
    Md,
    /// JSON, every number.
    Json,
    /// One self-contained HTML page with charts (inline SVG, no scripts).
    Html,
}

/// Options of `streamflix demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Use this MovieLens directory instead of generating one.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Users to generate.
    #[arg(long, default_value_t = 2_000)]
    pub users: u32,
    /// Ratings to generate.
    #[arg(long, default_value_t = 300_000)]
    pub ratings: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub embedded: EmbeddedArgs,
}

/// Options of `streamflix run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// MovieLens directory (ratings.csv or ratings.dat, movies, optional tags).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub embedded: EmbeddedArgs,
}

/// Options of `streamflix process`.
#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "STREAMFLIX_BROKERS")]
    pub brokers: String,
    /// Topic prefix.
    #[arg(long, env = "STREAMFLIX_TOPIC_PREFIX", default_value = "streamflix")]
    pub topic_prefix: String,
    /// The movie catalog (movies.csv or movies.dat, or a directory holding one), for genres,
    /// titles and unknown-movie checks.
    #[arg(long, env = "STREAMFLIX_MOVIES")]
    pub movies: PathBuf,
    /// State directory (sled). Restarting with the same directory resumes exactly.
    #[arg(long, env = "STREAMFLIX_STATE", default_value = "streamflix-state")]
    pub state: PathBuf,
    /// Consumer group, used only to commit positions for lag monitoring.
    #[arg(long, env = "STREAMFLIX_GROUP_ID", default_value = "streamflix-processor")]
    pub group_id: String,
    /// /readyz answers 503 once nothing has come from the broker for this long (down,
    /// unreachable or frozen: the lag is then unknown).
    #[arg(long, env = "STREAMFLIX_INPUT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub input_timeout: i64,
    /// Extra librdkafka property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    pub kafka_property: Vec<(String, String)>,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub core: CoreArgs,
}

/// Options of `streamflix eval`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    /// What else to evaluate (without one: the recommender).
    #[command(subcommand)]
    pub what: Option<EvalWhat>,
    /// MovieLens directory (ratings and movies).
    #[arg(long, required_unless_present_all = ["train", "test", "movies"], conflicts_with_all = ["train", "test"])]
    pub data: Option<PathBuf>,
    /// Training ratings (ratings.csv format), with --test and --movies instead of --data.
    #[arg(long, requires_all = ["test", "movies"])]
    pub train: Option<PathBuf>,
    /// Test ratings (ratings.csv format).
    #[arg(long, requires_all = ["train", "movies"])]
    pub test: Option<PathBuf>,
    /// Movie catalog; ratings of movies not in it are dropped, as the processor does.
    #[arg(long)]
    pub movies: Option<PathBuf>,
    #[command(flatten)]
    pub als: AlsArgs,
    /// Batch ALS iterations.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iters: u32,
    /// Seed of the random split and the recall sample.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Ratings ≥ 4 sampled for recall@10.
    #[arg(long, default_value_t = 1_000)]
    pub recall_sample: usize,
    /// Ranking metrics consider only movies with at least this many ratings learned, as the
    /// served recommendations do (`run --min-movie-ratings`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub min_movie_ratings: u32,
    /// Also compare the streaming model with a batch model retrained every --retrain-days
    /// event-days, on the last 20 % of ratings by time (with --train/--test: on the test file):
    /// RMSE over the events each can score, on the events both can, how many each can score,
    /// and recall@10 / NDCG@10 of a sample of next ratings ≥ 4. Costs one batch fit per window.
    #[arg(long)]
    pub temporal: bool,
    /// Event-days between the batch model's refits (with --temporal).
    #[arg(long, default_value_t = 30, requires = "temporal", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retrain_days: u32,
}

/// `streamflix eval` subcommands.
#[derive(Subcommand, Debug)]
pub enum EvalWhat {
    /// How well churn scores rank the users about to churn, as JSON: at every daily close from
    /// day 60 on, users active in the 30 days before it are scored and labelled churned when
    /// they have no activity in the 30 days after it. Scores: days since the last activity
    /// (the baseline) and 1 − P(alive) under MBG/NBD and BG/NBD (fitted by maximum likelihood).
    /// Reports ROC AUC, PR AUC, lift in the top decile, Brier score and calibration, and the
    /// BG/NBD and MBG/NBD fits at the last day.
    Churn(EvalChurnArgs),
}

/// Options of `streamflix eval churn`.
#[derive(Args, Debug)]
pub struct EvalChurnArgs {
    /// MovieLens directory (ratings, movies and, if present, tags).
    #[arg(long)]
    pub data: PathBuf,
    /// The `at_risk` threshold of the run being evaluated (the report also shows reach and
    /// precision at other thresholds).
    #[arg(long, default_value_t = crate::analytics::churn_model::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f64,
    /// Also write the activity patterns at the last day as CSV (x, t_x, T in days, users, and
    /// P(alive) under each model at the fitted parameters), for checking the fit elsewhere.
    #[arg(long, value_name = "FILE")]
    pub patterns: Option<PathBuf>,
}

/// Recommender settings (stored with the state; a restart must use the same).
#[derive(Args, Debug, Clone)]
pub struct AlsArgs {
    /// ALS rank (factors per user and movie).
    #[arg(long, env = "STREAMFLIX_ALS_RANK", default_value_t = 32)]
    pub rank: usize,
    /// ALS regularisation λ, scaled by rating counts as in Spark MLlib.
    #[arg(long, env = "STREAMFLIX_ALS_LAMBDA", default_value_t = 0.1)]
    pub lambda: f32,
    /// A full incremental ALS sweep spans this many events (at least as many as there are
    /// ratings); 0 disables sweeps.
    #[arg(long, env = "STREAMFLIX_ALS_SWEEP_EVERY", default_value_t = 1_000_000)]
    pub sweep_every: u64,
}

impl AlsArgs {
    pub fn config(&self) -> Result<AlsConfig> {
        let cfg = AlsConfig { rank: self.rank, lambda: self.lambda, sweep_every: self.sweep_every };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DumpWhat {
    /// Each user's status and features at the committed watermark.
    Users,
    /// Every closed session.
    Sessions,
    /// Each user's latest churn alert.
    Alerts,
    /// The checkpoint's meta record.
    Meta,
    /// The ALS model rebuilt from the checkpoint's rating log: one line per user and movie with
    /// its factor, then a summary line.
    Model,
    /// The churn model (`GET /models/churn`) and the last segmentation (`GET /segments`), with
    /// the size and FNV-1a hash of its whole checkpointed state.
    ChurnModel,
}

/// Embedded-mode options: input, serving, semantics.
#[derive(Args, Debug)]
pub struct EmbeddedArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub core: CoreArgs,
    /// State directory (sled). Default: a temporary directory, deleted at exit.
    #[arg(long, env = "STREAMFLIX_STATE")]
    pub state: Option<PathBuf>,
    /// Write outputs as JSON lines (sessions.jsonl, churn-alerts.jsonl, dlq.jsonl) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    /// Partitions per topic in the in-process channel (fixed for a state directory).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Pace the replay: event-seconds per wall-second (default: as fast as possible).
    #[arg(long)]
    pub speed: Option<f64>,
}

/// The daily close's tables (docs/tables.md).
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Write the daily close's Parquet tables here: when event time passes midnight UTC, the day
    /// is closed and its tables written (docs/tables.md). `run` and `demo` default to
    /// <state>/snapshots when --state is given; `process` writes none unless given a directory.
    #[arg(long, env = "STREAMFLIX_SNAPSHOTS", value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// Write no tables (`run`, `demo`).
    #[arg(long, conflicts_with = "snapshots")]
    pub no_snapshots: bool,
    /// The tables to write, comma-separated (default: all): ratings, user_features,
    /// user_features_full, sessions, churn_alerts, genre_daily, cohort_retention, movies.
    #[arg(long, value_name = "TABLES", value_delimiter = ',', value_parser = parse_table)]
    pub snapshot_tables: Vec<Table>,
    /// Partition granularity: one dt= partition per day, week (from Monday) or month. Days still
    /// close daily; a longer period gathers their parts and gets _SUCCESS at its end.
    #[arg(long, value_enum, default_value = "day")]
    pub snapshot_period: PeriodArg,
}

/// `--snapshot-period`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodArg {
    /// One partition per day.
    Day,
    /// One per week, Monday to Sunday.
    Week,
    /// One per calendar month.
    Month,
}

fn parse_table(s: &str) -> Result<Table, String> {
    Table::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        format!("no table {s:?}; the tables are {}", names.join(", "))
    })
}

impl SnapshotArgs {
    /// Where and what to write: `default_dir` unless a directory is given or tables are off.
    pub fn settings(&self, default_dir: Option<PathBuf>) -> Option<SnapshotSettings> {
        if self.no_snapshots {
            return None;
        }
        let dir = self.snapshots.clone().or(default_dir)?;
        let tables = if self.snapshot_tables.is_empty() {
            Table::ALL.to_vec()
        } else {
            Table::ALL.into_iter().filter(|t| self.snapshot_tables.contains(t)).collect()
        };
        let period = match self.snapshot_period {
            PeriodArg::Day => Period::Day,
            PeriodArg::Week => Period::Week,
            PeriodArg::Month => Period::Month,
        };
        Some(SnapshotSettings { dir, tables, period })
    }
}

/// Serving, checkpointing and recommender options (not stored with the state).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTP listen address (port 0 picks a free port).
    #[arg(long, env = "STREAMFLIX_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Do not serve HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Require `Authorization: Bearer <TOKEN>` on every HTTP route except /healthz, /readyz and
    /// /metrics (see --http-token-metrics). Prefer the environment variable: a flag shows in
    /// `ps`.
    #[arg(long, env = "STREAMFLIX_HTTP_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub http_token: Option<String>,
    /// With --http-token, require the token on /metrics too (Prometheus then needs it in its
    /// scrape config: `authorization: {credentials: …}`).
    #[arg(long, requires = "http_token")]
    pub http_token_metrics: bool,
    /// Close an HTTP connection that has not sent a complete request head this long after it
    /// opened or after its previous response (slow clients and idle keep-alives).
    #[arg(long, env = "STREAMFLIX_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: i64,
    /// HTTP connections served at once; more wait until one closes.
    #[arg(long, env = "STREAMFLIX_HTTP_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub http_max_connections: u32,
    /// The least number of ratings a movie needs to be ranked in ALS recommendations, similar
    /// titles and group recommendations (a factor fitted to one or two ratings is noise).
    #[arg(long, env = "STREAMFLIX_MIN_MOVIE_RATINGS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub min_movie_ratings: u32,
    /// Delete the state in --state first and start over (for a damaged state directory; the
    /// input is then read from its beginning).
    #[arg(long)]
    pub reset_state: bool,
    /// Exit when the input is exhausted instead of serving until interrupted.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Checkpoint after this many records.
    #[arg(long, env = "STREAMFLIX_CHECKPOINT_EVERY", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Checkpoint after this much wall time (e.g. 5s, 1m).
    #[arg(long, env = "STREAMFLIX_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: i64,
    /// Run without the recommender (ALS): users' state, sessions and churn only, for a third of
    /// the CPU and 60 % of the memory at 25 M ratings; the recommendation routes answer 503. Ratings are still logged, so a
    /// later run without this flag rebuilds the model from every rating.
    #[arg(long)]
    pub no_recommender: bool,
    /// Run without the churn model: no `churn_risk`, no `at_risk` alerts (the 30-day `churned`
    /// and `reactivated` alerts are unchanged). A later run with the model starts it afresh.
    #[arg(long)]
    pub no_churn_model: bool,
    /// `churn_risk` (0–1) at or above which an active user gets an `at_risk` alert, once per
    /// activity episode (docs/churn.md shows reach and lead time by threshold).
    #[arg(long, env = "STREAMFLIX_AT_RISK_THRESHOLD", default_value_t = crate::analytics::churn_model::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub at_risk_threshold: f64,
}

/// Analytics semantics (stored with the state; a restart must use the same).
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// A pause of at least this long ends a session.
    #[arg(long, env = "STREAMFLIX_SESSION_GAP", default_value = "30m", value_parser = parse_duration)]
    pub session_gap: i64,
    /// How far behind its partition's newest event time an event may arrive (max 7d).
    #[arg(long, env = "STREAMFLIX_ALLOWED_LATENESS", default_value = "5m", value_parser = parse_duration)]
    pub allowed_lateness: i64,
    /// Inactivity (in event time) after which a user has churned.
    #[arg(long, env = "STREAMFLIX_CHURN_AFTER", default_value = "30d", value_parser = parse_duration)]
    pub churn_after: i64,
    /// Events that make a session a binge.
    #[arg(long, env = "STREAMFLIX_BINGE_MIN_EVENTS", default_value_t = 5)]
    pub binge_min_events: u32,
    /// Let a user's first (onboarding) session count as a binge.
    #[arg(long)]
    pub binge_first_session: bool,
    /// Events further than this beyond their partition's watermark go to the DLQ.
    #[arg(long, env = "STREAMFLIX_MAX_FUTURE", default_value = "30d", value_parser = parse_duration)]
    pub max_future: i64,
    /// Payloads larger than this (bytes) go to the DLQ.
    #[arg(long, env = "STREAMFLIX_MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    pub max_payload_bytes: usize,
    /// Records (heartbeats too) more than this far ahead of this machine's clock go to the DLQ.
    #[arg(long, env = "STREAMFLIX_MAX_AHEAD_OF_CLOCK", default_value = "1d", value_parser = parse_duration)]
    pub max_ahead_of_clock: i64,
    #[command(flatten)]
    pub als: AlsArgs,
}

impl CoreArgs {
    pub fn config(&self) -> Result<CoreConfig> {
        let cfg = CoreConfig {
            session_gap: self.session_gap,
            allowed_lateness: self.allowed_lateness,
            churn_after: self.churn_after,
            binge_min_events: self.binge_min_events,
            binge_first_session: self.binge_first_session,
            max_future: self.max_future,
            max_payload_bytes: self.max_payload_bytes,
            max_ahead_of_clock: self.max_ahead_of_clock,
            als: self.als.config()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A bearer token: printable ASCII without spaces (what an `Authorization` header can carry).
fn parse_token(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the token is empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be printable ASCII without spaces".into());
    }
    Ok(s.to_string())
}

/// A probability in (0, 1].
fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        Ok(p) => Err(format!("{p} is not in (0, 1]")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

impl ServeArgs {
    /// The HTTP server's options.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            token: self.http_token.clone(),
            token_on_metrics: self.http_token_metrics,
            timeout: Duration::from_secs(self.http_timeout.max(1) as u64),
            max_connections: self.http_max_connections as usize,
            min_movie_ratings: self.min_movie_ratings as usize,
        }
    }

    /// The churn model's `at_risk` threshold; `None` without the model.
    pub fn churn_threshold(&self) -> Option<f64> {
        (!self.no_churn_model).then_some(self.at_risk_threshold)
    }

    /// Checkpoint policy.
    pub fn policy(&self) -> CheckpointPolicy {
        CheckpointPolicy {
            every_records: self.checkpoint_every,
            every: Duration::from_secs(self.checkpoint_interval.max(1) as u64),
        }
    }
}
