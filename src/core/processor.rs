//! The processor core: applies records to per-user state and returns effects. No I/O.
//!
//! [`Processor`] owns everything a checkpoint must capture: users (activity, open sessions, churn
//! state), the per-partition watermarks and resume positions, the events waiting for the
//! watermark ([`Pending`]) and the counters. Transports feed it records with their source position
//! ([`Source`]); it pushes [`Output`]s (closed sessions, churn alerts, dead letters) into a buffer
//! the caller publishes. Given the same records per partition, it produces the same state and
//! outputs however the partitions interleave: validation uses the partition's own watermark,
//! events are applied in event-time order once the global watermark passes them, and churn is
//! decided in event time.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::catalog`, `crate::core::churn`, `crate::core::config`, `crate::core::engagement`, `crate::core::features`, `crate::core::pending`, `crate::core::sessions`, `crate::core::validate`, `streamflix-schemas`.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use streamflix_schemas::SCHEMA_VERSION;
use streamflix_schemas::{ChurnAlert, ChurnStatus, DeadLetter, SourcePosition, StreamRecord, UserFeatures};

use std::sync::Arc;

use crate::core::calendar::{day_of, DAY};
use crate::core::catalog::Catalog;
use crate::core::churn::{churned_alert, reactivated_alert, ChurnState, TimeIndex};
use crate::core::config::{CoreConfig, MIN_EVENT_TS};
use crate::core::daily::{
    genre_day, is_month_end, retention, AlertRow, CloseSpec, DayClose, DayLog, FullSnapshot,
};
use crate::core::engagement::{Engagement, Snapshot};
use crate::core::features::{Activity, FeatureRow};
use crate::core::pending::{Pending, PendingQueue};
use crate::core::sessions::{ClosedSession, OpenSession, Sessions};
use crate::core::validate::{check_rating, decode, Invalid, Reason};

/// Everything the processor keeps about one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Counts, rating statistics, genres, day ring, session totals.
    pub activity: Activity,
    /// Sessions not yet closed by the watermark.
    pub sessions: Sessions,
    /// Churn lifecycle.
    pub churn: ChurnState,
    /// Key of this user's entry in the session-close index (`None` without open sessions).
    pub close_key: Option<i64>,
}

impl UserState {
    /// Features at `as_of` (see [`Activity::features`]).
    pub fn features(&self, as_of: i64, genres: &[String]) -> UserFeatures {
        self.activity.features(as_of, genres, self.sessions.open().len() as u64)
    }
}

/// One input partition: where it stands in the input and in event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Topic name, for dead letters and the checkpoint.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Highest event time seen (events and heartbeats).
    pub max_ts: Option<i64>,
    /// Where to resume: the Kafka offset of the next record, or in embedded mode the replay
    /// `seq` below which every record of this partition has been applied.
    pub position: u64,
}

/// A valid rating or tag, as [`Processor::check`] found it.
struct Event {
    user: u32,
    movie: u32,
    rating: Option<f32>,
    genres: u64,
}

/// What became of one input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// A rating or tag, accepted.
    Accepted = 0,
    /// A replay heartbeat.
    Heartbeat = 1,
    /// Sent to the dead-letter topic.
    DeadLetter = 2,
}

impl RecordOutcome {
    /// Every outcome, in discriminant order.
    pub const ALL: [RecordOutcome; 3] =
        [RecordOutcome::Accepted, RecordOutcome::Heartbeat, RecordOutcome::DeadLetter];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Accepted => "accepted",
            RecordOutcome::Heartbeat => "heartbeat",
            RecordOutcome::DeadLetter => "dead_letter",
        }
    }
}

/// Where a record was read.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Index of the partition in [`Processor::partitions`].
    pub index: usize,
    /// Offset of the record (embedded mode: its `seq`).
    pub offset: u64,
    /// Resume position after this record.
    pub next: u64,
}

/// Something the processor produced for the outside world.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A closed session of `user`, for the sessions topic: [`ClosedSession::summary`] with the
    /// catalog's genre names gives the published form (built only by sinks that publish, so a
    /// run without outputs does not pay for its strings).
    Session {
        /// The user.
        user: u32,
        /// The session.
        session: ClosedSession,
    },
    /// A churn alert, for the churn-alerts topic.
    Alert(ChurnAlert),
    /// An `at_risk` alert of the churn model, for the churn-alerts topic.
    AtRisk(streamflix_schemas::AtRiskAlert),
    /// An unusable record, for the dead-letter topic, with its original key.
    Dead(DeadLetter),
    /// A closed day, for the snapshot tables (only with [`Processor::set_day_close`]).
    DayClosed(Box<DayClose>),
}

/// Running totals (all restored from the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Ratings applied.
    pub ratings: u64,
    /// Tags applied.
    pub tags: u64,
    /// Heartbeats applied.
    pub heartbeats: u64,
    /// Records sent to the dead-letter topic, by reason name.
    pub dead_letters: BTreeMap<String, u64>,
    /// Sessions closed.
    pub sessions_closed: u64,
    /// Closed sessions that were binges.
    pub binge_sessions: u64,
    /// `churned` alerts.
    pub churned_alerts: u64,
    /// `reactivated` alerts.
    pub reactivated_alerts: u64,
    /// Users churned right now.
    pub churned_now: u64,
}

impl Counters {
    /// Records that went to the DLQ.
    pub fn dead_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

/// What changed since the last checkpoint.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Users whose state changed.
    pub users: FxHashSet<u32>,
    /// Sessions closed, with their user, in the order they closed.
    pub sessions: Vec<(u32, ClosedSession)>,
    /// Latest alert per user, for the store.
    pub alerts: FxHashMap<u32, ChurnAlert>,
    /// Ratings applied, in order (the recommender's log).
    pub ratings: Vec<LoggedRating>,
}

/// A rating as the recommender saw it: the checkpoint keeps them all, in the order they were
/// applied, and a restart rebuilds the identical model from them.
pub type LoggedRating = streamflix_schemas::Rating;

/// What learns from the ratings the processor applies, in the order it applies them: the
/// recommender (`model::learner`). The core defines the interface so that it does not depend on
/// the model; a learner may work on another thread, as long as it learns the ratings in order.
pub trait RatingObserver: Send {
    /// One applied rating.
    fn observe(&mut self, rating: LoggedRating);
    /// Hands over anything buffered; with `wait`, returns once everything is learned.
    fn sync(&mut self, wait: bool);
}

/// What a complete day close hands the churn model: the day, and every user, with the index of
/// those not churned (active in the trailing churn period).
pub struct ScoringClose<'a> {
    /// The closed day (days since the epoch).
    pub day: i64,
    /// Its last second.
    pub as_of: i64,
    /// Every user.
    pub users: &'a FxHashMap<u32, UserState>,
    /// The users not churned ([`ScoringClose::active`]).
    active: &'a TimeIndex,
    /// The catalog's genre names.
    pub genres: &'a [String],
}

impl ScoringClose<'_> {
    /// The users not churned, in an order that is a function of the input alone (not by id).
    pub fn active(&self) -> impl Iterator<Item = u32> + '_ {
        self.active.users()
    }
}

