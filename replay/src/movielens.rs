//! MovieLens readers: `ratings`, `tags` and `movies`, in both on-disk dialects.
//!
//! - **CSV** (ml-latest, ml-latest-small, ml-20m, ml-25m): a header line, RFC 4180 quoting.
//!   Titles such as `"American President, The (1995)"` and tags such as `"Oscar ""winner"""` are
//!   quoted; genres are `|`-separated, `(no genres listed)` means none.
//! - **`.dat`** (ml-1m, ml-10m): no header, fields separated by `::`, no quoting. ml-1m's
//!   `movies.dat` is Latin-1, not UTF-8, so text fields that are not valid UTF-8 are decoded as
//!   Latin-1 rather than rejected.
//!
//! The files are read whole into memory (25 M ratings take ~600 MB as [`Rating`]s), because the
//! replay must sort them by event time anyway: MovieLens orders `ratings.csv` by user, then movie.
//!
//! A malformed line never aborts a read: it is skipped, counted, and the first few are kept with
//! their line number and reason in a [`ReadReport`]. A missing file or a wrong header is an
//! [`Error`], because then nothing in the file can be trusted.
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `streamflix-schemas`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// How many malformed lines a [`ReadReport`] keeps as examples.
pub const MAX_EXAMPLES: usize = 5;

/// The CSV headers MovieLens uses, checked exactly (after stripping a UTF-8 BOM).
pub const RATINGS_HEADER: &str = "userId,movieId,rating,timestamp";
/// Header of `tags.csv`.
pub const TAGS_HEADER: &str = "userId,movieId,tag,timestamp";
/// Header of `movies.csv`.
pub const MOVIES_HEADER: &str = "movieId,title,genres";

pub use streamflix_schemas::data::{Movie, Rating, MAX_AHEAD_OF_CLOCK, MIN_EVENT_TS, NO_GENRES};

/// Errors that make a whole file unreadable.
#[derive(Debug, Error)]
pub enum Error {
    /// The file does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading failed part-way (disk error, not bad content).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CSV file whose first line is not the MovieLens header.
    #[error("{path}: expected the header `{expected}`, found `{found}`")]
    Header {
        /// The file.
        path: PathBuf,
        /// The header MovieLens uses.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
    /// A directory without a ratings file in either dialect.
    #[error("{dir}: no ratings.csv or ratings.dat (is this a MovieLens directory?)")]
    NoRatings {
        /// The directory.
        dir: PathBuf,
    },
}

/// One tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Event time, seconds since the epoch.
    pub ts: i64,
    /// MovieLens `userId`.
    pub user: u32,
    /// MovieLens `movieId`.
    pub movie: u32,
    /// The tag text, unquoted.
    pub tag: Box<str>,
}

/// What a read skipped, and why (the first [`MAX_EXAMPLES`] reasons, with line numbers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    /// The file read.
    pub path: PathBuf,
    /// Records accepted.
    pub records: u64,
    /// Lines skipped as malformed.
    pub skipped: u64,
    /// `(1-based line number, reason)` of the first skipped lines.
    pub examples: Vec<(u64, String)>,
}

impl ReadReport {
    fn new(path: &Path) -> Self {
        ReadReport { path: path.to_path_buf(), ..Default::default() }
    }

    fn skip(&mut self, line: u64, reason: impl Into<String>) {
        self.skipped += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push((line, quoted(&reason.into())));
        }
    }

    /// One human line per example, for warnings: `ratings.csv:17: rating 7 outside 0.5-5.0`.
    pub fn describe(&self) -> Vec<String> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut lines: Vec<String> =
            self.examples.iter().map(|(line, why)| format!("{name}:{line}: {why}")).collect();
        if self.skipped > self.examples.len() as u64 {
            lines.push(format!("{name}: … and {} more", self.skipped - self.examples.len() as u64));
        }
        lines
    }
}

/// Most characters of the input a message quotes: a 10 MB field or a binary header is not copied
/// into a log line.
pub const QUOTE_MAX: usize = 200;

/// `text` for a message: control characters escaped (no raw bytes reach a terminal), at most
/// [`QUOTE_MAX`] characters, then `…`.
pub fn quoted(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == QUOTE_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The dialect of a MovieLens file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Comma-separated with a header (ml-latest, ml-25m, …).
    Csv,
    /// `::`-separated without a header (ml-1m, ml-10m).
    Dat,
}

