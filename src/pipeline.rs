//! The driver: feeds records to the processor, publishes its outputs, checkpoints on a schedule.
//!
//! Transports (Kafka, the embedded channel) call [`Pipeline::record`] per record and
//! [`Pipeline::checkpoint`] when they stop. A checkpoint first flushes the output sink (so every
//! output of the state being committed is delivered), then encodes state + positions as one
//! batch, which a writer thread writes atomically and fsyncs while processing goes on. At most one
//! checkpoint is being written at a time: the next waits for it (and fails if it failed), and
//! [`Pipeline::checkpoint`], [`Pipeline::finish`] and dropping the pipeline wait for it too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use streamflix_schemas::StreamRecord;

use crate::checkpoint::{CheckpointStats, Prepared, Store, StoreError};
use crate::metrics::{Metrics, StateValues};
use crate::output::OutputSink;
use crate::processor::{Output, PartitionState, Processor, RecordOutcome, Source};

/// When to checkpoint: after this many records or this much wall time, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Records between checkpoints.
    pub every_records: u64,
    /// Wall time between checkpoints.
    pub every: Duration,
}

/// Live status shared with the HTTP server (which otherwise reads committed state from sled).
#[derive(Debug, Default)]
pub struct Status {
    /// A checkpoint is loaded or written: `/readyz` answers 200.
    pub ready: AtomicBool,
    /// Checkpoints written by this process.
    pub checkpoints: AtomicU64,
    /// The input positions of the last checkpoint this process wrote.
    pub positions: std::sync::Mutex<Vec<PartitionState>>,
}

/// A checkpoint for the writer thread, with the metrics to report it to and their values.
struct Job {
    checkpoint: Prepared,
    metrics: Arc<Metrics>,
    values: StateValues,
}

