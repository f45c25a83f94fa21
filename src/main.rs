//! `streamflix`: the stream processor's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::ReplayConfig;
use streamflix_replay::generate::{generate, GenerateConfig};
use streamflix_replay::time::format_datetime;

/// Streaming engagement analytics for a video platform, fed by MovieLens-style rating events.
#[derive(Parser, Debug)]
#[command(name = "streamflix", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole pipeline in one process with no broker: generate a dataset (unless --data
    /// is given), replay it in event-time order through an in-process channel, and consume it.
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
        /// Partitions per topic in the in-process channel.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { data, users, ratings, seed, partitions } => {
            let tmp;
            let dir = match data {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    let cfg = GenerateConfig {
                        users,
                        movies: (users * 4).max(1_000),
                        ratings,
                        tags: ratings / 25,
                        seed,
                        ..Default::default()
                    };
                    let started = Instant::now();
                    let g = generate(&cfg, tmp.path(), |_| {})?;
                    println!(
                        "generated {} ratings and {} tags from {} users in {:.1}s ({} churned by the end, {} returned)",
                        g.ratings, g.tags, g.users, started.elapsed().as_secs_f64(), g.churned_at_end, g.returned
                    );
                    tmp.path().to_path_buf()
                }
            };
            let started = Instant::now();
            let ds = Dataset::load(&dir, true)?;
            println!("read and sorted {} events in {:.2}s", ds.len(), started.elapsed().as_secs_f64());
            let started = Instant::now();
            let (summary, tally) = streamflix::embedded::run(
                &ds,
                &ReplayConfig::default(),
                partitions,
                &AtomicBool::new(false),
            )?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replayed {} ratings + {} tags + {} heartbeats in-process in {:.2}s ({:.0} events/s)",
                tally.ratings,
                tally.tags,
                tally.heartbeats,
                secs,
                summary.events() as f64 / secs
            );
            println!(
                "{} users; per-user order violations: {}; events behind their watermark: {}; final watermark {}",
                tally.users,
                tally.out_of_order,
                tally.behind_watermark,
                tally.watermark.map(format_datetime).unwrap_or_else(|| "-".into())
            );
            println!("(sessions, RFM, churn and recommendations arrive with the processor; see README)");
            Ok(())
        }
    }
}
