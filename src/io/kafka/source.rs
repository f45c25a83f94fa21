//! The consume loop: reads the input partitions into the pipeline, furthest behind first.
//!
//! May import: `crate::core`, `crate::io`'s pipeline interface ([`RecordHandler`]), `crate::serve::Status` (the input's health), the replay
//! crate's Kafka client options.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use streamflix_replay::kafka::{KafkaOptions, QuietEof};

use super::lanes::{Doorbell, Lane};
use super::TransportError;
use crate::core::processor::Source;
use crate::io::pipeline::{unix_ms, PipelineError, RecordHandler};
use crate::serve::Status;

/// The input consumer's context: librdkafka's errors as [`QuietEof`] logs them, and its
/// statistics (every second) into the status's [`crate::serve::status::InputHealth`]: whether a
/// broker connection is up, and when a broker last sent anything (`rxidle`; fetch responses come
/// every `fetch.wait.max.ms` even with nothing new, so a quiet input still counts as in contact).
pub struct InputContext {
    status: Arc<Status>,
}

impl ClientContext for InputContext {
    fn error(&self, error: KafkaError, reason: &str) {
        QuietEof.error(error, reason);
    }

    fn stats(&self, stats: Statistics) {
        let now = unix_ms();
        let health = &self.status.input;
        // The brokers that lead the input partitions answer the fetches (bootstrap entries and
        // a group coordinator do not); all known brokers until the leaders are known.
        let leaders: Vec<i32> = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values().map(|p| p.leader))
            .filter(|&l| l >= 0)
            .collect();
        let brokers = stats.brokers.values().filter(|b| b.nodeid >= 0);
        let fetching: Vec<_> =
            brokers.filter(|b| leaders.is_empty() || leaders.contains(&b.nodeid)).collect();
        let up: Vec<_> = fetching.into_iter().filter(|b| b.state == "UP").collect();
        health.connected.store(!up.is_empty(), Ordering::Relaxed);
        // The longest silence among them: one frozen leader is enough to stall the input.
        if let Some(idle_us) = up.iter().filter(|b| b.rxidle >= 0).map(|b| b.rxidle).max() {
            health.fetched(now - idle_us / 1000);
        }
    }
}

impl ConsumerContext for InputContext {}

/// How a Kafka run ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Records applied by this run.
    pub records: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Consumes the input topics into `pipeline` until `stop` (or, with `exit_when_done`, until
/// every partition is read to its end, which also finishes the input: watermark to the last
/// event).
///
/// # Errors
/// The consumer cannot be created or assigned, or the pipeline failed.
pub fn run<H: RecordHandler>(
    opts: &KafkaOptions,
    group_id: &str,
    pipeline: &mut H,
    exit_when_done: bool,
    stop: &AtomicBool,
    input_timeout: Duration,
) -> Result<Outcome, TransportError> {
    let started = Instant::now();
    let status = pipeline.status();
    status.input.track(unix_ms(), input_timeout.as_millis() as i64);
    let cfg = opts.consumer_config(
        group_id,
        &[
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.max.bytes", "16777216"),
            ("max.partition.fetch.bytes", "4194304"),
            // librdkafka's defaults left the consumer idle half the time (1.04 M events through
            // tansu: 21.4 s, 36 % CPU; with these 8.1 s, 81 %): it postpones a partition's next
            // fetch by `fetch.queue.backoff.ms` (1 s) whenever its local queue is full, and a
            // broker may hold a fetch `fetch.wait.max.ms` (500 ms) for partitions with no new
            // data (the finished tags partitions) before answering for the others.
            ("fetch.wait.max.ms", "20"),
            ("fetch.queue.backoff.ms", "10"),
            // For the input's health (readiness, `streamflix_input_*`): served by the loop's
            // poll of the main queue.
            ("statistics.interval.ms", "1000"),
        ],
    );
    let consumer: Arc<BaseConsumer<InputContext>> = Arc::new(
        cfg.create_with_context(InputContext { status: status.clone() })
            .map_err(TransportError::client("cannot create the consumer"))?,
    );
    let parts: Vec<(String, u32, u64)> =
        pipeline.partitions().iter().map(|p| (p.topic.clone(), p.partition, p.position)).collect();
    // A fresh state has positions 0: `auto.offset.reset=earliest` covers logs that no longer
    // start at offset 0.
    let mut tpl = TopicPartitionList::new();
    for (t, p, pos) in &parts {
        tpl.add_partition_offset(t, *p as i32, Offset::Offset(*pos as i64))
            .map_err(TransportError::client("building the assignment"))?;
    }
    consumer.assign(&tpl).map_err(TransportError::client("cannot assign the input partitions"))?;
    // One queue per partition (split after `assign`, which would undo it), so the loop chooses
    // which partition to read. Each rings the doorbell when records arrive in it empty.
    let doorbell = Arc::new(Doorbell::default());
    let mut lanes = Vec::with_capacity(parts.len());
    for (index, (t, p, _)) in parts.iter().enumerate() {
        lanes.push(
            Lane::split(&consumer, index, t, *p, &doorbell).map_err(|detail| TransportError::Lane {
                topic: t.clone(),
                partition: *p,
                detail,
            })?,
        );
    }
    let index_of =
        |topic: &str, partition: i32| parts.iter().position(|(t, p, _)| t == topic && *p as i32 == partition);

    let mut records = 0u64;
    let mut committed = pipeline.checkpoints_written();
    let mut done = false;
    let mut lag_at = Instant::now();
    let mut end_checked = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut read = 0;
        // Events (errors) are served on the main queue, which also holds any record fetched
        // before its partition was split off (earlier than everything on the partition's queue).
        while let Some(polled) = consumer.poll(Duration::ZERO) {
            match polled {
                Ok(msg) => {
                    let Some(index) = index_of(msg.topic(), msg.partition()) else { continue };
                    feed(pipeline, index, msg.offset(), msg.key(), msg.payload())?;
                    read += 1;
                }
                Err(e) => tracing::warn!("kafka: {e}"),
            }
        }
        // The partition furthest behind in event time first: it holds the watermark back, and
        // reading ahead elsewhere only piles events up waiting for it (through tansu, reading
        // in arrival order left the tags topic behind and the whole input pending to the end).
        let partitions = pipeline.partitions();
        lanes.sort_by_key(|lane| partitions[lane.index].max_ts.unwrap_or(i64::MIN));
        for lane in &mut lanes {
            read += lane.read(|index, offset, key, payload| feed(pipeline, index, offset, key, payload))?;
            if read > 0 {
                break;
            }
        }
        records += read as u64;
        let idle = read == 0;
        if !idle {
            idle_since = None;
        } else {
            pipeline.checkpoint_if_idle_due()?;
            let idle_for = idle_since.get_or_insert_with(Instant::now).elapsed();
            // The broker is asked only when the fetched end offsets say every partition is read
            // (or, should librdkafka not know them, after a second of idling).
            if exit_when_done
                && end_checked.elapsed() >= END_CHECK_EVERY
                && (read_to_known_end(&lanes, pipeline) || idle_for >= Duration::from_secs(1))
            {
                end_checked = Instant::now();
                if at_end(&consumer, pipeline)? {
                    done = true;
                    break;
                }
            }
            // Nothing anywhere: wait until some partition receives records (waiting on one
            // partition's queue would sleep through records arriving on the others).
            doorbell.wait(IDLE_WAIT);
        }
        let n = pipeline.checkpoints_written();
        if n != committed || lag_at.elapsed() >= LAG_EVERY {
            if n != committed {
                committed = n;
                commit_positions(&consumer, pipeline);
            }
            update_lag(&lanes, pipeline);
            lag_at = Instant::now();
        }
    }
    if done {
        pipeline.finish()?;
    } else {
        pipeline.checkpoint(false)?;
    }
    commit_positions(&consumer, pipeline);
    update_lag(&lanes, pipeline);
    Ok(Outcome { records, seconds: started.elapsed().as_secs_f64() })
}

