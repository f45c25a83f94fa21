//! Embedded mode: the replay engine and the processor in one process, over a bounded channel.
//!
//! The replay runs on its own thread with a [`ChannelSink`]: the processor receives exactly what
//! it would read from Kafka (same records, same partitioning, same heartbeats), so everything
//! downstream is exercised without a broker. Resume positions are replay `seq`s per partition:
//! restarting with the same `--state` continues where the checkpoint stopped.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::core::processor`, `crate::io::pipeline`, `crate::serve::metrics`, the replay crate (`streamflix-replay`), `streamflix-schemas`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use streamflix_replay::dataset::Dataset;
use streamflix_replay::engine::{self, ReplayConfig, Summary};
use streamflix_replay::sink::{ChannelSink, Outgoing, Sink, SinkError, Topic};
use streamflix_schemas::{topics, StreamRecord};

use crate::core::processor::Source;
use crate::io::pipeline::{Pipeline, PipelineError};

/// Errors of an embedded run.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The pipeline failed (outputs or checkpoint).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The replay failed.
    #[error("replay")]
    Replay(#[source] SinkError),
    /// The replay thread panicked.
    #[error("the replay thread panicked")]
    ReplayPanicked,
}

/// The embedded input's partitions: `partitions` per topic, ratings then tags.
pub fn partition_list(partitions: u32) -> Vec<(String, u32)> {
    [topics::RATINGS, topics::TAGS]
        .iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.to_string(), p)))
        .collect()
}

/// How an embedded run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Records the processor applied this run (events, heartbeats, dead letters).
    pub records: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Stopped by a signal before the end of the data.
    pub interrupted: bool,
}

/// Replays `ds` into `pipeline` with `partitions` partitions per topic, from the pipeline's
/// resume positions. At the end of the data the watermark moves to the last event and a final
/// checkpoint is written; when `stop` is raised, the current record finishes and a checkpoint is
/// written.
///
/// # Errors
/// The pipeline failed (outputs or checkpoint), or the replay thread died.
pub fn run(
    ds: &Dataset,
    pipeline: &mut Pipeline,
    replay_cfg: &ReplayConfig,
    partitions: u32,
    stop: &AtomicBool,
    progress: &indicatif::ProgressBar,
) -> Result<Outcome, EmbeddedError> {
    let started = Instant::now();
    let p = partitions as usize;
    let positions: Vec<u64> = pipeline.processor.partitions().iter().map(|s| s.position).collect();
    let mut cfg = replay_cfg.clone();
    if positions.iter().any(|&x| x > 0) {
        cfg.resume = Some([positions[..p].to_vec(), positions[p..].to_vec()]);
    }
    // Chunks of up to CHANNEL_CHUNK records: 16 queued chunks (16 k records, the bound before
    // chunking), plus the chunk being filled and the one being applied.
    let (tx, rx) = sync_channel::<Vec<Outgoing>>(16);
    let mut records = 0u64;
    // Per input partition: records the replay has sent (lag = sent − processed).
    let sent: Vec<AtomicU64> = (0..2 * p).map(|_| AtomicU64::new(0)).collect();
    let last_ts = AtomicI64::new(0);
    let mut processed = vec![0u64; 2 * p];
    let metrics = pipeline.metrics().clone();
    let lag: Vec<prometheus::IntGauge> = pipeline
        .processor
        .partitions()
        .iter()
        .map(|s| metrics.lag.with_label_values(&[&s.topic, &s.partition.to_string()]))
        .collect();
    let report = |processed: &[u64]| {
        let mut total = 0;
        for (i, g) in lag.iter().enumerate() {
            let n = sent[i].load(Ordering::Relaxed);
            total += n;
            g.set(n.saturating_sub(processed[i]) as i64);
        }
        crate::serve::metrics::mirror(&metrics.replay_records, total);
        metrics.replay_event_time.set(last_ts.load(Ordering::Relaxed) as f64);
    };
    let result = std::thread::scope(|s| {
        let replay = s.spawn(|| {
            let mut sink =
                CountingSink { inner: ChannelSink::new(tx, partitions), sent: &sent, last_ts: &last_ts, p };
            engine::replay(ds, &mut sink, &cfg, stop, progress)
        });
        let mut failed = None;
        'chunks: for chunk in rx.iter() {
            for out in chunk {
                let index = input_index(out.topic, out.partition, p);
                let offset = match &out.record {
                    StreamRecord::Rating(r) => r.seq,
                    StreamRecord::Tag(t) => t.seq,
                    StreamRecord::Heartbeat(h) => h.next_seq,
                };
                let src = Source { index, offset, next: out.record.next_seq() };
                // No Kafka key in-process: a dead letter's payload names the user.
                if let Err(e) = pipeline.record(src, None, &out.record) {
                    failed = Some(e);
                    break 'chunks;
                }
                records += 1;
                processed[index] += 1;
                if records.is_multiple_of(4096) {
                    report(&processed);
                }
                if stop.load(Ordering::Relaxed) {
                    break 'chunks;
                }
            }
        }
        // Dropping the receiver unblocks a replay waiting on a full channel.
        drop(rx);
        let summary = replay.join().map_err(|_| EmbeddedError::ReplayPanicked)?;
        report(&processed);
        if let Some(e) = failed {
            return Err(EmbeddedError::Pipeline(e));
        }
        Ok(summary)
    });
    let interrupted = stop.load(Ordering::Relaxed);
    let summary = match result {
        Ok(Ok(s)) => s,
        // The channel closed under the replay because we stopped reading: an interruption.
        Ok(Err(_)) if interrupted => Summary { interrupted: true, ..Default::default() },
        Ok(Err(e)) => return Err(EmbeddedError::Replay(e)),
        Err(e) => return Err(e),
    };
    let interrupted = interrupted || summary.interrupted;
    if interrupted {
        pipeline.checkpoint(false)?;
    } else {
        pipeline.finish()?;
    }
    Ok(Outcome { records, seconds: started.elapsed().as_secs_f64(), interrupted })
}

/// Index of an input partition in [`partition_list`]: ratings partitions first, then tags.
fn input_index(topic: Topic, partition: u32, partitions_per_topic: usize) -> usize {
    topic as usize * partitions_per_topic + partition as usize
}

/// The channel sink, counting what it sends per partition (for lag and replay progress). A record
/// counts as sent once the sink has it, chunked or not: until the processor applies it, it is lag.
struct CountingSink<'a> {
    inner: ChannelSink,
    sent: &'a [AtomicU64],
    last_ts: &'a AtomicI64,
    p: usize,
}

impl Sink for CountingSink<'_> {
    fn partitions(&self, topic: Topic) -> u32 {
        self.inner.partitions(topic)
    }
    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        let index = input_index(out.topic, out.partition, self.p);
        let ts = out.record.ts();
        self.inner.send(out)?;
        self.sent[index].fetch_add(1, Ordering::Relaxed);
        self.last_ts.store(ts, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        self.inner.idle()
    }
}
