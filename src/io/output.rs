//! Where the processor's effects go: Kafka topics, JSON-lines files, or nowhere (counted only).
//!
//! Every sink is at-least-once: the pipeline flushes it before each checkpoint, and after a crash
//! the records since the last checkpoint are produced again, with the same `session_id` /
//! `alert_id`, so consumers deduplicate by id.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::core::processor`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::core::processor::Output;

/// Why outputs could not be written or delivered.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file or directory could not be created or opened.
    #[error("cannot {action} {path}")]
    Open {
        /// `create` or `open`.
        action: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An output did not encode (cannot happen with the types published).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The Kafka producer refused or lost records.
    #[error("{0}")]
    Kafka(String),
}

/// A destination for outputs.
pub trait OutputSink: Send {
    /// Queues one output.
    ///
    /// # Errors
    /// The destination failed.
    fn send(&mut self, out: &Output) -> Result<(), OutputError>;

    /// Blocks until everything queued is durable at the destination.
    ///
    /// # Errors
    /// Some outputs could not be delivered.
    fn flush(&mut self) -> Result<(), OutputError>;
}

/// Discards outputs (the processor's counters still count them).
pub struct NullSink;

impl OutputSink for NullSink {
    fn send(&mut self, _: &Output) -> Result<(), OutputError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Appends outputs as JSON lines to `sessions.jsonl`, `churn-alerts.jsonl` and `dlq.jsonl`.
pub struct JsonLinesSink {
    files: [BufWriter<File>; 3],
    genres: Vec<String>,
}

impl JsonLinesSink {
    /// Opens (appending) the three files in `dir`, creating it if needed. `genres` are the
    /// catalog's genre names, by bit (for sessions).
    ///
    /// # Errors
    /// The directory or files cannot be created.
    pub fn open(dir: &Path, genres: Vec<String>) -> Result<Self, OutputError> {
        std::fs::create_dir_all(dir).map_err(|source| OutputError::Open {
            action: "create",
            path: dir.display().to_string(),
            source,
        })?;
        let open = |name: &str| -> Result<BufWriter<File>, OutputError> {
            let path = dir.join(name);
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|source| {
                OutputError::Open { action: "open", path: path.display().to_string(), source }
            })?;
            Ok(BufWriter::new(f))
        };
        Ok(JsonLinesSink {
            files: [open("sessions.jsonl")?, open("churn-alerts.jsonl")?, open("dlq.jsonl")?],
            genres,
        })
    }
}

impl OutputSink for JsonLinesSink {
    fn send(&mut self, out: &Output) -> Result<(), OutputError> {
        let (i, r) = match out {
            Output::Session { user, session } => {
                (0, serde_json::to_writer(&mut self.files[0], &session.summary(*user, &self.genres)))
            }
            Output::Alert(a) => (1, serde_json::to_writer(&mut self.files[1], a)),
            Output::Dead(d) => (2, serde_json::to_writer(&mut self.files[2], d)),
        };
        r?;
        self.files[i].write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        for f in &mut self.files {
            f.flush()?;
            f.get_ref().sync_data()?;
        }
        Ok(())
    }
}
