//! `streamflix`: the stream processor's command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use streamflix::als::AlsConfig;
use streamflix::catalog::Catalog;
use streamflix::checkpoint::Store;
use streamflix::config::{parse_duration, CoreConfig};
use streamflix::metrics::Metrics;
use streamflix::output::{JsonLinesSink, NullSink, OutputSink};
use streamflix::pipeline::{open_processor, CheckpointPolicy, Pipeline, Status};
use streamflix::server::{self, AppState};
use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::ReplayConfig;
use streamflix_replay::generate::{generate, GenerateConfig};
use streamflix_replay::kafka::KafkaOptions;
use streamflix_replay::time::format_datetime;

/// Streaming engagement analytics for a video platform, fed by MovieLens-style rating events:
/// sessions, rolling RFM features and churn alerts per user, in event time, with exactly-once
/// state in sled and an HTTP API.
#[derive(Parser, Debug)]
#[command(name = "streamflix", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole pipeline in one process, no broker: generate a dataset (unless --data is given),
    /// replay it through an in-process channel into the processor, print a summary, and serve
    /// the HTTP API until Ctrl-C (or exit with --exit-when-done).
    Demo {
        /// Use this MovieLens directory instead of generating one.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Users to generate.
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Ratings to generate.
        #[arg(long, default_value_t = 300_000)]
        ratings: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        embedded: EmbeddedArgs,
    },
    /// Process a MovieLens directory in embedded mode (replay and processor in one process, no
    /// broker). With --state, a restart continues from the last checkpoint. Serves the HTTP API
    /// and keeps serving after the input is exhausted, until interrupted.
    Run {
        /// MovieLens directory (ratings.csv or ratings.dat, movies, optional tags).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        embedded: EmbeddedArgs,
    },
    /// Consume <prefix>.ratings and <prefix>.tags from Kafka; publish <prefix>.sessions,
    /// <prefix>.churn-alerts and <prefix>.dlq; checkpoint to --state; serve the HTTP API.
    Process {
        /// Kafka bootstrap servers.
        #[arg(long, env = "STREAMFLIX_BROKERS")]
        brokers: String,
        /// Topic prefix.
        #[arg(long, env = "STREAMFLIX_TOPIC_PREFIX", default_value = "streamflix")]
        topic_prefix: String,
        /// The movie catalog (movies.csv or movies.dat, or a directory holding one), for genres,
        /// titles and unknown-movie checks.
        #[arg(long, env = "STREAMFLIX_MOVIES")]
        movies: PathBuf,
        /// State directory (sled). Restarting with the same directory resumes exactly.
        #[arg(long, env = "STREAMFLIX_STATE", default_value = "streamflix-state")]
        state: PathBuf,
        /// Consumer group, used only to commit positions for lag monitoring.
        #[arg(long, env = "STREAMFLIX_GROUP_ID", default_value = "streamflix-processor")]
        group_id: String,
        /// Extra librdkafka property, KEY=VALUE (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
        kafka_property: Vec<(String, String)>,
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        core: CoreArgs,
    },
    /// Evaluate the ALS recommender on a MovieLens directory (or a given split) and print JSON:
    /// batch RMSE/MAE on a seeded random 80/20 split, and streaming (prequential) RMSE/MAE,
    /// recall@10 and update latency after training on the first 80 % by time.
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
}

/// Options of `streamflix eval`.
#[derive(Args, Debug)]
struct EvalArgs {
    /// MovieLens directory (ratings and movies).
    #[arg(long, required_unless_present_all = ["train", "test", "movies"], conflicts_with_all = ["train", "test"])]
    data: Option<PathBuf>,
    /// Training ratings (ratings.csv format), with --test and --movies instead of --data.
    #[arg(long, requires_all = ["test", "movies"])]
    train: Option<PathBuf>,
    /// Test ratings (ratings.csv format).
    #[arg(long, requires_all = ["train", "movies"])]
    test: Option<PathBuf>,
    /// Movie catalog; ratings of movies not in it are dropped, as the processor does.
    #[arg(long)]
    movies: Option<PathBuf>,
    #[command(flatten)]
    als: AlsArgs,
    /// Batch ALS iterations.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    iters: u32,
    /// Seed of the random split and the recall sample.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Ratings ≥ 4 sampled for recall@10.
    #[arg(long, default_value_t = 1_000)]
    recall_sample: usize,
}

