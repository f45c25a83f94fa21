//! The data model both crates read MovieLens into: a rating and a catalog entry.
//!
//! The replay tool reads MovieLens files into these types and the processor's core keeps them
//! (the recommender's rating log, the catalog), so they live here, below both, rather than in
//! either.
//!
//! May import: serde only: the wire contract depends on neither binary's crate; this module uses none of them.

/// 1995-01-01T00:00:00Z: MovieLens data starts in 1995; an earlier event time is a bad timestamp
/// (the replay's readers skip such rows, the processor dead-letters such records).
pub const MIN_EVENT_TS: i64 = 788_918_400;

/// How far ahead of the machine's clock an event time may be (one day): event time cannot be in
/// the future of the machine reading or processing it. The replay's readers use this bound; the
/// processor's is its `--max-ahead-of-clock` flag, with this default.
pub const MAX_AHEAD_OF_CLOCK: i64 = 86_400;

/// The genre string MovieLens uses for a movie with no genres.
pub const NO_GENRES: &str = "(no genres listed)";

/// One rating, compact (24 bytes) because ml-25m holds 25 M of them in memory.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rating {
    /// Event time, seconds since the epoch.
    pub ts: i64,
    /// MovieLens `userId`.
    pub user: u32,
    /// MovieLens `movieId`.
    pub movie: u32,
    /// 0.5 to 5.0 in half steps (validated by the reader).
    pub rating: f32,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    /// MovieLens `movieId`.
    pub id: u32,
    /// Title as in the file, including the trailing `(year)` when there is one.
    pub title: String,
    /// Release year parsed from the title's trailing `(YYYY)`, if any.
    pub year: Option<u16>,
    /// Genres; empty for `(no genres listed)`.
    pub genres: Vec<String>,
}