/// How often the lag gauge is refreshed (also after every checkpoint).
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long an idle loop waits for records before looking again anyway (events on the main
/// queue, the end-of-input check, idle checkpoints).
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// With `exit_when_done`, how often an idle loop may ask the broker whether the input has ended.
const END_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Applies the record at `offset` of the partition with index `index`.
#[inline]
fn feed<H: RecordHandler>(
    pipeline: &mut H,
    index: usize,
    offset: i64,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<(), PipelineError> {
    let offset = offset.max(0) as u64;
    pipeline.raw(Source { index, offset, next: offset + 1 }, key, payload.unwrap_or_default())
}

/// Sets `streamflix_consumer_lag_records` per partition: high watermark − position, with the high
/// watermark of the partition's latest fetch response (no request; asking the broker, one round
/// trip per partition, took 0.3 s of a 3 s run through tansu). Called after checkpoints and every
/// second; a partition not fetched yet has no value.
fn update_lag<H: RecordHandler>(lanes: &[Lane], pipeline: &H) {
    for lane in lanes {
        let p = &pipeline.partitions()[lane.index];
        if let Some(unread) = lane.unread(p.position) {
            pipeline.report_lag(&p.topic, p.partition, unread);
        }
    }
}

/// Whether, by the fetched high watermarks, every input partition has been read to its end.
fn read_to_known_end<H: RecordHandler>(lanes: &[Lane], pipeline: &H) -> bool {
    lanes.iter().all(|l| l.unread(pipeline.partitions()[l.index].position).is_some_and(|n| n <= 0))
}

/// Whether every input partition has been read up to its high watermark, asking the broker (one
/// round trip per partition).
fn at_end<H: RecordHandler>(
    consumer: &BaseConsumer<InputContext>,
    pipeline: &H,
) -> Result<bool, TransportError> {
    for p in pipeline.partitions() {
        let high = consumer
            .fetch_watermarks(&p.topic, p.partition as i32, Duration::from_secs(10))
            .map_err(TransportError::client(format!(
                "cannot read the end offset of {}[{}]",
                p.topic, p.partition
            )))?
            .1;
        if (p.position as i64) < high {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Commits the checkpointed positions to the group, for lag monitoring. Failures only warn.
fn commit_positions<H: RecordHandler>(consumer: &BaseConsumer<InputContext>, pipeline: &H) {
    let mut tpl = TopicPartitionList::new();
    let positions = pipeline.committed_positions();
    for p in &positions {
        if p.position > 0 {
            let _ = tpl.add_partition_offset(&p.topic, p.partition as i32, Offset::Offset(p.position as i64));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!("committing offsets for lag visibility failed: {e}");
        }
    }
}
