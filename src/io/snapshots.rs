//! The snapshot writer: the day close's tables as Parquet files, on their own thread.
//!
//! The processor pushes each closed day ([`DayClose`]) into the pipeline's output buffer; the
//! pipeline hands it here, and a writer thread turns it into Arrow batches
//! (`analytics::tables`) and Parquet files: `DIR/<table>/dt=<period start>/part-<n>.parquet`,
//! written to `.part-<n>.parquet.tmp` and renamed, then `_SUCCESS` once the period's last day is
//! closed. The files are a function of the input: a checkpoint commits state only after the
//! closes before it are written ([`SnapshotWriter::sync`], which also flushes them to disk), so a
//! crash at any point makes the restart close the same days again from the same state and
//! rewrite the same bytes; leftover temporary files are removed on start.
//!
//! The directory's `_streamflix.json` says what wrote it (input, tables, period, genres); a start
//! with another input or other settings is refused rather than mixing two runs' files.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::analytics::tables`, `crate::core::calendar`, `crate::core::catalog`, `crate::core::config`, `crate::core::daily`, `crate::io::priority`, `crate::serve::metrics`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::analytics::tables::{self, Table, SUCCESS};
use crate::core::calendar::{day_label, month_index, DAY};
use crate::core::catalog::Catalog;
use crate::core::config::CoreConfig;
use crate::core::daily::DayClose;
use crate::serve::metrics::Metrics;

/// What wrote the directory.
pub const MANIFEST: &str = "_streamflix.json";

/// The partition granularity (`--snapshot-period`); days close daily whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One partition per day.
    Day,
    /// One per ISO week (Monday to Sunday).
    Week,
    /// One per calendar month.
    Month,
}

impl Period {
    /// The first day of the period holding `day` (days since the epoch).
    pub fn start(self, day: i64) -> i64 {
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday is 3 days before it.
            Period::Week => day - (day + 3).rem_euclid(7),
            Period::Month => {
                let m = month_index(day * DAY);
                let mut d = day;
                while month_index((d - 1) * DAY) == m {
                    d -= 1;
                }
                d
            }
        }
    }

    /// Whether `day` is the last of its period.
    pub fn is_last(self, day: i64) -> bool {
        self.start(day + 1) == day + 1
    }

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Where and what to write.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// The tables written, in [`Table::ALL`] order.
    pub tables: Vec<Table>,
    /// The partition granularity.
    pub period: Period,
}

/// Errors of the snapshot writer.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file or directory could not be written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds another run's tables.
    #[error("{path} holds tables written {detail}; pass another --snapshots directory or remove this one")]
    Foreign {
        /// The manifest's path.
        path: String,
        /// How they differ.
        detail: String,
    },
    /// Parquet encoding failed.
    #[error("encoding the {table} table as Parquet")]
    Parquet {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The writer thread is gone (it panicked).
    #[error("the snapshot writer thread died")]
    WriterDied,
    /// An earlier close failed (the writer writes nothing after a failure).
    #[error("{0}")]
    Failed(String),
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.display().to_string();
    move |source| SnapshotError::Io { action, path, source }
}

/// What wrote a snapshot directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    input: String,
    tables: Vec<String>,
    period: Period,
    genres: Vec<String>,
    /// The processor's semantics (as the checkpoint stores them): other settings, other tables.
    settings: serde_json::Value,
}

enum Msg {
    Close(Box<DayClose>, Arc<Metrics>),
    Sync(SyncSender<Result<(), SnapshotError>>),
}

/// What a checkpoint waits for before it commits: every close queued before it written and
/// flushed to disk ([`SnapshotWriter::barrier`]).
pub struct Barrier(Option<Receiver<Result<(), SnapshotError>>>);

impl Barrier {
    /// Waits for the closes queued before this barrier.
    ///
    /// # Errors
    /// A close failed, or the writer thread died.
    pub fn wait(self) -> Result<(), SnapshotError> {
        match self.0.map(|rx| rx.recv()) {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) | None => Err(SnapshotError::WriterDied),
        }
    }
}

/// What the writer has done in this process (for the run's summary and the benchmark).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloseStats {
    /// Days closed (complete) and written.
    pub closes: u64,
    /// Parquet bytes written.
    pub bytes: u64,
    /// Seconds spent building batches and writing files.
    pub write_seconds: f64,
    /// CPU seconds (user + system) the writer thread used, where the platform tells (Linux).
    pub cpu_seconds: Option<f64>,
    /// The slowest write: seconds, day, rows.
    pub slowest_write: (f64, i64, u64),
    /// The most users in one close (`user_features_full`), and that close's write seconds.
    pub largest_full: (u64, f64),
}

