//! The embedded pipeline: replay and consumer in one process over a bounded channel, no broker.
//!
//! The replay engine runs on its own thread with a [`ChannelSink`]; the consumer reads the channel
//! exactly as it would read Kafka partitions (same records, same partitioning, same heartbeats),
//! so everything downstream is exercised without a broker.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;

use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::{self, ReplayConfig, Summary};
use streamflix_replay::sink::{ChannelSink, Outgoing, Topic};
use streamflix_schemas::StreamRecord;

/// What the consumer saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Rating events received.
    pub ratings: u64,
    /// Tag events received.
    pub tags: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Distinct users.
    pub users: u64,
    /// Events whose event time was earlier than a previous event of the same user (must be 0).
    pub out_of_order: u64,
    /// Events earlier than their partition's watermark (must be 0: heartbeats are promises).
    pub behind_watermark: u64,
    /// Global watermark at the end: min over partitions of the latest event time or heartbeat.
    pub watermark: Option<i64>,
}

/// Replays `ds` through an in-process channel with `partitions` partitions per topic and
/// consumes it.
///
/// # Errors
/// Only if the channel breaks, which means the consumer thread died.
pub fn run(
    ds: &Dataset,
    cfg: &ReplayConfig,
    partitions: u32,
    stop: &AtomicBool,
) -> anyhow::Result<(Summary, Tally)> {
    let (tx, rx) = sync_channel::<Outgoing>(8192);
    std::thread::scope(|s| {
        let replay = s.spawn(move || {
            let mut sink = ChannelSink::new(tx, partitions);
            engine::replay(ds, &mut sink, cfg, stop, &indicatif::ProgressBar::hidden())
        });
        let mut tally = Tally::default();
        let mut last_by_user: std::collections::HashMap<u32, i64> = std::collections::HashMap::new();
        let mut watermark = [vec![i64::MIN; partitions as usize], vec![i64::MIN; partitions as usize]];
        for out in rx {
            let wm = &mut watermark[out.topic as usize][out.partition as usize];
            match &out.record {
                StreamRecord::Heartbeat(h) => {
                    tally.heartbeats += 1;
                    *wm = (*wm).max(h.ts);
                    continue;
                }
                StreamRecord::Rating(_) => tally.ratings += 1,
                StreamRecord::Tag(_) => tally.tags += 1,
            }
            tally.behind_watermark += (out.ts < *wm) as u64;
            *wm = (*wm).max(out.ts);
            let user = out.key.unwrap_or_default();
            let last = last_by_user.entry(user).or_insert(i64::MIN);
            tally.out_of_order += (out.ts < *last) as u64;
            *last = out.ts;
        }
        tally.users = last_by_user.len() as u64;
        let all = Topic::ALL.iter().flat_map(|t| watermark[*t as usize].iter().copied());
        tally.watermark = all.min().filter(|&w| w > i64::MIN);
        let summary = replay.join().map_err(|_| anyhow::anyhow!("replay thread panicked"))??;
        Ok((summary, tally))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamflix_replay::generate::{generate, GenerateConfig};

    #[test]
    fn embedded_pipeline_delivers_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            GenerateConfig { users: 200, movies: 800, ratings: 20_000, tags: 500, ..Default::default() };
        let gen = generate(&cfg, dir.path(), |_| {}).unwrap();
        let ds = Dataset::load(dir.path(), true).unwrap();
        let (summary, tally) = run(&ds, &ReplayConfig::default(), 3, &AtomicBool::new(false)).unwrap();
        assert_eq!((tally.ratings, tally.tags, tally.users), (20_000, 500, 200));
        assert_eq!(summary.events(), 20_500);
        assert_eq!((tally.out_of_order, tally.behind_watermark), (0, 0));
        assert_eq!(tally.watermark, Some(gen.last_ts), "final heartbeats bring every partition to the end");
    }
}
