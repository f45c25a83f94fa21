//! Kafka transport: reads the ratings and tags topics, publishes sessions, alerts, dead letters.
//!
//! Offsets live in the checkpoint (see [`crate::checkpoint`]): on start the consumer is assigned
//! every partition of both input topics at the checkpointed positions (the beginning when there
//! is no checkpoint). The consumer's `group.id` is used to commit those same positions after each
//! checkpoint, for lag visibility in Kafka tooling only; they are never read back.
//!
//! One instance reads all partitions (explicit assignment, not group rebalancing). State is keyed
//! by user and users are keyed to partitions, so scaling out means one instance per partition
//! subset with its own state directory; rebalancing checkpoints between instances is not built.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use streamflix_replay::kafka::{KafkaOptions, QuietEof, TrackingContext};

use crate::output::OutputSink;
use crate::pipeline::Pipeline;
use crate::processor::{Output, Source};

/// Topic names for one deployment: `<prefix>.ratings`, `<prefix>.tags`, `<prefix>.sessions`,
/// `<prefix>.churn-alerts`, `<prefix>.dlq`.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Input: ratings.
    pub ratings: String,
    /// Input: tags.
    pub tags: String,
    /// Output: closed sessions.
    pub sessions: String,
    /// Output: churn alerts.
    pub alerts: String,
    /// Output: dead letters.
    pub dlq: String,
}

impl Topics {
    /// The five topics under `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            ratings: format!("{prefix}.ratings"),
            tags: format!("{prefix}.tags"),
            sessions: format!("{prefix}.sessions"),
            alerts: format!("{prefix}.churn-alerts"),
            dlq: format!("{prefix}.dlq"),
        }
    }
}

/// The input partitions, ratings then tags, as the processor indexes them.
///
/// # Errors
/// The broker is unreachable or an input topic does not exist.
pub fn input_partitions(opts: &KafkaOptions, topics: &Topics) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for t in [&topics.ratings, &topics.tags] {
        let n = streamflix_replay::kafka::partition_count(opts, t)?.with_context(|| {
            format!("topic {t} does not exist; create it, or replay data into it with streamflix-replay run")
        })?;
        out.extend((0..n).map(|p| (t.clone(), p)));
    }
    Ok(out)
}

/// Publishes outputs to Kafka: key = user id (dead letters: the original key), JSON value,
/// record timestamp = the output's event time where it has one.
pub struct KafkaOutputs {
    producer: ThreadedProducer<TrackingContext>,
    tracker: Arc<streamflix_replay::kafka::DeliveryTracker>,
    topics: Topics,
    payload: Vec<u8>,
    key: Vec<u8>,
    /// Each genre name as a JSON string, by bit (see [`crate::sessions::ClosedSession::write_json`]).
    genre_json: Vec<Vec<u8>>,
}

impl KafkaOutputs {
    /// An idempotent producer for the output topics. `genres` are the catalog's genre names, by
    /// bit (for sessions).
    ///
    /// # Errors
    /// librdkafka rejects the configuration.
    pub fn new(opts: &KafkaOptions, topics: Topics, genres: Vec<String>) -> anyhow::Result<Self> {
        let ctx = TrackingContext::default();
        let tracker = ctx.0.clone();
        let producer = opts
            .client_config(&[("enable.idempotence", "true"), ("linger.ms", "20")])
            .create_with_context(ctx)
            .context("cannot create the Kafka producer")?;
        let genre_json = genres.iter().map(|g| serde_json::to_vec(g).expect("a string serializes")).collect();
        Ok(KafkaOutputs {
            producer,
            tracker,
            topics,
            payload: Vec::with_capacity(1024),
            key: Vec::with_capacity(16),
            genre_json,
        })
    }
}

