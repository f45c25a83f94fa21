//! The Kafka side of the replay: topic creation, the producer sink, and reading back where a
//! previous run stopped (`--resume`).
//!
//! Delivery: an idempotent producer (`enable.idempotence=true`) keeps each partition in send
//! order with no duplicates from retries, which `--resume` relies on: a partition then always
//! holds a prefix of the events destined to it. A record that still fails (broker gone past
//! `message.timeout.ms`) is counted, the first error kept, and the run fails at flush, telling
//! the user to `--resume`.
//!
//! Record timestamps are event times (CreateTime). Kafka's default retention (7 days) is judged
//! on record timestamps, so a replay of 1990s data would be deleted at once: topics this tool
//! creates get `retention.ms=-1` unless told otherwise.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `sink`, `streamflix-schemas`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use streamflix_schemas::StreamRecord;
use thiserror::Error;

use crate::sink::{Outgoing, Sink, SinkError, Topic};

/// How long metadata and admin requests may take before the broker counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking to the broker outside of producing.
#[derive(Debug, Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the configuration or a request failed.
    #[error("{context}: {source}")]
    Client {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A topic could not be created.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
    /// `--resume` found a record it cannot interpret.
    #[error(
        "cannot resume: {topic}[{partition}] offset {offset} does not hold a streamflix payload ({why})"
    )]
    ForeignRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset of the last record.
        offset: i64,
        /// Why it does not parse.
        why: String,
    },
}

fn client_err(context: impl Into<String>) -> impl FnOnce(KafkaError) -> KafkaSetupError {
    let context = context.into();
    move |source| KafkaSetupError::Client { context, source }
}

/// Connection settings shared by the producer, admin client and resume reader.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties (`-X key=value`), applied last so they win.
    pub extra: Vec<(String, String)>,
}

impl KafkaOptions {
    /// Client settings: bootstrap servers, then `defaults`, then the user's `-X` properties,
    /// which therefore win. Every client (producer, admin, consumer) starts here.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        cfg.set("socket.timeout.ms", "10000");
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        for (k, v) in &self.extra {
            cfg.set(k, v);
        }
        cfg
    }

    fn consumer(&self) -> Result<BaseConsumer<QuietEof>, KafkaSetupError> {
        self.consumer_with(&[])
    }

    fn consumer_with(&self, settings: &[(&str, &str)]) -> Result<BaseConsumer<QuietEof>, KafkaSetupError> {
        let mut cfg = self.consumer_config("streamflix-replay-inspect", &[]);
        for (k, v) in settings {
            cfg.set(*k, *v);
        }
        cfg.create_with_context(QuietEof).map_err(client_err("cannot create a Kafka consumer"))
    }

    /// Settings for a consumer in `group` that never commits on its own and reports no EOF
    /// events, plus `defaults`; the user's `-X` properties still win. `-X` properties are mostly
    /// meant for producers: the common producer-only ones are kept off consumers (librdkafka
    /// would warn about each).
    pub fn consumer_config(&self, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let base = [("group.id", group), ("enable.auto.commit", "false"), ("enable.partition.eof", "false")];
        let all: Vec<(&str, &str)> = base.iter().chain(defaults).copied().collect();
        let mut cfg = self.client_config(&all);
        for k in ["enable.idempotence", "linger.ms", "compression.type", "acks", "batch.num.messages"] {
            cfg.remove(k);
        }
        cfg
    }
}

/// Consumer context for the resume reader: reaching the end of a partition is the signal it
/// waits for, not an error worth logging (librdkafka reports it through the error callback too).
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// Partition count of `topic`, or `None` if the broker does not know it.
///
/// # Errors
/// The broker is unreachable.
pub fn partition_count(opts: &KafkaOptions, topic: &str) -> Result<Option<u32>, KafkaSetupError> {
    partition_count_with(&opts.consumer()?, &opts.brokers, topic)
}