/// What scores the active users at each complete day close (the churn model,
/// `analytics::churn_model`): the core defines the interface so that it does not depend on the
/// analytics layer. It runs inside the processor's deterministic sequence, so its state is part
/// of the checkpoint ([`ChurnScorer::encode`]).
pub trait ChurnScorer: Send {
    /// Scores the close's active users; returns the `at_risk` alerts it decided, by user id.
    fn close(&mut self, close: &ScoringClose<'_>) -> Vec<streamflix_schemas::AtRiskAlert>;
    /// The state to checkpoint.
    fn encode(&self) -> Vec<u8>;
    /// A user's `[R, F, M, segment]` as of the last segmentation, for the close's rows.
    fn segment(&self, user: u32) -> Option<[u8; 4]>;
    /// What the metrics show of the scorer.
    fn gauges(&self) -> ScorerGauges;
}

/// The churn model's metrics ([`ChurnScorer::gauges`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScorerGauges {
    /// Users per segment at the last segmentation, every segment (empty before the first).
    pub segment_users: Vec<(&'static str, u64)>,
    /// Users with an `at_risk` alert in their current activity episode.
    pub at_risk_users: u64,
    /// `at_risk` alerts decided so far.
    pub at_risk_alerts: u64,
}

/// The processor's whole state.
pub struct Processor {
    cfg: CoreConfig,
    catalog: std::sync::Arc<Catalog>,
    users: FxHashMap<u32, UserState>,
    churn_index: TimeIndex,
    close_index: TimeIndex,
    partitions: Vec<PartitionState>,
    watermark: Option<i64>,
    counters: Counters,
    pending: PendingQueue,
    dirty: Dirty,
    /// What learns from the applied ratings (the recommender); `None` without one.
    learner: Option<Box<dyn RatingObserver>>,
    /// The processing machine's clock (seconds since the epoch), as the driver last set it;
    /// `None`: no record is checked against it.
    clock: Option<i64>,
    /// Records come with Kafka keys ([`Processor::set_keyed_input`]).
    keyed_input: bool,
    engagement: Engagement,
    /// The open day's log.
    day: DayLog,
    /// What a day close computes; `None`: days are closed without output.
    close_spec: Option<CloseSpec>,
    /// The last `user_features_full` rows, reused at the next month end (see [`FullRows`]).
    full_rows: Option<FullRows>,
    /// What scores users at each complete close; `None` without the churn model.
    scorer: Option<Box<dyn ChurnScorer>>,
    /// Complete closes the scorer ran since [`Processor::take_scored`].
    scored: u64,
    /// The catalog's Action and Drama genre bits (0 if absent), for the session statistics.
    action_drama: (u64, u64),
}

/// The rows of the last `user_features_full` and the users whose state changed since (not
/// checkpointed: after a restart, the next month end computes every row). At the next month end
/// only those users, and users with events in the trailing 90 days, are evaluated again; every
/// other row is [`FeatureRow::aged`]. A replay of years has most users long gone at any month
/// end, so this evaluates a few percent of the users instead of all of them.
struct FullRows {
    rows: Arc<Vec<FeatureRow>>,
    /// Touched since, with repeats.
    touched: Vec<u32>,
    /// Rows aged instead of evaluated, in all (for the tests).
    aged: u64,
}

/// The checkpointed parts a processor is restored from.
#[derive(Debug, Default)]
pub struct Restored {
    /// Input partitions.
    pub partitions: Vec<PartitionState>,
    /// Global watermark.
    pub watermark: Option<i64>,
    /// Running totals.
    pub counters: Counters,
    /// Every user.
    pub users: FxHashMap<u32, UserState>,
    /// Accepted events not yet applied.
    pub pending: Vec<Pending>,
    /// Platform aggregates.
    pub engagement: Engagement,
    /// The open day's log.
    pub day: DayLog,
}

impl Processor {
    /// A processor with no state, reading `partitions` (topic name, partition number).
    pub fn new(cfg: CoreConfig, catalog: std::sync::Arc<Catalog>, partitions: Vec<(String, u32)>) -> Self {
        let partitions = partitions
            .into_iter()
            .map(|(topic, partition)| PartitionState { topic, partition, max_ts: None, position: 0 })
            .collect();
        Processor::restore(cfg, catalog, Restored { partitions, ..Restored::default() })
    }

    /// Rebuilds a processor from checkpointed parts; the indexes are derived from the users.
    pub fn restore(cfg: CoreConfig, catalog: Arc<Catalog>, r: Restored) -> Self {
        let Restored { partitions, watermark, counters, users, pending, engagement, day } = r;
        let mut churn_index = TimeIndex::default();
        let mut close_index = TimeIndex::default();
        for (&u, st) in &users {
            if let Some(k) = st.churn.index_key {
                churn_index.insert(k, u);
            }
            if let Some(k) = st.close_key {
                close_index.insert(k, u);
            }
        }
        let action_drama =
            (catalog.genre_bit("Action").unwrap_or(0), catalog.genre_bit("Drama").unwrap_or(0));
        Processor {
            action_drama,
            cfg,
            catalog,
            users,
            churn_index,
            close_index,
            partitions,
            watermark,
            counters,
            pending: pending.into_iter().collect(),
            dirty: Dirty::default(),
            learner: None,
            clock: None,
            keyed_input: false,
            engagement,
            day,
            close_spec: None,
            full_rows: None,
            scorer: None,
            scored: 0,
        }
    }

    /// From now on `scorer` (the churn model) scores the active users at every complete day
    /// close, and its `at_risk` alerts are outputs; `None` stops that.
    pub fn set_scorer(&mut self, scorer: Option<Box<dyn ChurnScorer>>) {
        self.scorer = scorer;
    }

    /// The scorer's metrics, if a scorer is set.
    pub fn scorer_gauges(&self) -> Option<ScorerGauges> {
        self.scorer.as_ref().map(|s| s.gauges())
    }

    /// Whether a scorer is set.
    pub fn has_scorer(&self) -> bool {
        self.scorer.is_some()
    }

    /// The scorer's state to checkpoint, if it closed a day since the last call (`None`: nothing
    /// new, or no scorer).
    pub fn take_scored(&mut self) -> Option<Vec<u8>> {
        let changed = std::mem::take(&mut self.scored) > 0;
        self.scorer.as_ref().filter(|_| changed).map(|s| s.encode())
    }

    /// From now on each day close pushes an [`Output::DayClosed`] with the rows `spec` asks for;
    /// `None` stops that (days are still closed, and their logs kept, in the same sequence).
    pub fn set_day_close(&mut self, spec: Option<CloseSpec>) {
        self.close_spec = spec;
        // Closes without a spec do not track who changed: the next month end evaluates everyone.
        self.full_rows = None;
    }