impl OutputSink for KafkaOutputs {
    fn send(&mut self, out: &Output) -> anyhow::Result<()> {
        use std::io::Write;
        self.payload.clear();
        self.key.clear();
        let (topic, keyed, ts) = match out {
            Output::Session { user, session } => {
                session.write_json(*user, &self.genre_json, &mut self.payload);
                write!(self.key, "{user}")?;
                (&self.topics.sessions, true, Some(session.end()))
            }
            Output::Alert(a) => {
                serde_json::to_writer(&mut self.payload, a)?;
                write!(self.key, "{}", a.user_id)?;
                (&self.topics.alerts, true, Some(a.at))
            }
            Output::Dead(d) => {
                serde_json::to_writer(&mut self.payload, d)?;
                if let Some(k) = &d.key {
                    self.key.extend_from_slice(k.as_bytes());
                }
                (&self.topics.dlq, d.key.is_some(), None)
            }
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&self.payload[..]);
        if keyed {
            record = record.key(&self.key[..]);
        }
        if let Some(ts) = ts {
            record = record.timestamp(ts.saturating_mul(1000));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
            }
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        // librdkafka's own flush, which serves delivery reports in 10 ms slices until none is
        // outstanding. rdkafka's `flush` instead polls for a report in up to 100 ms slices, and
        // with a ThreadedProducer its thread takes the reports first, so each flush lasted at
        // least 100 ms (through tansu, 0.7 s of a 2.2 s run was the checkpoints' flushes).
        use rdkafka::bindings::{rd_kafka_flush, rd_kafka_resp_err_t};
        // SAFETY: the producer's client pointer is valid while `self.producer` lives.
        let err = unsafe { rd_kafka_flush(self.producer.client().native_ptr(), 60_000) };
        if err != rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("flushing the output producer: {}", KafkaError::Flush(err.into()));
        }
        if let Some((n, first)) = self.tracker.failures() {
            bail!("{n} output records were not delivered (first error: {first})");
        }
        Ok(())
    }
}

/// How a Kafka run ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Records applied by this run.
    pub records: u64,
    /// Wall time.
    pub seconds: f64,
    /// Reached the end of every partition (only checked with `exit_when_done`).
    pub done: bool,
}

/// Consumes the input topics into `pipeline` until `stop` (or, with `exit_when_done`, until
/// every partition is read to its end, which also finishes the input: watermark to the last
/// event).
///
/// # Errors
/// The consumer cannot be created or assigned, or the pipeline failed.
pub fn run(
    opts: &KafkaOptions,
    group_id: &str,
    pipeline: &mut Pipeline,
    exit_when_done: bool,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
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
        ],
    );
    let consumer: Arc<BaseConsumer<QuietEof>> =
        Arc::new(cfg.create_with_context(QuietEof).context("cannot create the consumer")?);
    let parts: Vec<(String, u32, u64)> =
        pipeline.processor.partitions().iter().map(|p| (p.topic.clone(), p.partition, p.position)).collect();
    // A fresh state has positions 0: `auto.offset.reset=earliest` covers logs that no longer
    // start at offset 0.
    let mut tpl = TopicPartitionList::new();
    for (t, p, pos) in &parts {
        tpl.add_partition_offset(t, *p as i32, Offset::Offset(*pos as i64))
            .context("building the assignment")?;
    }
    consumer.assign(&tpl).context("cannot assign the input partitions")?;
    // One queue per partition (split after `assign`, which would undo it), so the loop chooses
    // which partition to read. Each rings the doorbell when records arrive in it empty.
    let doorbell = Arc::new(Doorbell::default());
    let mut lanes = Vec::with_capacity(parts.len());
    for (index, (t, p, _)) in parts.iter().enumerate() {
        lanes.push(
            Lane::split(&consumer, index, t, *p, &doorbell)
                .with_context(|| format!("cannot read {t}[{p}] on its own queue"))?,
        );
    }
    let index_of =
        |topic: &str, partition: i32| parts.iter().position(|(t, p, _)| t == topic && *p as i32 == partition);

    let mut records = 0u64;
    let mut committed = pipeline.status.checkpoints.load(Ordering::Relaxed);
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
        let partitions = pipeline.processor.partitions();
        lanes.sort_by_key(|lane| partitions[lane.index].max_ts.unwrap_or(i64::MIN));
        for lane in &mut lanes {
            read += lane.read(pipeline)?;
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
        let n = pipeline.status.checkpoints.load(Ordering::Relaxed);
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
    Ok(Outcome { records, seconds: started.elapsed().as_secs_f64(), done })
}

