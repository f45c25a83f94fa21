//! The replay loop: walks a [`Dataset`] in event-time order and hands records to a [`Sink`],
//! choosing each record's partition, pacing it ([`Pacer`]), interleaving clock heartbeats, and
//! skipping what a previous run already delivered (`--resume`).
//!
//! Heartbeats: a partition that has not received a record for `heartbeat_every` event-seconds
//! gets a [`Heartbeat`] stamped with the current event time, which is a valid promise because
//! events are sent in event-time order. While a paced replay sleeps, the virtual clock keeps
//! moving and idle partitions get heartbeats from it, so a consumer's watermark advances through
//! quiet periods even when nothing is being sent. At the end every partition gets a final
//! heartbeat at the last event time. Busy partitions get none, so the overhead is bounded by
//! `span / heartbeat_every` per partition however large the dataset. A heartbeat never jumps more
//! than [`MAX_HEARTBEAT_STEP`] (a week) beyond its partition's previous record: a quiet period of
//! months is crossed in weekly steps, since the processor refuses a record (heartbeats too) more
//! than `--max-future` (30 days) ahead of its partition's watermark. No heartbeat goes beyond the
//! last event: the readers skip rows from the future of the machine replaying them.
//!
//! Resume: `resume[topic][partition]` is the `next_seq` found on that partition (see
//! [`crate::kafka::resume_positions`]). Kafka keeps each partition in send order, so a partition
//! holds exactly the events destined to it with `seq` below that number; skipping those and
//! sending the rest neither duplicates nor leaves a gap.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `dataset`, `movielens`, `pacing`, `partition`, `sink`, `time`, `streamflix-schemas`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use streamflix_schemas::{Heartbeat, RatingEvent, StreamRecord, TagEvent, SCHEMA_VERSION};

use crate::dataset::{Dataset, EventRef};
use crate::pacing::Pacer;
use crate::partition::partition_for;
use crate::sink::{Outgoing, Sink, SinkError, Topic};

/// Event-seconds of silence after which a partition gets a heartbeat, unless configured.
pub const DEFAULT_HEARTBEAT_EVERY: i64 = 3600;

/// How a replay runs. `Default` is: everything, unthrottled, heartbeats every event-hour.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Event-seconds per wall-second (`--speed`).
    pub speed: Option<f64>,
    /// Events per wall-second cap (`--rate`).
    pub rate: Option<f64>,
    /// Skip events before this event time (inclusive bound).
    pub from: Option<i64>,
    /// Stop at this event time (exclusive bound).
    pub to: Option<i64>,
    /// Send at most this many events in this run.
    pub limit: Option<u64>,
    /// Event-seconds of silence after which a partition gets a heartbeat.
    pub heartbeat_every: i64,
    /// Per topic, per partition: events with `seq` below this are already delivered.
    pub resume: Option<[Vec<u64>; 2]>,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            speed: None,
            rate: None,
            from: None,
            to: None,
            limit: None,
            heartbeat_every: DEFAULT_HEARTBEAT_EVERY,
            resume: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Rating events sent.
    pub ratings: u64,
    /// Tag events sent.
    pub tags: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Events skipped because the topic already held them (`--resume`).
    pub already_delivered: u64,
    /// Events outside `--from`/`--to`.
    pub out_of_range: u64,
    /// Event time of the first and last event sent.
    pub first_ts: Option<i64>,
    /// See `first_ts`.
    pub last_ts: Option<i64>,
    /// Wall seconds from the first event sent to the end of the final flush.
    pub seconds: f64,
    /// Events (ratings + tags) per wall-second over `seconds`.
    pub events_per_second: f64,
    /// Stopped by Ctrl-C / SIGTERM before the end.
    pub interrupted: bool,
    /// Stopped by `--limit`.
    pub limit_reached: bool,
}

impl Summary {
    /// Ratings plus tags sent.
    pub fn events(&self) -> u64 {
        self.ratings + self.tags
    }
}

