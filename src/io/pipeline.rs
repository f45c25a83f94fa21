//! The driver: feeds records to the processor, publishes its outputs, checkpoints on a schedule.
//!
//! Transports (Kafka, the embedded channel) call [`Pipeline::record`] per record and
//! [`Pipeline::checkpoint`] when they stop. A checkpoint first flushes the output sink (so every
//! output of the state being committed is delivered), then encodes state + positions as one
//! batch, which a writer thread writes atomically and fsyncs while processing goes on. At most one
//! checkpoint is being written at a time: the next waits for it (and fails if it failed), and
//! [`Pipeline::checkpoint`], [`Pipeline::finish`] and dropping the pipeline wait for it too.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses `crate::analytics::churn_model`, `crate::analytics::tables`, `crate::core::calendar`, `crate::core::catalog`, `crate::core::config`, `crate::core::daily`, `crate::core::processor`, `crate::io::output`, `crate::io::priority`, `crate::io::snapshots`, `crate::model::ModelHandle`, `crate::model::learner`, `crate::model::recommend`, `crate::serve::Status`, `crate::serve::metrics`, `crate::state::checkpoint`, `streamflix-schemas`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use streamflix_schemas::StreamRecord;

use crate::analytics::churn_model::ChurnModel;
use crate::analytics::tables::Table;
use crate::core::catalog::Catalog;
use crate::core::config::CoreConfig;
use crate::core::daily::CloseSpec;
use crate::core::processor::{Output, PartitionState, Processor, RecordOutcome, Restored, Source};
use crate::io::output::{OutputError, OutputSink};
use crate::io::snapshots::{Barrier, SnapshotError, SnapshotWriter};
use crate::model::learner::{self, Background};
use crate::model::recommend::Recommender;
use crate::model::ModelHandle;
use crate::serve::metrics::{Metrics, StateValues};
use crate::serve::Status;
use crate::state::checkpoint::{CheckpointStats, Loaded, OutputFile, Prepared, Store, StoreError};

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The output sink refused an output.
    #[error("publishing outputs")]
    Publish(#[source] OutputError),
    /// The output sink could not deliver what it had before a checkpoint (nothing is committed).
    #[error("flushing outputs before a checkpoint")]
    Flush(#[source] OutputError),
    /// The output files could not be cut back to the checkpoint's lengths.
    #[error("resuming the output files")]
    Resume(#[source] OutputError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A day close's tables could not be written (the state after it is not committed).
    #[error("writing the day close's tables")]
    Snapshot(#[from] SnapshotError),
    /// The checkpoint writer thread is gone (it panicked).
    #[error("the checkpoint writer thread died")]
    WriterDied,
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Spawn(&'static str, #[source] std::io::Error),
}

/// What a transport feeds: the pipeline, seen from the transport's side. Transports (the Kafka
/// loop) call these instead of reaching into the pipeline.
pub trait RecordHandler {
    /// Applies a raw payload read at `src`.
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    fn raw(&mut self, src: Source, key: Option<&[u8]>, payload: &[u8]) -> Result<(), PipelineError>;
    /// The input partitions with their watermarks and resume positions.
    fn partitions(&self) -> &[PartitionState];
    /// Checkpoints written by this process so far.
    fn checkpoints_written(&self) -> u64;
    /// The input positions of the last checkpoint this process wrote.
    fn committed_positions(&self) -> Vec<PartitionState>;
    /// Checkpoints if records were applied since the last one and the interval has passed.
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    fn checkpoint_if_idle_due(&mut self) -> Result<(), PipelineError>;
    /// Flushes outputs, then commits state and positions; returns once they are written.
    ///
    /// # Errors
    /// Outputs could not be delivered or the store failed.
    fn checkpoint(&mut self, finished: bool) -> Result<(), PipelineError>;
    /// End of a finite input: advances the watermark to the last event and checkpoints.
    ///
    /// # Errors
    /// Publishing or checkpointing failed.
    fn finish(&mut self) -> Result<(), PipelineError>;
    /// Reports how many records of a partition are not read yet.
    fn report_lag(&self, topic: &str, partition: u32, unread: i64);
    /// The status shared with the HTTP server (the input reports its health there).
    fn status(&self) -> Arc<Status>;
}

/// When to checkpoint: after this many records or this much wall time, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Records between checkpoints.
    pub every_records: u64,
    /// Wall time between checkpoints.
    pub every: Duration,
}

/// A checkpoint for the writer thread, with the metrics to report it to and their values.
struct Job {
    /// The day closes before this state: written and on disk before it is committed.
    closes: Option<Barrier>,
    checkpoint: Prepared,
    metrics: Arc<Metrics>,
    values: StateValues,
}

/// The checkpoint writer thread (see the module documentation).
struct Writer {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    done: std::sync::mpsc::Receiver<Result<CheckpointStats, PipelineError>>,
    /// A checkpoint was handed over and its result not yet received.
    writing: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(store: Store, status: Arc<Status>) -> Result<Writer, PipelineError> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("streamflix-ckpt".into())
            .spawn(move || {
                crate::io::priority::lower_priority();
                for Job { closes, mut checkpoint, metrics, values } in rx {
                    let positions = std::mem::take(&mut checkpoint.positions);
                    let r = match closes.map_or(Ok(()), Barrier::wait) {
                        Ok(()) => store.write(checkpoint).map_err(PipelineError::from),
                        Err(e) => Err(PipelineError::from(e)),
                    };
                    if let Ok(s) = &r {
                        metrics.on_checkpoint_written(s);
                        metrics.state_disk.set(store.size_on_disk() as i64);
                        metrics.set_values(&values);
                        *status.positions.lock().unwrap_or_else(PoisonError::into_inner) = positions;
                        status.checkpoints.fetch_add(1, Ordering::Relaxed);
                        status.ready.store(true, Ordering::Relaxed);
                    }
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| PipelineError::Spawn("checkpoint writer", e))?;
        Ok(Writer { jobs: Some(jobs), done, writing: false, thread: Some(thread) })
    }

    /// Waits for the checkpoint being written, if any: its stats, or its error.
    fn wait(&mut self) -> Result<Option<CheckpointStats>, PipelineError> {
        if !std::mem::take(&mut self.writing) {
            return Ok(None);
        }
        match self.done.recv() {
            Ok(r) => Ok(Some(r?)),
            Err(_) => Err(PipelineError::WriterDied),
        }
    }
}

/// The wall clock in milliseconds since the epoch (0 if it is set before 1970): for the core's
/// check of records from the future ([`Processor::set_clock`], in seconds) and the input's health.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Drop for Writer {
    /// Lets the checkpoint being written finish.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The processor, its model, its store and its output sink.
pub struct Pipeline {
    /// The core.
    pub processor: Processor,
    /// The recommender, learning on its own thread; `None` without one.
    model: Option<ModelHandle>,
    store: Store,
    sink: Box<dyn OutputSink>,
    mode: &'static str,
    /// The input's identity, stored with every checkpoint ([`Opened::input`]).
    input: String,
    policy: CheckpointPolicy,
    buf: Vec<Output>,
    since: u64,
    last: Instant,
    checkpoints: u64,
    /// Status for the server.
    pub status: Arc<Status>,
    /// Sum over checkpoints written by this process.
    pub checkpoint_totals: CheckpointStats,
    metrics: Arc<Metrics>,
    writer: Writer,
    /// Per partition: the records counter for each outcome (resolved once).
    outcome_handles: Vec<[prometheus::IntCounter; 3]>,
    /// The day close's table writer; `None`: no tables.
    snapshots: Option<SnapshotWriter>,
    /// The largest full close (every user) this process made: users, and the seconds the
    /// processing thread spent on the record that made it (computing the rows; embedded input).
    pub largest_close: (u64, f64),
    /// The slowest record that closed days (embedded input): seconds, the last day it closed,
    /// and users then. It covers the close's rows and the churn model's work.
    pub slowest_close: (f64, i64, u64),
}

impl Pipeline {
    /// A pipeline around `opened` (see [`open_processor`]): its model, if it has one, then
    /// learns the processor's ratings on its own thread.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn new(
        opened: Opened,
        store: Store,
        mut sink: Box<dyn OutputSink>,
        mode: &'static str,
        policy: CheckpointPolicy,
        status: Arc<Status>,
    ) -> Result<Self, PipelineError> {
        let Opened { mut processor, model, checkpoints, input, outputs } = opened;
        sink.resume(&outputs).map_err(PipelineError::Resume)?;
        processor.set_clock(unix_ms() / 1000);
        processor.set_keyed_input(mode == "kafka");
        let model = model.map(|m| Arc::new(RwLock::new(m)));
        if let Some(m) = &model {
            let learner = Background::start(m.clone()).map_err(|e| PipelineError::Spawn("ALS", e))?;
            processor.set_learner(Some(Box::new(learner)));
        }
        let writer = Writer::start(store.clone(), status.clone())?;
        let mut pipeline = Pipeline {
            processor,
            model,
            input,
            store,
            sink,
            mode,
            policy,
            buf: Vec::new(),
            since: 0,
            last: Instant::now(),
            checkpoints,
            status,
            checkpoint_totals: CheckpointStats::default(),
            metrics: Arc::new(Metrics::new()),
            writer,
            outcome_handles: Vec::new(),
            snapshots: None,
            largest_close: (0, 0.0),
            slowest_close: (0.0, 0, 0),
        };
        pipeline.resolve_handles();
        Ok(pipeline)
    }

    /// The recommender, shared with the HTTP server (which reads the live model); `None` without
    /// one.
    pub fn model(&self) -> Option<&ModelHandle> {
        self.model.as_ref()
    }

    /// Resolves the per-partition `streamflix_records_total` counters of the current metrics.
    fn resolve_handles(&mut self) {
        self.outcome_handles =
            self.processor.partitions().iter().map(|p| self.metrics.record_counters(&p.topic)).collect();
    }

    /// Reports to `metrics` (by default a private registry nobody reads); the model's update
    /// latency too.
    pub fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        if let Some(model) = &self.model {
            let mut model = model.write().unwrap_or_else(PoisonError::into_inner);
            model.set_latency_histogram(metrics.als_update.clone());
        }
        if self.checkpoints > 0 {
            metrics.set_state(&self.processor, self.store.size_on_disk());
        }
        self.metrics = metrics;
        self.resolve_handles();
    }

    /// From now on every closed day's tables are written by `writer`.
    pub fn set_snapshots(&mut self, writer: SnapshotWriter) {
        let tables = &writer.settings().tables;
        self.processor.set_day_close(Some(CloseSpec {
            users: tables.contains(&Table::UserFeatures),
            full: tables.contains(&Table::UserFeaturesFull),
            retention: tables.contains(&Table::CohortRetention),
        }));
        self.snapshots = Some(writer);
    }

    /// The day close's writer, if tables are written.
    pub fn snapshots(&self) -> Option<&SnapshotWriter> {
        self.snapshots.as_ref()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts a record of partition `index` by its outcome; records its time if it was timed.
    fn count(&mut self, index: usize, outcome: RecordOutcome, started: Option<Instant>) {
        self.outcome_handles[index][outcome as usize].inc();
        if let Some(t) = started {
            self.metrics.record_seconds.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Applies a decoded record (embedded channel).
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    pub fn record(
        &mut self,
        src: Source,
        key: Option<&[u8]>,
        record: &StreamRecord,
    ) -> Result<(), PipelineError> {
        let started = self.timed();
        // A record past the open day's end may close days: timed, for the summary's close cost.
        let closing = self
            .processor
            .day_log()
            .open
            .is_some_and(|d| record.ts() >= (d + 1) * crate::core::calendar::DAY);
        let close_started = closing.then(Instant::now);
        let outcome = self.processor.process_record(src, key, record, None, &mut self.buf);
        if let Some(t) = close_started {
            let secs = t.elapsed().as_secs_f64();
            if secs > self.slowest_close.0 {
                let day = self.processor.day_log().open.map_or(0, |d| d - 1);
                self.slowest_close = (secs, day, self.processor.users().len() as u64);
            }
            let users = self.buf.iter().filter_map(|o| match o {
                Output::DayClosed(c) => c.full.as_ref().map(|f| f.users.len() as u64),
                _ => None,
            });
            if let Some(users) = users.max().filter(|&u| u >= self.largest_close.0) {
                self.largest_close = (users, secs);
            }
        }
        self.count(src.index, outcome, started);
        self.after()
    }

    /// One record in 64 is timed for `streamflix_record_processing_seconds`.
    fn timed(&self) -> Option<Instant> {
        self.since.is_multiple_of(64).then(Instant::now)
    }

    fn after(&mut self) -> Result<(), PipelineError> {
        self.publish()?;
        self.since += 1;
        // Reading the clock costs more than applying some records: look at it every 256.
        let mut due = self.since >= self.policy.every_records;
        if self.since.is_multiple_of(256) {
            due |= self.last.elapsed() >= self.policy.every;
            self.processor.set_clock(unix_ms() / 1000);
        }
        if due {
            self.start_checkpoint(false)?;
        }
        Ok(())
    }

    fn publish(&mut self) -> Result<(), PipelineError> {
        for o in self.buf.drain(..) {
            match o {
                Output::Session { session, .. } => {
                    self.metrics.session_length.observe(session.length as f64);
                }
                Output::DayClosed(close) => {
                    if let Some(w) = self.snapshots.as_mut() {
                        w.send(close, self.metrics.clone())?;
                    }
                    continue;
                }
                _ => {}
            }
            self.sink.send(&o).map_err(PipelineError::Publish)?;
        }
        Ok(())
    }

    /// End of a finite input: advances the watermark to the last event and checkpoints.
    ///
    /// # Errors
    /// Publishing or checkpointing failed.
    pub fn finish(&mut self) -> Result<(), PipelineError> {
        self.processor.finish(&mut self.buf);
        self.publish()?;
        self.checkpoint(true)?;
        self.processor.sync_learner(true);
        Ok(())
    }

    /// Flushes outputs, then commits state and positions; returns once they are written.
    ///
    /// # Errors
    /// Outputs could not be delivered (nothing is committed then) or sled failed.
    pub fn checkpoint(&mut self, finished: bool) -> Result<(), PipelineError> {
        self.start_checkpoint(finished)?;
        self.wait_written()
    }

    /// Flushes outputs, waits for the previous checkpoint to be written, then hands this one to
    /// the writer thread.
    fn start_checkpoint(&mut self, finished: bool) -> Result<(), PipelineError> {
        self.sink.flush().map_err(PipelineError::Flush)?;
        let outputs = self.sink.committed().map_err(PipelineError::Flush)?;
        self.processor.sync_learner(false);
        self.wait_written()?;
        self.checkpoints += 1;
        let checkpoint = self.store.prepare(
            &mut self.processor,
            self.mode,
            &self.input,
            outputs,
            finished,
            self.checkpoints,
        );
        let values = StateValues::of(&self.processor);
        // The closes before this state are on disk before the writer thread commits it: a restart
        // never skips a day's tables (and rewrites, byte for byte, those after the checkpoint).
        let closes = self.snapshots.as_mut().map(SnapshotWriter::barrier).transpose()?;
        let job = Job { closes, checkpoint, metrics: self.metrics.clone(), values };
        let sent = self.writer.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            return Err(PipelineError::WriterDied);
        }
        self.writer.writing = true;
        self.since = 0;
        self.last = Instant::now();
        Ok(())
    }

    /// Waits for the checkpoint being written, if any, and adds it to the totals.
    fn wait_written(&mut self) -> Result<(), PipelineError> {
        if let Some(s) = self.writer.wait()? {
            let t = &mut self.checkpoint_totals;
            t.users += s.users;
            t.sessions += s.sessions;
            t.bytes += s.bytes;
            t.duration += s.duration;
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl RecordHandler for Pipeline {
    #[inline]
    fn raw(&mut self, src: Source, key: Option<&[u8]>, payload: &[u8]) -> Result<(), PipelineError> {
        let started = self.timed();
        let outcome = self.processor.process_bytes(src, key, payload, &mut self.buf);
        self.count(src.index, outcome, started);
        self.after()
    }

    fn partitions(&self) -> &[PartitionState] {
        self.processor.partitions()
    }

    fn checkpoints_written(&self) -> u64 {
        self.status.checkpoints.load(Ordering::Relaxed)
    }

    fn committed_positions(&self) -> Vec<PartitionState> {
        self.status.positions.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn checkpoint_if_idle_due(&mut self) -> Result<(), PipelineError> {
        // Otherwise a quiet input would leave its last records uncommitted until the next
        // record or shutdown.
        if self.since > 0 && self.last.elapsed() >= self.policy.every {
            self.start_checkpoint(false)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, finished: bool) -> Result<(), PipelineError> {
        Pipeline::checkpoint(self, finished)
    }

    fn finish(&mut self) -> Result<(), PipelineError> {
        Pipeline::finish(self)
    }

    fn report_lag(&self, topic: &str, partition: u32, unread: i64) {
        self.metrics.lag.with_label_values(&[topic, &partition.to_string()]).set(unread.max(0));
    }

    fn status(&self) -> Arc<Status> {
        self.status.clone()
    }
}

/// A processor ready to run: restored or fresh, with its model and the checkpoints so far.
pub struct Opened {
    /// The processor.
    pub processor: Processor,
    /// The recommender (rebuilt from the rating log on a restart); `None` without one.
    pub model: Option<Recommender>,
    /// Checkpoints already in the store.
    pub checkpoints: u64,
    /// What the input is (see `Meta::input`): checked against the store's, stored with each
    /// checkpoint.
    pub input: String,
    /// The output files' committed lengths (see `Meta::outputs`), to cut them back to.
    pub outputs: Vec<OutputFile>,
}

/// The optional models a processor runs with.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// The recommender (ALS).
    pub recommender: bool,
    /// The churn model, with its `at_risk` threshold; `None` without it.
    pub churn_threshold: Option<f64>,
}

/// Opens the processor from `store`: restored from its checkpoint if there is one (after
/// checking it was computed the same way), fresh otherwise; with `recommender` false, without a
/// model (nor is the model rebuilt from the rating log: the processor still logs the ratings, so
/// a later run with the recommender rebuilds it from the whole log).
///
/// # Errors
/// The store cannot be read, or holds state computed differently.
pub fn open_processor(
    store: &Store,
    mode: &str,
    input: String,
    cfg: CoreConfig,
    catalog: Arc<Catalog>,
    partitions: Vec<(String, u32)>,
    features: Features,
) -> Result<Opened, StoreError> {
    let recommender = features.recommender;
    let mut opened = open_unscored(store, mode, input, cfg, catalog, partitions, recommender)?;
    if let Some(threshold) = features.churn_threshold {
        let mut model = match store.churn_model()? {
            // Restored as it was checkpointed; the threshold is a setting, not state.
            Some(bytes) if opened.checkpoints > 0 => {
                ChurnModel::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                    what: "churn model".into(),
                    detail: format!("{e}; start over with --reset-state, or run with --no-churn-model"),
                })?
            }
            _ => ChurnModel::new(threshold),
        };
        model.threshold = threshold;
        opened.processor.set_scorer(Some(Box::new(model)));
    }
    Ok(opened)
}

fn open_unscored(
    store: &Store,
    mode: &str,
    input: String,
    cfg: CoreConfig,
    catalog: Arc<Catalog>,
    partitions: Vec<(String, u32)>,
    recommender: bool,
) -> Result<Opened, StoreError> {
    match store.load()? {
        None => {
            let model = recommender.then(|| Recommender::new(cfg.als.clone(), catalog.clone()));
            Ok(Opened {
                processor: Processor::new(cfg, catalog, partitions),
                model,
                checkpoints: 0,
                input,
                outputs: Vec::new(),
            })
        }
        Some(Loaded { meta, users, pending, engagement, day }) => {
            store.check_compatible(&meta, mode, &input, &cfg, catalog.genre_names(), &partitions)?;
            let model =
                if recommender { Some(learner::rebuild(&cfg, &catalog, store.ratings())?) } else { None };
            let restored = Restored {
                partitions: meta.partitions,
                watermark: meta.watermark,
                counters: meta.counters,
                users,
                pending,
                engagement,
                day,
            };
            Ok(Opened {
                processor: Processor::restore(cfg, catalog, restored),
                model,
                checkpoints: meta.checkpoints,
                input,
                outputs: meta.outputs,
            })
        }
    }
}