/// Closed days queued for the writer at most; the processing thread waits beyond (a close is a
/// few MB at most, a month end with every user ~25 MB at ml-25m's 162 k users).
const QUEUE: usize = 64;

/// The writer thread and its queue.
pub struct SnapshotWriter {
    stats: Arc<Mutex<CloseStats>>,
    jobs: Option<SyncSender<Msg>>,
    /// The first failure, for good: the writer writes nothing after it.
    failed: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    settings: Arc<SnapshotSettings>,
}

impl SnapshotWriter {
    /// Prepares `settings.dir` for the run that reads `input` (refusing another run's
    /// directory), removes leftover temporary files, writes the `movies` table and starts the
    /// writer thread.
    ///
    /// # Errors
    /// The directory cannot be written or holds another run's tables.
    pub fn start(
        settings: SnapshotSettings,
        input: &str,
        cfg: &CoreConfig,
        catalog: Arc<Catalog>,
    ) -> Result<SnapshotWriter, SnapshotError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let manifest = Manifest {
            format: 1,
            input: input.to_string(),
            tables: settings.tables.iter().map(|t| t.name().to_string()).collect(),
            period: settings.period,
            genres: catalog.genre_names().to_vec(),
            settings: serde_json::to_value(cfg).expect("the settings serialize"),
        };
        check_manifest(&dir, &manifest)?;
        remove_temporaries(&dir)?;
        if settings.tables.contains(&Table::Movies) {
            let part = dir.join(Table::Movies.name());
            std::fs::create_dir_all(&part).map_err(io_err("create", &part))?;
            write_parquet(
                &part,
                "part-0.parquet",
                Table::Movies,
                &tables::movies(&catalog),
                None,
                &mut Vec::new(),
            )?;
            write_success(&part)?;
        }
        let settings = Arc::new(settings);
        let failed = Arc::new(Mutex::new(None));
        let stats = Arc::new(Mutex::new(CloseStats::default()));
        let (jobs, rx) = sync_channel::<Msg>(QUEUE);
        let thread = {
            let (settings, failed, stats) = (settings.clone(), failed.clone(), stats.clone());
            std::thread::Builder::new()
                .name("streamflix-close".into())
                .spawn(move || {
                    crate::io::priority::lower_priority();
                    run(&settings, &catalog, &rx, &failed, &stats)
                })
                .map_err(io_err("start a thread for", &dir))?
        };
        Ok(SnapshotWriter { stats, jobs: Some(jobs), failed, thread: Some(thread), settings })
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> CloseStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The settings.
    pub fn settings(&self) -> &SnapshotSettings {
        &self.settings
    }

    fn failure(&self) -> Option<SnapshotError> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone().map(SnapshotError::Failed)
    }

    /// Queues a closed day (waits while [`QUEUE`] are queued).
    ///
    /// # Errors
    /// An earlier close failed, or the thread died.
    pub fn send(&mut self, close: Box<DayClose>, metrics: Arc<Metrics>) -> Result<(), SnapshotError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(Msg::Close(close, metrics)).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.failure().unwrap_or(SnapshotError::WriterDied))
        }
    }

    /// A barrier behind every close queued so far: its [`Barrier::wait`] returns once they are
    /// written and flushed to disk. The checkpoint writer waits on it before it commits the state
    /// after them, so the processing thread goes on meanwhile.
    ///
    /// # Errors
    /// An earlier close failed.
    pub fn barrier(&mut self) -> Result<Barrier, SnapshotError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let (tx, rx) = sync_channel(1);
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(Msg::Sync(tx)).is_ok());
        Ok(Barrier(sent.then_some(rx)))
    }
}

impl Drop for SnapshotWriter {
    /// Lets the queued closes be written.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_manifest(dir: &Path, want: &Manifest) -> Result<(), SnapshotError> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Manifest = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Foreign {
                path: path.display().to_string(),
                detail: format!("by something else (unreadable manifest: {e})"),
            })?;
            let detail = if found.input != want.input {
                Some(format!("from another input ({})", found.input))
            } else if found.tables != want.tables {
                Some(format!("with other tables ({})", found.tables.join(",")))
            } else if found.period != want.period {
                Some(format!("with --snapshot-period {}", found.period.name()))
            } else if found.settings != want.settings {
                Some("with other processing settings (session gap, churn period, lateness…)".to_string())
            } else if found != *want {
                Some("with another catalog or format".to_string())
            } else {
                None
            };
            match detail {
                Some(detail) => Err(SnapshotError::Foreign { path: path.display().to_string(), detail }),
                None => Ok(()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let non_empty = std::fs::read_dir(dir).map_err(io_err("read", dir))?.next().is_some();
            if non_empty {
                return Err(SnapshotError::Foreign {
                    path: dir.display().to_string(),
                    detail: format!("by something else (no {MANIFEST})"),
                });
            }
            let mut bytes = serde_json::to_vec_pretty(want).expect("manifest serializes");
            bytes.push(b'\n');
            write_atomically(dir, MANIFEST, &bytes)
        }
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// Removes the `*.tmp` files a killed writer left.
fn remove_temporaries(dir: &Path) -> Result<(), SnapshotError> {
    for entry in std::fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io_err("read", &path))?.is_dir() {
            remove_temporaries(&path)?;
        } else if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
    write_atomically_for(dir, name, bytes, None)
}