fn partition_count_with(
    consumer: &BaseConsumer<QuietEof>,
    brokers: &str,
    topic: &str,
) -> Result<Option<u32>, KafkaSetupError> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(client_err(format!("cannot reach the broker at {brokers}")))?;
    Ok(md.topics().iter().find(|t| t.name() == topic).and_then(|t| match t.error() {
        None if !t.partitions().is_empty() => Some(t.partitions().len() as u32),
        _ => None,
    }))
}

/// Makes sure each topic exists, creating missing ones with `partitions` partitions,
/// `replication` replicas and the given topic configs. Returns each topic's partition count
/// (existing topics keep theirs) and whether it was created.
///
/// # Errors
/// The broker is unreachable or refuses to create a topic.
pub async fn ensure_topics(
    opts: &KafkaOptions,
    topics: &[&str],
    partitions: u32,
    replication: u32,
    configs: &[(String, String)],
) -> Result<Vec<(u32, bool)>, KafkaSetupError> {
    // One metadata client for every lookup below, including the wait for new topics.
    let metadata = opts.consumer()?;
    let count = |topic: &str| partition_count_with(&metadata, &opts.brokers, topic);
    let mut out = Vec::with_capacity(topics.len());
    let mut missing = Vec::new();
    for &t in topics {
        match count(t)? {
            Some(n) => out.push((n, false)),
            None => {
                missing.push(t);
                out.push((partitions, true));
            }
        }
    }
    if !missing.is_empty() {
        let admin: AdminClient<DefaultClientContext> =
            opts.client_config(&[]).create().map_err(client_err("cannot create a Kafka admin client"))?;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                let mut nt = NewTopic::new(t, partitions as i32, TopicReplication::Fixed(replication as i32));
                for (k, v) in configs {
                    nt = nt.set(k, v);
                }
                nt
            })
            .collect();
        let results = admin
            .create_topics(&new, &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)))
            .await
            .map_err(client_err("cannot create topics"))?;
        for r in results {
            if let Err((topic, code)) = r {
                if code != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(KafkaSetupError::CreateTopic { topic, code });
                }
            }
        }
        // Wait until metadata shows the new topics, so the producer does not race them.
        for (i, &t) in topics.iter().enumerate() {
            if out[i].1 {
                let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
                while count(t)?.is_none() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(out)
}

/// For each partition of `topic`, the `next_seq` of its last record: the replay position up to
/// which that partition is complete. Empty partitions give 0.
///
/// It reads from the record below the high watermark **to the end of the partition** (EOF), not
/// just that one record: a broker may hold records past the high watermark it advertises
/// (tansu 0.6 advertises the last batch's base offset + 1, hiding the rest of that batch).
/// Stopping at the high watermark would resend, and so duplicate, those events.
///
/// # Errors
/// The broker is unreachable, or the last record of a partition is not a streamflix payload.
pub fn resume_positions(
    opts: &KafkaOptions,
    topic: &str,
    partitions: u32,
) -> Result<Vec<u64>, KafkaSetupError> {
    let consumer = opts.consumer_with(&[("enable.partition.eof", "true")])?;
    let mut positions = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
            .map_err(client_err(format!("cannot read offsets of {topic}[{p}]")))?;
        if high <= low {
            positions.push(0);
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(high - 1))
            .map_err(client_err("cannot build an assignment"))?;
        consumer.assign(&tpl).map_err(client_err(format!("cannot read {topic}[{p}]")))?;
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
        let mut last: Option<u64> = None;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) if msg.topic() == topic && msg.partition() == p && msg.offset() >= high - 1 => {
                    let payload = msg.payload().unwrap_or_default();
                    let record: StreamRecord =
                        serde_json::from_slice(payload).map_err(|e| KafkaSetupError::ForeignRecord {
                            topic: topic.to_string(),
                            partition: p,
                            offset: msg.offset(),
                            why: e.to_string(),
                        })?;
                    last = Some(record.next_seq());
                }
                Some(Ok(_)) => continue,
                Some(Err(KafkaError::PartitionEOF(eof))) if eof == p && last.is_some() => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => return Err(client_err(format!("cannot read {topic}[{p}]"))(e)),
                None if std::time::Instant::now() > deadline => {
                    return Err(client_err(format!("cannot read the last record of {topic}[{p}]"))(
                        KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut),
                    ))
                }
                None => continue,
            }
        }
        positions.push(last.unwrap_or(0));
    }
    Ok(positions)
}