impl Dialect {
    /// `.dat` → [`Dialect::Dat`], anything else → [`Dialect::Csv`].
    pub fn of(path: &Path) -> Dialect {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("dat") => Dialect::Dat,
            _ => Dialect::Csv,
        }
    }
}

/// Finds `name.csv` or `name.dat` in `dir` (CSV preferred).
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    ["csv", "dat"].iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file())
}

fn open(path: &Path) -> Result<BufReader<File>, Error> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|source| Error::Open { path: path.to_path_buf(), source })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Reads a ratings file (`ratings.csv` or `ratings.dat`), in file order.
///
/// A large CSV file is parsed in pieces on every core (see [`read_ratings_sorted`]); the result
/// is the same as reading it line by line.
///
/// # Errors
/// [`Error::Open`], [`Error::Io`], or [`Error::Header`] for a CSV whose header is not MovieLens's.
pub fn read_ratings(path: &Path) -> Result<(Vec<Rating>, ReadReport), Error> {
    read_ratings_in_pieces(path, false, PARALLEL_FROM, cores())
}

/// [`read_ratings`], then sorted by event time (stable: ties keep file order), the order a replay
/// needs.
///
/// A CSV file of at least [`PARALLEL_FROM`] bytes is cut at line ends into one piece per core (at
/// most 8); each piece is parsed and sorted on its own thread, and one last stable sort merges
/// the sorted pieces (the sort finds them as runs). A quoted field could hold a line end and so
/// make a cut land inside a record: a file with any `"` in it is read again line by line
/// (MovieLens's ratings have none).
///
/// # Errors
/// As [`read_ratings`].
pub fn read_ratings_sorted(path: &Path) -> Result<(Vec<Rating>, ReadReport), Error> {
    read_ratings_in_pieces(path, true, PARALLEL_FROM, cores())
}

/// Threads for parallel work (a large file's read here, the batch ALS solve): one per core, at
/// most 8.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// Ratings files from this size on are read in parallel pieces ([`read_ratings_sorted`]).
pub const PARALLEL_FROM: u64 = 16 << 20;

fn read_ratings_in_pieces(
    path: &Path,
    sorted: bool,
    parallel_from: u64,
    threads: usize,
) -> Result<(Vec<Rating>, ReadReport), Error> {
    let size =
        std::fs::metadata(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?.len();
    if Dialect::of(path) == Dialect::Csv && threads > 1 && size >= parallel_from {
        if let Some(read) = read_csv_pieces(path, size, threads, sorted)? {
            return Ok(read);
        }
    }
    let mut out = Vec::new();
    let report = for_each_line(path, RATINGS_HEADER, |fields| rating_line(fields, &mut out))?;
    if sorted {
        out.sort_by_key(|r| r.ts);
    }
    Ok((out, report))
}

fn rating_line(fields: &[&[u8]], out: &mut Vec<Rating>) -> Result<(), String> {
    let [user, movie, rating, ts] = fields else {
        return Err(format!("expected 4 fields, found {}", fields.len()));
    };
    out.push(Rating {
        user: parse_id(user, "userId")?,
        movie: parse_id(movie, "movieId")?,
        rating: parse_rating(rating)?,
        ts: event_time(ts)?,
    });
    Ok(())
}

/// The parallel read of [`read_ratings_sorted`]; `None` when the file has a quote character.
fn read_csv_pieces(
    path: &Path,
    size: u64,
    threads: usize,
    sorted: bool,
) -> Result<Option<(Vec<Rating>, ReadReport)>, Error> {
    // Piece i starts after the first line end at or after i/threads of the file.
    let mut starts = vec![0u64];
    for i in 1..threads as u64 {
        let at = line_start_from(path, size * i / threads as u64)?;
        if at > *starts.last().expect("one start") && at < size {
            starts.push(at);
        }
    }
    let ends: Vec<u64> = starts.iter().skip(1).copied().chain([size]).collect();
    let pieces: Vec<Result<Piece, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = starts
            .iter()
            .zip(&ends)
            .map(|(&start, &end)| s.spawn(move || read_piece(path, start, end, sorted)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("ratings reader thread panicked")).collect()
    });
    let mut out = Vec::new();
    let mut report = ReadReport::new(path);
    for piece in pieces {
        let piece = piece?;
        if piece.quoted {
            return Ok(None);
        }
        if out.is_empty() {
            out = piece.ratings;
        } else {
            out.extend_from_slice(&piece.ratings);
        }
        report.records += piece.report.records;
        report.skipped += piece.report.skipped;
        let room = MAX_EXAMPLES - report.examples.len();
        report.examples.extend(piece.report.examples.into_iter().take(room));
    }
    offsets_to_lines(path, &mut report.examples)?;
    if sorted {
        // Each piece is sorted: this merges them.
        out.sort_by_key(|r| r.ts);
    }
    Ok(Some((out, report)))
}

