//! Where replayed records go. The engine decides order, partition, pacing and heartbeats; a sink
//! only delivers. Kafka is one sink ([`crate::kafka::KafkaSink`]); the others serve the embedded
//! mode (an in-process channel), inspection (JSON lines) and benchmarks (nothing).
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `streamflix-schemas`.

use std::io::Write;
use std::sync::mpsc::SyncSender;

use serde::Serialize;
use streamflix_schemas::StreamRecord;
use thiserror::Error;

/// The two input topics, as indices into per-topic tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Ratings (and their heartbeats).
    Ratings = 0,
    /// Tags (and their heartbeats).
    Tags = 1,
}

impl Topic {
    /// Both topics, in index order.
    pub const ALL: [Topic; 2] = [Topic::Ratings, Topic::Tags];
}

/// A sink failed; the replay stops.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The broker refused or lost records.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Writing JSON lines failed (a broken pipe is reported as [`SinkError::Closed`]).
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
    /// The receiving side went away (closed pipe, dropped channel).
    #[error("the receiving side closed")]
    Closed,
}

/// A record as the engine hands it to a sink.
#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    /// Destination topic.
    pub topic: Topic,
    /// Destination partition, chosen by the engine.
    pub partition: u32,
    /// Record key (user id); `None` for heartbeats.
    pub key: Option<u32>,
    /// Event time, seconds (the Kafka timestamp is this × 1000).
    pub ts: i64,
    /// The payload.
    pub record: StreamRecord,
}

/// A destination for replayed records.
pub trait Sink {
    /// Partition count of `topic` at the destination.
    fn partitions(&self, topic: Topic) -> u32;
    /// Sends one record. May buffer; [`Sink::flush`] makes it durable.
    ///
    /// # Errors
    /// The destination failed; the replay stops and reports it.
    fn send(&mut self, out: Outgoing) -> Result<(), SinkError>;
    /// Waits until everything sent has been delivered.
    ///
    /// # Errors
    /// Some records could not be delivered.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// The engine is about to wait (pacing): hand over what is held back, so the receiving side
    /// does not wait with it. Unlike [`Sink::flush`], need not wait for delivery. Sinks that hold
    /// nothing back of their own (Kafka lingers by itself) keep the default, which does nothing.
    ///
    /// # Errors
    /// The destination failed.
    fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Discards records after serializing them (so benchmarks still pay for JSON). Counts bytes.
#[derive(Debug)]
pub struct NullSink {
    /// Partitions per topic to pretend.
    pub partitions: u32,
    /// Payload bytes produced so far.
    pub bytes: u64,
    buf: Vec<u8>,
}

impl NullSink {
    /// A null sink with `partitions` partitions per topic.
    pub fn new(partitions: u32) -> Self {
        NullSink { partitions, bytes: 0, buf: Vec::with_capacity(256) }
    }
}

impl Sink for NullSink {
    fn partitions(&self, _: Topic) -> u32 {
        self.partitions
    }
    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &out.record).map_err(std::io::Error::from)?;
        self.bytes += self.buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes one JSON object per record: `{"topic","partition","key","ts","record"}`.
/// Useful to look at what a replay would send, and as input for other producers.
pub struct JsonLinesSink<W: Write> {
    /// Partitions per topic to pretend.
    pub partitions: u32,
    out: W,
}

impl<W: Write> JsonLinesSink<W> {
    /// Writes to `out` as if each topic had `partitions` partitions.
    pub fn new(out: W, partitions: u32) -> Self {
        JsonLinesSink { partitions, out }
    }
}

fn closed_on_broken_pipe(e: std::io::Error) -> SinkError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        SinkError::Closed
    } else {
        SinkError::Io(e)
    }
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn partitions(&self, _: Topic) -> u32 {
        self.partitions
    }
    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, &out).map_err(|e| closed_on_broken_pipe(e.into()))?;
        self.out.write_all(b"\n").map_err(closed_on_broken_pipe)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(closed_on_broken_pipe)
    }
}

/// Records per message of a [`ChannelSink`].
pub const CHANNEL_CHUNK: usize = 1024;

/// Hands records to an in-process consumer over a bounded channel (the embedded mode: replay and
/// processor in one process, no broker). The bound gives back-pressure like a broker would.
///
/// Records travel in chunks of up to [`CHANNEL_CHUNK`]: one message per record cost a wake-up
/// (futex, context switch) per record on each side. A chunk is handed over when full, on
/// [`Sink::flush`], and on [`Sink::idle`] (before the engine sleeps for pacing), so a paced
/// replay holds a record back no longer than it takes to fill a chunk or reach the next wait.
pub struct ChannelSink {
    /// Partitions per topic, as the consumer will see them.
    pub partitions: u32,
    tx: SyncSender<Vec<Outgoing>>,
    chunk: Vec<Outgoing>,
}

impl ChannelSink {
    /// Sends into `tx`, pretending `partitions` partitions per topic.
    pub fn new(tx: SyncSender<Vec<Outgoing>>, partitions: u32) -> Self {
        ChannelSink { partitions, tx, chunk: Vec::with_capacity(CHANNEL_CHUNK) }
    }

    fn hand_over(&mut self) -> Result<(), SinkError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHANNEL_CHUNK));
        self.tx.send(chunk).map_err(|_| SinkError::Closed)
    }
}

impl Sink for ChannelSink {
    fn partitions(&self, _: Topic) -> u32 {
        self.partitions
    }
    fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
        self.chunk.push(out);
        if self.chunk.len() >= CHANNEL_CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.hand_over()
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        self.hand_over()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamflix_schemas::Heartbeat;

    fn beat(ts: i64) -> Outgoing {
        Outgoing {
            topic: Topic::Ratings,
            partition: 0,
            key: None,
            ts,
            record: StreamRecord::Heartbeat(Heartbeat { v: 1, ts, next_seq: 0 }),
        }
    }

    #[test]
    fn the_channel_sink_hands_over_full_chunks_and_the_rest_when_idle_or_flushed() {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let mut sink = ChannelSink::new(tx, 1);
        for ts in 0..CHANNEL_CHUNK as i64 + 3 {
            sink.send(beat(ts)).unwrap();
        }
        assert_eq!(rx.try_recv().unwrap().len(), CHANNEL_CHUNK);
        assert!(rx.try_recv().is_err(), "a partial chunk waits");
        sink.idle().unwrap();
        let rest: Vec<i64> = rx.try_recv().unwrap().iter().map(|o| o.ts).collect();
        assert_eq!(rest, [1024, 1025, 1026]);
        sink.idle().unwrap();
        sink.flush().unwrap();
        assert!(rx.try_recv().is_err(), "nothing held back, nothing sent");
        sink.send(beat(7)).unwrap();
        sink.flush().unwrap();
        assert_eq!(rx.try_recv().unwrap().len(), 1);
        drop(rx);
        sink.send(beat(8)).unwrap();
        assert!(matches!(sink.flush(), Err(SinkError::Closed)));
    }
}
