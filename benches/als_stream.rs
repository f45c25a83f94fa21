//! Per-event ALS throughput, alone: the model's `observe` on a rating stream in event-time order,
//! the work the processor's learner thread does. Prints µs per event and events/s; asserts nothing.
//!
//! `cargo bench --bench als_stream -- [DATA_DIR] [MAX_RATINGS] [SWEEP_EVERY]` — a MovieLens
//! directory (e.g. one written by `streamflix-replay generate`); without one, 1 M ratings with
//! ml-25m-like shape are generated into a temporary directory first. `SWEEP_EVERY` is the model's
//! `--sweep-every` (default 1,000,000; 0 measures the per-event updates without sweeps).

use std::time::Instant;

use streamflix::{Als, AlsConfig, PREFETCH_AHEAD};
use streamflix_replay::dataset::Dataset;
use streamflix_replay::generate::{generate, GenerateConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = match args.first() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let cfg = GenerateConfig {
                users: 6_500,
                movies: 2_500,
                ratings: 1_000_000,
                tags: 0,
                ..Default::default()
            };
            generate(&cfg, tmp.path(), |_| {}).expect("generate");
            tmp.path().to_path_buf()
        }
    };
    let max: usize = args.get(1).map_or(usize::MAX, |n| n.parse().expect("MAX_RATINGS is a number"));
    let ds = Dataset::load(&dir, false).expect("read the ratings");
    let ratings = &ds.ratings[..ds.ratings.len().min(max)];
    let mut cfg = AlsConfig::default();
    if let Some(n) = args.get(2) {
        cfg.sweep_every = n.parse().expect("SWEEP_EVERY is a number");
    }
    let mut als = Als::new(cfg);
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let mut last = started;
    // As the processor's learner does (`Recommender::observe_all`): each rating's model data is
    // requested from memory a few ratings before it is learned.
    for (n, r) in ratings.iter().enumerate() {
        if let Some(next) = ratings.get(n + PREFETCH_AHEAD) {
            als.prefetch(next.user, next.movie);
        }
        als.observe(r.user, r.movie, r.rating);
        if (n + 1) % 5_000_000 == 0 {
            let now = Instant::now();
            println!(
                "  {:>10} ratings: {:.2} µs/event over the last 5 M",
                n + 1,
                (now - last).as_secs_f64() * 1e6 / 5e6
            );
            last = now;
        }
    }
    let s = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().map(|c| c - cpu0.unwrap_or(0.0));
    println!(
        "als_stream: {} ratings in {:.2}s: {:.2} µs/event, {:.0} events/s; CPU {} ({} sweeps, rank {})",
        ratings.len(),
        s,
        s * 1e6 / ratings.len().max(1) as f64,
        ratings.len() as f64 / s,
        cpu.map_or("unknown".into(), |c| format!("{:.2} µs/event", c * 1e6 / ratings.len().max(1) as f64)),
        als.sweeps_done(),
        als.rank()
    );
}

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`; wall time on a busy
/// machine includes waiting for a core).
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}
