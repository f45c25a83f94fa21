//! A MovieLens dataset loaded for replay: ratings and tags, each sorted by event time, walked in
//! one merged order that gives every event its `seq`.
//!
//! The replay order is the wire contract's definition of `seq`: event time ascending; ties keep
//! file order (the sorts are stable); on a tie between files, ratings come before tags. Because
//! the order depends only on the files, two runs over the same directory number events the same
//! way, which is what `--resume` relies on.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `movielens`.

use std::path::{Path, PathBuf};

use crate::movielens::{self, Error, Rating, ReadReport, Tag};

/// Ratings and tags, sorted for replay.
#[derive(Debug, Default)]
pub struct Dataset {
    /// The directory read.
    pub dir: PathBuf,
    /// Ratings sorted by event time (stable).
    pub ratings: Vec<Rating>,
    /// Tags sorted by event time (stable); empty when the directory has none or they were not asked for.
    pub tags: Vec<Tag>,
    /// One report per file read, with what it skipped.
    pub reports: Vec<ReadReport>,
}

/// One event of the merged replay order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventRef<'a> {
    /// A rating.
    Rating(&'a Rating),
    /// A tag.
    Tag(&'a Tag),
}

impl EventRef<'_> {
    /// Event time, seconds.
    pub fn ts(&self) -> i64 {
        match self {
            EventRef::Rating(r) => r.ts,
            EventRef::Tag(t) => t.ts,
        }
    }

    /// The user, which is also the record key.
    pub fn user(&self) -> u32 {
        match self {
            EventRef::Rating(r) => r.user,
            EventRef::Tag(t) => t.user,
        }
    }
}

impl Dataset {
    /// Reads `ratings.{csv,dat}` (required) and, when `with_tags`, `tags.{csv,dat}` (optional)
    /// from `dir`, and sorts both by event time. The two files are read on two threads (a large
    /// ratings file on every core: [`movielens::read_ratings_sorted`]).
    ///
    /// # Errors
    /// [`Error::NoRatings`] when there is no ratings file, or any error of the readers.
    pub fn load(dir: &Path, with_tags: bool) -> Result<Dataset, Error> {
        let ratings_path =
            movielens::find(dir, "ratings").ok_or_else(|| Error::NoRatings { dir: dir.to_path_buf() })?;
        let tags_path = if with_tags { movielens::find(dir, "tags") } else { None };
        let (ratings, tags) = std::thread::scope(|s| {
            let tags = s.spawn(|| -> Result<_, Error> {
                match &tags_path {
                    Some(p) => {
                        let (mut tags, report) = movielens::read_tags(p)?;
                        tags.sort_by_key(|t| t.ts);
                        Ok(Some((tags, report)))
                    }
                    None => Ok(None),
                }
            });
            let ratings = movielens::read_ratings_sorted(&ratings_path);
            (ratings, tags.join().expect("tag reader thread panicked"))
        });
        let (ratings, ratings_report) = ratings?;
        let mut reports = vec![ratings_report];
        let tags = match tags? {
            Some((tags, report)) => {
                reports.push(report);
                tags
            }
            None => Vec::new(),
        };
        Ok(Dataset { dir: dir.to_path_buf(), ratings, tags, reports })
    }

    /// Number of events (ratings + tags).
    pub fn len(&self) -> u64 {
        (self.ratings.len() + self.tags.len()) as u64
    }

    /// True when there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event time of the first and last event.
    pub fn span(&self) -> Option<(i64, i64)> {
        let first = [self.ratings.first().map(|r| r.ts), self.tags.first().map(|t| t.ts)]
            .into_iter()
            .flatten()
            .min()?;
        let last = [self.ratings.last().map(|r| r.ts), self.tags.last().map(|t| t.ts)]
            .into_iter()
            .flatten()
            .max()?;
        Some((first, last))
    }

    /// Every event in replay order, with its `seq` (0-based position in that order).
    pub fn events(&self) -> impl Iterator<Item = (u64, EventRef<'_>)> + '_ {
        let mut r = self.ratings.iter().peekable();
        let mut t = self.tags.iter().peekable();
        std::iter::from_fn(move || match (r.peek(), t.peek()) {
            (Some(a), Some(b)) if b.ts < a.ts => t.next().map(EventRef::Tag),
            (Some(_), _) => r.next().map(EventRef::Rating),
            (None, _) => t.next().map(EventRef::Tag),
        })
        .zip(0u64..)
        .map(|(e, seq)| (seq, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(ts: i64, user: u32) -> Rating {
        Rating { ts, user, movie: 1, rating: 4.0 }
    }

    fn tag(ts: i64, user: u32) -> Tag {
        Tag { ts, user, movie: 1, tag: "x".into() }
    }

    #[test]
    fn merge_orders_by_time_ratings_first_on_ties_and_numbers_seq() {
        let ds = Dataset {
            ratings: vec![rating(1, 1), rating(5, 2), rating(5, 3), rating(9, 4)],
            tags: vec![tag(0, 9), tag(5, 8), tag(10, 7)],
            ..Default::default()
        };
        let order: Vec<(u64, i64, u32)> = ds.events().map(|(s, e)| (s, e.ts(), e.user())).collect();
        assert_eq!(order, [(0, 0, 9), (1, 1, 1), (2, 5, 2), (3, 5, 3), (4, 5, 8), (5, 9, 4), (6, 10, 7)]);
        assert_eq!(ds.span(), Some((0, 10)));
    }

    #[test]
    fn load_sorts_stably_and_requires_ratings() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::load(dir.path(), true).unwrap_err();
        assert!(matches!(err, Error::NoRatings { .. }));
        std::fs::write(
            dir.path().join("ratings.csv"),
            "userId,movieId,rating,timestamp\n1,1,4.0,1000000030\n1,2,4.0,1000000010\n2,1,3.0,1000000010\n2,5,3.0,1000000020\n",
        )
        .unwrap();
        let ds = Dataset::load(dir.path(), true).unwrap();
        let order: Vec<(i64, u32, u32)> =
            ds.ratings.iter().map(|r| (r.ts - 1_000_000_000, r.user, r.movie)).collect();
        assert_eq!(order, [(10, 1, 2), (10, 2, 1), (20, 2, 5), (30, 1, 1)]);
        assert!(ds.tags.is_empty());
    }
}
