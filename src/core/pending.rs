//! Accepted events waiting for the watermark, and the order they are applied in.
//!
//! May import: nothing of the crate.

use serde::{Deserialize, Serialize};

/// An accepted event waiting for the watermark to pass it.
///
/// Events are applied in event-time order, not arrival order: a user's ratings and tags travel on
/// different topics, which a consumer reads at different speeds, and partitions of one topic drift
/// apart too. Holding each event until the global watermark passes its time, then applying in
/// `(ts, partition, offset)` order, gives every user their events in time order and makes the
/// result independent of how the input interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Event time.
    pub ts: i64,
    /// Input partition index.
    pub index: u32,
    /// Offset (or seq) in that partition.
    pub offset: u64,
    /// The user.
    pub user: u32,
    /// The movie.
    pub movie: u32,
    /// The rating, or `None` for a tag.
    pub rating: Option<f32>,
    /// Genres of the movie.
    pub genres: u64,
}

impl Pending {
    fn order(&self) -> (i64, u32, u64) {
        (self.ts, self.index, self.offset)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// Accepted events waiting for the watermark, taken out in [`Pending`]'s order
/// (`(ts, partition, offset)`).
///
/// A partition is a time-ordered stream apart from lateness, so one FIFO per input partition
/// holds the events that arrived in order on it (nearly all), and a heap holds the rest. The
/// next event is the least of the FIFO fronts and the heap's top: a comparison per partition,
/// where one heap over every pending event paid a sift through it per event (through tansu,
/// `BinaryHeap::pop` was 15 % of the processing thread's samples).
#[derive(Debug, Default)]
pub struct PendingQueue {
    /// Per partition index, its events in arrival order, each later in the order than the one
    /// before.
    runs: Vec<std::collections::VecDeque<Pending>>,
    /// Events that arrived before an earlier one of their partition (late within the lateness).
    late: std::collections::BinaryHeap<std::cmp::Reverse<Pending>>,
}

impl PendingQueue {
    /// Adds an accepted event.
    #[inline]
    pub fn push(&mut self, p: Pending) {
        let i = p.index as usize;
        if self.runs.len() <= i {
            self.runs.resize_with(i + 1, Default::default);
        }
        let run = &mut self.runs[i];
        if run.back().is_none_or(|b| *b < p) {
            run.push_back(p);
        } else {
            self.late.push(std::cmp::Reverse(p));
        }
    }

    /// The least event, if it is earlier than `before`.
    #[inline]
    pub fn pop_before(&mut self, before: i64) -> Option<Pending> {
        self.pop_if(|p| p.ts < before)
    }

    /// The least event.
    pub fn pop(&mut self) -> Option<Pending> {
        self.pop_if(|_| true)
    }

    /// The least event, if `take` accepts it.
    #[inline]
    fn pop_if(&mut self, take: impl Fn(&Pending) -> bool) -> Option<Pending> {
        // The least front, then the heap's top if it is less.
        let mut least: Option<(&Pending, Option<usize>)> = None;
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(front) = run.front() {
                if least.is_none_or(|(l, _)| front < l) {
                    least = Some((front, Some(i)));
                }
            }
        }
        if let Some(std::cmp::Reverse(top)) = self.late.peek() {
            if least.is_none_or(|(l, _)| top < l) {
                least = Some((top, None));
            }
        }
        let (p, from) = least?;
        if !take(p) {
            return None;
        }
        match from {
            Some(i) => self.runs[i].pop_front(),
            None => self.late.pop().map(|r| r.0),
        }
    }

    /// Every pending event, in order.
    pub fn sorted(&self) -> Vec<Pending> {
        let mut all: Vec<Pending> =
            self.runs.iter().flatten().copied().chain(self.late.iter().map(|r| r.0)).collect();
        all.sort_unstable();
        all
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.runs.iter().map(std::collections::VecDeque::len).sum::<usize>() + self.late.len()
    }
}

impl FromIterator<Pending> for PendingQueue {
    fn from_iter<I: IntoIterator<Item = Pending>>(iter: I) -> Self {
        let mut all: Vec<Pending> = iter.into_iter().collect();
        // In order, so that every event lands in its partition's FIFO.
        all.sort_unstable();
        let mut q = PendingQueue::default();
        for p in all {
            q.push(p);
        }
        q
    }
}
