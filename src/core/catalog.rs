//! The movie catalog: which genres each movie belongs to.
//!
//! Genres are interned to bit positions in alphabetical order, so a movie's genres are one `u64`
//! and a user's genre counts are a small array. Alphabetical order makes the mapping depend only
//! on the set of genre names, which the checkpoint records and checks on restart. The CLI reads the
//! movies file (with the replay crate's MovieLens reader) and builds the catalog from the parsed
//! movies: the core reads no files.
//!
//! May import: `streamflix-schemas`.

use rustc_hash::FxHashMap;
use streamflix_schemas::{Movie, NO_GENRES};

/// Most genres a catalog may have (one bit each in a `u64`).
pub const MAX_GENRES: usize = 64;

/// The genre bits set in `mask`, lowest first.
pub fn bits(mask: u64) -> impl Iterator<Item = usize> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            i
        })
    })
}

/// Adds one to `counts[g]` for every genre bit `g` set in `mask` (`counts` covers the catalog).
pub fn count_bits(counts: &mut [u64], mask: u64) {
    for g in bits(mask) {
        counts[g] += 1;
    }
}

/// Movie id → genres and title.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    genres: Vec<String>,
    movies: FxHashMap<u32, u64>,
    titles: FxHashMap<u32, Box<str>>,
    years: FxHashMap<u32, u16>,
}

impl Catalog {
    /// Builds the catalog from parsed movies; `Err(n)` if there are more than [`MAX_GENRES`].
    pub fn from_movies(movies: &[Movie]) -> Result<Catalog, usize> {
        let mut genres: Vec<String> =
            movies.iter().flat_map(|m| m.genres.iter()).filter(|g| *g != NO_GENRES).cloned().collect();
        genres.sort_unstable();
        genres.dedup();
        if genres.len() > MAX_GENRES {
            return Err(genres.len());
        }
        let mut map = FxHashMap::default();
        map.reserve(movies.len());
        let titles = movies.iter().map(|m| (m.id, m.title.clone().into_boxed_str())).collect();
        let years = movies.iter().filter_map(|m| Some((m.id, m.year?))).collect();
        for m in movies {
            let mask = m
                .genres
                .iter()
                .filter_map(|g| genres.binary_search(g).ok())
                .fold(0u64, |mask, i| mask | (1 << i));
            map.insert(m.id, mask);
        }
        Ok(Catalog { genres, movies: map, titles, years })
    }

    /// Every movie as `(id, title, release year, genre bits)`, by id (the `movies` table).
    pub fn movie_rows(&self) -> Vec<(u32, &str, Option<u16>, u64)> {
        let mut rows: Vec<_> = self
            .movies
            .iter()
            .map(|(&id, &mask)| {
                (id, self.titles.get(&id).map_or("", |t| &**t), self.years.get(&id).copied(), mask)
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.0);
        rows
    }

    /// The movie's genre bits, or `None` for a movie not in the catalog.
    #[inline]
    pub fn genres_of(&self, movie: u32) -> Option<u64> {
        self.movies.get(&movie).copied()
    }

    /// The movie's title as in the movies file.
    pub fn title(&self, movie: u32) -> Option<&str> {
        self.titles.get(&movie).map(|t| &**t)
    }

    /// Bit of the genre called `name`.
    pub fn genre_bit(&self, name: &str) -> Option<u64> {
        self.genres.iter().position(|g| g.eq_ignore_ascii_case(name)).map(|i| 1 << i)
    }

    /// Genre names, in bit order.
    pub fn genre_names(&self) -> &[String] {
        &self.genres
    }

    /// Names of the genres in `mask`, in bit order.
    pub fn names(&self, mask: u64) -> Vec<String> {
        names_in(&self.genres, mask)
    }
}

/// Names of the genres in `mask`, in bit order, from the genre names `genres` (by bit).
pub fn names_in(genres: &[String], mask: u64) -> Vec<String> {
    genres.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, g)| g.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movie(id: u32, genres: &[&str]) -> Movie {
        Movie {
            id,
            title: format!("M{id}"),
            year: None,
            genres: genres.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn genres_are_bits_in_alphabetical_order() {
        let c = Catalog::from_movies(&[
            movie(1, &["Drama", "Comedy"]),
            movie(2, &["(no genres listed)"]),
            movie(3, &["Action"]),
        ])
        .unwrap();
        assert_eq!(c.genre_names(), ["Action", "Comedy", "Drama"]);
        assert_eq!(c.genres_of(1), Some(0b110));
        assert_eq!(c.genres_of(2), Some(0));
        assert_eq!(c.genres_of(9), None);
        assert_eq!(c.names(0b101), ["Action", "Drama"]);
    }
}
