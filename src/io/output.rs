//! Where the processor's effects go: Kafka topics, JSON-lines files, or nowhere (counted only).
//!
//! The pipeline flushes a sink before each checkpoint, and after a crash the records since the
//! last checkpoint are produced again, with the same `session_id` / `alert_id`. Kafka topics are
//! therefore at-least-once (consumers deduplicate by id). Files are exactly-once: their lengths
//! after the flush go into the checkpoint ([`OutputSink::committed`]), and a restart cuts each
//! file back to that length ([`OutputSink::resume`]) before the outputs are written again, so the
//! files end byte-identical to an uninterrupted run's.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::core::processor`, `crate::state::checkpoint`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::core::processor::Output;
use crate::state::checkpoint::OutputFile;

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
    /// An output file holds outputs the state has no record of (another run's, or a state that
    /// was reset): appending would mix them.
    #[error("{path} already holds {len} bytes this state did not write (another run's outputs?); use an empty --out directory, or move the files away")]
    Foreign {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// An output file could not be cut back to its committed length.
    #[error("cannot cut {path} back to its committed {len} bytes")]
    Truncate {
        /// The file.
        path: String,
        /// Its committed length.
        len: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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

    /// After [`OutputSink::flush`]: the files written and their lengths, for the checkpoint.
    /// Nothing for sinks that are not files.
    ///
    /// # Errors
    /// A file's length cannot be read.
    fn committed(&self) -> Result<Vec<OutputFile>, OutputError> {
        Ok(Vec::new())
    }

    /// Before the first output of a restart: cuts each file of `committed` (the checkpoint's
    /// [`OutputSink::committed`]) that this sink writes back to its committed length.
    ///
    /// # Errors
    /// A file could not be cut.
    fn resume(&mut self, committed: &[OutputFile]) -> Result<(), OutputError> {
        let _ = committed;
        Ok(())
    }
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

/// The files of a [`JsonLinesSink`], in its order.
const FILES: [&str; 3] = ["sessions.jsonl", "churn-alerts.jsonl", "dlq.jsonl"];

/// Appends outputs as JSON lines to `sessions.jsonl`, `churn-alerts.jsonl` and `dlq.jsonl`.
pub struct JsonLinesSink {
    files: [BufWriter<File>; 3],
    /// Their absolute paths.
    paths: [String; 3],
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
        let dir = std::fs::canonicalize(dir).map_err(|source| OutputError::Open {
            action: "open",
            path: dir.display().to_string(),
            source,
        })?;
        let paths = FILES.map(|name| dir.join(name).display().to_string());
        let open = |path: &String| -> Result<BufWriter<File>, OutputError> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| OutputError::Open { action: "open", path: path.clone(), source })?;
            Ok(BufWriter::new(f))
        };
        let files = [open(&paths[0])?, open(&paths[1])?, open(&paths[2])?];
        // The new files' names are durable before any checkpoint counts on them.
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|source| OutputError::Open {
            action: "sync",
            path: dir.display().to_string(),
            source,
        })?;
        Ok(JsonLinesSink { files, paths, genres })
    }
}

impl OutputSink for JsonLinesSink {
    fn send(&mut self, out: &Output) -> Result<(), OutputError> {
        let (i, r) = match out {
            // The snapshot writer takes day closes; they are not written here.
            Output::DayClosed(_) => return Ok(()),
            Output::Session { user, session } => {
                (0, serde_json::to_writer(&mut self.files[0], &session.summary(*user, &self.genres)))
            }
            Output::Alert(a) => (1, serde_json::to_writer(&mut self.files[1], a)),
            Output::AtRisk(a) => (1, serde_json::to_writer(&mut self.files[1], a)),
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

    fn committed(&self) -> Result<Vec<OutputFile>, OutputError> {
        let mut v = Vec::with_capacity(3);
        for (f, path) in self.files.iter().zip(&self.paths) {
            v.push(OutputFile { path: path.clone(), len: f.get_ref().metadata()?.len() });
        }
        Ok(v)
    }

    fn resume(&mut self, committed: &[OutputFile]) -> Result<(), OutputError> {
        for c in committed.iter().filter(|c| !self.paths.contains(&c.path)) {
            tracing::warn!(file = %c.path, "the state wrote to another --out directory before; this one starts with the outputs from here on");
        }
        for (f, path) in self.files.iter_mut().zip(&self.paths) {
            let now = f.get_ref().metadata().map(|m| m.len()).map_err(|source| OutputError::Open {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let Some(c) = committed.iter().find(|c| &c.path == path) else {
                if now > 0 {
                    return Err(OutputError::Foreign { path: path.clone(), len: now });
                }
                continue;
            };
            let truncate = |source| OutputError::Truncate { path: path.clone(), len: c.len, source };
            if now > c.len {
                f.get_ref().set_len(c.len).map_err(truncate)?;
                f.get_ref().sync_data().map_err(truncate)?;
            } else if now < c.len {
                // Changed outside streamflix (rotated, emptied): nothing to cut, and what is gone
                // cannot be written again.
                tracing::warn!(file = %path, bytes = now, committed = c.len, "output file is shorter than at the checkpoint; appending to it");
            }
        }
        Ok(())
    }
}
