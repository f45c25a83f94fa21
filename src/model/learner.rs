//! How the recommender learns from the processor's ratings: on its own thread, in order.
//!
//! The core hands every applied rating to a [`RatingObserver`]; [`Background`] is the one the
//! pipeline installs. It batches ratings and sends them through a bounded channel to a thread
//! that owns the write side of the shared model, so the processing thread never waits for the
//! model's arithmetic, and the model learns the same ratings in the same order as it would
//! inline, only behind the state by what is queued. [`rebuild`] replays a checkpoint's rating log
//! into a fresh model (a restart rebuilds the identical model).
//!
//! May import: `crate::core`, the rest of `crate::model`.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, PoisonError, RwLock};

use crate::core::catalog::Catalog;
use crate::core::config::CoreConfig;
use crate::core::processor::{LoggedRating, RatingObserver};
use crate::model::recommend::Recommender;

/// Ratings per message to the learner thread.
const LEARN_BATCH: usize = 512;
/// Messages the learner's queue holds: 262 k ratings, about a second of learning (5 MB). The
/// processing thread is faster than the model on average but stops for each checkpoint; a queue
/// that outlasts a checkpoint keeps the model busy meanwhile (at 25 M ratings, 64 messages left
/// it idle about 10 s of the run).
const LEARN_QUEUE: usize = 512;

enum LearnerMsg {
    Ratings(Vec<LoggedRating>),
    Sync(SyncSender<()>),
}

/// Ratings handed to the model on a background thread (`streamflix-als`), in order, in batches,
/// through a bounded channel: it cannot fall more than [`LEARN_QUEUE`] batches behind.
pub struct Background {
    tx: SyncSender<LearnerMsg>,
    batch: Vec<LoggedRating>,
    /// Batches the thread has learned, emptied, for reuse: a fresh 12 KiB buffer per batch,
    /// freed on the other thread, cost the processing thread more in malloc than the send.
    spare: Receiver<Vec<LoggedRating>>,
}

impl Background {
    /// Starts the thread that teaches `model`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(model: Arc<RwLock<Recommender>>) -> std::io::Result<Background> {
        let (tx, rx) = sync_channel::<LearnerMsg>(LEARN_QUEUE);
        let (give_back, spare) = sync_channel::<Vec<LoggedRating>>(64);
        std::thread::Builder::new().name("streamflix-als".into()).spawn(move || {
            for msg in rx {
                match msg {
                    LearnerMsg::Ratings(mut batch) => {
                        // A poisoned lock means a reader panicked; the model itself is intact.
                        let mut m = model.write().unwrap_or_else(PoisonError::into_inner);
                        m.observe_all(&batch);
                        drop(m);
                        batch.clear();
                        // Full (the processor has enough spares) or gone: let it drop.
                        let _ = give_back.try_send(batch);
                    }
                    LearnerMsg::Sync(ack) => {
                        let _ = ack.send(());
                    }
                }
            }
        })?;
        Ok(Background { tx, batch: Vec::with_capacity(LEARN_BATCH), spare })
    }

    /// Sends the batch to the thread.
    fn flush(&mut self) {
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(LEARN_BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        // The thread only ends when the processor does, or if it panicked: the state and the
        // rating log are unaffected, only the live model.
        if self.tx.send(LearnerMsg::Ratings(batch)).is_err() {
            tracing::error!("the ALS thread has stopped: recommendations no longer learn");
        }
    }
}

impl RatingObserver for Background {
    #[inline]
    fn observe(&mut self, rating: LoggedRating) {
        self.batch.push(rating);
        if self.batch.len() >= LEARN_BATCH {
            self.flush();
        }
    }

    fn sync(&mut self, wait: bool) {
        if !self.batch.is_empty() {
            self.flush();
        }
        if wait {
            let (ack, done) = sync_channel(1);
            if self.tx.send(LearnerMsg::Sync(ack)).is_ok() {
                let _ = done.recv();
            }
        }
    }
}

/// The recommender rebuilt from a rating log (see `crate::state::checkpoint`), in the batches
/// the learner thread would have learned them in.
///
/// # Errors
/// The first error reading the log.
pub fn rebuild<E>(
    cfg: &CoreConfig,
    catalog: &Arc<Catalog>,
    ratings: impl IntoIterator<Item = Result<LoggedRating, E>>,
) -> Result<Recommender, E> {
    let mut model = Recommender::new(cfg.als.clone(), catalog.clone());
    let mut batch = Vec::with_capacity(LEARN_BATCH);
    for r in ratings {
        batch.push(r?);
        if batch.len() == LEARN_BATCH {
            model.observe_all(&batch);
            batch.clear();
        }
    }
    model.observe_all(&batch);
    Ok(model)
}