struct Piece {
    ratings: Vec<Rating>,
    /// Examples hold byte offsets in the whole file.
    report: ReadReport,
    quoted: bool,
}

fn read_piece(path: &Path, start: u64, end: u64, sorted: bool) -> Result<Piece, Error> {
    let mut reader = open(path)?;
    reader.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut watch = QuoteWatch { inner: reader.take(end - start), quoted: false };
    let header = (start == 0).then_some(RATINGS_HEADER);
    let mut ratings = Vec::with_capacity(((end - start) / 24) as usize);
    let mut report = ReadReport::new(path);
    csv_records(path, &mut watch, start, header, &mut report, |fields| rating_line(fields, &mut ratings))?;
    if sorted {
        ratings.sort_by_key(|r| r.ts);
    }
    Ok(Piece { ratings, report, quoted: watch.quoted })
}

/// The offset just past the first `\n` at or after `from` (the file's size if there is none).
fn line_start_from(path: &Path, from: u64) -> Result<u64, Error> {
    let mut reader = open(path)?;
    reader.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
    let n = reader.skip_until(b'\n').map_err(io_err(path))?;
    Ok(from + n as u64)
}

/// A reader that notes whether a `"` went through it.
struct QuoteWatch<R> {
    inner: R,
    quoted: bool,
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.quoted |= buf[..n].contains(&b'"');
        Ok(n)
    }
}

/// Reads a tags file (`tags.csv` or ml-10m's `tags.dat`), in file order.
///
/// # Errors
/// As [`read_ratings`].
pub fn read_tags(path: &Path) -> Result<(Vec<Tag>, ReadReport), Error> {
    let mut out = Vec::new();
    let report = for_each_line(path, TAGS_HEADER, |fields| {
        let [user, movie, tag, ts] = fields else {
            return Err(format!("expected 4 fields, found {}", fields.len()));
        };
        let tag = decode_text(tag);
        if tag.trim().is_empty() {
            return Err("empty tag".into());
        }
        out.push(Tag {
            user: parse_id(user, "userId")?,
            movie: parse_id(movie, "movieId")?,
            tag: tag.into_boxed_str(),
            ts: event_time(ts)?,
        });
        Ok(())
    })?;
    Ok((out, report))
}

/// Reads a movie catalog (`movies.csv` or `movies.dat`).
///
/// # Errors
/// As [`read_ratings`].
pub fn read_movies(path: &Path) -> Result<(Vec<Movie>, ReadReport), Error> {
    let mut out = Vec::new();
    let report = for_each_line(path, MOVIES_HEADER, |fields| {
        let [id, title, genres] = fields else {
            return Err(format!("expected 3 fields, found {}", fields.len()));
        };
        let title = decode_text(title).trim().to_string();
        if title.is_empty() {
            return Err("empty title".into());
        }
        let genres = decode_text(genres);
        let genres: Vec<String> = if genres.trim() == NO_GENRES || genres.trim().is_empty() {
            Vec::new()
        } else {
            genres.split('|').map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect()
        };
        out.push(Movie { id: parse_id(id, "movieId")?, year: title_year(&title), title, genres });
        Ok(())
    })?;
    Ok((out, report))
}

/// The release year of a MovieLens title: a trailing `(YYYY)`, or `(YYYY-YYYY)` for series.
/// Some titles have none (`"Babylon 5"`), some have trailing spaces.
pub fn title_year(title: &str) -> Option<u16> {
    let t = title.trim_end();
    let inner = t.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let year = inner[open + 1..].split(['-', '–']).next()?.trim();
    if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) {
        year.parse().ok()
    } else {
        None
    }
}

