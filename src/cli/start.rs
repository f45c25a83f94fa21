//! Start-up shared by `run`, `demo` and `process`: the catalog, the store, the processor and its
//! model, the HTTP server, signal handling and the pipeline, in one order for every mode.
//!
//! May import: every layer of the crate, and the replay crate (MovieLens readers, shared CLI
//! conventions).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use streamflix_replay::cli::Shutdown;
use streamflix_replay::movielens;

use crate::cli::args::ServeArgs;
use crate::core::catalog::{Catalog, MAX_GENRES};
use crate::core::config::CoreConfig;
use crate::io::output::OutputSink;
use crate::io::pipeline::{open_processor, Features, Pipeline};
use crate::io::snapshots::{SnapshotSettings, SnapshotWriter};
use crate::model::ModelHandle;
use crate::serve::http::{self, AppState};
use crate::serve::metrics::Metrics;
use crate::serve::Status;
use crate::state::checkpoint::Store;
use crate::state::codec::fnv1a;

/// What the shutdown listener prints on the first signal.
const STOPPING: &str = "stopping: finishing the current record, checkpointing, flushing outputs…";

/// `name.csv` or `name.dat` in `dir`, or a one-line error saying neither is there.
///
/// # Errors
/// Neither file is there.
pub fn find_in(dir: &Path, name: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        anyhow::bail!("no data directory at {}", dir.display());
    }
    movielens::find(dir, name).with_context(|| format!("no {name}.csv or {name}.dat in {}", dir.display()))
}

/// Reads `movies.csv` (or ml-1m `movies.dat`) into the catalog.
///
/// # Errors
/// The file is missing or unreadable, or has more than [`MAX_GENRES`] genres.
pub fn load_catalog(path: &Path) -> Result<Catalog> {
    let (movies, _report) = movielens::read_movies(path)?;
    Catalog::from_movies(&movies).map_err(|count| {
        anyhow!("{}: {count} distinct genres; at most {MAX_GENRES} are supported", path.display())
    })
}

/// Reads a ratings file, printing what it skipped as warnings.
///
/// # Errors
/// The file is missing or unreadable.
pub fn read_ratings(path: &Path) -> Result<Vec<streamflix_schemas::Rating>> {
    let (ratings, report) = movielens::read_ratings(path)?;
    for line in report.describe() {
        eprintln!("warning: {line}");
    }
    Ok(ratings)
}

/// The identity of a MovieLens directory's input files, for the checkpoint (a state directory
/// is not continued with other data): each file's name, size and an FNV-1a hash of its first and
/// last 64 KiB. Cheap at any size, and it tells datasets apart, though not two files that differ
/// only in their middle.
///
/// # Errors
/// A file cannot be read.
pub fn files_identity(files: &[PathBuf]) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let mut parts = Vec::new();
    for path in files {
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = f.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
        let mut bytes = Vec::with_capacity(2 * BLOCK as usize);
        (&mut f).take(BLOCK).read_to_end(&mut bytes)?;
        if size > BLOCK {
            f.seek(SeekFrom::Start(size.saturating_sub(BLOCK).max(BLOCK)))?;
            f.take(BLOCK).read_to_end(&mut bytes)?;
        }
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        parts.push(format!("{name} {size} bytes fnv {:016x}", fnv1a(&bytes)));
    }
    Ok(parts.join(", "))
}

/// Seals the state in `dir` after a clean stop, once every handle of it is dropped (see
/// `Store::seal`): the next start then finds any change made to its files in between. A seal that
/// fails is a warning: the state itself is committed either way.
pub fn seal(dir: &Path) {
    // `Store::seal` logs the seal (info); unsealed is not worth a line.
    if let Err(e) = Store::seal(dir) {
        eprintln!("warning: {:#}", anyhow::Error::from(e));
    }
}

/// What a processing command starts with.
pub struct Start<'a> {
    /// `embedded` or `kafka` (stored with the state: positions mean replay seqs or offsets).
    pub mode: &'static str,
    /// The state directory.
    pub state: &'a Path,
    /// What the input is ([`files_identity`], [`crate::io::kafka::input_identity`]).
    pub input: String,
    /// The validated semantics.
    pub cfg: CoreConfig,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The input partitions (topic, partition), in the processor's order.
    pub partitions: Vec<(String, u32)>,
    /// Serving and checkpointing options.
    pub serve: &'a ServeArgs,
    /// The day close's tables; `None`: none written.
    pub snapshots: Option<SnapshotSettings>,
}