/// Heartbeat bookkeeping: when each topic-partition last received a record, in event time.
struct Clock {
    every: i64,
    last: [Vec<i64>; 2],
    /// Resume positions: a heartbeat never promises less than its partition already holds,
    /// or a later `--resume` would send those events again.
    floors: [Vec<u64>; 2],
    /// Minimum over `last`: no partition is overdue while `ts < min_last + every`.
    min_last: i64,
}

impl Clock {
    fn new(partitions: [u32; 2], every: i64, start: i64, floors: [Vec<u64>; 2]) -> Self {
        Clock { every, last: partitions.map(|n| vec![start; n as usize]), floors, min_last: start }
    }

    fn touched(&mut self, topic: Topic, partition: u32, ts: i64) {
        self.last[topic as usize][partition as usize] = ts;
    }

    /// Sends a heartbeat at `ts` to every partition silent for `every` event-seconds (all of
    /// them when `every` is 0). Cheap when none is due.
    fn beat(
        &mut self,
        sink: &mut dyn Sink,
        ts: i64,
        next_seq: u64,
        force: bool,
        sent: &mut u64,
    ) -> Result<(), SinkError> {
        if !force && ts < self.min_last.saturating_add(self.every) {
            return Ok(());
        }
        let mut min_last = i64::MAX;
        for topic in Topic::ALL {
            for (p, last) in self.last[topic as usize].iter_mut().enumerate() {
                if force || ts >= last.saturating_add(self.every) {
                    // A resumed replay runs the clock over the events already delivered too, so
                    // its heartbeats are an uninterrupted run's. Those ahead of the partition's
                    // resume position were delivered (a record after them was): only the clock
                    // moves. The rest are sent; one that was delivered just before the stop is
                    // then applied twice, which changes nothing (it promises nothing new).
                    let floor = self.floors[topic as usize].get(p).copied().unwrap_or(0);
                    if next_seq < floor {
                        *last = ts;
                        min_last = min_last.min(*last);
                        continue;
                    }
                    // Through a quiet period longer than MAX_HEARTBEAT_STEP, in steps of it: a
                    // consumer refuses a record too far ahead of its partition's watermark.
                    let mut at = last.saturating_add(MAX_HEARTBEAT_STEP);
                    while at < ts {
                        sink.send(heartbeat(topic, p as u32, at, next_seq))?;
                        *sent += 1;
                        at = at.saturating_add(MAX_HEARTBEAT_STEP);
                    }
                    sink.send(heartbeat(topic, p as u32, ts, next_seq))?;
                    *last = ts;
                    *sent += 1;
                }
                min_last = min_last.min(*last);
            }
        }
        self.min_last = min_last;
        Ok(())
    }
}

/// The longest step a heartbeat takes beyond its partition's previous record: the processor
/// refuses any record, heartbeats included, more than `--max-future` (default 30 days) ahead of
/// its partition's watermark, so a quiet period of months is crossed in steps of a week.
pub const MAX_HEARTBEAT_STEP: i64 = 7 * 86_400;

/// A heartbeat for `partition` of `topic` at `ts`.
fn heartbeat(topic: Topic, partition: u32, ts: i64, next_seq: u64) -> Outgoing {
    Outgoing {
        topic,
        partition,
        key: None,
        ts,
        record: StreamRecord::Heartbeat(Heartbeat { v: SCHEMA_VERSION, ts, next_seq }),
    }
}