/// Runs `f` on the fields of every data line of a CSV or `.dat` file; `f` returns the reason a
/// line is malformed. The header (CSV only) is checked against `header`.
fn for_each_line(
    path: &Path,
    header: &'static str,
    mut f: impl FnMut(&[&[u8]]) -> Result<(), String>,
) -> Result<ReadReport, Error> {
    let mut report = ReadReport::new(path);
    let mut reader = open(path)?;
    match Dialect::of(path) {
        Dialect::Csv => {
            csv_records(path, reader, 0, Some(header), &mut report, f)?;
            offsets_to_lines(path, &mut report.examples)?;
        }
        Dialect::Dat => {
            let mut buf = Vec::with_capacity(256);
            let mut line = 0u64;
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
                if n == 0 {
                    break;
                }
                line += 1;
                let text = trim_eol(&buf);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match f(&split_dat(text)) {
                    Ok(()) => report.records += 1,
                    Err(why) => report.skip(line, why),
                }
            }
        }
    }
    Ok(report)
}

/// The CSV records of `reader` (which starts at byte `base` of `path`, at a line start) to `f`;
/// skipped lines go to `report` with their byte offset in the file. `header`: the first line
/// must be this header (the piece starts the file).
fn csv_records(
    path: &Path,
    reader: impl Read,
    base: u64,
    header: Option<&'static str>,
    report: &mut ReadReport,
    mut f: impl FnMut(&[&[u8]]) -> Result<(), String>,
) -> Result<(), Error> {
    /// Lines with at most this many fields are passed without allocating.
    const FIELDS: usize = 8;
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let mut record = csv::ByteRecord::new();
    let mut first = header.is_some();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => {
                    let csv::ErrorKind::Io(source) = e.into_kind() else { unreachable!() };
                    return Err(io_err(path)(source));
                }
                _ => {
                    let at = e.position().map(|p| p.byte()).unwrap_or(0);
                    report.skip(base + at, format!("unparseable CSV: {e}"));
                    continue;
                }
            },
        }
        // The csv crate's line numbers skip blank lines; byte offsets are exact and are turned
        // into physical line numbers later, for the few examples kept.
        let at = base + record.position().map(|p| p.byte()).unwrap_or(0);
        if first {
            first = false;
            let found: Vec<String> = record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            let found = found.join(",");
            let expected = header.unwrap_or_default();
            if found.trim_start_matches('\u{feff}').trim() != expected {
                return Err(Error::Header { path: path.to_path_buf(), expected, found: quoted(&found) });
            }
            continue;
        }
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let verdict = if record.len() <= FIELDS {
            let mut fields: [&[u8]; FIELDS] = [&[]; FIELDS];
            for (slot, field) in fields.iter_mut().zip(record.iter()) {
                *slot = field;
            }
            f(&fields[..record.len()])
        } else {
            f(&record.iter().collect::<Vec<_>>())
        };
        match verdict {
            Ok(()) => report.records += 1,
            Err(why) => report.skip(at, why),
        }
    }
    Ok(())
}