    /// The open day's log (part of the checkpoint).
    pub fn day_log(&self) -> &DayLog {
        &self.day
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The catalog.
    pub fn catalog(&self) -> &std::sync::Arc<Catalog> {
        &self.catalog
    }

    /// Global watermark: min over partitions of (max event time − allowed lateness), once every
    /// partition has been seen; after [`Processor::finish`], the last event time.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The input partitions with their watermarks and resume positions.
    pub fn partitions(&self) -> &[PartitionState] {
        &self.partitions
    }

    /// Accepted events the watermark has not passed yet (part of the checkpoint).
    pub fn pending(&self) -> Vec<Pending> {
        self.pending.sorted()
    }

    /// Running totals.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// All users.
    pub fn users(&self) -> &FxHashMap<u32, UserState> {
        &self.users
    }

    /// From now on every applied rating also goes to `learner` (the recommender), in the order
    /// the ratings are applied; `None` stops that. Without a learner the ratings still update the
    /// users' state and the rating log, so a later run with the recommender rebuilds the whole
    /// model from the log.
    pub fn set_learner(&mut self, learner: Option<Box<dyn RatingObserver>>) {
        self.learner = learner;
    }

    /// Sets the processing machine's clock (seconds since the epoch): from now on a record more
    /// than `max_ahead_of_clock` ahead of it goes to the DLQ. The core reads no clock itself; the
    /// driver sets it (and tests set what they like).
    pub fn set_clock(&mut self, now: i64) {
        self.clock = Some(now);
    }

    /// From now on ratings and tags must carry their user id as the record key (Kafka input;
    /// the embedded channel has no keys).
    pub fn set_keyed_input(&mut self, keyed: bool) {
        self.keyed_input = keyed;
    }

    /// Hands the learner what it has buffered; with `wait`, returns once it has learned it all.
    pub fn sync_learner(&mut self, wait: bool) {
        if let Some(l) = self.learner.as_mut() {
            l.sync(wait);
        }
    }

    /// Platform aggregates (part of the checkpoint).
    pub fn engagement(&self) -> &Engagement {
        &self.engagement
    }

    /// Counts over all users at the watermark (an O(users) scan).
    pub fn snapshot(&self) -> Snapshot {
        let mut s =
            Snapshot { watermark: self.watermark, users: self.users.len() as u64, ..Snapshot::default() };
        let Some(wm) = self.watermark else { return s };
        let day = crate::core::config::DAY;
        for st in self.users.values() {
            let last = st.activity.last;
            s.active_1d += u64::from(last > wm - day);
            s.active_7d += u64::from(last > wm - 7 * day);
            s.active_30d += u64::from(last > wm - 30 * day);
            s.binge_watchers_30d +=
                u64::from(st.activity.binge_sessions > 0 && st.activity.last_binge_end > wm - 30 * day);
            s.open_sessions += st.sessions.open().len() as u64;
        }
        s
    }

    /// Accepted events waiting for the watermark.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Takes what changed since the last call (for the checkpoint).
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// Applies a raw payload read at `src`: decodes, validates, applies.
    pub fn process_bytes(
        &mut self,
        src: Source,
        key: Option<&[u8]>,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) -> RecordOutcome {
        match decode(payload, self.cfg.max_payload_bytes) {
            Ok(record) => self.process_record(src, key, &record, Some(payload), out),
            Err(invalid) => {
                self.partitions[src.index].position = src.next;
                self.dead(src, key, Some(payload), None, invalid, out);
                RecordOutcome::DeadLetter
            }
        }
    }

    /// Applies a decoded record read at `src`. `raw` is the original payload, if there was one
    /// (dead letters carry it; otherwise the record is re-encoded).
    pub fn process_record(
        &mut self,
        src: Source,
        key: Option<&[u8]>,
        record: &StreamRecord,
        raw: Option<&[u8]>,
        out: &mut Vec<Output>,
    ) -> RecordOutcome {
        let result = self.check(src.index, key, record);
        self.partitions[src.index].position = src.next;
        let event = match result {
            Ok(event) => event,
            Err(invalid) => {
                self.dead(src, key, raw, Some(record), invalid, out);
                return RecordOutcome::DeadLetter;
            }
        };
        let ts = record.ts();
        let part = &mut self.partitions[src.index];
        let raised = part.max_ts.is_none_or(|m| ts > m);
        if raised {
            part.max_ts = Some(ts);
        }
        let outcome = match event {
            None => {
                self.counters.heartbeats += 1;
                RecordOutcome::Heartbeat
            }
            Some(Event { user, movie, rating, genres }) => {
                let p =
                    Pending { ts, index: src.index as u32, offset: src.offset, user, movie, rating, genres };
                self.pending.push(p);
                RecordOutcome::Accepted
            }
        };
        if raised {
            let wm = self.partitions.iter().try_fold(i64::MAX, |acc, p| p.max_ts.map(|m| acc.min(m)));
            if let Some(wm) = wm {
                self.step(wm - self.cfg.allowed_lateness, out);
            }
        }
        outcome
    }

    /// Moves the watermark to `wm`: applies, in order, the pending events before it (no event
    /// earlier than `wm` can still arrive: it would be late on its partition), then closes
    /// sessions and churns users due at `wm`.
    ///
    /// On the way it stops at each UTC midnight: the events before it are applied, the watermark
    /// moves to the second before it, and the day is closed ([`Processor::close_day`]), so a close sees the
    /// state as of the end of its day, however far the watermark jumps at once.
    fn step(&mut self, wm: i64, out: &mut Vec<Output>) {
        self.step_days(wm, out);
        self.advance(wm, out);
    }

    /// Applies the pending events before `wm`, closing each day whose end is at or before `wm`.
    fn step_days(&mut self, wm: i64, out: &mut Vec<Output>) {
        'days: loop {
            let boundary = self.day.open.map(|d| (d + 1) * DAY);
            let limit = boundary.map_or(wm, |b| b.min(wm));
            while let Some(p) = self.pending.pop_before(limit) {
                let first = self.day.open.is_none();
                if first {
                    self.day.open = Some(day_of(p.ts));
                }
                self.apply(p, out);
                if first {
                    continue 'days;
                }
            }
            match boundary {
                Some(b) if b <= wm => {
                    // The watermark stops at the day's last second: what the close holds (a
                    // session closing, a churn) happened on the day.
                    self.advance(b - 1, out);
                    self.close_day(true, out);
                }
                _ => return,
            }
        }
    }

    /// Closes the open day: pushes its rows (with a close spec) and, if `complete`, starts the
    /// next day's log. An incomplete close (the end of a finite input) keeps the log, so the
    /// day's real close, if more input comes, still sees the whole day.
    fn close_day(&mut self, complete: bool, out: &mut Vec<Output>) {
        let Some(day) = self.day.open else { return };
        // The churn model first, so that the close's rows carry this close's segments; its
        // alerts go out after the close's rows.
        let mut at_risk = Vec::new();
        if complete {
            if let Some(scorer) = self.scorer.as_mut() {
                // An incomplete close (the end of a finite input) is not scored: the day's real
                // close, if more input comes, must see the model as an uninterrupted run would.
                let close = ScoringClose {
                    day,
                    as_of: (day + 1) * DAY - 1,
                    users: &self.users,
                    active: &self.churn_index,
                    genres: self.catalog.genre_names(),
                };
                at_risk = scorer.close(&close);
                self.scored += 1;
            }
        }
        if let Some(spec) = self.close_spec {
            let scorer = self.scorer.as_deref();
            let with_segment = |mut r: FeatureRow| {
                r.segment = scorer.and_then(|s| s.segment(r.user));
                r
            };
            let as_of = if complete { (day + 1) * DAY - 1 } else { self.watermark.unwrap_or(day * DAY) };
            let genres = self.catalog.genre_names().len();
            let plain_row = |users: &FxHashMap<u32, UserState>, u: u32| {
                let st = &users[&u];
                st.activity.row(u, as_of, st.churn.churned, genres)
            };
            let row = |users: &FxHashMap<u32, UserState>, u: u32| with_segment(plain_row(users, u));
            // Sorting the day's touched users is only needed for its rows or the reused month-end rows.
            let touched =
                if spec.users || self.full_rows.is_some() { self.day.distinct_users() } else { Vec::new() };
            let users =
                if spec.users { touched.iter().map(|&u| row(&self.users, u)).collect() } else { Vec::new() };
            if let Some(f) = self.full_rows.as_mut() {
                f.touched.extend_from_slice(&touched);
            }
            let full = ((spec.full || spec.retention) && (!complete || is_month_end(day))).then(|| {
                let users = if !spec.full {
                    Arc::new(Vec::new())
                } else if let Some(f) = self.full_rows.as_mut() {
                    let mut touched = std::mem::take(&mut f.touched);
                    touched.sort_unstable();
                    touched.dedup();
                    let (mut rows, aged) =
                        refresh_rows(&f.rows, &touched, as_of, |u| plain_row(&self.users, u));
                    // Every row gets this close's segment (aged rows carry last month's).
                    for r in &mut rows {
                        *r = with_segment(*r);
                    }
                    debug_assert_eq!(rows.len(), self.users.len(), "every user new since was touched");
                    f.aged += aged;
                    Arc::new(rows)
                } else {
                    // In id order, without looking each user up again.
                    let mut all: Vec<(u32, &UserState)> = self.users.iter().map(|(&u, st)| (u, st)).collect();
                    all.sort_unstable_by_key(|&(u, _)| u);
                    Arc::new(
                        all.iter()
                            .map(|(u, st)| with_segment(st.activity.row(*u, as_of, st.churn.churned, genres)))
                            .collect(),
                    )
                };
                if spec.full {
                    let aged = self.full_rows.as_ref().map_or(0, |f| f.aged);
                    self.full_rows = Some(FullRows { rows: Arc::clone(&users), touched: Vec::new(), aged });
                }
                FullSnapshot {
                    users,
                    retention: if spec.retention { retention(&self.engagement, as_of) } else { Vec::new() },
                }
            });
            let genres = genre_day(&self.day, &self.catalog);
            // A complete close starts the next day's log below: its rows move out.
            let (ratings, sessions, alerts) = if complete {
                (
                    std::mem::take(&mut self.day.ratings),
                    std::mem::take(&mut self.day.sessions),
                    std::mem::take(&mut self.day.alerts),
                )
            } else {
                (self.day.ratings.clone(), self.day.sessions.clone(), self.day.alerts.clone())
            };
            // Where the watermark stopped decides the order sessions and alerts closed in (a
            // user's sessions close together when a step passes both); the tables' order is a
            // function of what closed on the day alone, so that any arrival order of the input
            // partitions writes the same bytes.
            let (mut sessions, mut alerts) = (sessions, alerts);
            let gap = self.cfg.session_gap;
            sessions.sort_by_key(|(u, s)| (s.end().saturating_add(gap), *u, s.start));
            alerts.sort_by_key(|a| (a.at, a.user, a.status == ChurnStatus::Reactivated));
            let close = DayClose { day, complete, as_of, ratings, users, sessions, alerts, genres, full };
            out.push(Output::DayClosed(Box::new(close)));
        }
        out.extend(at_risk.into_iter().map(Output::AtRisk));
        if complete {
            self.day = DayLog::starting(day + 1);
        }
    }

