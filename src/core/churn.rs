//! The churn lifecycle and the time-ordered indexes that make watermark steps cheap.
//!
//! A user churns when `churn_after` of event time passes without activity. Users are found through
//! a [`TimeIndex`] ordered by last activity, so a watermark step costs O(newly due · log users),
//! never a scan. The index is lazy: a user's entry keeps the key it was inserted with while the
//! user keeps being active (updating it on every event would cost a B-tree delete and insert per
//! event). When a stale entry comes due, the processor sees the user was active since and
//! re-inserts it at the true last activity. Each user has at most one entry, and its key is never
//! later than the truth, so nothing is found late.
//!
//! Churn is decided in event time, so the outcome does not depend on how fast partitions are read:
//! if a user's next event comes `churn_after` or more after the previous one, the user churned at
//! `last + churn_after` even if the watermark had not got there yet (it trails the slowest
//! partition). One inactivity episode gives exactly one `churned` alert, identified by the last
//! activity before it, and at most one `reactivated` alert.
//!
//! May import: what `core/mod.rs` allows its layer; this module uses `crate::core::config`, `streamflix-schemas`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use streamflix_schemas::{ChurnAlert, ChurnStatus, UserFeatures, SCHEMA_VERSION};

use crate::core::config::DAY;

/// Users ordered by a time key (last activity, or when their next session closes).
#[derive(Debug, Clone, Default)]
pub struct TimeIndex {
    set: BTreeSet<(i64, u32)>,
}

impl TimeIndex {
    /// Adds `user` at `key`.
    pub fn insert(&mut self, key: i64, user: u32) {
        self.set.insert((key, user));
    }

    /// Removes `user`'s entry at `key`.
    pub fn remove(&mut self, key: i64, user: u32) {
        self.set.remove(&(key, user));
    }

    /// The users in the index, in key order.
    pub fn users(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.iter().map(|&(_, u)| u)
    }

    /// Removes and returns the earliest entry whose key is `<= limit`.
    pub fn pop_due(&mut self, limit: i64) -> Option<(i64, u32)> {
        let first = *self.set.first()?;
        (first.0 <= limit).then(|| {
            self.set.pop_first();
            first
        })
    }
}

/// Per-user churn state, stored with the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnState {
    /// The user is in an inactivity episode (a `churned` alert went out, no activity since).
    pub churned: bool,
    /// The key of this user's entry in the churn index; `None` exactly when churned.
    pub index_key: Option<i64>,
    /// `churned` alerts sent for this user over its lifetime.
    pub episodes: u32,
}

/// The `churned` alert for a user whose last activity was `last`.
pub fn churned_alert(user: u32, last: i64, churn_after: i64, features: UserFeatures) -> ChurnAlert {
    ChurnAlert {
        v: SCHEMA_VERSION,
        alert_id: alert_id(user, last, ChurnStatus::Churned),
        user_id: user,
        status: ChurnStatus::Churned,
        at: last + churn_after,
        last_activity: last,
        inactive_days: churn_after as f64 / DAY as f64,
        features,
    }
}

/// The `reactivated` alert for a user whose last activity was `last`, returning at `at`.
pub fn reactivated_alert(user: u32, last: i64, at: i64, features: UserFeatures) -> ChurnAlert {
    ChurnAlert {
        v: SCHEMA_VERSION,
        alert_id: alert_id(user, last, ChurnStatus::Reactivated),
        user_id: user,
        status: ChurnStatus::Reactivated,
        at,
        last_activity: last,
        inactive_days: (at - last) as f64 / DAY as f64,
        features,
    }
}

/// `"{user}-{last}-{status}"`: stable across restarts, unique per episode and status.
pub fn alert_id(user: u32, last: i64, status: ChurnStatus) -> String {
    let status = match status {
        ChurnStatus::Churned => "churned",
        ChurnStatus::Reactivated => "reactivated",
    };
    format!("{user}-{last}-{status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_pops_in_time_order_up_to_the_limit() {
        let mut ix = TimeIndex::default();
        ix.insert(30, 1);
        ix.insert(10, 2);
        ix.insert(20, 3);
        assert_eq!(ix.pop_due(25), Some((10, 2)));
        assert_eq!(ix.pop_due(25), Some((20, 3)));
        assert_eq!(ix.pop_due(25), None);
        ix.remove(30, 1);
        assert_eq!(ix.pop_due(i64::MAX), None);
    }

    #[test]
    fn alert_ids_name_the_episode() {
        assert_eq!(alert_id(7, 1_000, ChurnStatus::Churned), "7-1000-churned");
        assert_eq!(alert_id(7, 1_000, ChurnStatus::Reactivated), "7-1000-reactivated");
    }
}