fn write_atomically_for(dir: &Path, name: &str, bytes: &[u8], day: Option<i64>) -> Result<(), SnapshotError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    if let Some(day) = day {
        pause_point(day, "tmp");
    }
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io_err("rename to", &path))
}

/// A test hook (`tests/snapshots.rs`): with `STREAMFLIX_TEST_CLOSE_PAUSE=YYYY-MM-DD:STAGE`, the
/// writer stops for good at `STAGE` of that day's close (`tmp`: a part written to its temporary
/// name, not renamed; `parts`: every part renamed, no `_SUCCESS` yet; `success`: `_SUCCESS`
/// written, the checkpoint after it not yet), after saying so on stdout, so a test can SIGKILL
/// the process at exactly that point.
fn pause_point(day: i64, stage: &str) {
    static PAUSE: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let v = std::env::var("STREAMFLIX_TEST_CLOSE_PAUSE").ok()?;
        let (d, s) = v.split_once(':')?;
        Some((d.to_string(), s.to_string()))
    });
    if let Some((d, s)) = pause {
        if s == stage && *d == day_label(day) {
            println!("close paused at {stage} of {d}");
            loop {
                std::thread::park();
            }
        }
    }
}

fn write_success(dir: &Path) -> Result<(), SnapshotError> {
    let path = dir.join(SUCCESS);
    std::fs::write(&path, b"").map_err(io_err("write", &path))
}

/// How the tables are encoded: snappy, dictionaries only for strings, no library version.
fn writer_properties(table: Table) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Not the library's version: the same input gives the same bytes whatever built us.
        .set_created_by("streamflix".to_string())
        // Dictionaries only where values repeat (strings: statuses, genres, cohorts, titles):
        // ids, times and means are nearly all distinct, and building a dictionary for them only
        // to fall back to plain encoding took most of the encoding time.
        .set_dictionary_enabled(false)
        // Min/max per column chunk (what DuckDB and Spark prune row groups with), not per page:
        // a tenth of the encoding time.
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for f in table.schema().fields() {
        let path = match f.data_type() {
            DataType::List(item) => {
                ColumnPath::new(vec![f.name().clone(), "list".into(), item.name().clone()])
            }
            DataType::Utf8 => ColumnPath::from(f.name().as_str()),
            _ => continue,
        };
        props = props.set_column_dictionary_enabled(path, true);
    }
    props.build()
}

/// `batch` as a Parquet file, appended to `out`.
fn encode(table: Table, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    let pq = |source| SnapshotError::Parquet { table: table.name(), source };
    let mut w = ArrowWriter::try_new(out, table.schema(), Some(writer_properties(table))).map_err(pq)?;
    w.write(batch).map_err(pq)?;
    w.close().map_err(pq)?;
    Ok(())
}

/// Encodes `batch` as Parquet into `dir/name` (through a temporary file), in `buf` (reused:
/// fresh buffers for every file cost page faults); returns its size.
fn write_parquet(
    dir: &Path,
    name: &str,
    table: Table,
    batch: &RecordBatch,
    day: Option<i64>,
    buf: &mut Vec<u8>,
) -> Result<u64, SnapshotError> {
    buf.clear();
    encode(table, batch, buf)?;
    write_atomically_for(dir, name, buf, day)?;
    Ok(buf.len() as u64)
}