    fn apply(&mut self, p: Pending, out: &mut Vec<Output>) {
        match p.rating {
            Some(rating) => {
                self.counters.ratings += 1;
                let r = LoggedRating { user: p.user, movie: p.movie, rating, ts: p.ts };
                if let Some(l) = self.learner.as_mut() {
                    l.observe(r);
                }
                self.dirty.ratings.push(r);
                self.day.ratings.push(r);
                self.engagement.movie_ratings.add(p.movie, rating);
            }
            None => self.counters.tags += 1,
        }
        self.apply_event(p.user, p.ts, p.rating, p.genres, out);
    }

    /// End of a finite input: the watermark moves to the last event time seen, so sessions and
    /// churn are judged as of the end of the data.
    /// The days it passes are closed, and the last, incomplete one too (see
    /// [`Processor::close_day`]).
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        let last = self.partitions.iter().filter_map(|p| p.max_ts).max();
        if let Some(last) = last {
            self.step_days(last, out);
        }
        while let Some(p) = self.pending.pop() {
            if self.day.open.is_none() {
                self.day.open = Some(day_of(p.ts));
            }
            self.apply(p, out);
        }
        if let Some(last) = last {
            self.advance(last, out);
            self.close_day(false, out);
        }
    }

    /// Validates a record against its partition and the catalog: the event it carries (`None`
    /// for a heartbeat), or why it is unusable.
    fn check(
        &self,
        index: usize,
        key: Option<&[u8]>,
        record: &StreamRecord,
    ) -> Result<Option<Event>, Invalid> {
        let ts = record.ts();
        if ts < MIN_EVENT_TS {
            return Err(Invalid::new(
                Reason::TimestampBefore1995,
                format!("event time {ts} is before 1995-01-01 ({MIN_EVENT_TS})"),
            ));
        }
        let heartbeat = matches!(record, StreamRecord::Heartbeat(_));
        if let Some(max) = self.partitions[index].max_ts {
            // Heartbeats may not jump further ahead than events (a producer steps through long
            // quiet periods, as `streamflix-replay` does); a late one is harmless (it cannot lower
            // a watermark), so only events can be late.
            let wm = max - self.cfg.allowed_lateness;
            if ts > wm.saturating_add(self.cfg.max_future) {
                return Err(Invalid::new(
                    Reason::TimestampTooFarAhead,
                    format!(
                        "event time {ts} is {}s beyond the partition's watermark {wm} (limit {}s)",
                        ts - wm,
                        self.cfg.max_future
                    ),
                ));
            }
            if ts < wm && !heartbeat {
                return Err(Invalid::new(
                    Reason::LateEvent,
                    format!("event time {ts} is {}s behind the partition's watermark {wm}", wm - ts),
                ));
            }
        }
        // Every kind of record, heartbeats included, and the first of a partition (which has no
        // watermark to be compared with): one record far ahead would move its partition's
        // watermark for good, and every later record there would be late.
        if let Some(now) = self.clock {
            let limit = now.saturating_add(self.cfg.max_ahead_of_clock);
            if ts > limit {
                return Err(Invalid::new(
                    Reason::TimestampAheadOfClock,
                    format!(
                        "event time {ts} is {}s ahead of this machine's clock {now} (limit {}s)",
                        ts - now,
                        self.cfg.max_ahead_of_clock
                    ),
                ));
            }
        }
        let (user, movie, rating) = match record {
            StreamRecord::Rating(r) => (r.user_id, r.movie_id, Some(r.rating)),
            StreamRecord::Tag(t) => (t.user_id, t.movie_id, None),
            StreamRecord::Heartbeat(_) => return Ok(None),
        };
        if let Some(r) = rating {
            check_rating(r)?;
        }
        let Some(genres) = self.catalog.genres_of(movie) else {
            return Err(Invalid::new(Reason::UnknownMovie, format!("movie {movie} is not in the catalog")));
        };
        // Ratings and tags each have their topic (by its name's suffix, `.ratings` / `.tags`);
        // heartbeats go to both.
        let topic = &self.partitions[index].topic;
        let (kind, wrong) = if rating.is_some() { ("rating", ".tags") } else { ("tag", ".ratings") };
        if topic.ends_with(wrong) {
            return Err(Invalid::new(Reason::WrongTopic, format!("a {kind} on {topic}")));
        }
        // Read from Kafka, a rating or tag is keyed by its user id (decimal), so a user's events
        // share a partition and their order; heartbeats may be unkeyed.
        if self.keyed_input {
            let mut buf = [0u8; 10];
            let want = streamflix_schemas::user_key(user, &mut buf);
            match key {
                Some(k) if k == want => {}
                Some(k) => {
                    return Err(Invalid::new(
                        Reason::KeyMismatch,
                        format!(
                            "record key {:?} is not its user_id {user}",
                            String::from_utf8_lossy(&k[..k.len().min(64)])
                        ),
                    ))
                }
                None => {
                    return Err(Invalid::new(
                        Reason::KeyMismatch,
                        format!("a {kind} without a record key; ratings and tags are keyed by user_id"),
                    ))
                }
            }
        }
        Ok(Some(Event { user, movie, rating, genres }))
    }