/// The checkpoint writer thread (see the module documentation).
struct Writer {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    done: std::sync::mpsc::Receiver<Result<CheckpointStats, StoreError>>,
    /// A checkpoint was handed over and its result not yet received.
    writing: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(store: Store, status: Arc<Status>) -> Writer {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("streamflix-ckpt".into())
            .spawn(move || {
                lower_priority();
                for Job { mut checkpoint, metrics, values } in rx {
                    let positions = std::mem::take(&mut checkpoint.positions);
                    let r = store.write(checkpoint);
                    if let Ok(s) = &r {
                        metrics.on_checkpoint_written(s);
                        metrics.state_disk.set(store.size_on_disk() as i64);
                        metrics.set_values(&values);
                        *status.positions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            positions;
                        status.checkpoints.fetch_add(1, Ordering::Relaxed);
                        status.ready.store(true, Ordering::Relaxed);
                    }
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the checkpoint writer thread");
        Writer { jobs: Some(jobs), done, writing: false, thread: Some(thread) }
    }

    /// Waits for the checkpoint being written, if any: its stats, or its error.
    fn wait(&mut self) -> anyhow::Result<Option<CheckpointStats>> {
        if !std::mem::take(&mut self.writing) {
            return Ok(None);
        }
        match self.done.recv() {
            Ok(r) => Ok(Some(r?)),
            Err(_) => anyhow::bail!("the checkpoint writer thread died"),
        }
    }
}

/// Puts the calling thread below the processing and learning threads (nice 10): a checkpoint's
/// write takes a core when one is idle, and otherwise waits rather than slowing those down (the
/// next checkpoint waits for it in any case). Embedded at 25 M ratings with the recommender, on
/// two cores, a write at the same priority took CPU from the learner, which sets the pace there.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread (Linux's nice value is per thread); a
    // failure leaves the priority as it was, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
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

/// The processor, its store and its output sink.
pub struct Pipeline {
    /// The core.
    pub processor: Processor,
    store: Store,
    sink: Box<dyn OutputSink>,
    mode: &'static str,
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
}

impl Pipeline {
    /// A pipeline around `processor`, whose model then learns on its own thread.
    /// `checkpoints` is the count already in the store.
    pub fn new(
        mut processor: Processor,
        store: Store,
        sink: Box<dyn OutputSink>,
        mode: &'static str,
        policy: CheckpointPolicy,
        checkpoints: u64,
        status: Arc<Status>,
    ) -> Self {
        processor.learn_in_background();
        let writer = Writer::start(store.clone(), status.clone());
        let mut pipeline = Pipeline {
            processor,
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
        };
        pipeline.resolve_handles();
        pipeline
    }

    /// Resolves the per-partition `streamflix_records_total` counters of the current metrics.
    fn resolve_handles(&mut self) {
        self.outcome_handles =
            self.processor.partitions().iter().map(|p| self.metrics.record_counters(&p.topic)).collect();
    }

    /// Reports to `metrics` (by default a private registry nobody reads); the model's update
    /// latency too.
    pub fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        if let Some(model) = self.processor.model() {
            let mut model = model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            model.set_latency_histogram(metrics.als_update.clone());
        }
        if self.checkpoints > 0 {
            metrics.set_state(&self.processor, self.store.size_on_disk());
        }
        self.metrics = metrics;
        self.resolve_handles();
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

    /// Applies a raw payload (Kafka).
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    pub fn raw(&mut self, src: Source, key: Option<&[u8]>, payload: &[u8]) -> anyhow::Result<()> {
        let started = self.timed();
        let outcome = self.processor.process_bytes(src, key, payload, &mut self.buf);
        self.count(src.index, outcome, started);
        self.after()
    }

    /// Applies a decoded record (embedded channel).
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    pub fn record(&mut self, src: Source, key: Option<&[u8]>, record: &StreamRecord) -> anyhow::Result<()> {
        let started = self.timed();
        let outcome = self.processor.process_record(src, key, record, None, &mut self.buf);
        self.count(src.index, outcome, started);
        self.after()
    }

    /// One record in 64 is timed for `streamflix_record_processing_seconds`.
    fn timed(&self) -> Option<Instant> {
        (self.since % 64 == 0).then(Instant::now)
    }

    /// Checkpoints if records were applied since the last one and the interval has passed: for
    /// transports to call while their input is idle (otherwise a quiet input would leave its last
    /// records uncommitted until the next record or shutdown).
    ///
    /// # Errors
    /// Publishing outputs or checkpointing failed.
    pub fn checkpoint_if_idle_due(&mut self) -> anyhow::Result<()> {
        if self.since > 0 && self.last.elapsed() >= self.policy.every {
            self.start_checkpoint(false)?;
        }
        Ok(())
    }

    fn after(&mut self) -> anyhow::Result<()> {
        self.publish()?;
        self.since += 1;
        // Reading the clock costs more than applying some records: look at it every 256.
        let due = self.since >= self.policy.every_records
            || (self.since % 256 == 0 && self.last.elapsed() >= self.policy.every);
        if due {
            self.start_checkpoint(false)?;
        }
        Ok(())
    }

    fn publish(&mut self) -> anyhow::Result<()> {
        for o in self.buf.drain(..) {
            if let Output::Session { session, .. } = &o {
                self.metrics.session_length.observe(session.length as f64);
            }
            self.sink.send(&o).context("publishing outputs")?;
        }
        Ok(())
    }

    /// End of a finite input: advances the watermark to the last event and checkpoints.
    ///
    /// # Errors
    /// Publishing or checkpointing failed.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.processor.finish(&mut self.buf);
        self.publish()?;
        self.checkpoint(true)?;
        self.processor.sync_model(true);
        Ok(())
    }

    /// Flushes outputs, then commits state and positions; returns once they are written.
    ///
    /// # Errors
    /// Outputs could not be delivered (nothing is committed then) or sled failed.
    pub fn checkpoint(&mut self, finished: bool) -> anyhow::Result<()> {
        self.start_checkpoint(finished)?;
        self.wait_written()
    }

    /// Flushes outputs, waits for the previous checkpoint to be written, then hands this one to
    /// the writer thread.
    fn start_checkpoint(&mut self, finished: bool) -> anyhow::Result<()> {
        self.sink.flush().context("flushing outputs before a checkpoint")?;
        self.processor.sync_model(false);
        self.wait_written()?;
        self.checkpoints += 1;
        let checkpoint = self.store.prepare(&mut self.processor, self.mode, finished, self.checkpoints);
        let values = StateValues::of(&self.processor);
        let job = Job { checkpoint, metrics: self.metrics.clone(), values };
        let sent = self.writer.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if !sent {
            anyhow::bail!("the checkpoint writer thread died");
        }
        self.writer.writing = true;
        self.since = 0;
        self.last = Instant::now();
        Ok(())
    }

    /// Waits for the checkpoint being written, if any, and adds it to the totals.
    fn wait_written(&mut self) -> anyhow::Result<()> {
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

/// Opens the processor from `store`: restored from its checkpoint if there is one (after
/// checking it was computed the same way), fresh otherwise; with `recommender` false, without
/// one ([`Processor::without_recommender`]: nor is the model rebuilt from the rating log).
/// Returns the processor and the number of checkpoints already written.
///
/// # Errors
/// The store cannot be read, or holds state computed differently.
pub fn open_processor(
    store: &Store,
    mode: &str,
    cfg: crate::config::CoreConfig,
    catalog: Arc<crate::catalog::Catalog>,
    partitions: Vec<(String, u32)>,
    recommender: bool,
) -> anyhow::Result<(Processor, u64)> {
    let (p, n) = match store.load()? {
        None => (Processor::new(cfg, catalog, partitions), 0),
        Some(crate::checkpoint::Loaded { meta, users, pending, engagement }) => {
            store.check_compatible(&meta, mode, &cfg, catalog.genre_names(), &partitions)?;
            let n = meta.checkpoints;
            let model = if recommender {
                Processor::replay_model(&cfg, &catalog, store.ratings())?
            } else {
                crate::recommend::Recommender::new(cfg.als.clone(), catalog)
            };
            let restored = crate::processor::Restored {
                partitions: meta.partitions,
                watermark: meta.watermark,
                counters: meta.counters,
                users,
                pending,
                engagement,
            };
            (Processor::restore(cfg, restored, model), n)
        }
    };
    Ok((if recommender { p } else { p.without_recommender() }, n))
}
