//! Durable state in sled: the one path by which the processor's state reaches disk.
//!
//! A checkpoint writes, in **one sled batch** (atomic: all of it or none of it survives a crash),
//! the users changed since the previous checkpoint, the sessions closed and the latest churn
//! alert of each user that got one, the ratings applied (the recommender's log), the pending
//! events, the platform aggregates, and a meta record holding the per-partition resume positions,
//! watermarks, counters and the configuration. Resume positions and state therefore always
//! describe the same point in the input: on start the processor loads the checkpoint and reads
//! the input from exactly those positions (exactly-once state). Outputs published after the last
//! checkpoint are published again on restart, with the same ids (at-least-once outputs).
//!
//! Keys (one tree, so one batch covers everything):
//! - `m` → [`Meta`] as JSON;
//! - `u` + user (u32 BE) → [`STATE_VERSION`] byte + postcard [`UserState`];
//! - `s` + user (BE) + checkpoint number (u64 BE) → [`STATE_VERSION`] byte + postcard list of the
//!   sessions the user closed in that checkpoint ([`ClosedSession`]: the published
//!   [`SessionSummary`] less its id, tag count and genre names, which readers derive from the
//!   user and the meta record's genres), oldest first. A user's sessions close in start order, so
//!   the user's keys in order give the sessions in start order. One value per user and checkpoint,
//!   not one per session: sled's cost is per key written (each insert pages in and rewrites a
//!   tree node), and a busy user closes several sessions between two checkpoints;
//! - `c` + user (BE) → [`STATE_VERSION`] byte + postcard of the user's latest churn alert
//!   (postcard, not JSON: a third of the bytes, and floats read back exactly);
//! - `p` → the pending (accepted, not yet applied) events, postcard;
//! - `e` → the platform engagement aggregates ([`Engagement`]), postcard;
//! - `d` → the open day's log ([`DayLog`]: its ratings, touched users, closed sessions and
//!   alerts, for the day close), postcard;
//! - `k` → the churn model's state (`analytics::churn_model`, its own version byte, then
//!   postcard), rewritten by a checkpoint after a day close and removed by one of a run without
//!   the model (so a later run with it does not resume a stale model);
//! - `l` + checkpoint number (u64 BE) + piece number (u32 BE) → the ratings applied since the
//!   previous checkpoint, in order, in pieces of up to 640 (see `LOG_PIECE`; about 7 bytes a
//!   rating, see `encode_rating`): the recommender's log. The ALS model is a
//!   deterministic function of this sequence (its sweeps are paced by events, not by a clock), so
//!   loading replays the log into a fresh model and gets exactly the model of an uninterrupted
//!   run. The log holds every rating once, the data a full sweep needs anyway.
//!
//! The HTTP server reads the same database, so it only ever sees whole checkpoints (possibly the
//! one being fsynced, which a crash at that moment takes back).
//!
//! May import: what `state/mod.rs` allows its layer; this module uses `crate::core::catalog`, `crate::core::config`, `crate::core::daily`, `crate::core::engagement`, `crate::core::pending`, `crate::core::processor`, `crate::core::sessions`, `crate::state::codec`, `crate::state::migrate`, `streamflix-schemas`.

use std::path::Path;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use streamflix_schemas::{ChurnAlert, ChurnStatus, SessionSummary};

use crate::core::config::CoreConfig;
use crate::core::daily::DayLog;
use crate::core::engagement::Engagement;
use crate::core::pending::Pending;
use crate::core::processor::{Counters, LoggedRating, PartitionState, Processor, UserState};
use crate::core::sessions::ClosedSession;
use crate::state::codec::{decode, decode_ratings, encode, encode_rating, fnv1a, STATE_VERSION};
use crate::state::guard::{is_state_file, Guard, GuardError, GUARD_DIR};
use crate::state::migrate;