    fn dead(
        &mut self,
        src: Source,
        key: Option<&[u8]>,
        raw: Option<&[u8]>,
        record: Option<&StreamRecord>,
        invalid: Invalid,
        out: &mut Vec<Output>,
    ) {
        *self.counters.dead_letters.entry(invalid.reason.as_str().to_string()).or_default() += 1;
        let encoded;
        let payload: &[u8] = match (raw, record) {
            (Some(raw), _) => raw,
            (None, Some(r)) => {
                encoded = serde_json::to_vec(r).unwrap_or_default();
                &encoded
            }
            (None, None) => &[],
        };
        const KEEP: usize = 64 * 1024;
        let kept = &payload[..payload.len().min(KEEP)];
        let (text, hex) = match std::str::from_utf8(kept) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(kept.iter().map(|b| format!("{b:02x}")).collect())),
        };
        let part = &self.partitions[src.index];
        out.push(Output::Dead(DeadLetter {
            v: SCHEMA_VERSION,
            reason: invalid.reason.as_str().to_string(),
            detail: invalid.detail,
            source: SourcePosition {
                topic: part.topic.clone(),
                partition: part.partition,
                offset: src.offset,
            },
            key: key.and_then(|k| std::str::from_utf8(k).ok()).map(str::to_string),
            payload: text,
            payload_hex: hex,
            payload_bytes: payload.len() as u64,
        }));
    }

    fn apply_event(&mut self, user: u32, ts: i64, rating: Option<f32>, genres: u64, out: &mut Vec<Output>) {
        let churn_after = self.cfg.churn_after;
        let genre_count = self.catalog.genre_names().len();
        let is_new = !self.users.contains_key(&user);
        if !is_new {
            let st = &self.users[&user];
            let last = st.activity.last;
            if !st.churn.churned && ts - last >= churn_after {
                // Events before the watermark are applied before it closes and churns (see
                // `step`), so the return can come first; in event time this user churned before
                // coming back.
                if let Some(k) = st.churn.index_key {
                    self.churn_index.remove(k, user);
                }
                self.churn(user, out);
            }
            let st = self.users.get_mut(&user).expect("present");
            if st.churn.churned {
                let f = st.features(ts, self.catalog.genre_names());
                let alert = reactivated_alert(user, st.activity.last, ts, f);
                st.churn.churned = false;
                self.counters.churned_now -= 1;
                self.counters.reactivated_alerts += 1;
                self.emit_alert(user, alert, out);
            }
        }
        let st = self.users.entry(user).or_insert_with(|| UserState {
            activity: Activity::new(ts, genre_count),
            sessions: Sessions::default(),
            churn: ChurnState::default(),
            close_key: None,
        });
        let prev = (!is_new).then_some(st.activity.last);
        st.activity.add(ts, rating, genres);
        self.engagement.on_event(ts, rating, genres, genre_count, prev, st.activity.first_seen);
        st.sessions.add(ts, rating, genres, self.cfg.session_gap);
        self.day.touch(user);
        if st.churn.index_key.is_none() {
            st.churn.index_key = Some(st.activity.last);
            self.churn_index.insert(st.activity.last, user);
        }
        let next = st.sessions.next_close(self.cfg.session_gap).expect("a session is open");
        if st.close_key.is_none_or(|k| next < k) {
            if let Some(k) = st.close_key {
                self.close_index.remove(k, user);
            }
            st.close_key = Some(next);
            self.close_index.insert(next, user);
        }
        self.dirty.users.insert(user);
    }

    /// Moves the global watermark to `wm` (never backwards): closes due sessions, then churns
    /// users whose last activity is `churn_after` behind.
    fn advance(&mut self, wm: i64, out: &mut Vec<Output>) {
        if self.watermark.is_some_and(|w| wm <= w) {
            return;
        }
        self.watermark = Some(wm);
        while let Some((_, user)) = self.close_index.pop_due(wm) {
            self.users.get_mut(&user).expect("indexed user exists").close_key = None;
            self.close_sessions(user, wm, out);
        }
        let churn_after = self.cfg.churn_after;
        while let Some((_, user)) = self.churn_index.pop_due(wm - churn_after) {
            let st = self.users.get_mut(&user).expect("indexed user exists");
            st.churn.index_key = None;
            let last = st.activity.last;
            if last + churn_after <= wm {
                self.churn(user, out);
            } else {
                // Active since this entry was made: re-file at the true last activity.
                st.churn.index_key = Some(last);
                self.churn_index.insert(last, user);
            }
        }
    }

    /// Closes `user`'s sessions that end (with the gap) by `wm`, publishes them, and re-files the
    /// user in the close index if sessions remain open.
    fn close_sessions(&mut self, user: u32, wm: i64, out: &mut Vec<Output>) {
        let gap = self.cfg.session_gap;
        let st = self.users.get_mut(&user).expect("user exists");
        let closed = st.sessions.close_due(wm, gap);
        let still_open = st.sessions.open().first().map(|s| s.start);
        for (i, s) in closed.iter().enumerate() {
            let later = closed.get(i + 1).map(|n| n.start).or(still_open);
            let c = self.summarize(user, s, later);
            self.engagement.on_session(&c, self.action_drama.0, self.action_drama.1);
            self.counters.sessions_closed += 1;
            self.counters.binge_sessions += c.binge as u64;
            self.dirty.sessions.push((user, c));
            self.day.sessions.push((user, c));
            out.push(Output::Session { user, session: c });
        }
        let st = self.users.get_mut(&user).expect("user exists");
        if let Some(k) = st.close_key.take() {
            self.close_index.remove(k, user);
        }
        if let Some(next) = st.sessions.next_close(gap) {
            st.close_key = Some(next);
            self.close_index.insert(next, user);
        }
        self.dirty.users.insert(user);
        self.day.touch(user);
    }

    /// Counts `user`'s session `s` as closed; `later` is the start of the session after it, if
    /// one is known.
    fn summarize(&mut self, user: u32, s: &OpenSession, later: Option<i64>) -> ClosedSession {
        let st = self.users.get_mut(&user).expect("user exists");
        let a = &mut st.activity;
        let first = a.sessions == 0;
        if first {
            a.close_first_session(s.end, s.mean_rating(), later, self.catalog.genre_names());
        }
        let binge = s.events >= self.cfg.binge_min_events && (!first || self.cfg.binge_first_session);
        a.sessions += 1;
        a.session_seconds += s.end - s.start;
        a.binge_sessions += binge as u64;
        if binge {
            a.last_binge_end = a.last_binge_end.max(s.end);
        }
        ClosedSession {
            start: s.start,
            length: s.end.abs_diff(s.start),
            events: s.events,
            ratings: s.ratings,
            genres: s.genres,
            mean_rating: s.mean_rating(),
            binge,
            first,
        }
    }

    /// `user` churns at last activity + churn period: its sessions close (all of them end by
    /// then), and the alert carries its features at that moment.
    fn churn(&mut self, user: u32, out: &mut Vec<Output>) {
        let churn_after = self.cfg.churn_after;
        let at = self.users[&user].activity.last + churn_after;
        self.close_sessions(user, at, out);
        let st = self.users.get_mut(&user).expect("user exists");
        let f = st.features(at, self.catalog.genre_names());
        let alert = churned_alert(user, st.activity.last, churn_after, f);
        st.churn.churned = true;
        st.churn.index_key = None;
        st.churn.episodes += 1;
        self.counters.churned_now += 1;
        self.counters.churned_alerts += 1;
        self.dirty.users.insert(user);
        self.emit_alert(user, alert, out);
    }

    /// Publishes `alert` and keeps it, encoded, as the user's latest for the checkpoint.
    fn emit_alert(&mut self, user: u32, alert: ChurnAlert, out: &mut Vec<Output>) {
        self.day.alerts.push(AlertRow {
            user,
            status: alert.status,
            at: alert.at,
            last_activity: alert.last_activity,
            inactive_days: alert.inactive_days,
        });
        self.day.touch(user);
        self.dirty.alerts.insert(user, alert.clone());
        out.push(Output::Alert(alert));
    }
}