fn run(
    settings: &SnapshotSettings,
    catalog: &Catalog,
    rx: &Receiver<Msg>,
    failed: &Mutex<Option<String>>,
    stats: &Mutex<CloseStats>,
) {
    let mut broken: Option<String> = None;
    let mut buf = Vec::new();
    let fail = |e: SnapshotError, broken: &mut Option<String>| {
        let msg = chain(&e);
        *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(msg.clone());
        *broken = Some(msg);
    };
    for msg in rx {
        match msg {
            Msg::Close(close, metrics) => {
                if broken.is_some() {
                    continue;
                }
                let started = Instant::now();
                match write_close(settings, catalog, &close, &mut buf) {
                    Ok(bytes) => {
                        let secs = started.elapsed().as_secs_f64();
                        let mut st = stats.lock().unwrap_or_else(PoisonError::into_inner);
                        for (t, n) in bytes {
                            metrics.snapshot_bytes.with_label_values(&[t.name()]).inc_by(n);
                            st.bytes += n;
                        }
                        metrics.snapshot_close_seconds.observe(secs);
                        st.closes += u64::from(close.complete);
                        st.write_seconds += secs;
                        st.cpu_seconds = thread_cpu_seconds();
                        let full = close.full.as_ref().map_or(0, |f| f.users.len() as u64);
                        let rows =
                            close.ratings.len() + close.users.len() + close.sessions.len() + full as usize;
                        if secs > st.slowest_write.0 {
                            st.slowest_write = (secs, close.day, rows as u64);
                        }
                        if full >= st.largest_full.0 && full > 0 {
                            st.largest_full = (full, secs);
                        }
                        drop(st);
                        if close.complete {
                            metrics.snapshot_last_day.set((close.day * DAY) as f64);
                        }
                    }
                    Err(e) => {
                        tracing::error!(day = %day_label(close.day), "day close failed: {}", chain(&e));
                        fail(e, &mut broken);
                    }
                }
            }
            Msg::Sync(reply) => {
                if broken.is_none() {
                    if let Err(e) = sync_dir(&settings.dir) {
                        fail(e, &mut broken);
                    }
                }
                let _ = reply.send(broken.clone().map_or(Ok(()), |e| Err(SnapshotError::Failed(e))));
            }
        }
    }
}

/// CPU seconds (user + system) the calling thread has used (Linux only).
fn thread_cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getrusage` fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } == 0 {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Some(secs(u.ru_utime) + secs(u.ru_stime));
        }
    }
    None
}

/// Flushes the file system holding `dir` (one call for every file written since the last).
fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    let f = std::fs::File::open(dir).map_err(io_err("open", dir))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor this function owns.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io_err("flush to disk", dir)(std::io::Error::last_os_error()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    f.sync_all().map_err(io_err("flush to disk", dir))?;
    Ok(())
}

/// Writes one closed day's parts (and `_SUCCESS` where its period ends); returns the bytes per
/// table.
fn write_close(
    settings: &SnapshotSettings,
    catalog: &Catalog,
    close: &DayClose,
    buf: &mut Vec<u8>,
) -> Result<Vec<(Table, u64)>, SnapshotError> {
    let start = settings.period.start(close.day);
    let partition = format!("dt={}", day_label(start));
    let part = format!("part-{}.parquet", close.day - start);
    let batches = tables::day_batches(close, &settings.tables, catalog.genre_names());
    let mut written = Vec::new();
    for &t in settings.tables.iter().filter(|t| **t != Table::Movies) {
        let dir = settings.dir.join(t.name()).join(&partition);
        match batches.iter().find(|(bt, _)| *bt == t) {
            Some((_, batch)) => {
                std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                written.push((t, write_parquet(&dir, &part, t, batch, Some(close.day), buf)?));
            }
            None => {
                // No rows: a part an earlier, incomplete close of this day wrote goes.
                let stale = dir.join(&part);
                match std::fs::remove_file(&stale) {
                    Ok(()) => {
                        // A month-end table's partition it leaves empty goes too (an error
                        // here means it holds other days' parts).
                        if !t.is_daily() {
                            let _ = std::fs::remove_dir(&dir);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &stale)(e)),
                }
                if t.is_daily() && close.complete {
                    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                }
            }
        }
    }
    pause_point(close.day, "parts");
    if close.complete && settings.period.is_last(close.day) {
        for &t in settings.tables.iter().filter(|t| **t != Table::Movies) {
            // Every daily table's partition is complete now, rows or not; a month-end table's
            // only where a month end wrote a part.
            let dir = settings.dir.join(t.name()).join(&partition);
            let has_parts = || {
                std::fs::read_dir(&dir).is_ok_and(|mut entries| {
                    entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("part-")))
                })
            };
            if dir.is_dir() && (t.is_daily() || has_parts()) {
                write_success(&dir)?;
            }
        }
        pause_point(close.day, "success");
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_the_right_day() {
        // 2017-07-14 (day 17361) was a Friday.
        let d = 17_361;
        assert_eq!(day_label(d), "2017-07-14");
        assert_eq!(day_label(Period::Week.start(d)), "2017-07-10");
        assert_eq!(day_label(Period::Month.start(d)), "2017-07-01");
        assert!(Period::Week.is_last(d + 2), "Sunday ends the week");
        assert!(Period::Month.is_last(17_378), "2017-07-31");
        assert!(Period::Day.is_last(d));
    }
}