/// Counts failed deliveries and keeps the first error, from librdkafka's delivery callbacks.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryTracker {
    /// Failed deliveries so far and the first error, if any failed.
    pub fn failures(&self) -> Option<(u64, String)> {
        let failed = self.failed.load(Ordering::Relaxed);
        (failed > 0).then(|| {
            let first =
                self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            (failed, first)
        })
    }
}

/// Producer context that records delivery failures in a shared [`DeliveryTracker`].
#[derive(Clone, Default)]
pub struct TrackingContext(pub Arc<DeliveryTracker>);

impl ClientContext for TrackingContext {}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Produces replayed records to Kafka: key = user id, timestamp = event time (ms), explicit
/// partition, JSON payload.
pub struct KafkaSink {
    producer: ThreadedProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    topics: [String; 2],
    partitions: [u32; 2],
    payload: Vec<u8>,
    key: String,
}

impl KafkaSink {
    /// A producer for `topics` (ratings, tags) with their partition counts.
    ///
    /// # Errors
    /// librdkafka rejects the configuration (e.g. a bad `-X` property).
    pub fn new(
        opts: &KafkaOptions,
        topics: [String; 2],
        partitions: [u32; 2],
    ) -> Result<Self, KafkaSetupError> {
        let cfg = opts.client_config(&[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ]);
        let ctx = TrackingContext::default();
        let tracker = ctx.0.clone();
        let producer =
            cfg.create_with_context(ctx).map_err(client_err("cannot create the Kafka producer"))?;
        Ok(KafkaSink {
            producer,
            tracker,
            topics,
            partitions,
            payload: Vec::with_capacity(256),
            key: String::new(),
        })
    }

    fn failure(&self) -> Option<SinkError> {
        self.tracker.failures().map(|(failed, first)| {
            SinkError::Kafka(format!(
                "{failed} records were not delivered (first error: {first}); run again with --resume to send the rest"
            ))
        })
    }
}

impl Sink for KafkaSink {
    fn partitions(&self, topic: Topic) -> u32 {
        self.partitions[topic as usize]
    }

    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        self.payload.clear();
        serde_json::to_writer(&mut self.payload, &out.record).map_err(std::io::Error::from)?;
        self.key.clear();
        if let Some(k) = out.key {
            use std::fmt::Write;
            let _ = write!(self.key, "{k}");
        }
        let topic = &self.topics[out.topic as usize];
        let mut record = BaseRecord::to(topic)
            .partition(out.partition as i32)
            .payload(&self.payload)
            .timestamp(out.ts.saturating_mul(1000));
        if out.key.is_some() {
            record = record.key(&self.key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Back-pressure: the local queue is full until the broker acknowledges.
                    record = r;
                    if let Some(e) = self.failure() {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(SinkError::Kafka(e.to_string())),
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Wait as long as the broker keeps acknowledging: a large queue (one record per batch,
        // a busy machine) may take minutes to drain, which is progress, not failure. Give up
        // only after a whole window passes without a single acknowledgement.
        const WINDOW: Duration = Duration::from_secs(60);
        let mut pending = self.producer.in_flight_count();
        loop {
            match self.producer.flush(WINDOW) {
                Ok(()) => break,
                Err(e) => {
                    let now = self.producer.in_flight_count();
                    if now == 0 {
                        break;
                    }
                    if now >= pending {
                        return Err(SinkError::Kafka(format!(
                            "flush: {e}: {now} records unacknowledged and none acknowledged in {} s",
                            WINDOW.as_secs()
                        )));
                    }
                    pending = now;
                }
            }
        }
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