/// Every user's row as of `as_of` (a month end) from the previous month end's `prev` (by id):
/// the `touched` users (ascending; every user new since is one) and those with events in the
/// trailing 90 days are evaluated by `eval`, the others aged. Returns the rows and how many were
/// aged.
fn refresh_rows(
    prev: &[FeatureRow],
    touched: &[u32],
    as_of: i64,
    mut eval: impl FnMut(u32) -> FeatureRow,
) -> (Vec<FeatureRow>, u64) {
    let mut rows = Vec::with_capacity(prev.len() + touched.len());
    let mut aged = 0;
    let (mut i, mut j) = (0, 0);
    loop {
        match (prev.get(i), touched.get(j)) {
            (Some(r), Some(&t)) if t <= r.user => {
                rows.push(eval(t));
                i += usize::from(t == r.user);
                j += 1;
            }
            (Some(r), _) => {
                if r.events_90d > 0 {
                    rows.push(eval(r.user));
                } else {
                    rows.push(r.aged(as_of));
                    aged += 1;
                }
                i += 1;
            }
            (None, Some(&t)) => {
                rows.push(eval(t));
                j += 1;
            }
            (None, None) => break,
        }
    }
    (rows, aged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use streamflix_schemas::Movie;
    use streamflix_schemas::{ChurnStatus, Heartbeat, RatingEvent};

    fn catalog() -> std::sync::Arc<Catalog> {
        let movies: Vec<Movie> = (1..=10)
            .map(|id| Movie {
                id,
                title: format!("M{id}"),
                year: None,
                genres: vec![["Action", "Comedy", "Drama"][id as usize % 3].to_string()],
            })
            .collect();
        std::sync::Arc::new(Catalog::from_movies(&movies).unwrap())
    }

    fn rating(user: u32, ts: i64) -> StreamRecord {
        StreamRecord::Rating(RatingEvent { v: 1, seq: 0, user_id: user, movie_id: 1, rating: 4.0, ts })
    }

    fn processor(parts: u32) -> Processor {
        // These tests jump weeks between events on partitions without heartbeats.
        let cfg = CoreConfig { max_future: 1000 * DAY, ..Default::default() };
        Processor::new(cfg, catalog(), (0..parts).map(|p| ("t".to_string(), p)).collect())
    }

    fn feed(p: &mut Processor, part: usize, r: &StreamRecord, out: &mut Vec<Output>) {
        let next = p.partitions[part].position + 1;
        p.process_record(Source { index: part, offset: next - 1, next }, None, r, None, out);
    }

    const T0: i64 = 1_000_000_000;

    fn alerts(out: &[Output]) -> Vec<&ChurnAlert> {
        out.iter().filter_map(|o| if let Output::Alert(a) = o { Some(a) } else { None }).collect()
    }

    #[test]
    fn churn_and_reactivation_have_stable_ids() {
        let mut p = processor(1);
        let mut out = Vec::new();
        feed(&mut p, 0, &rating(1, T0), &mut out);
        feed(&mut p, 0, &rating(2, T0 + 40 * DAY), &mut out);
        feed(&mut p, 0, &rating(1, T0 + 41 * DAY), &mut out);
        p.finish(&mut out);
        let a = alerts(&out);
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].status, a[0].alert_id.as_str()),
            (ChurnStatus::Churned, format!("1-{T0}-churned").as_str())
        );
        assert_eq!(a[0].at, T0 + 30 * DAY);
        assert_eq!(a[0].features.recency_days, 30.0);
        assert_eq!(a[0].features.sessions, 1, "sessions close before the alert");
        assert_eq!(
            (a[1].status, a[1].alert_id.as_str()),
            (ChurnStatus::Reactivated, format!("1-{T0}-reactivated").as_str())
        );
        assert_eq!(p.counters().churned_now, 0);
    }

    #[test]
    fn events_apply_in_event_time_order_across_partitions() {
        // A tag on partition 1 arrives after a rating 40 days later on partition 0: the tag still
        // counts as activity in between, so nobody churns.
        let mut p = processor(2);
        let mut out = Vec::new();
        feed(&mut p, 0, &rating(1, T0), &mut out);
        feed(&mut p, 0, &rating(1, T0 + 40 * DAY), &mut out);
        let tag = StreamRecord::Tag(streamflix_schemas::TagEvent {
            v: 1,
            seq: 0,
            user_id: 1,
            movie_id: 1,
            tag: "x".into(),
            ts: T0 + 20 * DAY,
        });
        feed(&mut p, 1, &StreamRecord::Heartbeat(Heartbeat { v: 1, ts: T0, next_seq: 0 }), &mut out);
        feed(&mut p, 1, &tag, &mut out);
        p.finish(&mut out);
        assert!(alerts(&out).is_empty());
        assert_eq!(p.users()[&1].activity.active_days, 3);
    }

    #[test]
    fn a_lagging_partition_does_not_change_the_outcome() {
        // User 1 on partition 0 returns after 45 days while partition 1 holds the watermark back:
        // the churn still happened in event time.
        let mut p = processor(2);
        let mut out = Vec::new();
        feed(&mut p, 1, &StreamRecord::Heartbeat(Heartbeat { v: 1, ts: T0, next_seq: 0 }), &mut out);
        feed(&mut p, 0, &rating(1, T0), &mut out);
        feed(&mut p, 0, &rating(1, T0 + 45 * DAY), &mut out);
        feed(
            &mut p,
            1,
            &StreamRecord::Heartbeat(Heartbeat { v: 1, ts: T0 + 46 * DAY, next_seq: 0 }),
            &mut out,
        );
        p.finish(&mut out);
        let ids: Vec<&str> = alerts(&out).iter().map(|a| a.alert_id.as_str()).collect();
        assert_eq!(ids, [format!("1-{T0}-churned"), format!("1-{T0}-reactivated")]);
    }

    #[test]
    fn bad_records_become_dead_letters_and_processing_continues() {
        let mut p = processor(1);
        let mut out = Vec::new();
        feed(&mut p, 0, &rating(1, T0), &mut out);
        let bad = [
            StreamRecord::Rating(RatingEvent { v: 1, seq: 0, user_id: 1, movie_id: 99, rating: 4.0, ts: T0 }),
            StreamRecord::Rating(RatingEvent { v: 1, seq: 0, user_id: 1, movie_id: 1, rating: 7.0, ts: T0 }),
            StreamRecord::Rating(RatingEvent { v: 1, seq: 0, user_id: 1, movie_id: 1, rating: 2.2, ts: T0 }),
            rating(1, 100),
            rating(1, T0 + 5000 * DAY),
            rating(1, T0 - DAY),
        ];
        for b in &bad {
            feed(&mut p, 0, b, &mut out);
        }
        feed(&mut p, 0, &rating(1, T0 + 60), &mut out);
        p.finish(&mut out);
        let reasons: Vec<&str> = out
            .iter()
            .filter_map(|o| if let Output::Dead(d) = o { Some(d.reason.as_str()) } else { None })
            .collect();
        assert_eq!(
            reasons,
            [
                "unknown_movie",
                "rating_out_of_range",
                "rating_not_half_step",
                "timestamp_before_1995",
                "timestamp_too_far_ahead",
                "late_event"
            ]
        );
        assert_eq!(p.counters().ratings, 2);
        assert_eq!(p.users()[&1].activity.ratings, 2);
        assert_eq!(p.partitions()[0].position, 8, "dead letters advance the position too");
    }

    proptest! {
        /// The per-partition queue hands out events in exactly the order one heap over all of
        /// them does, whatever the arrival order (partitions interleaved, some events late on
        /// their partition), the watermarks asked for, and a checkpoint/restore in between.
        #[test]
        fn the_pending_queue_pops_in_heap_order(
            arrivals in proptest::collection::vec((0u32..4, 0i64..50, 0u8..4), 0..300),
            restore_at in 0usize..300,
        ) {
            let mut offsets = [0u64; 4];
            let (mut queue, mut heap) = (PendingQueue::default(), std::collections::BinaryHeap::new());
            let (mut got, mut want) = (Vec::new(), Vec::new());
            for (n, &(index, ts, action)) in arrivals.iter().enumerate() {
                offsets[index as usize] += 1;
                let p = Pending {
                    ts,
                    index,
                    offset: offsets[index as usize],
                    user: n as u32,
                    movie: 1,
                    rating: Some(4.0),
                    genres: 0,
                };
                queue.push(p);
                heap.push(std::cmp::Reverse(p));
                if action == 0 {
                    // Advance to a watermark: pop everything before it from both.
                    let wm = ts - 5;
                    while let Some(p) = queue.pop_before(wm) {
                        got.push(p);
                    }
                    while heap.peek().is_some_and(|p: &std::cmp::Reverse<Pending>| p.0.ts < wm) {
                        want.push(heap.pop().expect("peeked").0);
                    }
                }
                if n == restore_at {
                    queue = queue.sorted().into_iter().collect();
                }
                prop_assert_eq!(queue.len(), heap.len());
            }
            while let Some(p) = queue.pop() {
                got.push(p);
            }
            while let Some(std::cmp::Reverse(p)) = heap.pop() {
                want.push(p);
            }
            prop_assert_eq!(got, want);
        }

        /// Churn fires exactly once per inactivity episode: the number of `churned` alerts equals
        /// the number of pauses of at least the churn period (plus one if the user is inactive at
        /// the end), each paired with a `reactivated` alert except the last, whatever the
        /// watermark does in between.
        #[test]
        fn churn_fires_exactly_once_per_inactivity_episode(
            gaps in proptest::collection::vec(prop_oneof![0i64..3 * DAY, 25 * DAY..70 * DAY], 1..40),
            beats in proptest::collection::vec(0i64..80 * DAY, 0..40),
        ) {
            let mut p = processor(2);
            let mut out = Vec::new();
            let mut ts = T0;
            let mut times = Vec::new();
            let mut beats = beats.into_iter();
            for g in gaps {
                ts += g;
                times.push(ts);
                feed(&mut p, 0, &rating(7, ts), &mut out);
                // The other partition's clock wanders ahead of or behind partition 0.
                if let Some(b) = beats.next() {
                    feed(&mut p, 1, &StreamRecord::Heartbeat(Heartbeat { v: 1, ts: T0 + b, next_seq: 0 }), &mut out);
                }
            }
            p.finish(&mut out);
            let end = times.iter().copied().max().unwrap().max(p.watermark().unwrap());
            let pauses = times.windows(2).filter(|w| w[1] - w[0] >= 30 * DAY).count();
            let inactive_at_end = end - times.last().unwrap() >= 30 * DAY;
            let alerts = alerts(&out);
            let churned = alerts.iter().filter(|a| a.status == ChurnStatus::Churned).count();
            let reactivated = alerts.iter().filter(|a| a.status == ChurnStatus::Reactivated).count();
            prop_assert_eq!(churned, pauses + inactive_at_end as usize);
            prop_assert_eq!(reactivated, pauses);
            let mut ids: Vec<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), alerts.len(), "alert ids are unique");
            prop_assert_eq!(p.counters().churned_now, inactive_at_end as u64);
        }
    }

    fn closes(out: &[Output]) -> Vec<&DayClose> {
        out.iter().filter_map(|o| if let Output::DayClosed(c) = o { Some(&**c) } else { None }).collect()
    }

    /// The watermark jumping days at once still closes each day on its own, as of its end: the
    /// events before its midnight applied, the sessions and churns due by then in it, nothing
    /// of the next day.
    #[test]
    fn each_day_closes_as_of_its_end_however_far_the_watermark_jumps() {
        let mut p = processor(1);
        p.set_day_close(Some(CloseSpec { users: true, full: true, retention: true }));
        let mut out = Vec::new();
        let d0 = day_of(T0);
        let midnight = (d0 + 1) * DAY;
        feed(&mut p, 0, &rating(1, midnight - 100), &mut out);
        feed(&mut p, 0, &rating(2, midnight - 10), &mut out);
        // One record moves the watermark three days on; user 1's session closes on day 1
        // (its end + 30 min is past midnight), and user 2 rates again on day 3.
        feed(&mut p, 0, &rating(2, midnight + 2 * DAY + 50), &mut out);
        feed(&mut p, 0, &heartbeat(midnight + 2 * DAY + 3_600), &mut out);
        let c = closes(&out);
        assert_eq!(c.iter().map(|c| c.day - d0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(c.iter().all(|c| c.complete));
        assert_eq!(c[0].ratings.len(), 2);
        assert_eq!(c[0].as_of, midnight - 1);
        assert!(c[0].sessions.is_empty(), "sessions end + gap after midnight close on the next day");
        assert_eq!(c[1].sessions.len(), 2);
        assert!(c[1].ratings.is_empty() && c[2].ratings.is_empty() && c[2].sessions.is_empty());
        assert_eq!(c[0].users.iter().map(|u| u.user).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(c[0].users[1].events_7d, 1, "user 2's day-3 rating is not in day 0's row");
        assert_eq!(c[1].users.iter().map(|u| (u.user, u.sessions)).collect::<Vec<_>>(), [(1, 1), (2, 1)]);
        assert!(c[2].users.is_empty());
        assert!(c.iter().all(|c| c.full.is_none()), "no month end among them");
        // The end of the input: day 3, incomplete, with every user and the cohort triangle.
        p.finish(&mut out);
        let c = closes(&out);
        let last = c[c.len() - 1];
        assert_eq!((last.day - d0, last.complete, last.ratings.len()), (3, false, 1));
        let full = last.full.as_ref().unwrap();
        assert_eq!(full.users.len(), 2);
        assert_eq!(full.retention.len(), 1);
        assert_eq!((full.retention[0].size, full.retention[0].active), (2, 2));
        assert_eq!(p.day_log().open, Some(d0 + 3), "an incomplete close keeps the day's log");
    }

    /// The closes (rows and their order) depend on the records per partition, not on how the
    /// partitions interleave: a watermark that stops elsewhere closes a user's sessions in
    /// other groupings, but each day's rows are the same.
    #[test]
    fn day_closes_do_not_depend_on_how_partitions_interleave() {
        let mut parts: [Vec<StreamRecord>; 2] = [Vec::new(), Vec::new()];
        let mut ts = T0;
        for i in 0..400u32 {
            ts +=
                i64::from(i % 7) * 700 + i64::from(i % 13 / 12) * 3 * DAY + i64::from(i % 61 / 60) * 35 * DAY;
            let user = 1 + i % 6;
            parts[(user % 2) as usize].push(rating(user, ts));
            if i % 5 == 0 {
                parts[(1 - user % 2) as usize].push(heartbeat(ts));
            }
        }
        let run = |order: &[usize]| {
            let mut p = processor(2);
            p.set_day_close(Some(CloseSpec { users: true, full: true, retention: true }));
            let mut out = Vec::new();
            let mut next = [0usize; 2];
            for &part in order {
                if let Some(r) = parts[part].get(next[part]) {
                    feed(&mut p, part, r, &mut out);
                    next[part] += 1;
                }
            }
            p.finish(&mut out);
            closes(&out).into_iter().cloned().collect::<Vec<DayClose>>()
        };
        let (n0, n1) = (parts[0].len(), parts[1].len());
        let one_then_other: Vec<usize> =
            std::iter::repeat_n(0, n0).chain(std::iter::repeat_n(1, n1)).collect();
        let alternating: Vec<usize> = (0..2 * n0.max(n1)).map(|i| i % 2).collect();
        let bursts: Vec<usize> =
            (0..n0.max(n1)).flat_map(|i| if i % 40 < 20 { [1, 0] } else { [0, 1] }).collect();
        let a = run(&alternating);
        assert!(
            a.len() > 100 && a.iter().any(|c| c.sessions.len() > 2) && a.iter().any(|c| !c.alerts.is_empty())
        );
        assert!(a == run(&one_then_other), "partition 0 first, then 1");
        assert!(a == run(&bursts), "in bursts");
    }

    /// `user_features_full` from the previous month end's rows (unchanged users aged) equals
    /// evaluating every user again: over a year and a half of users who come and go, churn, come
    /// back and have sessions closing after a month's last event.
    #[test]
    fn month_end_rows_reused_equal_rows_evaluated() {
        let mut records = Vec::new();
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut ts = T0;
        while ts < T0 + 560 * DAY {
            // Bursts of a few events, gaps of minutes to months.
            ts += [600, 3_000, 5 * 3_600, 2 * DAY, 20 * DAY, 45 * DAY][next(6) as usize] / 4;
            let user = 1 + next(40) as u32;
            let movie_id = 1 + next(10) as u32;
            let rating = 0.5 * (1 + next(10)) as f32;
            records.push(StreamRecord::Rating(RatingEvent {
                v: 1,
                seq: 0,
                user_id: user,
                movie_id,
                rating,
                ts,
            }));
        }
        let spec = CloseSpec { users: false, full: true, retention: false };
        let (mut reused, mut evaluated) = (processor(1), processor(1));
        reused.set_day_close(Some(spec));
        evaluated.set_day_close(Some(spec));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in &records {
            feed(&mut reused, 0, r, &mut a);
            evaluated.full_rows = None;
            feed(&mut evaluated, 0, r, &mut b);
        }
        reused.finish(&mut a);
        evaluated.full_rows = None;
        evaluated.finish(&mut b);
        let (a, b) = (closes(&a), closes(&b));
        let month_ends = a.iter().filter(|c| c.full.is_some()).count();
        assert!(month_ends >= 18, "{month_ends} month ends");
        assert!(alerts_in(&a) > 20, "users churned");
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.full, y.full, "day {}", crate::core::calendar::day_label(x.day));
        }
        let aged = reused.full_rows.as_ref().unwrap().aged;
        assert!(aged > 100, "{aged} rows aged");
    }

    fn alerts_in(closes: &[&DayClose]) -> usize {
        closes.iter().map(|c| c.alerts.len()).sum()
    }

    /// A churn due on a day is in that day's close, with the user's status.
    #[test]
    fn a_churn_is_closed_on_its_day() {
        let mut p = processor(1);
        p.set_day_close(Some(CloseSpec { users: true, full: false, retention: false }));
        let mut out = Vec::new();
        feed(&mut p, 0, &rating(1, T0), &mut out);
        feed(&mut p, 0, &heartbeat(T0 + 40 * DAY), &mut out);
        let c = closes(&out);
        let churn_day = day_of(T0 + 30 * DAY);
        let day = c.iter().find(|c| !c.alerts.is_empty()).unwrap();
        assert_eq!(day.day, churn_day);
        assert_eq!(day.alerts[0].at, T0 + 30 * DAY);
        assert_eq!((day.users.len(), day.users[0].churned), (1, true));
        assert_eq!(c.iter().filter(|c| !c.alerts.is_empty()).count(), 1);
        // Without a close spec, days still close in the same sequence, without output.
        let mut q = processor(1);
        let mut out = Vec::new();
        feed(&mut q, 0, &rating(1, T0), &mut out);
        feed(&mut q, 0, &heartbeat(T0 + 40 * DAY), &mut out);
        assert!(closes(&out).is_empty());
        assert_eq!(q.day_log().open, p.day_log().open);
    }

    fn heartbeat(ts: i64) -> StreamRecord {
        StreamRecord::Heartbeat(Heartbeat { v: 1, ts, next_seq: 0 })
    }

    fn dead_reasons(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| if let Output::Dead(d) = o { Some(d.reason.clone()) } else { None })
            .collect()
    }

    /// Runs `records` (partition, record) through a processor with the default limits and its
    /// clock at `now`; returns it and its outputs.
    fn run_at(now: i64, records: &[(usize, StreamRecord)]) -> (Processor, Vec<Output>) {
        let mut p = Processor::new(CoreConfig::default(), catalog(), vec![("t".into(), 0), ("t".into(), 1)]);
        p.set_clock(now);
        let mut out = Vec::new();
        for (part, r) in records {
            feed(&mut p, *part, r, &mut out);
        }
        p.finish(&mut out);
        (p, out)
    }

    /// Issue 17: an unkeyed heartbeat at ts 99999999999999 moved its partition's watermark to the
    /// year ~3 million, and every later record there went to the DLQ as `late_event`.
    #[test]
    fn a_far_future_heartbeat_does_not_poison_event_time() {
        let now = T0 + 400 * DAY;
        let good: Vec<(usize, StreamRecord)> = (0..40)
            .flat_map(|i| {
                [(0, rating(1 + i % 3, T0 + i64::from(i) * DAY)), (1, heartbeat(T0 + i64::from(i) * DAY))]
            })
            .collect();
        let mut poisoned = good.clone();
        poisoned.insert(10, (0, heartbeat(99_999_999_999_999)));
        poisoned.insert(11, (1, heartbeat(99_999_999_999_999)));
        let (clean, clean_out) = run_at(now, &good);
        let (p, out) = run_at(now, &poisoned);
        // Ahead of their partitions' watermarks by more than --max-future, and of the clock.
        assert_eq!(dead_reasons(&out), ["timestamp_too_far_ahead", "timestamp_too_far_ahead"]);
        assert!(dead_reasons(&clean_out).is_empty());
        assert_eq!(p.counters().ratings, 40, "every good record after the bad one is applied");
        assert_eq!(p.users(), clean.users(), "the state equals the run without the bad records");
        assert_eq!(p.watermark(), clean.watermark());
    }

    /// Heartbeats were exempt from `--max-future`: without a clock to compare with (or with a
    /// wrong one), a heartbeat far ahead of its partition still moved the watermark for good.
    #[test]
    fn a_heartbeat_beyond_max_future_is_a_dead_letter() {
        let far = T0 + 31 * DAY + 600;
        let records = [
            (0, rating(1, T0)),
            (1, heartbeat(T0)),
            (0, heartbeat(far)),
            (0, rating(1, T0 + 60)),
            (1, heartbeat(T0 + 120)),
        ];
        let mut p = Processor::new(CoreConfig::default(), catalog(), vec![("t".into(), 0), ("t".into(), 1)]);
        let mut out = Vec::new();
        for (part, r) in &records {
            feed(&mut p, *part, r, &mut out);
        }
        assert_eq!(dead_reasons(&out), ["timestamp_too_far_ahead"]);
        assert_eq!(p.partitions()[0].max_ts, Some(T0 + 60), "the bad heartbeat moved nothing");
        // A heartbeat within the limit still jumps over a quiet period, and a late one is harmless.
        feed(&mut p, 0, &heartbeat(T0 + 29 * DAY), &mut out);
        feed(&mut p, 0, &heartbeat(T0), &mut out);
        assert_eq!(dead_reasons(&out).len(), 1);
        assert_eq!(p.partitions()[0].max_ts, Some(T0 + 29 * DAY));
    }

    /// The first record of a partition has no watermark to be compared with: only the clock
    /// catches it.
    #[test]
    fn the_first_record_of_a_partition_is_checked_against_the_clock() {
        let (p, out) = run_at(T0, &[(0, rating(1, T0 + 2 * DAY)), (0, rating(1, T0)), (1, heartbeat(T0))]);
        assert_eq!(dead_reasons(&out), ["timestamp_ahead_of_clock"]);
        assert_eq!(p.counters().ratings, 1);
    }

    /// Issue 17: in Kafka mode a record whose key differs from its `user_id`, an unkeyed record
    /// and a tag on the ratings topic were all accepted.
    #[test]
    fn kafka_records_keyed_by_another_user_unkeyed_or_on_the_wrong_topic_are_dead_letters() {
        let parts = vec![("p.ratings".to_string(), 0), ("p.tags".to_string(), 0)];
        let mut p = Processor::new(CoreConfig::default(), catalog(), parts);
        p.set_keyed_input(true);
        let mut out = Vec::new();
        let rating = |user: u32, ts: i64| {
            format!(
                r#"{{"type":"rating","v":1,"seq":0,"user_id":{user},"movie_id":1,"rating":4.0,"ts":{ts}}}"#
            )
        };
        let tag = format!(r#"{{"type":"tag","v":1,"seq":0,"user_id":3,"movie_id":1,"tag":"x","ts":{T0}}}"#);
        let heartbeat = format!(r#"{{"type":"heartbeat","v":1,"ts":{T0},"next_seq":0}}"#);
        let records: [(usize, Option<&[u8]>, String); 7] = [
            (0, Some(b"12"), rating(12, T0)),
            (0, Some(b"13"), rating(12, T0 + 1)),
            (0, None, rating(12, T0 + 2)),
            (0, Some(b"3"), tag.clone()),
            (1, Some(b"3"), tag.clone()),
            (1, Some(b"12"), rating(12, T0 + 3)),
            (1, None, heartbeat),
        ];
        for (offset, (index, key, payload)) in records.iter().enumerate() {
            let offset = offset as u64;
            p.process_bytes(
                Source { index: *index, offset, next: offset + 1 },
                *key,
                payload.as_bytes(),
                &mut out,
            );
        }
        p.finish(&mut out);
        assert_eq!(dead_reasons(&out), ["key_mismatch", "key_mismatch", "wrong_topic", "wrong_topic"]);
        assert_eq!((p.counters().ratings, p.counters().tags), (1, 1));
        // The embedded channel has no keys: not checked there.
        let mut q = Processor::new(CoreConfig::default(), catalog(), vec![("t.ratings".into(), 0)]);
        let mut out = Vec::new();
        q.process_bytes(Source { index: 0, offset: 0, next: 1 }, None, rating(12, T0).as_bytes(), &mut out);
        assert!(dead_reasons(&out).is_empty());
    }
}