const META: &[u8] = b"m";
const PENDING: &[u8] = b"p";
const ENGAGEMENT: &[u8] = b"e";
const DAY_LOG: &[u8] = b"d";
const CHURN_MODEL: &[u8] = b"k";

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption, or the directory is locked by another process).
    #[error("state store {path}")]
    Sled {
        /// The state directory.
        path: String,
        /// What sled said.
        source: sled::Error,
    },
    /// Another process (a running processor) holds the directory.
    #[error("state directory {path} is in use by another process (a running processor?); stop it, or read its HTTP API")]
    Locked {
        /// The state directory.
        path: String,
    },
    /// A stored value does not decode.
    #[error("state store: corrupt {what}: {detail}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        detail: String,
    },
    /// The commit marker could not be written (the checkpoint itself is written and fsynced).
    #[error("state store {path}: cannot write its commit marker")]
    Marker {
        /// The state directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A read spanning several keys kept seeing checkpoints land in between; try again.
    #[error("state store busy: {0}")]
    Busy(String),
    /// The directory held a committed checkpoint that can no longer be read as written.
    #[error("state directory {path} is damaged: {detail}; start over with --reset-state (it deletes the state), or move the directory away")]
    Damaged {
        /// The state directory.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The state's files could not be copied aside before opening them, or put back after a
    /// refused open (see [`crate::state::guard`]).
    #[error("state directory {path}")]
    Guard {
        /// The state directory.
        path: String,
        /// What failed.
        #[source]
        source: GuardError,
    },
    /// The checkpoint was written by an incompatible version or with different settings.
    #[error("state store {path}: {detail}")]
    Incompatible {
        /// The state directory.
        path: String,
        /// What differs, and what to do.
        detail: String,
    },
}

impl StoreError {
    /// sled's error for the directory `path`: corruption is damage (said once: sled's own text
    /// repeats itself), anything else sled's.
    fn from_sled(path: &str, source: sled::Error) -> StoreError {
        match source {
            sled::Error::Corruption { .. } => StoreError::Damaged {
                path: path.to_string(),
                detail: "the storage engine found corrupted data".into(),
            },
            source => StoreError::Sled { path: path.to_string(), source },
        }
    }
}

/// The checkpoint's header: where the input stands and how the state was computed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// [`STATE_VERSION`] at write time.
    pub version: u8,
    /// `kafka` or `embedded`: positions mean offsets or replay seqs.
    pub mode: String,
    /// The analytics settings the state was computed with.
    pub config: CoreConfig,
    /// Catalog genres, by bit (the meaning of stored genre counts).
    pub genres: Vec<String>,
    /// Input partitions: resume positions and watermarks.
    pub partitions: Vec<PartitionState>,
    /// Global watermark.
    pub watermark: Option<i64>,
    /// Running totals.
    pub counters: Counters,
    /// Users in the state.
    pub users: u64,
    /// Checkpoints written so far.
    pub checkpoints: u64,
    /// Wall-clock time of this checkpoint, ms since the epoch (operational only).
    pub written_at_ms: i64,
    /// The input was finite and has been consumed to its end.
    pub finished: bool,
    /// What the input is (embedded: the data files' names, sizes and a hash of their first and
    /// last blocks; Kafka: the topics and the cluster id), so a state directory is not continued
    /// with another input. Empty in state written before it was recorded (then not checked).
    #[serde(default)]
    pub input: String,
    /// The output files (`--out`) and their lengths when this checkpoint was taken, every output
    /// of the state it commits written and fsynced: a restart cuts each back to its length, and
    /// the outputs after it are written again, so the files end byte-identical to an
    /// uninterrupted run's. Empty without output files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputFile>,
}

/// An output file's committed length ([`Meta::outputs`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputFile {
    /// Its path (absolute).
    pub path: String,
    /// Its length in bytes.
    pub len: u64,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Loaded {
    /// The meta record.
    pub meta: Meta,
    /// Every user.
    pub users: FxHashMap<u32, UserState>,
    /// Accepted events not yet applied.
    pub pending: Vec<Pending>,
    /// Platform aggregates.
    pub engagement: Engagement,
    /// The open day's log.
    pub day: DayLog,
}

/// What one checkpoint wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointStats {
    /// Users written.
    pub users: usize,
    /// Sessions written.
    pub sessions: usize,
    /// Bytes of keys and values written.
    pub bytes: u64,
    /// Time spent, including the fsync.
    pub duration: Duration,
}

/// A checkpoint encoded by [`Store::prepare`], for [`Store::write`] (which may run on another
/// thread while processing goes on).
#[derive(Debug)]
pub struct Prepared {
    batch: sled::Batch,
    number: u64,
    /// FNV-1a of the meta record's bytes, for the commit marker.
    meta_hash: u64,
    alerts: usize,
    ratings: usize,
    /// The input positions it commits.
    pub positions: Vec<PartitionState>,
    /// What it holds; `duration` is the encoding's so far.
    stats: CheckpointStats,
}

/// The sled database holding the checkpoint. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: String,
    dir: std::path::PathBuf,
}

/// The commit marker, beside sled's files: `<checkpoint number> <FNV-1a of its meta record>`,
/// replaced (write, fsync, rename) after each checkpoint is written and fsynced. sled, opening a
/// damaged database, may recover it to an earlier or empty state without an error; the marker
/// says what was committed, so that is found out instead of starting over in silence.
///
/// A clean stop adds a third field, `sealed <CRC-32 of sled's files>` ([`Store::seal`]): once no
/// handle of the database is left, the files cannot change until the next open, which checks them
/// against it before anything else (and removes the seal before the storage engine writes). So
/// damage to a cleanly stopped state is found even where sled would not notice it (a flipped byte
/// in a part of the log it no longer reads, a lost `conf` it would silently write again).
const MARKER: &str = "streamflix.committed";

/// The commit marker's fields.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Marker {
    /// The committed checkpoint's number.
    number: u64,
    /// FNV-1a of its meta record.
    meta_hash: u64,
    /// After a clean stop: the CRC-32 of sled's files ([`files_crc`]).
    sealed: Option<u32>,
}

impl Marker {
    /// The marker in `dir`, `None` if there is none.
    fn read(dir: &Path) -> Result<Option<Marker>, StoreError> {
        let damaged = |detail| StoreError::Damaged { path: dir.display().to_string(), detail };
        let text = match std::fs::read_to_string(dir.join(MARKER)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(damaged(format!("cannot read its {MARKER} file: {e}"))),
        };
        let mut it = text.split_whitespace();
        let number = it.next().and_then(|n| n.parse::<u64>().ok());
        let meta_hash = it.next().and_then(|h| u64::from_str_radix(h, 16).ok());
        let sealed = match (it.next(), it.next()) {
            (None, _) => Some(None),
            (Some("sealed"), Some(c)) => u32::from_str_radix(c, 16).ok().map(Some),
            _ => None,
        };
        match (number, meta_hash, sealed, it.next()) {
            (Some(number), Some(meta_hash), Some(sealed), None) => {
                Ok(Some(Marker { number, meta_hash, sealed }))
            }
            _ => Err(damaged(format!("its {MARKER} file does not read ({:?})", excerpt(&text)))),
        }
    }