/// How often the lag gauge is refreshed (also after every checkpoint).
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Records read from one partition before choosing again.
const BURST: usize = 64;
/// How long an idle loop waits for records before looking again anyway (events on the main
/// queue, the end-of-input check, idle checkpoints).
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// With `exit_when_done`, how often an idle loop may ask the broker whether the input has ended.
const END_CHECK_EVERY: Duration = Duration::from_millis(50);

/// One input partition's own librdkafka queue, read a batch at a time
/// (`rd_kafka_consume_batch_queue`, which rdkafka does not wrap: its per-message poll, with an
/// event conversion and clock reads per record, and each message's release were about a quarter
/// of the processing thread through tansu).
struct Lane {
    index: usize,
    /// The topic, for librdkafka calls by name.
    topic: std::ffi::CString,
    partition: i32,
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    /// Keeps the callback's target alive as long as the queue may call it.
    doorbell: Arc<Doorbell>,
    /// The consumer the queue belongs to: dropped after the queue.
    consumer: Arc<BaseConsumer<QuietEof>>,
}

impl Lane {
    /// Takes partition `partition` of `topic` off the consumer's queue onto its own (what
    /// rdkafka's `split_partition_queue` does), ringing `doorbell` when records arrive in it empty.
    fn split(
        consumer: &Arc<BaseConsumer<QuietEof>>,
        index: usize,
        topic: &str,
        partition: u32,
        doorbell: &Arc<Doorbell>,
    ) -> anyhow::Result<Lane> {
        let topic = std::ffi::CString::new(topic).context("a topic name with a NUL byte")?;
        let partition = partition as i32;
        // SAFETY: the client pointer is valid while `consumer` lives (the lane holds it); the
        // topic string outlives the call.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        if queue.is_null() {
            bail!("librdkafka has no queue for it");
        }
        let lane =
            Lane { index, topic, partition, queue, doorbell: doorbell.clone(), consumer: consumer.clone() };
        // SAFETY: `queue` is a live queue handle. The callback's argument points into the
        // lane's `doorbell` Arc, which outlives the registration: `drop` unregisters it first.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_forward(queue, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(
                queue,
                Some(ring_doorbell),
                Arc::as_ptr(&lane.doorbell) as *mut std::ffi::c_void,
            );
        }
        Ok(lane)
    }

    /// Applies the records waiting in the queue, up to [`BURST`]; returns how many it took.
    fn read(&mut self, pipeline: &mut Pipeline) -> anyhow::Result<usize> {
        use rdkafka::bindings::{rd_kafka_message_t, rd_kafka_resp_err_t};
        let mut batch: [*mut rd_kafka_message_t; BURST] = [std::ptr::null_mut(); BURST];
        // SAFETY: `queue` is live; librdkafka writes at most BURST message pointers.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(self.queue, 0, batch.as_mut_ptr(), BURST)
        };
        let Ok(n) = usize::try_from(n) else {
            tracing::warn!("kafka: reading a partition queue failed");
            return Ok(0);
        };
        let mut result = Ok(());
        for &m in &batch[..n] {
            if result.is_ok() {
                // SAFETY: librdkafka returned `m` as a live message; its payload and key are
                // valid until `rd_kafka_message_destroy` below.
                let msg: &rd_kafka_message_t = unsafe { &*m };
                if msg.err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let bytes = |ptr: *mut std::ffi::c_void, len: usize| {
                        // SAFETY: see above; a null pointer is an absent payload or key.
                        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
                    };
                    result = feed(
                        pipeline,
                        self.index,
                        msg.offset,
                        bytes(msg.key, msg.key_len),
                        bytes(msg.payload, msg.len),
                    );
                } else {
                    let e = KafkaError::MessageConsumption(msg.err.into());
                    tracing::warn!("kafka: {e}");
                }
            }
            // SAFETY: each message returned by the batch call is released exactly once.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(m) };
        }
        result.map(|()| n)
    }

    /// Records between the position and the high watermark of the latest fetch response (≤ 0:
    /// read to the end as far as that response knew), if there was one.
    fn unread(&self, pipeline: &Pipeline) -> Option<i64> {
        let position = pipeline.processor.partitions()[self.index].position as i64;
        self.fetched_high().map(|high| high - position)
    }

    /// The partition's high watermark as its latest fetch response gave it, if there was one
    /// (librdkafka's cached value, no request; rdkafka has no safe wrapper for it).
    fn fetched_high(&self) -> Option<i64> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while the lane holds the consumer; the topic string
        // and the out-pointers outlive the call.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: unregisters the callback before the doorbell can go, then releases the
        // handle `rd_kafka_queue_get_partition` gave (the consumer is still alive: the lane
        // holds it).
        unsafe {
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_destroy(self.queue);
        }
    }
}

