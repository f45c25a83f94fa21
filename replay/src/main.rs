//! `streamflix-replay`: replay MovieLens into Kafka, generate synthetic MovieLens, inspect a dataset.
//!
//! Signals, exit codes, `-X KEY=VALUE` and the log filter follow the conventions both binaries
//! share ([`streamflix_replay::cli`]).
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `cli`, `dataset`, `engine`, `generate`, `kafka`, `movielens`, `shape`, `sink`, `time`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use streamflix_replay::cli::{self, key_value, Shutdown};
use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::{self, ReplayConfig, Summary};
use streamflix_replay::generate::{self, Format, GenerateConfig};
use streamflix_replay::kafka::{self, KafkaOptions, KafkaSink};
use streamflix_replay::sink::{JsonLinesSink, NullSink, Sink, Topic};
use streamflix_replay::time::{format_datetime, parse_instant};
use streamflix_replay::{movielens, shape};

/// Replay MovieLens ratings and tags into Kafka as a live stream, paced by event time.
#[derive(Parser, Debug)]
#[command(name = "streamflix-replay", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay a MovieLens directory into Kafka (or stdout), in event-time order.
    ///
    /// Events are sorted by event time (ties in file order, ratings before tags) and produced as
    /// JSON to <prefix>.ratings and <prefix>.tags, keyed by user id, with the Kafka timestamp set
    /// to the event time. Idle partitions receive clock heartbeats so consumers' watermarks keep
    /// moving. Without --speed or --rate the replay is unthrottled.
    Run(RunArgs),
    /// Write a synthetic MovieLens dataset (movies, ratings, tags) with a ground-truth file.
    ///
    /// The data is shaped like MovieLens (power-law popularity, heavy-tailed users with genre
    /// tastes, onboarding bursts, binge sessions, daily and weekly rhythm, churn and returns) and
    /// deterministic for a given --seed. ground_truth.csv records each user's tastes, churn date
    /// and return date.
    Generate(GenerateArgs),
    /// Read a MovieLens directory and print its size, time span, malformed lines and shape.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// MovieLens directory: ratings.csv (or ratings.dat), optionally tags.csv / tags.dat.
    #[arg(long, env = "STREAMFLIX_DATA")]
    data: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "STREAMFLIX_BROKERS", default_value = "localhost:9092")]
    brokers: String,
    /// Topic prefix: records go to <prefix>.ratings and <prefix>.tags.
    #[arg(long, env = "STREAMFLIX_TOPIC_PREFIX", default_value = "streamflix")]
    topic_prefix: String,
    /// Do not replay tags, only ratings.
    #[arg(long)]
    no_tags: bool,
    /// Partitions for topics this run creates (existing topics keep theirs).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    partitions: u32,
    /// Replication factor for topics this run creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    replication_factor: u32,
    /// Topic config for topics this run creates, KEY=VALUE, repeatable. The default keeps
    /// records forever: retention is judged on record timestamps, which are historical here.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = key_value, default_values = ["retention.ms=-1"])]
    topic_config: Vec<(String, String)>,
    /// Pace by event time: X event-seconds per wall-second (86400 = a day per second).
    #[arg(long, value_parser = positive_f64)]
    speed: Option<f64>,
    /// Cap the send rate at N events per second.
    #[arg(long, value_parser = positive_f64)]
    rate: Option<f64>,
    /// Start at this event time: YYYY-MM-DD (UTC), RFC 3339, or epoch seconds.
    #[arg(long, value_parser = parse_instant)]
    from: Option<i64>,
    /// Stop before this event time (same forms as --from).
    #[arg(long, value_parser = parse_instant)]
    to: Option<i64>,
    /// Send at most N events in this run.
    #[arg(long)]
    limit: Option<u64>,
    /// Send a clock heartbeat to a partition after this many event-seconds without a record.
    #[arg(long, default_value_t = engine::DEFAULT_HEARTBEAT_EVERY, value_parser = clap::value_parser!(i64).range(1..))]
    heartbeat_every: i64,
    /// Continue after the last event already on the topics: no duplicates, no gap. Use the same
    /// --data, --from and --no-tags as the interrupted run.
    #[arg(long)]
    resume: bool,
    /// Where records go: kafka, stdout (JSON lines), or null (serialize and discard; benchmarks).
    #[arg(long, value_enum, default_value_t = SinkKind::Kafka)]
    sink: SinkKind,
    /// librdkafka property for the producer, KEY=VALUE, repeatable (e.g. -X compression.type=lz4).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    rdkafka: Vec<(String, String)>,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    Kafka,
    Stdout,
    Null,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Start from the sizes of a real MovieLens release; explicit flags override them.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Number of users [default: 1000].
    #[arg(long)]
    users: Option<u32>,
    /// Number of movies [default: 3000].
    #[arg(long)]
    movies: Option<u32>,
    /// Exact number of ratings, at least 20 per user [default: 150000].
    #[arg(long)]
    ratings: Option<u64>,
    /// Exact number of tags [default: 4% of ratings].
    #[arg(long)]
    tags: Option<u64>,
    /// RNG seed: the same seed and sizes give byte-identical files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Earliest event date.
    #[arg(long, value_parser = parse_instant, default_value = "1996-01-01")]
    start: i64,
    /// Latest event date.
    #[arg(long, value_parser = parse_instant, default_value = "2019-11-21")]
    end: i64,
    /// File dialect: csv (ml-latest, ml-25m) or dat (ml-1m, whole stars).
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Plant an effect for the insights report to find: stretch the time between events of
    /// sessions that start on a Saturday or Sunday (UTC) by this factor (0.5–1.4; 1 = none),
    /// recorded in generator.json. Weekend sessions then span that much longer on average,
    /// with the same number of events.
    #[arg(long, default_value_t = 1.0)]
    plant_weekend_span: f64,
    /// Overwrite an existing dataset in --out.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// ml-latest-small: 610 users, 9,742 movies, 100,836 ratings, 3,683 tags.
    MlLatestSmall,
    /// ml-25m: 162,541 users, 62,423 movies, 25,000,095 ratings, 1,093,360 tags.
    Ml25m,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// MovieLens directory.
    #[arg(long, env = "STREAMFLIX_DATA")]
    data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn main() -> ExitCode {
    cli::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Generate(args) => generate(args),
        Command::Inspect(args) => inspect(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress_bar(len: u64, quiet: bool, template: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    pb
}

fn load(dir: &Path, with_tags: bool, quiet: bool) -> Result<Dataset> {
    let spinner = if quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    spinner.set_message(format!("reading and sorting {}", dir.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let ds = Dataset::load(dir, with_tags)?;
    spinner.finish_and_clear();
    for report in &ds.reports {
        if report.skipped > 0 {
            eprintln!("warning: skipped {} malformed lines of {}:", report.skipped, report.path.display());
            for line in report.describe() {
                eprintln!("  {line}");
            }
        }
    }
    tracing::info!(events = ds.len(), seconds = started.elapsed().as_secs_f64(), "dataset loaded");
    Ok(ds)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            bail!("--from must be before --to");
        }
    }
    if args.resume && args.sink != SinkKind::Kafka {
        bail!("--resume reads the topics back, so it needs --sink kafka");
    }
    if args.sink == SinkKind::Stdout && args.json {
        bail!("--json and --sink stdout both write to stdout; pick one");
    }
    let ds = load(&args.data, !args.no_tags, args.quiet)?;
    if ds.is_empty() {
        bail!("{}: no events to replay", args.data.display());
    }
    let topics = [format!("{}.ratings", args.topic_prefix), format!("{}.tags", args.topic_prefix)];
    let mut cfg = ReplayConfig {
        speed: args.speed,
        rate: args.rate,
        from: args.from,
        to: args.to,
        limit: args.limit,
        heartbeat_every: args.heartbeat_every,
        resume: None,
    };
    let shutdown = Shutdown::default();
    shutdown.listen_on_own_thread(None);
    let mut sink: Box<dyn Sink> = match args.sink {
        SinkKind::Null => Box::new(NullSink::new(args.partitions)),
        SinkKind::Stdout => {
            Box::new(JsonLinesSink::new(std::io::BufWriter::new(std::io::stdout().lock()), args.partitions))
        }
        SinkKind::Kafka => {
            let opts = KafkaOptions { brokers: args.brokers.clone(), extra: args.rdkafka.clone() };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let created = rt.block_on(kafka::ensure_topics(
                &opts,
                &names,
                args.partitions,
                args.replication_factor,
                &args.topic_config,
            ))?;
            for (name, (n, was_created)) in topics.iter().zip(&created) {
                if *was_created {
                    eprintln!("created topic {name} with {n} partitions");
                }
            }
            let partitions = [created[0].0, created[1].0];
            if args.resume {
                let mut positions = [Vec::new(), Vec::new()];
                for t in Topic::ALL {
                    let i = t as usize;
                    positions[i] = kafka::resume_positions(&opts, &topics[i], partitions[i])
                        .with_context(|| format!("reading where {} stopped", topics[i]))?;
                }
                eprintln!(
                    "resuming: {} is complete up to seq {:?}, {} up to {:?}",
                    topics[0], positions[0], topics[1], positions[1]
                );
                cfg.resume = Some(positions);
            }
            Box::new(KafkaSink::new(&opts, topics.clone(), partitions)?)
        }
    };
    let total = args.limit.map_or(ds.len(), |l| l.min(ds.len()));
    let pb = progress_bar(
        total,
        args.quiet || args.sink == SinkKind::Stdout,
        "{spinner} {elapsed_precise} [{bar:28}] {human_pos}/{human_len} events {per_sec} ETA {eta} | event date {msg}",
    );
    let summary = engine::replay(&ds, sink.as_mut(), &cfg, shutdown.flag(), &pb);
    pb.finish_and_clear();
    let summary = summary.context("replay failed")?;
    drop(sink);
    report_summary(&summary, &topics, args.sink, args.json)?;
    // Interrupted or not, everything sent was flushed: a clean stop (see `cli`).
    Ok(ExitCode::SUCCESS)
}

fn report_summary(s: &Summary, topics: &[String; 2], sink: SinkKind, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    let out: &mut dyn std::io::Write =
        if sink == SinkKind::Stdout { &mut std::io::stderr() } else { &mut std::io::stdout() };
    if s.events() == 0 && s.already_delivered > 0 && !s.interrupted {
        writeln!(out, "nothing to send: the topics already hold all {} events", s.already_delivered)?;
        return Ok(());
    }
    let dest =
        if sink == SinkKind::Kafka { format!(" to {} / {}", topics[0], topics[1]) } else { String::new() };
    writeln!(
        out,
        "sent {} ratings, {} tags and {} heartbeats{dest} in {:.1}s ({:.0} events/s)",
        s.ratings, s.tags, s.heartbeats, s.seconds, s.events_per_second
    )?;
    if let (Some(a), Some(b)) = (s.first_ts, s.last_ts) {
        writeln!(out, "event time {} .. {} UTC", format_datetime(a), format_datetime(b))?;
    }
    if s.already_delivered > 0 {
        writeln!(out, "skipped {} events already on the topics (--resume)", s.already_delivered)?;
    }
    if s.out_of_range > 0 {
        writeln!(out, "skipped {} events before --from", s.out_of_range)?;
    }
    if s.limit_reached {
        writeln!(out, "stopped at --limit")?;
    }
    if s.interrupted {
        writeln!(out, "interrupted: everything sent was flushed; continue with --resume")?;
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let d = GenerateConfig::default();
    let (users, movies, ratings, tags) = match args.preset {
        Some(Preset::MlLatestSmall) => (610, 9_742, 100_836, Some(3_683)),
        Some(Preset::Ml25m) => (162_541, 62_423, 25_000_095, Some(1_093_360)),
        None => (d.users, d.movies, d.ratings, None),
    };
    let ratings = args.ratings.unwrap_or(ratings);
    let cfg = GenerateConfig {
        users: args.users.unwrap_or(users),
        movies: args.movies.unwrap_or(movies),
        ratings,
        tags: args.tags.or(tags.filter(|_| args.ratings.is_none())).unwrap_or(ratings / 25),
        seed: args.seed,
        start: args.start,
        end: args.end,
        format: args.format,
        planted: generate::Planted { weekend_session_span: args.plant_weekend_span },
    };
    cfg.validate()?;
    if !args.force
        && (movielens::find(&args.out, "ratings").is_some() || movielens::find(&args.out, "movies").is_some())
    {
        bail!("{} already holds a dataset; pass --force to overwrite it", args.out.display());
    }
    let pb = progress_bar(
        cfg.users as u64,
        args.quiet,
        "{spinner} {elapsed_precise} [{bar:28}] {human_pos}/{human_len} users ETA {eta}",
    );
    let started = Instant::now();
    let summary = generate::generate(&cfg, &args.out, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    println!(
        "wrote {} users, {} movies, {} ratings, {} tags to {} in {:.1}s",
        summary.users,
        summary.movies,
        summary.ratings,
        summary.tags,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "event time {} .. {} UTC; {} users churned at the end, {} came back after a churn (ground_truth.csv)",
        format_datetime(summary.first_ts),
        format_datetime(summary.last_ts),
        summary.churned_at_end,
        summary.returned
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let ds = load(&args.data, true, args.json)?;
    let read_seconds = started.elapsed().as_secs_f64();
    let s = shape::shape(&ds);
    if args.json {
        let skipped: u64 = ds.reports.iter().map(|r| r.skipped).sum();
        let v = serde_json::json!({ "shape": s, "malformed_lines": skipped, "read_and_sort_seconds": read_seconds });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    println!("{}", args.data.display());
    println!("  read and sorted in    {read_seconds:.2}s");
    println!("  ratings               {} from {} users on {} movies", s.ratings, s.users, s.movies);
    println!("  tags                  {}", s.tags);
    println!("  event time            {} .. {} UTC", format_datetime(s.first_ts), format_datetime(s.last_ts));
    println!(
        "  ratings per user      min {} / median {} / max {}",
        s.ratings_per_user_min, s.ratings_per_user_median, s.ratings_per_user_max
    );
    println!(
        "  ratings per movie     median {} / {} of movies ≤ 3 / {} ≥ 5, holding {} of ratings",
        s.ratings_per_movie_median,
        pct(s.movies_max_3_ratings),
        pct(s.movies_min_5_ratings),
        pct(s.ratings_on_movies_min_5)
    );
    println!("  in first session      {} of ratings (30-minute gap)", pct(s.first_session_share));
    println!("  one-day users         {}", pct(s.one_day_users));
    println!("  span > 600 days       {} of users", pct(s.users_over_600_days));
    println!("  inactive 30d at end   {} of users", pct(s.inactive_30d_at_end));
    println!("  half-star ratings     {}", pct(s.half_star_share));
    for r in &ds.reports {
        println!("  {}: {} records, {} malformed lines", r.path.display(), r.records, r.skipped);
    }
    Ok(ExitCode::SUCCESS)
}