    /// Replaces the marker in `dir`: written, fsynced, renamed over the old one, and the
    /// directory fsynced.
    fn write(self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = dir.join(format!("{MARKER}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        match self.sealed {
            None => writeln!(f, "{} {:016x}", self.number, self.meta_hash)?,
            Some(c) => writeln!(f, "{} {:016x} sealed {c:08x}", self.number, self.meta_hash)?,
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MARKER))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// At most 64 characters of `text`, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The CRC-32 of sled's files in `dir` (`conf`, `db`, `snap.*`, `blobs/`): each one's name,
/// length and bytes, in name order.
fn files_crc(dir: &Path) -> std::io::Result<u32> {
    fn add(h: &mut crc32fast::Hasher, path: &Path, name: &str) -> std::io::Result<()> {
        use std::io::Read;
        if path.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            for n in names {
                add(h, &path.join(&n), &format!("{name}/{n}"))?;
            }
            return Ok(());
        }
        let mut f = std::fs::File::open(path)?;
        h.update(name.as_bytes());
        h.update(&f.metadata()?.len().to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| is_state_file(n, MARKER) && !n.starts_with(MARKER))
        .collect();
    names.sort();
    let mut h = crc32fast::Hasher::new();
    for n in names {
        add(&mut h, &dir.join(&n), &n)?;
    }
    Ok(h.finalize())
}

/// A panic inside the storage engine, with its message.
#[derive(Debug)]
struct Panicked(String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `f`, turning a panic inside it (sled panics on some damaged files) into its message,
/// without the panic's own report on stderr.
fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(quiet);
    r.map_err(|p| {
        Panicked(
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic in the storage engine".into()),
        )
    })
}

fn user_key(prefix: u8, user: u32) -> [u8; 5] {
    let mut k = [prefix, 0, 0, 0, 0];
    k[1..].copy_from_slice(&user.to_be_bytes());
    k
}

fn session_key(user: u32, checkpoint: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&user_key(b's', user));
    k[5..].copy_from_slice(&checkpoint.to_be_bytes());
    k
}

/// Ratings per value of the rating log. A sled leaf holds up to 16 values and is rewritten whole
/// (and read back whole when evicted), so the log is cut into pieces small enough that a leaf of
/// them stays below sled's blob threshold (128 KiB): one value per checkpoint made leaves of
/// 100 MB and more, rewritten every few checkpoints. 640 ratings are about 4.5 KiB.
const LOG_PIECE: usize = 640;

fn log_key(checkpoint: u64, piece: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = b'l';
    k[1..9].copy_from_slice(&checkpoint.to_be_bytes());
    k[9..].copy_from_slice(&piece.to_be_bytes());
    k
}

/// The user of a `u`, `c` or `s` key.
fn key_user(k: &[u8]) -> Result<u32, StoreError> {
    k.get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt { what: "key".into(), detail: format!("{} bytes", k.len()) })
}

/// [`decode`], naming the value (`what`, built only on failure) in the error.
fn decode_at<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    decode(bytes).map_err(|e| StoreError::Corrupt { what: what(), detail: e.to_string() })
}

