//! Kafka transport: reads the ratings and tags topics, publishes sessions, alerts, dead letters.
//!
//! [`source`] is the consume loop, [`sink`] the producer of outputs, and `lanes` holds every
//! librdkafka call rdkafka does not wrap (per-partition queues, batch reads, cached watermarks,
//! the producer's flush): all of this module's `unsafe` code, in one file.
//!
//! Offsets live in the checkpoint (see [`crate::state::checkpoint`]): on start the consumer is assigned
//! every partition of both input topics at the checkpointed positions (the beginning when there
//! is no checkpoint). The consumer's `group.id` is used to commit those same positions after each
//! checkpoint, for lag visibility in Kafka tooling only; they are never read back.
//!
//! One instance reads all partitions (explicit assignment, not group rebalancing). State is keyed
//! by user and users are keyed to partitions, so scaling out means one instance per partition
//! subset with its own state directory; rebalancing checkpoints between instances is not built.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::io::pipeline`, the replay crate (`streamflix-replay`).

use rdkafka::error::KafkaError;
use streamflix_replay::kafka::{partition_count, KafkaOptions, KafkaSetupError, QuietEof};

use crate::io::pipeline::PipelineError;

mod lanes;
pub mod sink;
pub mod source;

pub use sink::KafkaOutputs;
pub use source::run;

/// Errors of the Kafka transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker could not be reached or asked.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// An input topic is missing.
    #[error("topic {0} does not exist; create it, or replay data into it with streamflix-replay run")]
    MissingTopic(String),
    /// librdkafka refused a call.
    #[error("{what}")]
    Client {
        /// What was being done.
        what: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
    /// A partition could not get its own queue.
    #[error("cannot read {topic}[{partition}] on its own queue: {detail}")]
    Lane {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why.
        detail: &'static str,
    },
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl TransportError {
    /// A librdkafka error while doing `what`.
    fn client(what: impl Into<String>) -> impl FnOnce(KafkaError) -> TransportError {
        let what = what.into();
        move |source| TransportError::Client { what, source }
    }
}

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

/// The input's identity for the checkpoint: the input topics and, if the broker tells it, the
/// cluster id (a state directory is not continued against another cluster's topics).
pub fn input_identity(opts: &KafkaOptions, topics: &Topics) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let cluster = opts
        .client_config(&[])
        .create_with_context::<_, BaseConsumer<QuietEof>>(QuietEof)
        .ok()
        .and_then(|c| c.client().fetch_cluster_id(std::time::Duration::from_secs(5)));
    let topics = format!("topics {}, {}", topics.ratings, topics.tags);
    match cluster {
        Some(id) => format!("kafka cluster {id}, {topics}"),
        None => format!("kafka, {topics}"),
    }
}

/// The input partitions, ratings then tags, as the processor indexes them.
///
/// # Errors
/// The broker is unreachable or an input topic does not exist.
pub fn input_partitions(opts: &KafkaOptions, topics: &Topics) -> Result<Vec<(String, u32)>, TransportError> {
    let mut out = Vec::new();
    for t in [&topics.ratings, &topics.tags] {
        let n = partition_count(opts, t)?.ok_or_else(|| TransportError::MissingTopic(t.clone()))?;
        out.extend((0..n).map(|p| (t.clone(), p)));
    }
    Ok(out)
}
