//! Publishes the processor's outputs to Kafka.
//!
//! May import: `crate::core`, `crate::io`'s output trait, the replay crate's Kafka client options.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use streamflix_replay::kafka::{DeliveryTracker, KafkaOptions, TrackingContext};

use super::lanes::flush_producer;
use super::{Topics, TransportError};
use crate::core::processor::Output;
use crate::io::output::{OutputError, OutputSink};

/// Publishes outputs to Kafka: key = user id (dead letters: the original key), JSON value,
/// record timestamp = the output's event time where it has one.
pub struct KafkaOutputs {
    producer: ThreadedProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    topics: Topics,
    payload: Vec<u8>,
    key: Vec<u8>,
    /// Each genre name as a JSON string, by bit (see [`crate::core::sessions::ClosedSession::write_json`]).
    genre_json: Vec<Vec<u8>>,
}

impl KafkaOutputs {
    /// An idempotent producer for the output topics. `genres` are the catalog's genre names, by
    /// bit (for sessions).
    ///
    /// # Errors
    /// librdkafka rejects the configuration.
    pub fn new(opts: &KafkaOptions, topics: Topics, genres: Vec<String>) -> Result<Self, TransportError> {
        let ctx = TrackingContext::default();
        let tracker = ctx.0.clone();
        let producer = opts
            .client_config(&[("enable.idempotence", "true"), ("linger.ms", "20")])
            .create_with_context(ctx)
            .map_err(TransportError::client("cannot create the Kafka producer"))?;
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
    fn send(&mut self, out: &Output) -> Result<(), OutputError> {
        use std::io::Write;
        self.payload.clear();
        self.key.clear();
        let (topic, keyed, ts) = match out {
            // The snapshot writer takes day closes; they are not published.
            Output::DayClosed(_) => return Ok(()),
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
            Output::AtRisk(a) => {
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
                Err((e, _)) => return Err(OutputError::Kafka(format!("cannot produce to {topic}: {e}"))),
            }
        }
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        if let Err(e) = flush_producer(&self.producer, 60_000) {
            return Err(OutputError::Kafka(format!("flushing the output producer: {e}")));
        }
        if let Some((n, first)) = self.tracker.failures() {
            return Err(OutputError::Kafka(format!(
                "{n} output records were not delivered (first error: {first})"
            )));
        }
        Ok(())
    }
}