impl Store {
    /// Opens (creating if needed) the state directory.
    ///
    /// # Errors
    /// sled cannot open it (permissions, corruption, or another process holds its lock).
    ///
    /// Private: every caller goes through [`Store::open_then`], which keeps a refused directory
    /// as it was.
    fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.display().to_string();
        let damaged = |detail: String| StoreError::Damaged { path: path.clone(), detail };
        let marker = Marker::read(dir)?;
        if let Some(m @ Marker { sealed: Some(crc), .. }) = marker {
            let now = files_crc(dir).map_err(|e| damaged(format!("cannot read its files: {e}")))?;
            if now != crc {
                return Err(damaged(format!(
                    "its files changed after it was stopped cleanly (checksum {now:08x}, sealed {crc:08x})"
                )));
            }
            // From here on the storage engine writes: the seal no longer holds.
            Marker { sealed: None, ..m }
                .write(dir)
                .map_err(|source| StoreError::Marker { path: path.clone(), source })?;
        }
        let existed = ["db", "conf"].iter().any(|f| dir.join(f).exists());
        let opened = without_panics(|| {
            sled::Config::new()
                .path(dir)
                // A checkpoint rewrites the leaves of every dirty user's key; with 64 MB most of them
                // had been evicted and were read back first (5 M ratings: 6.2-6.4 s applying batches,
                // 4.6-4.9 s with 256 MB, no better with 512 MB; peak RSS 2.81 → 2.58 GB).
                .cache_capacity(256 * 1024 * 1024)
                .mode(sled::Mode::HighThroughput)
                .open()
        })
        .map_err(|panic| damaged(format!("the storage engine failed to open it ({panic})")))?;
        let db = opened.map_err(|source| match &source {
            // sled reports its file lock as an I/O error with this text (and no distinct kind).
            sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                StoreError::Locked { path: path.clone() }
            }
            // Not the state's fault: no starting over for it.
            sled::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                StoreError::from_sled(&path, source)
            }
            // A directory that held state: whatever else sled says of it (sled 0.34 calls a
            // garbled `conf` "created using a sled version earlier than 0.29"), it is damaged.
            _ if existed => damaged(format!("the storage engine cannot open it ({source})")),
            _ => StoreError::from_sled(&path, source),
        })?;
        let store = Store { db, path: path.clone(), dir: dir.to_path_buf() };
        if let Some(Marker { number: committed, meta_hash: hash, .. }) = marker {
            let meta = without_panics(|| store.db.get(META))
                .map_err(|panic| damaged(format!("the storage engine failed to read it ({panic})")))?
                .map_err(|e| damaged(format!("cannot read the checkpoint record: {e}")))?;
            let Some(meta) = meta else {
                return Err(damaged(format!(
                    "checkpoint {committed} was committed, and no checkpoint is left"
                )));
            };
            let number = serde_json::from_slice::<serde_json::Value>(&meta)
                .ok()
                .and_then(|m| m["checkpoints"].as_u64())
                .ok_or_else(|| damaged("the checkpoint record does not read".into()))?;
            // One more than the marker: a crash between the checkpoint's fsync and the marker's.
            if number < committed {
                return Err(damaged(format!(
                    "checkpoint {committed} was committed, and it holds checkpoint {number}"
                )));
            }
            if number == committed && fnv1a(&meta) != hash {
                return Err(damaged(format!("checkpoint {committed}'s record does not match its checksum")));
            }
        }
        Ok(store)
    }

    /// Opens the state directory as [`Store::open`] does, then runs `f` on the store (loading
    /// it, reading it); if either fails, the directory's files are put back exactly as they were
    /// before the open (see [`crate::state::guard`]), and the error returned.
    ///
    /// # Errors
    /// The store cannot be opened, `f` failed, or the files could not be copied or put back.
    pub fn open_then<T, E: From<StoreError> + std::fmt::Display>(
        dir: &Path,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<(Store, T), E> {
        let path = dir.display().to_string();
        let started = Instant::now();
        let guard = Guard::take(dir, MARKER).map_err(|e| match e {
            GuardError::Locked => StoreError::Locked { path: path.clone() },
            e @ GuardError::Interrupted(_) => {
                StoreError::Damaged { path: path.clone(), detail: e.to_string() }
            }
            e => StoreError::Guard { path: path.clone(), source: e },
        })?;
        tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "state files copied aside before opening");
        let r = Store::open(dir).map_err(E::from).and_then(|store| {
            let t = f(&store)?;
            Ok((store, t))
        });
        if let Err(e) = &r {
            match guard.restore() {
                Ok(()) => {}
                // Another process holds the state now (an older binary, without the guard's
                // lock): its files are left to it.
                Err(GuardError::Locked) => {}
                Err(source) => {
                    tracing::error!("the open was refused ({e}), and putting the files back failed");
                    return Err(StoreError::Guard { path, source }.into());
                }
            }
        }
        r
    }

    /// Seals the state in `dir` after a clean stop (see [`MARKER`]): if it has a commit marker
    /// and no handle of its database is open any more (no lock on `db`), adds the CRC-32 of
    /// sled's files to the marker. Returns whether it sealed; a directory still open (a handle
    /// not yet dropped) is left unsealed, which costs nothing but the check.
    ///
    /// # Errors
    /// The files or the marker cannot be read or written.
    pub fn seal(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.display().to_string();
        let io = |source| StoreError::Marker { path: path.clone(), source };
        let Some(marker) = Marker::read(dir)? else { return Ok(false) };
        let Ok(db) = std::fs::File::open(dir.join("db")) else { return Ok(false) };
        if db.try_lock().is_err() {
            return Ok(false);
        }
        let started = Instant::now();
        let crc = files_crc(dir).map_err(io)?;
        Marker { sealed: Some(crc), ..marker }.write(dir).map_err(io)?;
        tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "state sealed");
        drop(db);
        Ok(true)
    }

    /// Deletes the state in `dir` (sled's files, the commit marker and a leftover
    /// [`GUARD_DIR`]; nothing else), to start over (`--reset-state`). A directory that does not
    /// exist is left so.
    ///
    /// # Errors
    /// A file could not be removed.
    pub fn reset(dir: &Path) -> std::io::Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !(is_state_file(&name, MARKER) || name == GUARD_DIR) {
                continue;
            }
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    fn sled<T>(&self, r: sled::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| StoreError::from_sled(&self.path, source))
    }

    /// The committed meta record, if a checkpoint exists.
    ///
    /// # Errors
    /// I/O or a corrupt record.
    pub fn meta(&self) -> Result<Option<Meta>, StoreError> {
        let Some(bytes) = self.sled(self.db.get(META))? else { return Ok(None) };
        let meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { what: "meta record".into(), detail: e.to_string() })?;
        Ok(Some(meta))
    }

    /// Loads the checkpoint: meta, every user, the pending events and the platform aggregates
    /// (the rating log is read separately, [`Store::ratings`]). `None` if there is none.
    ///
    /// # Errors
    /// I/O, corruption, or a checkpoint from an incompatible version.
    pub fn load(&self) -> Result<Option<Loaded>, StoreError> {
        without_panics(|| self.load_unguarded()).map_err(|panic| StoreError::Damaged {
            path: self.path.clone(),
            detail: format!("the storage engine failed to read it ({panic})"),
        })?
    }

    fn load_unguarded(&self) -> Result<Option<Loaded>, StoreError> {
        let Some(meta) = self.meta()? else { return Ok(None) };
        migrate::migrate(meta.version)
            .map_err(|e| StoreError::Incompatible { path: self.path.clone(), detail: e.0 })?;
        let mut users = FxHashMap::default();
        users.reserve(meta.users as usize);
        for kv in self.all_users() {
            let (user, st) = kv?;
            users.insert(user, st);
        }
        let pending = self.postcard_or_default(PENDING, "pending events")?;
        let engagement = self.postcard_or_default(ENGAGEMENT, "engagement aggregates")?;
        let day = self.postcard_or_default(DAY_LOG, "day log")?;
        Ok(Some(Loaded { meta, users, pending, engagement, day }))
    }

    /// The committed platform aggregates (empty before the first checkpoint).
    ///
    /// # Errors
    /// I/O or corruption.
    pub fn engagement(&self) -> Result<Engagement, StoreError> {
        self.postcard_or_default(ENGAGEMENT, "engagement aggregates")
    }

    /// The churn model's committed state, encoded (see `analytics::churn_model`), if a run with
    /// the model checkpointed one.
    ///
    /// # Errors
    /// I/O.
    pub fn churn_model(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.sled(self.db.get(CHURN_MODEL))?.map(|v| v.to_vec()))
    }

    /// The postcard value under `key` (no version byte), its type's default if absent.
    fn postcard_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<T, StoreError> {
        match self.sled(self.db.get(key))? {
            None => Ok(T::default()),
            Some(v) => postcard::from_bytes(&v)
                .map_err(|e| StoreError::Corrupt { what: what.into(), detail: e.to_string() }),
        }
    }

    /// Every rating applied up to the committed checkpoint, in the order applied.
    ///
    /// # Errors
    /// I/O or a corrupt log chunk.
    #[cfg(test)]
    pub fn rating_log(&self) -> Result<Vec<LoggedRating>, StoreError> {
        self.ratings().collect()
    }

    /// [`Store::rating_log`], read piece by piece (a restart replays it without holding it all).
    pub fn ratings(&self) -> impl Iterator<Item = Result<LoggedRating, StoreError>> + '_ {
        self.db.scan_prefix(b"l").flat_map(move |kv| match self.sled(kv) {
            Ok((_, v)) => match decode_ratings(&v) {
                Ok(ratings) => ratings.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(StoreError::Corrupt { what: "rating log".into(), detail: e.to_string() })],
            },
            Err(e) => vec![Err(e)],
        })
    }

    /// Writes a checkpoint of `p` ([`Store::prepare`], then [`Store::write`]).
    ///
    /// # Errors
    /// I/O; the previous checkpoint then stays the committed one.
    #[cfg(test)]
    pub fn checkpoint(
        &self,
        p: &mut Processor,
        mode: &str,
        finished: bool,
        checkpoints: u64,
    ) -> Result<CheckpointStats, StoreError> {
        self.write(self.prepare(p, mode, "", Vec::new(), finished, checkpoints))
    }

    /// Encodes a checkpoint of `p` as one batch: dirty users, closed sessions, latest alerts, the
    /// ratings applied since the last one, pending events, aggregates and the meta record (with
    /// the input positions, and `outputs`, the output files' lengths). Takes `p`'s dirty sets:
    /// the batch must then be written.
    pub fn prepare(
        &self,
        p: &mut Processor,
        mode: &str,
        input: &str,
        outputs: Vec<OutputFile>,
        finished: bool,
        checkpoints: u64,
    ) -> Prepared {
        let started = Instant::now();
        let dirty = p.take_dirty();
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        for &u in &dirty.users {
            if let Some(st) = p.users().get(&u) {
                let v = encode(st);
                bytes += 5 + v.len() as u64;
                batch.insert(&user_key(b'u', u), v);
            }
        }
        // One value per user: the sessions the user closed since the previous checkpoint.
        let mut sessions = dirty.sessions;
        let closed = sessions.len();
        sessions.sort_unstable_by_key(|&(u, s)| (u, s.start));
        let mut group = Vec::new();
        for chunk in sessions.chunk_by(|a, b| a.0 == b.0) {
            group.clear();
            group.extend(chunk.iter().map(|&(_, s)| s));
            let v = encode(&group);
            bytes += 13 + v.len() as u64;
            batch.insert(&session_key(chunk[0].0, checkpoints), v);
        }
        let alerts = dirty.alerts.len();
        for (u, alert) in dirty.alerts {
            let v = encode(&alert);
            bytes += 5 + v.len() as u64;
            batch.insert(&user_key(b'c', u), v);
        }
        let meta = Meta {
            version: STATE_VERSION,
            mode: mode.to_string(),
            config: p.config().clone(),
            genres: p.catalog().genre_names().to_vec(),
            partitions: p.partitions().to_vec(),
            watermark: p.watermark(),
            counters: p.counters().clone(),
            users: p.users().len() as u64,
            checkpoints,
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            finished,
            input: input.to_string(),
            outputs,
        };
        for (piece, ratings) in dirty.ratings.chunks(LOG_PIECE).enumerate() {
            let mut log = Vec::with_capacity(ratings.len() * 8);
            let mut prev_ts = 0;
            for r in ratings {
                encode_rating(r, prev_ts, &mut log);
                prev_ts = r.ts;
            }
            bytes += 13 + log.len() as u64;
            batch.insert(&log_key(checkpoints, piece as u32), log);
        }
        if p.has_scorer() {
            if let Some(model) = p.take_scored() {
                bytes += model.len() as u64;
                batch.insert(CHURN_MODEL, model);
            }
        } else {
            batch.remove(CHURN_MODEL);
        }
        let engagement = postcard::to_stdvec(p.engagement()).expect("aggregates serialize");
        bytes += engagement.len() as u64;
        batch.insert(ENGAGEMENT, engagement);
        let day = postcard::to_stdvec(p.day_log()).expect("day log serializes");
        bytes += day.len() as u64;
        batch.insert(DAY_LOG, day);
        let pending = postcard::to_stdvec(&p.pending()).expect("pending events serialize");
        bytes += pending.len() as u64;
        batch.insert(PENDING, pending);
        let m = serde_json::to_vec(&meta).expect("meta serializes");
        bytes += m.len() as u64;
        let meta_hash = fnv1a(&m);
        batch.insert(META, m);
        Prepared {
            batch,
            number: checkpoints,
            meta_hash,
            alerts,
            ratings: dirty.ratings.len(),
            positions: p.partitions().to_vec(),
            stats: CheckpointStats {
                users: dirty.users.len(),
                sessions: closed,
                bytes,
                duration: started.elapsed(),
            },
        }
    }

    /// Writes a prepared checkpoint in one atomic batch, then fsyncs. Checkpoints must be
    /// written in the order they were prepared.
    ///
    /// # Errors
    /// I/O; the previous checkpoint then stays the committed one.
    pub fn write(&self, c: Prepared) -> Result<CheckpointStats, StoreError> {
        let started = Instant::now();
        self.sled(self.db.apply_batch(c.batch))?;
        let applied = started.elapsed();
        self.sled(self.db.flush())?;
        Marker { number: c.number, meta_hash: c.meta_hash, sealed: None }
            .write(&self.dir)
            .map_err(|source| StoreError::Marker { path: self.path.clone(), source })?;
        tracing::debug!(
            checkpoint = c.number,
            users = c.stats.users,
            sessions = c.stats.sessions,
            alerts = c.alerts,
            ratings = c.ratings,
            bytes = c.stats.bytes,
            encode_ms = c.stats.duration.as_secs_f64() * 1e3,
            apply_ms = applied.as_secs_f64() * 1e3,
            flush_ms = (started.elapsed() - applied).as_secs_f64() * 1e3,
            "checkpoint written"
        );
        Ok(CheckpointStats { duration: c.stats.duration + started.elapsed(), ..c.stats })
    }

    /// A user's committed state.
    ///
    /// # Errors
    /// I/O or corruption.
    pub fn user(&self, user: u32) -> Result<Option<UserState>, StoreError> {
        let Some(v) = self.sled(self.db.get(user_key(b'u', user)))? else { return Ok(None) };
        decode_at(&v, || format!("user {user}")).map(Some)
    }

    /// A user's latest churn alert.
    ///
    /// # Errors
    /// I/O or corruption.
    pub fn last_alert(&self, user: u32) -> Result<Option<ChurnAlert>, StoreError> {
        let Some(v) = self.sled(self.db.get(user_key(b'c', user)))? else { return Ok(None) };
        decode_at(&v, || format!("alert of user {user}")).map(Some)
    }

    /// A user's closed sessions, newest first, at most `limit`; `genres` are the committed meta
    /// record's (the meaning of the stored genre bits).
    ///
    /// # Errors
    /// I/O or corruption.
    pub fn sessions(
        &self,
        user: u32,
        limit: usize,
        genres: &[String],
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let mut out = Vec::new();
        // Groups are keyed by checkpoint, and a user's sessions close in start order, so the
        // groups newest first, each read backwards, give the sessions newest first.
        for kv in self.db.scan_prefix(user_key(b's', user)).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = self.sled(kv)?;
            let group: Vec<ClosedSession> = decode_at(&v, || format!("sessions of user {user}"))?;
            out.extend(group.iter().rev().take(limit - out.len()).map(|s| s.summary(user, genres)));
        }
        Ok(out)
    }

    /// Every closed session of every user, in (user, start) order (`genres` as for
    /// [`Store::sessions`]).
    ///
    /// # Errors
    /// I/O or corruption, as the sessions are reached.
    pub fn all_sessions<'a>(
        &'a self,
        genres: &'a [String],
    ) -> impl Iterator<Item = Result<SessionSummary, StoreError>> + 'a {
        self.db.scan_prefix(b"s").flat_map(move |kv| {
            let group = self.sled(kv).and_then(|(k, v)| {
                let user = key_user(&k)?;
                Ok((user, decode_at::<Vec<ClosedSession>>(&v, || format!("sessions of user {user}"))?))
            });
            let summaries: Vec<_> = match group {
                Ok((user, group)) => group.iter().map(|s| Ok(s.summary(user, genres))).collect(),
                Err(e) => vec![Err(e)],
            };
            summaries
        })
    }

    /// Users whose latest alert has `status` (any status if `None`), in user order, at most
    /// `limit`, starting after user `after`.
    ///
    /// # Errors
    /// I/O or corruption.
    pub fn alerts(
        &self,
        status: Option<ChurnStatus>,
        limit: usize,
        after: Option<u32>,
    ) -> Result<Vec<ChurnAlert>, StoreError> {
        let start = after.map_or(user_key(b'c', 0).to_vec(), |u| {
            let mut k = user_key(b'c', u).to_vec();
            k.push(0);
            k
        });
        let mut out = Vec::new();
        // Up to, not including, the first key after the `c` prefix (`d`, the day log).
        for kv in self.db.range(start..b"d".to_vec()) {
            let (k, v) = self.sled(kv)?;
            let user = key_user(&k)?;
            let a: ChurnAlert = decode_at(&v, || format!("alert of user {user}"))?;
            if status.is_none_or(|s| a.status == s) {
                out.push(a);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every user's committed state, in user order.
    pub fn all_users(&self) -> impl Iterator<Item = Result<(u32, UserState), StoreError>> + '_ {
        self.db.scan_prefix(b"u").map(move |kv| {
            let (k, v) = self.sled(kv)?;
            let user = key_user(&k)?;
            Ok((user, decode_at(&v, || format!("user {user}"))?))
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Checks that a loaded checkpoint can continue with this run's settings.
    ///
    /// # Errors
    /// [`StoreError::Incompatible`] naming the difference.
    pub fn check_compatible(
        &self,
        meta: &Meta,
        mode: &str,
        input: &str,
        cfg: &CoreConfig,
        genres: &[String],
        partitions: &[(String, u32)],
    ) -> Result<(), StoreError> {
        let fail = |detail: String| Err(StoreError::Incompatible { path: self.path.clone(), detail });
        if meta.mode != mode {
            return fail(format!(
                "holds {} state; this is {mode} mode (use another --state directory)",
                meta.mode
            ));
        }
        if !meta.input.is_empty() && meta.input != input {
            return fail(format!(
                "was computed from another input ({}), not this one ({input}); use the same input or a new --state directory",
                meta.input
            ));
        }
        if &meta.config != cfg {
            return fail(format!(
                "was computed with other settings ({}); restart with the same settings or a new --state directory",
                serde_json::to_string(&meta.config).unwrap_or_default()
            ));
        }
        if meta.genres != genres {
            return fail("was computed with a catalog with other genres; use the same movies file".into());
        }
        let stored: Vec<(String, u32)> =
            meta.partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect();
        if stored != partitions {
            return fail(format!(
                "was reading {} partitions ({}…); the input now has {}: partition counts cannot change under a checkpoint",
                stored.len(),
                stored.first().map(|(t, _)| t.as_str()).unwrap_or("-"),
                partitions.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::Catalog;
    use crate::core::config::DAY;
    use crate::core::processor::{Output, Source};
    use std::sync::Arc;
    use streamflix_schemas::Movie;
    use streamflix_schemas::{RatingEvent, StreamRecord};

    /// Opens the store again after dropping it: sled's flusher thread can hold the database (and
    /// its file lock) a moment past the drop, so a locked store is retried for up to 5 s.
    fn reopen(dir: &Path) -> Store {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(dir) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r.unwrap(),
            }
        }
    }

    #[test]
    fn a_checkpoint_round_trips_the_processor() {
        let dir = tempfile::tempdir().unwrap();
        let movies = vec![Movie { id: 1, title: "A".into(), year: None, genres: vec!["Drama".into()] }];
        let catalog = Arc::new(Catalog::from_movies(&movies).unwrap());
        let cfg = CoreConfig::default();
        let mut p = Processor::new(cfg.clone(), catalog.clone(), vec![("r".into(), 0)]);
        let mut out: Vec<Output> = Vec::new();
        for (i, ts) in [1_000_000_000i64, 1_000_000_100, 1_000_100_000, 1_000_200_000].into_iter().enumerate()
        {
            let r = StreamRecord::Rating(RatingEvent {
                v: 1,
                seq: i as u64,
                user_id: 3,
                movie_id: 1,
                rating: 4.5,
                ts,
            });
            p.process_record(
                Source { index: 0, offset: i as u64, next: i as u64 + 1 },
                None,
                &r,
                None,
                &mut out,
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let stats = store.checkpoint(&mut p, "embedded", false, 1).unwrap();
        assert_eq!(stats.users, 1);
        drop(store);
        let store = reopen(dir.path());
        let Loaded { meta, users, pending, engagement, day } = store.load().unwrap().unwrap();
        assert_eq!(&day, p.day_log());
        let log = store.rating_log().unwrap();
        assert_eq!(&engagement, p.engagement());
        assert_eq!(log.len() as u64, p.counters().ratings, "every applied rating is in the log");
        assert_eq!(log.len() + pending.len(), 4);
        assert_eq!(pending, p.pending());
        store
            .check_compatible(&meta, "embedded", "", &cfg, catalog.genre_names(), &[("r".into(), 0)])
            .unwrap();
        assert!(store
            .check_compatible(&meta, "kafka", "", &cfg, catalog.genre_names(), &[("r".into(), 0)])
            .is_err());
        assert_eq!(meta.partitions[0].position, 4);
        assert_eq!(&users[&3], &p.users()[&3]);
        assert_eq!(
            store.sessions(3, 10, &meta.genres).unwrap().len(),
            2,
            "two sessions closed, newest first"
        );
        assert_eq!(store.sessions(3, 10, &meta.genres).unwrap()[0].start, 1_000_100_000);
        assert_eq!(meta.counters, *p.counters());
    }

    /// The seal of a clean stop: taken only once no handle is open, checked and removed by the
    /// next open (so a crash after that open cannot look like damage), and any change to sled's
    /// files in between is refused, with the files left as they were.
    #[test]
    fn a_sealed_state_is_checked_on_open_and_the_open_removes_the_seal() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::default());
        let mut p = Processor::new(CoreConfig::default(), catalog, vec![("r".into(), 0)]);
        let store = Store::open(dir.path()).unwrap();
        store.checkpoint(&mut p, "embedded", false, 1).unwrap();
        assert!(!Store::seal(dir.path()).unwrap(), "not sealed while a handle is open");
        drop(store);
        assert!(Store::seal(dir.path()).unwrap());
        let marker = || Marker::read(dir.path()).unwrap().unwrap();
        assert!(marker().sealed.is_some());
        let (store, ()) = Store::open_then(dir.path(), |_| Ok::<_, StoreError>(())).unwrap();
        assert_eq!(marker().sealed, None, "the open removed the seal before sled wrote");
        drop(store);
        assert!(Store::seal(dir.path()).unwrap());
        let conf = std::fs::read(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf"), [&conf[..], b" "].concat()).unwrap();
        let sealed = std::fs::read(dir.path().join(MARKER)).unwrap();
        let e = Store::open_then(dir.path(), |_| Ok::<_, StoreError>(())).err().unwrap();
        assert!(e.to_string().contains("changed after it was stopped cleanly"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(MARKER)).unwrap(), sealed, "the seal is kept");
    }

    /// What the store returns equals what was published: sessions (grouped per user and
    /// checkpoint, newest first per user, all in (user, start) order) and each user's latest
    /// alert, over several checkpoints.
    #[test]
    fn stored_sessions_and_alerts_read_back_as_published() {
        let dir = tempfile::tempdir().unwrap();
        let movies = vec![
            Movie { id: 1, title: "A".into(), year: None, genres: vec!["Drama".into()] },
            Movie { id: 2, title: "B".into(), year: None, genres: vec!["Action".into(), "Comedy".into()] },
        ];
        let catalog = Arc::new(Catalog::from_movies(&movies).unwrap());
        // Weeks pass between some events, with no heartbeats.
        let cfg = CoreConfig { max_future: 1000 * DAY, ..Default::default() };
        let mut p = Processor::new(cfg, catalog.clone(), vec![("r".into(), 0)]);
        let store = Store::open(dir.path()).unwrap();
        let mut out: Vec<Output> = Vec::new();
        let mut published = Vec::new();
        let mut seq = 0u64;
        let mut ts = 1_000_000_000i64;
        for checkpoint in 1..=4u64 {
            for step in 0..60u32 {
                // Users 1–5 take turns of four events; pauses from minutes to weeks close sessions
                // and churn users.
                ts += i64::from(step % 7) * 300
                    + i64::from(step % 9 / 8) * 7_200
                    + i64::from(step % 29 / 28) * 40 * DAY;
                let r = StreamRecord::Rating(RatingEvent {
                    v: 1,
                    seq,
                    user_id: 1 + (step / 4 + checkpoint as u32) % 5,
                    movie_id: 1 + step % 2,
                    rating: 0.5 + (step % 10) as f32 * 0.5,
                    ts,
                });
                p.process_record(Source { index: 0, offset: seq, next: seq + 1 }, None, &r, None, &mut out);
                seq += 1;
            }
            if checkpoint == 4 {
                p.finish(&mut out);
            }
            store.checkpoint(&mut p, "embedded", checkpoint == 4, checkpoint).unwrap();
            published.append(&mut out);
        }
        let mut sessions: Vec<SessionSummary> = published
            .iter()
            .filter_map(|o| match o {
                Output::Session { user, session } => Some(session.summary(*user, catalog.genre_names())),
                _ => None,
            })
            .collect();
        assert!(sessions.len() > 40 && sessions.iter().any(|s| s.genres.len() == 3));
        sessions.sort_by_key(|s| (s.user_id, s.start));
        let stored: Vec<SessionSummary> =
            store.all_sessions(catalog.genre_names()).map(Result::unwrap).collect();
        assert_eq!(stored, sessions);
        for user in 1..=5 {
            let mine: Vec<&SessionSummary> = sessions.iter().filter(|s| s.user_id == user).rev().collect();
            assert!(store
                .sessions(user, 1000, catalog.genre_names())
                .unwrap()
                .iter()
                .eq(mine.iter().copied()));
            assert!(store
                .sessions(user, 3, catalog.genre_names())
                .unwrap()
                .iter()
                .eq(mine.iter().copied().take(3)));
            let last = published.iter().rev().find_map(|o| match o {
                Output::Alert(a) if a.user_id == user => Some(a.clone()),
                _ => None,
            });
            assert!(last.is_some());
            assert_eq!(store.last_alert(user).unwrap(), last);
        }
        let churned = store.alerts(Some(ChurnStatus::Churned), 10, None).unwrap();
        assert!(!churned.is_empty() && churned.iter().all(|a| a.status == ChurnStatus::Churned));
    }

    /// Every rating reads back bit for bit, whatever the values: half steps take a byte, other
    /// floats (NaN included) their bits; event times may go backwards and span the whole i64.
    #[test]
    fn log_pieces_round_trip_and_refuse_truncation() {
        use proptest::strategy::Strategy;
        proptest::proptest!(|(raw in proptest::collection::vec(
            (proptest::prelude::any::<u32>(), proptest::prelude::any::<u32>(),
             proptest::prop_oneof![(1u8..=10).prop_map(|k| f32::from(k) / 2.0),
                                   proptest::prelude::any::<f32>()],
             proptest::prop_oneof![800_000_000i64..1_600_000_000, proptest::prelude::any::<i64>()]),
            0..300))| {
            let ratings: Vec<LoggedRating> =
                raw.iter().map(|&(user, movie, rating, ts)| LoggedRating { user, movie, rating, ts }).collect();
            let mut piece = Vec::new();
            let mut prev = 0;
            for r in &ratings {
                encode_rating(r, prev, &mut piece);
                prev = r.ts;
            }
            let back = decode_ratings(&piece).unwrap();
            proptest::prop_assert_eq!(back.len(), ratings.len());
            for (a, b) in back.iter().zip(&ratings) {
                proptest::prop_assert_eq!((a.user, a.movie, a.rating.to_bits(), a.ts), (b.user, b.movie, b.rating.to_bits(), b.ts));
            }
            if !piece.is_empty() {
                proptest::prop_assert!(decode_ratings(&piece[..piece.len() - 1]).is_err());
            }
        });
        // MovieLens-like ratings (a second or a minute apart) take about 7 bytes.
        let mut piece = Vec::new();
        let mut prev = 0;
        for i in 0..640u32 {
            let r = LoggedRating {
                user: 1 + i * 97 % 162_000,
                movie: 1 + i * 31 % 60_000,
                rating: 3.5,
                ts: 1_500_000_000 + i64::from(i) * 40,
            };
            encode_rating(&r, prev, &mut piece);
            prev = r.ts;
        }
        assert!(piece.len() < 640 * 8, "{} bytes", piece.len());
    }

    #[test]
    fn unknown_state_versions_are_refused() {
        assert!(decode::<UserState>(&[9, 1, 2]).unwrap_err().0.contains("state version 9"));
    }
}