/// Replays `dataset` into `sink`. Stops early, after flushing, when `stop` becomes true.
/// `progress` (may be hidden) shows events sent, rate, ETA and the current event date.
///
/// # Errors
/// The sink failed; what was sent before stays sent (and `--resume` continues from it).
pub fn replay(
    dataset: &Dataset,
    sink: &mut dyn Sink,
    cfg: &ReplayConfig,
    stop: &AtomicBool,
    progress: &ProgressBar,
) -> Result<Summary, SinkError> {
    let partitions = Topic::ALL.map(|t| sink.partitions(t).max(1));
    let mut summary = Summary::default();
    let mut pacer = Pacer::new(cfg.speed, cfg.rate);
    let mut clock: Option<Clock> = None;
    let mut started: Option<Instant> = None;
    let mut key = [0u8; 10];
    // Per topic and partition, the seq below which events are already delivered (all 0 unless
    // resuming). Skipping uses it, and heartbeats never promise less than it.
    let floors = cfg.resume.clone().unwrap_or_else(|| partitions.map(|n| vec![0; n as usize]));
    // The seq of the first event this run did not get to (the whole dataset when it finished).
    let mut next_seq = dataset.len();
    // The latest event time reached, delivered before a resume or sent now.
    let mut last_seen: Option<i64> = None;

    for (seq, event) in dataset.events() {
        let ts = event.ts();
        if cfg.from.is_some_and(|from| ts < from) {
            summary.out_of_range += 1;
            continue;
        }
        if cfg.to.is_some_and(|to| ts >= to) {
            next_seq = seq;
            break;
        }
        let topic = match event {
            EventRef::Rating(_) => Topic::Ratings,
            EventRef::Tag(_) => Topic::Tags,
        };
        let user = event.user();
        let partition =
            partition_for(streamflix_schemas::user_key(user, &mut key), partitions[topic as usize]);
        if floors[topic as usize].get(partition as usize).is_some_and(|&next| seq < next) {
            summary.already_delivered += 1;
            // The clock runs as if this event were sent (see `Clock::beat`).
            let clock =
                clock.get_or_insert_with(|| Clock::new(partitions, cfg.heartbeat_every, ts, floors.clone()));
            clock.beat(sink, ts, seq, false, &mut summary.heartbeats)?;
            clock.touched(topic, partition, ts);
            last_seen = Some(ts);
            continue;
        }
        if cfg.limit.is_some_and(|limit| summary.events() >= limit) {
            summary.limit_reached = true;
            next_seq = seq;
            break;
        }
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            next_seq = seq;
            break;
        }
        let clock =
            clock.get_or_insert_with(|| Clock::new(partitions, cfg.heartbeat_every, ts, floors.clone()));
        started.get_or_insert_with(Instant::now);

        if !pacer.is_unthrottled() {
            let due = pacer.due(ts, Instant::now());
            if !wait_until(due, &pacer, clock, sink, (seq, ts), stop, &mut summary.heartbeats)? {
                summary.interrupted = true;
                next_seq = seq;
                break;
            }
        }
        clock.beat(sink, ts, seq, false, &mut summary.heartbeats)?;

        let record = match event {
            EventRef::Rating(r) => {
                summary.ratings += 1;
                StreamRecord::Rating(RatingEvent {
                    v: SCHEMA_VERSION,
                    seq,
                    user_id: r.user,
                    movie_id: r.movie,
                    rating: r.rating,
                    ts,
                })
            }
            EventRef::Tag(t) => {
                summary.tags += 1;
                StreamRecord::Tag(TagEvent {
                    v: SCHEMA_VERSION,
                    seq,
                    user_id: t.user,
                    movie_id: t.movie,
                    tag: t.tag.to_string(),
                    ts,
                })
            }
        };
        sink.send(Outgoing { topic, partition, key: Some(user), ts, record })?;
        clock.touched(topic, partition, ts);
        last_seen = Some(ts);
        summary.first_ts.get_or_insert(ts);
        summary.last_ts = Some(ts);

        if summary.events() % 4096 == 1 {
            progress.set_position(summary.events());
            progress.set_message(crate::time::format_date(ts));
        }
    }
    progress.set_position(summary.events());
    sink.flush()?;
    if let (Some(clock), Some(last)) = (clock.as_mut(), last_seen) {
        // Seal every partition with a final promise, so consumers' watermarks reach the last
        // event. Sent after the flush, each lands alone in its partition's last batch: brokers
        // that compute the high watermark from the last batch's base offset (tansu 0.6) then
        // still expose every event.
        clock.beat(sink, last, next_seq, true, &mut summary.heartbeats)?;
        sink.flush()?;
    }
    summary.seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    if summary.seconds > 0.0 {
        summary.events_per_second = summary.events() as f64 / summary.seconds;
    }
    Ok(summary)
}