unsafe extern "C" fn ring_doorbell(_: *mut rdkafka::bindings::rd_kafka_t, doorbell: *mut std::ffi::c_void) {
    // SAFETY: registered by `Lane::split` with a pointer to a live Doorbell (see there).
    let doorbell = unsafe { &*(doorbell as *const Doorbell) };
    doorbell.ring();
}

/// Wakes the consume loop when a partition queue receives records after being empty (librdkafka
/// calls the queues' callbacks from its own threads).
#[derive(Default)]
struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }

    /// Returns once rung since the last wait (at once if it was rung meanwhile: records that
    /// arrived after the loop looked are not missed), or after `timeout`.
    fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut rung, _) =
            self.cv.wait_timeout_while(rung, timeout, |r| !*r).unwrap_or_else(PoisonError::into_inner);
        *rung = false;
    }
}

/// Applies the record at `offset` of the partition with index `index`.
fn feed(
    pipeline: &mut Pipeline,
    index: usize,
    offset: i64,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> anyhow::Result<()> {
    let offset = offset.max(0) as u64;
    pipeline.raw(Source { index, offset, next: offset + 1 }, key, payload.unwrap_or_default())
}

/// Sets `streamflix_consumer_lag_records` per partition: high watermark − position, with the high
/// watermark of the partition's latest fetch response (no request; asking the broker, one round
/// trip per partition, took 0.3 s of a 3 s run through tansu). Called after checkpoints and every
/// second; a partition not fetched yet has no value.
fn update_lag(lanes: &[Lane], pipeline: &Pipeline) {
    for lane in lanes {
        let p = &pipeline.processor.partitions()[lane.index];
        if let Some(unread) = lane.unread(pipeline) {
            pipeline
                .metrics()
                .lag
                .with_label_values(&[&p.topic, &p.partition.to_string()])
                .set(unread.max(0));
        }
    }
}

/// Whether, by the fetched high watermarks, every input partition has been read to its end.
fn read_to_known_end(lanes: &[Lane], pipeline: &Pipeline) -> bool {
    lanes.iter().all(|l| l.unread(pipeline).is_some_and(|n| n <= 0))
}

/// Whether every input partition has been read up to its high watermark, asking the broker (one
/// round trip per partition).
fn at_end(consumer: &BaseConsumer<QuietEof>, pipeline: &Pipeline) -> anyhow::Result<bool> {
    for p in pipeline.processor.partitions() {
        let high = consumer
            .fetch_watermarks(&p.topic, p.partition as i32, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end offset of {}[{}]", p.topic, p.partition))?
            .1;
        if (p.position as i64) < high {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Commits the checkpointed positions to the group, for lag monitoring. Failures only warn.
fn commit_positions(consumer: &BaseConsumer<QuietEof>, pipeline: &Pipeline) {
    let mut tpl = TopicPartitionList::new();
    let positions =
        pipeline.status.positions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
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