/// A started processing command: the pipeline and the services around it.
pub struct Started {
    /// The pipeline, restored from the checkpoint if there was one.
    pub pipeline: Pipeline,
    /// HTTP and signals.
    pub services: Services,
}

/// Opens the store and the processor (restored from its checkpoint, if any, and saying so),
/// starts signal handling and the HTTP server, and builds the pipeline around `sink`.
///
/// # Errors
/// The store cannot be opened or holds incompatible state; the address cannot be bound; a thread
/// cannot be started.
pub fn start(s: Start<'_>, sink: Box<dyn OutputSink>) -> Result<Started> {
    if s.serve.reset_state {
        Store::reset(s.state).with_context(|| format!("cannot reset {}", s.state.display()))?;
        println!("reset: starting over in {}", s.state.display());
    }
    let (input, catalog, cfg) = (s.input.clone(), s.catalog.clone(), s.cfg.clone());
    // Through the guard: a state refused while opening or loading is left exactly as it was.
    let (store, opened) = Store::open_then(s.state, |store| {
        let features =
            Features { recommender: !s.serve.no_recommender, churn_threshold: s.serve.churn_threshold() };
        open_processor(store, s.mode, s.input, s.cfg, s.catalog, s.partitions, features)
    })?;
    let snapshots = match s.snapshots {
        Some(settings) => Some(SnapshotWriter::start(settings, &input, &cfg, catalog)?),
        None => None,
    };
    let snapshot_dir = snapshots.as_ref().map(|w| w.settings().dir.clone());
    if opened.checkpoints > 0 {
        println!("resuming from checkpoint {} in {}", opened.checkpoints, s.state.display());
    }
    let status = Arc::new(Status::default());
    status.ready.store(opened.checkpoints > 0, Ordering::Relaxed);
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = Pipeline::new(opened, store.clone(), sink, s.mode, s.serve.policy(), status.clone())?;
    pipeline.set_metrics(metrics.clone());
    if let Some(w) = snapshots {
        pipeline.set_snapshots(w);
    }
    let services =
        Services::start(s.serve, &store, &status, pipeline.model().cloned(), &metrics, snapshot_dir)?;
    Ok(Started { pipeline, services })
}

/// The async side: HTTP server and signal handling, on a small runtime beside the processor
/// thread (which is the main thread: processing is CPU-bound and synchronous).
pub struct Services {
    /// The runtime (also for one-off async work at start-up).
    pub rt: tokio::runtime::Runtime,
    /// Raised by a signal; read by the processing loops.
    pub shutdown: Shutdown,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    addr: Option<SocketAddr>,
}

impl Services {
    fn start(
        serve: &ServeArgs,
        store: &Store,
        status: &Arc<Status>,
        model: Option<ModelHandle>,
        metrics: &Arc<Metrics>,
        snapshots: Option<PathBuf>,
    ) -> Result<Services> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let shutdown = Shutdown::default();
        shutdown.listen(rt.handle(), Some(STOPPING));
        let (server, addr) = if serve.no_http {
            (None, None)
        } else {
            let listener = rt.block_on(tokio::net::TcpListener::bind(serve.http)).with_context(|| {
                format!("cannot listen on {} (pass --http with another address, or --no-http)", serve.http)
            })?;
            let addr = listener.local_addr()?;
            let state = AppState {
                store: store.clone(),
                status: status.clone(),
                model,
                metrics: metrics.clone(),
                options: Arc::new(serve.http_options()),
                snapshots,
                churn_cache: Default::default(),
                report_cache: Default::default(),
            };
            let handle = rt.spawn(http::serve(listener, state, shutdown.wait()));
            println!("http: listening on http://{addr}");
            (Some(handle), Some(addr))
        };
        Ok(Services { rt, shutdown, server, addr })
    }

    /// Blocks until a signal (unless `exit_now`), then stops the server gracefully.
    ///
    /// # Errors
    /// The server failed.
    pub fn finish(mut self, exit_now: bool) -> Result<()> {
        if let Some(addr) = self.addr {
            if !exit_now && !self.shutdown.requested() {
                println!("serving http://{addr} (try /stats, /churn, /users/{{id}}); Ctrl-C to stop");
                self.rt.block_on(self.shutdown.wait());
            }
        }
        self.shutdown.request();
        if let Some(h) = self.server.take() {
            self.rt.block_on(h).context("http server task")?.context("http server")?;
        }
        Ok(())
    }
}