/// Sleeps until `due`, in slices, sending heartbeats from the virtual clock while it waits.
/// `next` is the `(seq, ts)` of the event waiting to be sent: heartbeats never pass its event
/// time, even when `--rate` holds it back after the virtual clock has reached it.
/// Returns false when interrupted.
fn wait_until(
    due: Instant,
    pacer: &Pacer,
    clock: &mut Clock,
    sink: &mut dyn Sink,
    (next_seq, next_ts): (u64, i64),
    stop: &AtomicBool,
    heartbeats: &mut u64,
) -> Result<bool, SinkError> {
    // Sleeping is only worth it above the OS timer's granularity; below that, send now and let
    // the schedule (computed from the anchor) absorb the difference.
    const MIN_SLEEP: Duration = Duration::from_micros(500);
    const SLICE: Duration = Duration::from_millis(50);
    loop {
        let now = Instant::now();
        if now + MIN_SLEEP >= due {
            return Ok(true);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if let Some(virtual_ts) = pacer.virtual_now(now) {
            clock.beat(sink, virtual_ts.min(next_ts), next_seq, false, heartbeats)?;
        }
        // Nothing sent so far may wait with us in a sink's buffer.
        sink.idle()?;
        std::thread::sleep((due - now).min(SLICE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::movielens::{Rating, Tag};
    use crate::partition::user_key;

    /// Records what it is sent, and when.
    #[derive(Default)]
    struct Recorder {
        partitions: u32,
        sent: Vec<(Instant, Outgoing)>,
    }

    impl Sink for Recorder {
        fn partitions(&self, _: Topic) -> u32 {
            self.partitions
        }
        fn send(&mut self, out: Outgoing) -> Result<(), SinkError> {
            self.sent.push((Instant::now(), out));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn dataset(n: u32, step: i64) -> Dataset {
        Dataset {
            ratings: (0..n)
                .map(|i| Rating { ts: 1_000_000 + i as i64 * step, user: i % 17 + 1, movie: i, rating: 3.0 })
                .collect(),
            tags: vec![Tag { ts: 1_000_000 + step, user: 5, movie: 1, tag: "t".into() }],
            ..Default::default()
        }
    }

    fn run(ds: &Dataset, cfg: &ReplayConfig, partitions: u32) -> (Summary, Vec<(Instant, Outgoing)>) {
        let mut sink = Recorder { partitions, ..Default::default() };
        let summary = replay(ds, &mut sink, cfg, &AtomicBool::new(false), &ProgressBar::hidden()).unwrap();
        (summary, sink.sent)
    }

    /// Every heartbeat is a true promise: nothing earlier follows on its partition.
    fn assert_heartbeats_are_promises(sent: &[(Instant, Outgoing)]) {
        for (i, (_, o)) in sent.iter().enumerate() {
            if let StreamRecord::Heartbeat(h) = &o.record {
                let mut later =
                    sent[i + 1..].iter().filter(|(_, l)| l.topic == o.topic && l.partition == o.partition);
                assert!(later.all(|(_, l)| l.ts >= h.ts), "heartbeat at {} is broken", h.ts);
            }
        }
    }

    fn events(sent: &[(Instant, Outgoing)]) -> Vec<&Outgoing> {
        sent.iter().map(|(_, o)| o).filter(|o| !matches!(o.record, StreamRecord::Heartbeat(_))).collect()
    }

    #[test]
    fn sends_everything_in_order_with_kafka_partitions() {
        let ds = dataset(200, 10);
        let (summary, sent) = run(&ds, &ReplayConfig::default(), 3);
        assert_eq!((summary.ratings, summary.tags), (200, 1));
        let evs = events(&sent);
        assert!(evs.windows(2).all(|w| w[0].ts <= w[1].ts));
        for o in &evs {
            let user = o.key.unwrap();
            assert_eq!(o.partition, partition_for(user_key(user).as_bytes(), 3));
        }
        // The final heartbeat reaches every partition of both topics.
        let finals =
            sent.iter().rev().take(6).filter(|(_, o)| matches!(o.record, StreamRecord::Heartbeat(_))).count();
        assert_eq!(finals, 6);
    }

    #[test]
    fn idle_partitions_get_heartbeats_and_busy_ones_do_not_flood() {
        // One event every 100 s for 2000 events, heartbeat every 900 s: the tags topic (one tag)
        // is idle and must get roughly span/900 heartbeats per partition, not one per event.
        let ds = dataset(2000, 100);
        let (summary, sent) = run(&ds, &ReplayConfig { heartbeat_every: 900, ..Default::default() }, 2);
        let span = 1999 * 100;
        let tag_beats = sent
            .iter()
            .filter(|(_, o)| o.topic == Topic::Tags && matches!(o.record, StreamRecord::Heartbeat(_)))
            .count() as i64;
        assert!(tag_beats >= 2 * (span / 900) - 2 && tag_beats <= 2 * (span / 900) + 4, "{tag_beats}");
        assert_heartbeats_are_promises(&sent);
        assert!(summary.heartbeats < 2000);
    }

    /// Issue 17: the processor now refuses heartbeats more than `--max-future` ahead of their
    /// partition; a quiet period of months must be crossed in steps, on every partition.
    #[test]
    fn long_quiet_periods_are_crossed_in_heartbeat_steps() {
        // Ten events a day apart, then 200 days of silence, then ten more.
        let mut ds = dataset(20, 86_400);
        for r in &mut ds.ratings[10..] {
            r.ts += 200 * 86_400;
        }
        let (_, sent) = run(&ds, &ReplayConfig::default(), 3);
        assert_heartbeats_are_promises(&sent);
        for topic in Topic::ALL {
            for p in 0..3 {
                let times: Vec<i64> = sent
                    .iter()
                    .filter(|(_, o)| o.topic == topic && o.partition == p)
                    .map(|(_, o)| o.ts)
                    .collect();
                assert!(!times.is_empty());
                let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
                assert!(widest <= MAX_HEARTBEAT_STEP, "{topic:?}[{p}] jumps {widest}s");
            }
        }
        let last = ds.ratings.last().unwrap().ts;
        assert!(sent.iter().all(|(_, o)| o.ts <= last), "nothing beyond the last event");
    }

    #[test]
    fn from_to_and_limit_select_a_window() {
        let ds = dataset(100, 10);
        let cfg = ReplayConfig { from: Some(1_000_100), to: Some(1_000_500), ..Default::default() };
        let (summary, sent) = run(&ds, &cfg, 1);
        let evs = events(&sent);
        assert_eq!(summary.ratings, 40);
        assert!(evs.iter().all(|o| (1_000_100..1_000_500).contains(&o.ts)));
        let (summary, _) = run(&ds, &ReplayConfig { limit: Some(7), ..Default::default() }, 1);
        assert_eq!(summary.events(), 7);
        assert!(summary.limit_reached);
    }

    #[test]
    fn resume_skips_exactly_what_each_partition_holds() {
        let ds = dataset(300, 10);
        let (_, full) = run(&ds, &ReplayConfig::default(), 3);
        let full = events(&full);
        // Pretend partition 0 received everything below seq 250, partition 1 below 40, 2 nothing.
        let resume = [vec![250, 40, 0], vec![250, 40, 0]];
        let cfg = ReplayConfig { resume: Some(resume.clone()), ..Default::default() };
        let (summary, sent) = run(&ds, &cfg, 3);
        let got: Vec<u64> = events(&sent).iter().map(|o| seq_of(o)).collect();
        let want: Vec<u64> = full
            .iter()
            .filter(|o| seq_of(o) >= resume[o.topic as usize][o.partition as usize])
            .map(|o| seq_of(o))
            .collect();
        assert_eq!(got, want);
        assert_eq!(summary.already_delivered as usize, full.len() - want.len());
    }

    fn seq_of(o: &Outgoing) -> u64 {
        match &o.record {
            StreamRecord::Rating(r) => r.seq,
            StreamRecord::Tag(t) => t.seq,
            StreamRecord::Heartbeat(h) => h.next_seq,
        }
    }

    /// Pacing against the real clock: each event leaves when the virtual clock reaches it.
    #[test]
    fn speed_paces_each_event_by_event_time() {
        // 60 event-seconds at 100x: 0.6 s of wall time.
        let ds = dataset(61, 1);
        let cfg = ReplayConfig { speed: Some(100.0), heartbeat_every: 5, ..Default::default() };
        let (summary, sent) = run(&ds, &cfg, 2);
        let evs: Vec<&(Instant, Outgoing)> =
            sent.iter().filter(|(_, o)| !matches!(o.record, StreamRecord::Heartbeat(_))).collect();
        let (t0, ts0) = (evs[0].0, evs[0].1.ts);
        for (at, o) in &evs {
            let want = (o.ts - ts0) as f64 / 100.0;
            let got = at.duration_since(t0).as_secs_f64();
            assert!(got >= want - 0.001 && got <= want + 0.03, "event at {}: {got:.3}s vs {want:.3}s", o.ts);
        }
        assert!((summary.seconds - 0.6).abs() < 0.06, "{}", summary.seconds);
    }

    /// A chunking sink (the embedded channel) still delivers a paced replay on time: what it
    /// holds is handed over before each pacing wait, not when a chunk fills.
    #[test]
    fn a_chunking_sink_delivers_a_paced_replay_on_time() {
        let ds = dataset(61, 1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Outgoing>>(16);
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            for chunk in rx {
                let at = Instant::now();
                got.extend(chunk.into_iter().map(|o| (at, o)));
            }
            got
        });
        let cfg = ReplayConfig { speed: Some(100.0), heartbeat_every: 5, ..Default::default() };
        let mut sink = crate::sink::ChannelSink::new(tx, 2);
        replay(&ds, &mut sink, &cfg, &AtomicBool::new(false), &ProgressBar::hidden()).unwrap();
        drop(sink);
        let got = receiver.join().unwrap();
        let evs: Vec<&(Instant, Outgoing)> =
            got.iter().filter(|(_, o)| !matches!(o.record, StreamRecord::Heartbeat(_))).collect();
        assert_eq!(evs.len(), 62);
        let (t0, ts0) = (evs[0].0, evs[0].1.ts);
        for (at, o) in &evs {
            let want = (o.ts - ts0) as f64 / 100.0;
            let got = at.duration_since(t0).as_secs_f64();
            assert!(got >= want - 0.011 && got <= want + 0.03, "event at {}: {got:.3}s vs {want:.3}s", o.ts);
        }
    }

    /// Regression: with --speed and a tighter --rate, the virtual clock runs ahead of the events
    /// the rate cap holds back; heartbeats sent while waiting must still not pass them.
    #[test]
    fn heartbeats_never_pass_an_event_held_back_by_the_rate_cap() {
        let ds = dataset(40, 1);
        let cfg =
            ReplayConfig { speed: Some(200.0), rate: Some(100.0), heartbeat_every: 1, ..Default::default() };
        let (_, sent) = run(&ds, &cfg, 2);
        assert_heartbeats_are_promises(&sent);
        assert!(sent.iter().any(|(_, o)| matches!(o.record, StreamRecord::Heartbeat(_))));
    }

    #[test]
    fn stop_flag_interrupts_and_flushes() {
        let ds = dataset(100, 10);
        let mut sink = Recorder { partitions: 1, ..Default::default() };
        let stop = AtomicBool::new(true);
        let summary =
            replay(&ds, &mut sink, &ReplayConfig::default(), &stop, &ProgressBar::hidden()).unwrap();
        assert!(summary.interrupted);
        assert_eq!(summary.events(), 0);
    }
}