/// Rewrites `(byte offset, reason)` examples as `(1-based line, reason)` by counting newlines
/// up to the last offset (the examples are the first few, so this reads little).
/// Offsets past the end (cannot happen with the csv crate) keep their value.
fn offsets_to_lines(path: &Path, examples: &mut [(u64, String)]) -> Result<(), Error> {
    if examples.is_empty() {
        return Ok(());
    }
    let mut reader = open(path)?;
    let (mut pos, mut line) = (0u64, 1u64);
    let mut next = 0;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].0);
    // The csv crate reports where it started parsing, before any blank lines it skipped: an
    // example's line is that of the first byte at or after its offset that is not a line end.
    let mut pending = Vec::new();
    while next < order.len() || !pending.is_empty() {
        let buf = reader.fill_buf().map_err(io_err(path))?;
        if buf.is_empty() {
            break;
        }
        let mut consumed = 0;
        for &b in buf {
            while next < order.len() && examples[order[next]].0 == pos {
                pending.push(order[next]);
                next += 1;
            }
            if b != b'\n' && b != b'\r' {
                for i in pending.drain(..) {
                    examples[i].0 = line;
                }
                if next == order.len() {
                    break;
                }
            }
            pos += 1;
            consumed += 1;
            line += (b == b'\n') as u64;
        }
        reader.consume(consumed);
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a `.dat` line on `::`. A `.dat` tag or title may itself contain a single `:`
/// (`"Star Trek: Generations"`), which is why the separator is the two-character `::`.
fn split_dat(line: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::with_capacity(4);
    let mut start = 0;
    let mut i = 0;
    while i + 1 < line.len() {
        if line[i] == b':' && line[i + 1] == b':' {
            fields.push(&line[start..i]);
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    fields.push(&line[start..]);
    fields
}

/// UTF-8 when valid (all CSV releases), Latin-1 otherwise (ml-1m's `.dat` files).
fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

fn field_str<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map(str::trim).map_err(|_| format!("{what} is not text"))
}

/// The value of a field of ASCII digits, possibly with ASCII spaces around, below 10^19; `None`
/// for anything else (which the callers then parse as text, with its error message). Ids and
/// times are nearly every byte of a ratings file: this skips the UTF-8 check and the generic
/// integer parser for them (and the code-layout luck their speed turned out to depend on: the
/// same parsing took 2.7 s or 4.5 s of a 25 M read depending on the binary it was linked into).
#[inline]
fn ascii_digits(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

fn parse_id(bytes: &[u8], what: &str) -> Result<u32, String> {
    if let Some(id) = ascii_digits(bytes).and_then(|v| u32::try_from(v).ok()) {
        return Ok(id);
    }
    let s = field_str(bytes, what)?;
    s.parse::<u32>().map_err(|_| format!("{what} `{s}` is not a non-negative integer"))
}

/// A row's event time: a timestamp ([`parse_ts`]) from 1995-01-01 ([`MIN_EVENT_TS`], MovieLens's
/// first year; the processor refuses earlier ones) to a day ahead of this machine's clock
/// ([`MAX_AHEAD_OF_CLOCK`]: event time cannot be in the future of the machine replaying it). One
/// row far in the future would otherwise be sent, with heartbeats at its time to every
/// partition before it, and move the processor's event time for good.
fn event_time(bytes: &[u8]) -> Result<i64, String> {
    let ts = parse_ts(bytes)?;
    if ts < MIN_EVENT_TS {
        return Err(format!("timestamp {ts} is before 1995-01-01"));
    }
    if ts > latest_event_time() {
        return Err(format!("timestamp {ts} is more than a day ahead of this machine's clock"));
    }
    Ok(ts)
}

/// The latest acceptable event time: the clock when first asked, plus [`MAX_AHEAD_OF_CLOCK`].
fn latest_event_time() -> i64 {
    static LATEST: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *LATEST.get_or_init(|| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        i64::try_from(now).unwrap_or(i64::MAX).saturating_add(MAX_AHEAD_OF_CLOCK)
    })
}

fn parse_ts(bytes: &[u8]) -> Result<i64, String> {
    if let Some(ts) = ascii_digits(bytes).and_then(|v| i64::try_from(v).ok()) {
        return Ok(ts);
    }
    let s = field_str(bytes, "timestamp")?;
    match s.parse::<i64>() {
        Ok(ts) if ts >= 0 => Ok(ts),
        _ => Err(format!("timestamp `{s}` is not seconds since the epoch")),
    }
}

/// A rating must be 0.5–5.0 in half steps, as in every MovieLens release (ml-1m uses whole stars,
/// which are half steps too). Anything else would violate the wire contract, so it is skipped here.
pub fn parse_rating(bytes: &[u8]) -> Result<f32, String> {
    let s = field_str(bytes, "rating")?;
    let r: f32 = s.parse().map_err(|_| format!("rating `{s}` is not a number"))?;
    if !(0.5..=5.0).contains(&r) {
        return Err(format!("rating {s} outside 0.5-5.0"));
    }
    if (r * 2.0).fract() != 0.0 {
        return Err(format!("rating {s} is not a half step"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Issue 17: a row `7,5,4.0,99999999999999` passed `inspect` ("0 malformed lines") and was
    /// replayed, with heartbeats at its time to every partition before it.
    #[test]
    fn a_far_future_or_pre_1995_row_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(
            &dir,
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n7,5,4.0,99999999999999\n8,5,4.0,5\n2,1,5,1445714835\n",
        );
        let (ratings, report) = read_ratings(&path).unwrap();
        assert_eq!(ratings.iter().map(|r| r.user).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(report.skipped, 2);
        let described = report.describe().join("\n");
        assert!(described.contains("more than a day ahead of this machine's clock"), "{described}");
        assert!(described.contains("before 1995-01-01"), "{described}");
    }

    /// Issue 17: a warning copied a 10 MB CSV field into the log, and a garbage header's raw
    /// control bytes.
    #[test]
    fn warnings_quote_at_most_200_characters_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let huge = "9".repeat(10_000_000);
        let body = format!("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n{huge},1,4.0,964982703\n");
        let path = fixture(&dir, "ratings.csv", body.as_bytes());
        let (ratings, report) = read_ratings(&path).unwrap();
        assert_eq!((ratings.len(), report.skipped), (1, 1));
        let line = &report.describe()[0];
        assert!(line.len() < 400 && line.ends_with('…'), "{} bytes: {}", line.len(), &line[..100]);
        let path = fixture(&dir, "ratings.csv", b"\x1b[31mus\x07er\x00,movie\n1,1,4.0,1\n");
        let err = read_ratings(&path).unwrap_err().to_string();
        assert!(!err.chars().any(|c| c.is_control()), "{err:?}");
        assert!(err.contains("\\u{1b}[31m"), "{err}");
    }

    /// The byte fast path gives what the text parser gives, and defers to it for the rest.
    #[test]
    fn ids_and_times_parse_as_the_text_parser_does() {
        let cases: [&[u8]; 16] = [
            b"0",
            b"7",
            b" 42 ",
            b"\t9\r",
            b"4294967295",
            b"4294967296",
            b"+5",
            b"-1",
            b"",
            b" ",
            b"1e3",
            b"\x0b5",
            b"12345678901234567890",
            b"9223372036854775807",
            b"00017",
            "\u{a0}8".as_bytes(),
        ];
        for bytes in cases {
            let text = std::str::from_utf8(bytes).unwrap().trim();
            assert_eq!(parse_id(bytes, "userId").ok(), text.parse::<u32>().ok(), "{bytes:?}");
            assert_eq!(parse_ts(bytes).ok(), text.parse::<i64>().ok().filter(|t| *t >= 0), "{bytes:?}");
        }
        assert_eq!(parse_id(b"x", "movieId").unwrap_err(), "movieId `x` is not a non-negative integer");
    }

    fn fixture(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn quoted_titles_with_commas_non_ascii_no_year_and_no_genres() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(
            &dir,
            "movies.csv",
            "movieId,title,genres\n\
             1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n\
             11,\"American President, The (1995)\",Comedy|Drama|Romance\n\
             2019,Seven Samurai (Shichinin no samurai) (1954),Action|Adventure|Drama\n\
             4973,\"Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)\",Comedy|Romance\n\
             149532,Marco Polo: One Hundred Eyes,(no genres listed)\n\
             171495,Cosmos ,(no genres listed)\n\
             26587,\"Decalogue, The (Dekalog) (1989)\",Crime|Drama|Romance\n\
             172591,The Godfather Trilogy: 1972-1990 (1992),(no genres listed)\n\
             \"5\",\"Father of the Bride Part II (1995)\",\"Comedy\"\n"
                .as_bytes(),
        );
        let (movies, report) = read_movies(&path).unwrap();
        assert_eq!(report.skipped, 0, "{:?}", report.examples);
        assert_eq!(movies.len(), 9);
        assert_eq!(movies[1].title, "American President, The (1995)");
        assert_eq!(movies[1].year, Some(1995));
        assert_eq!(movies[1].genres, ["Comedy", "Drama", "Romance"]);
        assert_eq!(movies[2].year, Some(1954), "parenthesised alternative title before the year");
        assert_eq!(movies[3].title, "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)");
        assert_eq!(movies[4].year, None, "title without a year");
        assert!(movies[4].genres.is_empty(), "(no genres listed) means no genres");
        assert_eq!(movies[5].title, "Cosmos", "trailing space trimmed");
        assert_eq!(movies[7].year, Some(1992));
        assert_eq!(movies[8].id, 5, "quoted numeric field");
    }

    #[test]
    fn tags_with_commas_doubled_quotes_and_unicode() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(
            &dir,
            "tags.csv",
            "userId,movieId,tag,timestamp\n\
             2,60756,funny,1445714994\n\
             2,89774,\"Oscar \"\"winner\"\", sort of\",1445715207\n\
             18,431,\"Al Pacino, gangster\",1462138790\n\
             62,2,\"In Netflix queue\",1528843929\n\
             474,5013,Ingrid Bergman à Paris ☕,1138032286\n"
                .as_bytes(),
        );
        let (tags, report) = read_tags(&path).unwrap();
        assert_eq!(report.skipped, 0, "{:?}", report.examples);
        let texts: Vec<&str> = tags.iter().map(|t| &*t.tag).collect();
        assert_eq!(
            texts,
            [
                "funny",
                "Oscar \"winner\", sort of",
                "Al Pacino, gangster",
                "In Netflix queue",
                "Ingrid Bergman à Paris ☕"
            ]
        );
        assert_eq!(tags[1].ts, 1_445_715_207);
    }

    #[test]
    fn half_star_ratings_in_user_movie_order_are_kept_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        // ratings.csv is ordered by user, then movie: timestamps go back and forth.
        let path = fixture(
            &dir,
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n1,6,4.5,964982224\n2,1,5,1445714835\n2,2,3.5,1445714100\n",
        );
        let (ratings, report) = read_ratings(&path).unwrap();
        assert_eq!(report.records, 5);
        let stars: Vec<f32> = ratings.iter().map(|r| r.rating).collect();
        assert_eq!(stars, [4.0, 0.5, 4.5, 5.0, 3.5]);
        let ts: Vec<i64> = ratings.iter().map(|r| r.ts).collect();
        assert_eq!(
            ts,
            [964982703, 964981247, 964982224, 1445714835, 1445714100],
            "file order, not time order"
        );
    }

    #[test]
    fn malformed_lines_are_skipped_counted_and_reported_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(
            &dir,
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n\
              1,1,4.0,964982703\n\
              1,2,7,964982703\n\
              x,3,4.0,964982703\n\
              1,4,3.3,964982703\n\
              1,5,4.0\n\
              \n\
              1,6,4.0,yesterday\n\
              1,7,2.0,964982704\r\n\
              1,8,-1,964982703\n",
        );
        let (ratings, report) = read_ratings(&path).unwrap();
        assert_eq!(ratings.len(), 2);
        assert_eq!(report.records, 2);
        assert_eq!(report.skipped, 6);
        let lines: Vec<u64> = report.examples.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 4, 5, 6, 8], "first five, 1-based, blank line not counted as malformed");
        assert!(report.examples[0].1.contains("outside 0.5-5.0"), "{:?}", report.examples);
        assert!(report.examples[1].1.contains("userId"));
        assert!(report.examples[2].1.contains("half step"));
        assert!(report.examples[3].1.contains("4 fields"));
        let described = report.describe();
        assert_eq!(described.len(), 6);
        assert!(described[0].starts_with("ratings.csv:3: "), "{described:?}");
        assert!(described[5].contains("1 more"));
    }

    /// A ratings file with malformed lines, blank lines and CRLF line ends spread over its length.
    fn spread_ratings(quote_at: Option<usize>) -> Vec<u8> {
        let mut f = b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n".to_vec();
        for n in 0..3000usize {
            let line = match n {
                // A quoted field holding 400 line ends: one malformed record, across the middle
                // of the file (where a cut in two pieces falls).
                _ if Some(n) == quote_at => format!("1,\"2{}\",3.0,1000001000\n", "\n3".repeat(400)),
                7 | 1900 | 2500 | 2990 => format!("{n},1,9.0,1000001000\n"),
                1200 => "\n".to_string(),
                2200 => format!("{n},1,4.0\n"),
                _ if n % 97 == 0 => format!("{},{},4.5,{}\r\n", n % 50, n, 1000002000 - n % 300),
                _ => format!("{},{},{}.5,{}\n", n % 50, n, n % 5, 1000001000 + (n * 7919) % 500),
            };
            f.extend_from_slice(line.as_bytes());
        }
        f
    }

    #[test]
    fn a_file_read_in_pieces_equals_the_line_by_line_read() {
        let dir = tempfile::tempdir().unwrap();
        for quote_at in [None, Some(1550)] {
            let path = fixture(&dir, "ratings.csv", &spread_ratings(quote_at));
            for sorted in [false, true] {
                let (want, want_report) = read_ratings_in_pieces(&path, sorted, u64::MAX, 1).unwrap();
                let bad = 5 + u64::from(quote_at.is_some());
                assert_eq!(want_report.skipped, bad);
                assert_eq!(want.len() as u64 + bad + 1 /* blank */, 3000);
                for threads in [2, 3, 7] {
                    let (got, report) = read_ratings_in_pieces(&path, sorted, 0, threads).unwrap();
                    assert_eq!(got, want, "{threads} pieces, sorted: {sorted}, quote: {quote_at:?}");
                    assert_eq!(report, want_report, "{threads} pieces");
                }
            }
            let (sorted, _) = read_ratings_in_pieces(&path, true, 0, 3).unwrap();
            let (mut by_file, _) = read_ratings_in_pieces(&path, false, 0, 3).unwrap();
            by_file.sort_by_key(|r| r.ts);
            assert_eq!(sorted, by_file, "a stable sort by time of the file order");
        }
        // More pieces than lines.
        let path = fixture(&dir, "ratings.csv", b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n");
        let (got, report) = read_ratings_in_pieces(&path, true, 0, 8).unwrap();
        assert_eq!((got.len(), report.records), (1, 1));
        let path = fixture(&dir, "ratings.csv", b"user,movie,stars,when\n1,1,4.0,1\n");
        assert!(matches!(read_ratings_in_pieces(&path, true, 0, 2), Err(Error::Header { .. })));
    }

    #[test]
    fn wrong_header_and_missing_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(&dir, "ratings.csv", b"user,movie,stars,when\n1,1,4.0,1\n");
        let err = read_ratings(&path).unwrap_err();
        assert!(matches!(err, Error::Header { .. }));
        assert!(err.to_string().contains("expected the header `userId,movieId,rating,timestamp`"), "{err}");
        let err = read_ratings(&dir.path().join("nope.csv")).unwrap_err();
        assert!(matches!(err, Error::Open { .. }), "{err}");
    }

    #[test]
    fn utf8_bom_before_header_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(
            &dir,
            "ratings.csv",
            "\u{feff}userId,movieId,rating,timestamp\n1,1,4.0,964982703\n".as_bytes(),
        );
        assert_eq!(read_ratings(&path).unwrap().0.len(), 1);
    }

    #[test]
    fn ml_1m_dat_files_read_including_latin1_titles() {
        let dir = tempfile::tempdir().unwrap();
        let ratings = fixture(
            &dir,
            "ratings.dat",
            b"1::1193::5::978300760\n1::661::3::978302109\r\n2::3068::4::978299000\n2::x::4::1\n",
        );
        let (r, report) = read_ratings(&ratings).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], Rating { user: 1, movie: 1193, rating: 5.0, ts: 978300760 });
        assert_eq!(report.skipped, 1);
        assert_eq!(report.examples[0].0, 4);

        // ml-1m's movies.dat is ISO-8859-1: 0xE9 is 'é'.
        let mut movies = b"1::Toy Story (1995)::Animation|Children's|Comedy\n".to_vec();
        movies.extend_from_slice(b"2::Star Trek: Generations (1994)::Action|Sci-Fi\n");
        movies.extend_from_slice(b"3::Am\xe9lie (2001)::Comedy|Romance\n");
        let movies = fixture(&dir, "movies.dat", &movies);
        let (m, report) = read_movies(&movies).unwrap();
        assert_eq!(report.skipped, 0, "{:?}", report.examples);
        assert_eq!(m[0].genres, ["Animation", "Children's", "Comedy"]);
        assert_eq!(m[1].title, "Star Trek: Generations (1994)", "single colon inside a .dat title");
        assert_eq!(m[2].title, "Amélie (2001)");
        assert_eq!(m[2].year, Some(2001));

        // ml-10m tags.dat.
        let tags =
            fixture(&dir, "tags.dat", b"15::4973::excellent!::1215184630\n20::1747::politics::1188263867\n");
        let (t, _) = read_tags(&tags).unwrap();
        assert_eq!(&*t[0].tag, "excellent!");
    }

    #[test]
    fn find_prefers_csv_then_dat() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path(), "ratings"), None);
        fixture(&dir, "ratings.dat", b"");
        assert_eq!(find(dir.path(), "ratings"), Some(dir.path().join("ratings.dat")));
        fixture(&dir, "ratings.csv", b"");
        assert_eq!(find(dir.path(), "ratings"), Some(dir.path().join("ratings.csv")));
    }
}