/// Recommender settings (stored with the state; a restart must use the same).
#[derive(Args, Debug, Clone)]
struct AlsArgs {
    /// ALS rank (factors per user and movie).
    #[arg(long, env = "STREAMFLIX_ALS_RANK", default_value_t = 32)]
    rank: usize,
    /// ALS regularisation λ, scaled by rating counts as in Spark MLlib.
    #[arg(long, env = "STREAMFLIX_ALS_LAMBDA", default_value_t = 0.1)]
    lambda: f32,
    /// A full incremental ALS sweep spans this many events (at least as many as there are
    /// ratings); 0 disables sweeps.
    #[arg(long, env = "STREAMFLIX_ALS_SWEEP_EVERY", default_value_t = 1_000_000)]
    sweep_every: u64,
}

impl AlsArgs {
    fn config(&self) -> Result<AlsConfig> {
        let cfg = AlsConfig { rank: self.rank, lambda: self.lambda, sweep_every: self.sweep_every };
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DumpWhat {
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
}

/// Embedded-mode options: input, serving, semantics.
#[derive(Args, Debug)]
struct EmbeddedArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    core: CoreArgs,
    /// State directory (sled). Default: a temporary directory, deleted at exit.
    #[arg(long, env = "STREAMFLIX_STATE")]
    state: Option<PathBuf>,
    /// Write outputs as JSON lines (sessions.jsonl, churn-alerts.jsonl, dlq.jsonl) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Partitions per topic in the in-process channel (fixed for a state directory).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Pace the replay: event-seconds per wall-second (default: as fast as possible).
    #[arg(long)]
    speed: Option<f64>,
}

/// Serving, checkpointing and recommender options (not stored with the state).
#[derive(Args, Debug)]
struct ServeArgs {
    /// HTTP listen address (port 0 picks a free port).
    #[arg(long, env = "STREAMFLIX_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Do not serve HTTP.
    #[arg(long)]
    no_http: bool,
    /// Exit when the input is exhausted instead of serving until interrupted.
    #[arg(long)]
    exit_when_done: bool,
    /// Checkpoint after this many records.
    #[arg(long, env = "STREAMFLIX_CHECKPOINT_EVERY", default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Checkpoint after this much wall time (e.g. 5s, 1m).
    #[arg(long, env = "STREAMFLIX_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    checkpoint_interval: i64,
    /// Run without the recommender (ALS): users' state, sessions and churn only, for a third of
    /// the CPU and 60 % of the memory at 25 M ratings; the recommendation routes answer 503. Ratings are still logged, so a
    /// later run without this flag rebuilds the model from every rating.
    #[arg(long)]
    no_recommender: bool,
}

/// Analytics semantics (stored with the state; a restart must use the same).
#[derive(Args, Debug)]
struct CoreArgs {
    /// A pause of at least this long ends a session.
    #[arg(long, env = "STREAMFLIX_SESSION_GAP", default_value = "30m", value_parser = parse_duration)]
    session_gap: i64,
    /// How far behind its partition's newest event time an event may arrive (max 7d).
    #[arg(long, env = "STREAMFLIX_ALLOWED_LATENESS", default_value = "5m", value_parser = parse_duration)]
    allowed_lateness: i64,
    /// Inactivity (in event time) after which a user has churned.
    #[arg(long, env = "STREAMFLIX_CHURN_AFTER", default_value = "30d", value_parser = parse_duration)]
    churn_after: i64,
    /// Events that make a session a binge.
    #[arg(long, env = "STREAMFLIX_BINGE_MIN_EVENTS", default_value_t = 5)]
    binge_min_events: u32,
    /// Let a user's first (onboarding) session count as a binge.
    #[arg(long)]
    binge_first_session: bool,
    /// Events further than this beyond their partition's watermark go to the DLQ.
    #[arg(long, env = "STREAMFLIX_MAX_FUTURE", default_value = "30d", value_parser = parse_duration)]
    max_future: i64,
    /// Payloads larger than this (bytes) go to the DLQ.
    #[arg(long, env = "STREAMFLIX_MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    max_payload_bytes: usize,
    #[command(flatten)]
    als: AlsArgs,
}

impl CoreArgs {
    fn config(&self) -> Result<CoreConfig> {
        let cfg = CoreConfig {
            session_gap: self.session_gap,
            allowed_lateness: self.allowed_lateness,
            churn_after: self.churn_after,
            binge_min_events: self.binge_min_events,
            binge_first_session: self.binge_first_session,
            max_future: self.max_future,
            max_payload_bytes: self.max_payload_bytes,
            als: self.als.config()?,
        };
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}

impl ServeArgs {
    fn policy(&self) -> CheckpointPolicy {
        CheckpointPolicy {
            every_records: self.checkpoint_every,
            every: Duration::from_secs(self.checkpoint_interval.max(1) as u64),
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMFLIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async side: HTTP server and signal handling, on a small runtime beside the processor
/// thread (which is the main thread: processing is CPU-bound and synchronous).
struct Services {
    rt: tokio::runtime::Runtime,
    /// Read by the synchronous processing loops.
    stop: Arc<AtomicBool>,
    /// The same, for async waiters.
    stopped: tokio::sync::watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    addr: Option<SocketAddr>,
}

impl Services {
    fn start(
        serve: &ServeArgs,
        store: &Store,
        status: &Arc<Status>,
        processor: &streamflix::processor::Processor,
        metrics: &Arc<Metrics>,
    ) -> Result<Services> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = tokio::sync::watch::Sender::new(false);
        {
            let (stop, stopped) = (stop.clone(), stopped.clone());
            rt.spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
                eprintln!("stopping: finishing the current record, checkpointing, flushing outputs…");
                stop.store(true, Ordering::SeqCst);
                stopped.send_replace(true);
                // A second signal means: now.
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        }
        let (server, addr) = if serve.no_http {
            (None, None)
        } else {
            let listener = rt.block_on(tokio::net::TcpListener::bind(serve.http)).with_context(|| {
                format!("cannot listen on {} (pass --http with another address, or --no-http)", serve.http)
            })?;
            let addr = listener.local_addr()?;
            let state = AppState {
                store: store.clone(),
                status: status.clone(),
                model: processor.model().cloned(),
                metrics: metrics.clone(),
            };
            let mut stopped = stopped.subscribe();
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let handle = rt.spawn(server::serve(listener, state, shutdown));
            println!("http: listening on http://{addr}");
            (Some(handle), Some(addr))
        };
        Ok(Services { rt, stop, stopped, server, addr })
    }

    /// Blocks until a signal (unless `exit_now`), then stops the server gracefully.
    fn finish(mut self, exit_now: bool) -> Result<()> {
        if let Some(addr) = self.addr {
            if !exit_now && !self.stop.load(Ordering::SeqCst) {
                println!("serving http://{addr} (try /stats, /churn, /users/{{id}}); Ctrl-C to stop");
                let mut stopped = self.stopped.subscribe();
                self.rt.block_on(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        self.stopped.send_replace(true);
        if let Some(h) = self.server.take() {
            self.rt.block_on(h).context("http server task")?.context("http server")?;
        }
        Ok(())
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { data, users, ratings, seed, embedded } => {
            embedded.core.config()?; // refuse bad settings before generating
            let tmp;
            let dir = match data {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    let g = GenerateConfig {
                        users,
                        movies: (users * 4).max(1_000),
                        ratings,
                        tags: ratings / 25,
                        seed,
                        ..Default::default()
                    };
                    let started = Instant::now();
                    let s = generate(&g, tmp.path(), |_| {})?;
                    println!(
                        "generated {} ratings and {} tags from {} users in {:.1}s ({} inactive at the end, {} came back after 30+ days)",
                        s.ratings, s.tags, s.users, started.elapsed().as_secs_f64(), s.churned_at_end, s.returned
                    );
                    tmp.path().to_path_buf()
                }
            };
            run_embedded(&dir, &embedded, true)
        }
        Command::Run { data, embedded } => run_embedded(&data, &embedded, false),
        Command::Process { brokers, topic_prefix, movies, state, group_id, kafka_property, serve, core } => {
            let cfg = core.config()?;
            let movies = if movies.is_dir() { find_in(&movies, "movies")? } else { movies };
            let catalog = Arc::new(Catalog::load(&movies)?);
            let opts = KafkaOptions { brokers, extra: kafka_property };
            let topics = streamflix::kafka::Topics::with_prefix(&topic_prefix);
            // Created first: an idempotent producer takes a few hundred ms to connect and get its
            // producer id, which then overlaps the rest of the start-up instead of holding up the
            // first checkpoint's flush (through tansu, 0.3-0.6 s of a 2.2-2.7 s run).
            let sink =
                streamflix::kafka::KafkaOutputs::new(&opts, topics.clone(), catalog.genre_names().to_vec())?;
            let partitions = streamflix::kafka::input_partitions(&opts, &topics)?;
            let store = Store::open(&state)?;
            let (processor, checkpoints) =
                open_processor(&store, "kafka", cfg, catalog, partitions.clone(), !serve.no_recommender)?;
            let status = Arc::new(Status::default());
            status.ready.store(checkpoints > 0, Ordering::Relaxed);
            let metrics = Arc::new(Metrics::new());
            let services = Services::start(&serve, &store, &status, &processor, &metrics)?;
            let n = partitions.iter().filter(|(t, _)| *t == topics.ratings).count() as u32;
            let outs = [topics.sessions.as_str(), topics.alerts.as_str(), topics.dlq.as_str()];
            services
                .rt
                .block_on(streamflix_replay::kafka::ensure_topics(
                    &opts,
                    &outs,
                    n.max(1),
                    1,
                    &[("retention.ms".into(), "-1".into())],
                ))
                .context("creating output topics")?;
            let mut pipeline =
                Pipeline::new(processor, store, Box::new(sink), "kafka", serve.policy(), checkpoints, status);
            pipeline.set_metrics(metrics);
            if checkpoints > 0 {
                println!("resuming from checkpoint {checkpoints} in {}", state.display());
            }
            let outcome = streamflix::kafka::run(
                &opts,
                &group_id,
                &mut pipeline,
                serve.exit_when_done,
                &services.stop,
            )?;
            print_summary(&pipeline, outcome.records, outcome.seconds);
            services.finish(serve.exit_when_done)
        }
        Command::Eval(args) => eval(&args),
        Command::Dump { state, what } => dump(&state, what),
    }
}

/// `name.csv` or `name.dat` in `dir`, or a one-line error saying neither is there.
fn find_in(dir: &Path, name: &str) -> Result<PathBuf> {
    streamflix_replay::movielens::find(dir, name)
        .with_context(|| format!("no {name}.csv or {name}.dat in {}", dir.display()))
}

fn read_ratings(path: &Path) -> Result<Vec<streamflix_replay::movielens::Rating>> {
    let (ratings, report) = streamflix_replay::movielens::read_ratings(path)?;
    for line in report.describe() {
        eprintln!("warning: {line}");
    }
    Ok(ratings)
}

fn eval(args: &EvalArgs) -> Result<()> {
    use streamflix::eval::{batch, random_split, streaming, time_split, EvalConfig, Report};
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
    let catalog = Catalog::load(&movies)?;
    let known = |r: &streamflix_replay::movielens::Rating| catalog.genres_of(r.movie).is_some();
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

fn run_embedded(dir: &Path, e: &EmbeddedArgs, demo: bool) -> Result<()> {
    let (cfg, serve) = (e.core.config()?, &e.serve);
    let movies = find_in(dir, "movies")?;
    let catalog = Arc::new(Catalog::load(&movies)?);
    let started = Instant::now();
    let ds = Dataset::load(dir, true)?;
    for r in &ds.reports {
        for line in r.describe() {
            eprintln!("warning: {line}");
        }
    }
    println!("read and sorted {} events in {:.2}s", ds.len(), started.elapsed().as_secs_f64());
    let tmp;
    let state_dir = match &e.state {
        Some(s) => s.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let store = Store::open(&state_dir)?;
    let partitions = streamflix::embedded::partition_list(e.partitions);
    let (processor, checkpoints) =
        open_processor(&store, "embedded", cfg, catalog, partitions, !serve.no_recommender)?;
    if checkpoints > 0 {
        println!("resuming from checkpoint {checkpoints} in {}", state_dir.display());
    }
    let status = Arc::new(Status::default());
    status.ready.store(checkpoints > 0, Ordering::Relaxed);
    let metrics = Arc::new(Metrics::new());
    let services = Services::start(serve, &store, &status, &processor, &metrics)?;
    let sink: Box<dyn OutputSink> = match &e.out {
        Some(d) => Box::new(JsonLinesSink::open(d, processor.catalog().genre_names().to_vec())?),
        None => Box::new(NullSink),
    };
    let mut pipeline = Pipeline::new(processor, store, sink, "embedded", serve.policy(), checkpoints, status);
    pipeline.set_metrics(metrics);
    let replay_cfg = ReplayConfig { speed: e.speed, ..Default::default() };
    if let Some(s) = e.speed {
        if !(s.is_finite() && s > 0.0) {
            bail!("--speed must be a positive number, got {s}");
        }
    }
    let progress = indicatif::ProgressBar::new(ds.len());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} events {per_sec} eta {eta} — {msg}")
            .expect("valid template"),
    );
    let outcome =
        streamflix::embedded::run(&ds, &mut pipeline, &replay_cfg, e.partitions, &services.stop, &progress)?;
    progress.finish_and_clear();
    print_summary(&pipeline, outcome.records, outcome.seconds);
    if outcome.interrupted {
        println!(
            "interrupted; checkpoint written{}",
            if e.state.is_some() { ", run again to continue" } else { "" }
        );
    }
    if demo {
        print_demo_hints(&pipeline);
    }
    services.finish(serve.exit_when_done || outcome.interrupted)
}

fn print_summary(p: &Pipeline, records: u64, seconds: f64) {
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
    let Some(model) = p.processor.model() else {
        println!("recommender: off (--no-recommender); {} ratings logged for a later run with it", c.ratings);
        return;
    };
    let model = model.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (st, als) = (model.stats(), model.als());
    println!(
        "recommender: {} ratings learned ({} users, {} movies, rank {}, {} sweeps); prequential RMSE {:.4} MAE {:.4}; \
         update p50 {}, p99 {} ({:.1} µs mean)",
        als.ratings(),
        als.side(streamflix::als::Which::Users).len(),
        als.side(streamflix::als::Which::Items).len(),
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

fn print_demo_hints(p: &Pipeline) {
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

fn dump(state: &Path, what: DumpWhat) -> Result<()> {
    use std::io::Write;
    if !state.exists() {
        bail!("no state directory at {}", state.display());
    }
    let store = Store::open(state)?;
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
            DumpWhat::Model => {
                use streamflix::als::Which;
                // The model a restart rebuilds, the same way (genres play no part in the factors).
                let catalog = Arc::new(streamflix::catalog::Catalog::default());
                let model =
                    streamflix::processor::Processor::replay_model(&meta.config, &catalog, store.ratings())?;
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
