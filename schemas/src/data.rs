//! The data model both crates read MovieLens into: a rating and a catalog entry.
//!
//! The replay tool reads MovieLens files into these types and the processor's core keeps them
//! (the recommender's rating log, the catalog), so they live here, below both, rather than in
//! either.
//!
//! May import: serde only: the wire contract depends on neither binary's crate; this module uses none of them.

/// The genre string MovieLens uses for a movie with no genres.
pub const NO_GENRES: &str = "(no genres listed)";

/// One rating, compact (24 bytes) because ml-25m holds 25 M of them in memory.
#[derive(Debug, Clone, Copy, PartialEq)]
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
