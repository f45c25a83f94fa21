//! When may the next event be sent? A virtual clock for `--speed`, a rate cap for `--rate`.
//!
//! `--speed X` maps event time onto wall time: the first event sent anchors the clock, and an
//! event `Δ` event-seconds later is due `Δ / X` wall-seconds after the anchor. Due times are
//! computed from the anchor, never from the previous event, so rounding and scheduling delays do
//! not accumulate into drift over a long replay. When the sender falls behind (a slow broker), it
//! sends immediately until it has caught up, rather than shifting the whole schedule.
//!
//! `--rate N` caps throughput with a token bucket of one event: each event is due `1/N` s after
//! the previous one's due time, or now if that is already past (no bursts after a stall).
//! With both, an event is due at the later of the two times; with neither, always now.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses none of them.

use std::time::{Duration, Instant};

/// Decides the wall time each event is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Event-seconds per wall-second, if paced by event time.
    speed: Option<f64>,
    /// Minimum wall interval between two events, if rate-capped.
    interval: Option<Duration>,
    /// `(wall instant, event time)` of the first paced event.
    anchor: Option<(Instant, i64)>,
    /// When the rate cap allows the next event.
    next_slot: Option<Instant>,
}

impl Pacer {
    /// A pacer for `speed` (event-seconds per wall-second) and `rate` (events per second); either
    /// may be absent. Both must be positive and finite (validated by the CLI).
    pub fn new(speed: Option<f64>, rate: Option<f64>) -> Pacer {
        Pacer {
            speed,
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            anchor: None,
            next_slot: None,
        }
    }

    /// True when neither `--speed` nor `--rate` is set.
    pub fn is_unthrottled(&self) -> bool {
        self.speed.is_none() && self.interval.is_none()
    }

    /// The wall instant at which an event with event time `ts` may be sent, given that it is
    /// `now`. Call once per event, in order: it advances the rate cap.
    pub fn due(&mut self, ts: i64, now: Instant) -> Instant {
        let mut due = now;
        if let Some(speed) = self.speed {
            let (wall0, ts0) = *self.anchor.get_or_insert((now, ts));
            let offset = (ts - ts0).max(0) as f64 / speed;
            due = due.max(wall0 + Duration::from_secs_f64(offset));
        }
        if let Some(interval) = self.interval {
            let slot = self.next_slot.map_or(now, |s| s.max(now));
            due = due.max(slot);
            self.next_slot = Some(due + interval);
        }
        due
    }

    /// Event time the virtual clock shows at `now` (seconds, rounded down), once anchored.
    pub fn virtual_now(&self, now: Instant) -> Option<i64> {
        let speed = self.speed?;
        let (wall0, ts0) = self.anchor?;
        Some(ts0 + (now.saturating_duration_since(wall0).as_secs_f64() * speed).floor() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_maps_event_time_onto_wall_time_from_the_anchor() {
        let mut p = Pacer::new(Some(100.0), None);
        let t0 = Instant::now();
        assert_eq!(p.due(1_000, t0), t0);
        // 50 event-seconds later at 100x is due 0.5 s after the anchor, whenever it is asked.
        assert_eq!(p.due(1_050, t0 + Duration::from_millis(10)), t0 + Duration::from_millis(500));
        // Late: due immediately (catch up), and the schedule does not shift.
        let late = t0 + Duration::from_secs(3);
        assert_eq!(p.due(1_100, late), late);
        assert_eq!(p.due(1_400, late), t0 + Duration::from_secs(4));
        assert_eq!(p.virtual_now(t0 + Duration::from_secs(2)), Some(1_200));
    }

    #[test]
    fn rate_spaces_events_without_bursting_after_a_stall() {
        let mut p = Pacer::new(None, Some(10.0));
        let t0 = Instant::now();
        assert_eq!(p.due(0, t0), t0);
        assert_eq!(p.due(0, t0), t0 + Duration::from_millis(100));
        let stall = t0 + Duration::from_secs(5);
        assert_eq!(p.due(0, stall), stall);
        assert_eq!(p.due(0, stall), stall + Duration::from_millis(100));
        assert!(Pacer::new(None, None).is_unthrottled());
    }
}
