//! Synthetic MovieLens: files in the real format, shaped like the real data, with known truth.
//!
//! MovieLens cannot be downloaded on every machine (CI has no internet), and real data has no
//! ground truth to test a churn detector or a recommender against. The generator writes
//! `movies.csv`, `ratings.csv`, `tags.csv` (or ml-1m style `.dat` files) plus
//! `ground_truth.csv`, deterministically from a seed.
//!
//! What it models, and why:
//! - **Movies**: MovieLens's genre mix (Drama and Comedy dominate; some `(no genres listed)`),
//!   power-law popularity (a few blockbusters, a long tail), a per-movie quality, and titles with
//!   every quirk the readers must survive: `", The"` suffixes (commas, so quoted), embedded
//!   quotes, non-ASCII, no year. Ids have gaps, as in MovieLens. A catalogue with more titles
//!   than ratings / 33 (ml-latest-small's 9,742 titles for 100,836 ratings) is sparse like the
//!   real one: the mainstream titles get ≥ 5 ratings and ~90 % of all, the rest are rated once
//!   or twice (median 3 ratings per title, ~57 % with ≤ 3), and every title gets at least one,
//!   as MovieLens lists only titles someone rated or tagged.
//! - **Users**: at least 20 ratings each, a heavy (log-normal) tail, exact total. Each user has a
//!   favourite genre, often a second one, sometimes a disliked one: they pick movies from those
//!   genres more often and rate them higher, so a recommender can learn the taste.
//! - **Time**: ratings come in sessions. The first is MovieLens's onboarding burst (seconds
//!   apart, rating films seen in the past); ~60 % of users never come back after that day.
//!   The others return in later sessions (some of them binges of ≥ 5), with gaps under 30 days
//!   while active, at evening-heavy hours and more on weekends (UTC). Some stop for 45+ days and
//!   come back; most are long gone by the end of the data. Half stars only exist from
//!   2003-02-18, as in MovieLens.
//! - **Ground truth** per user: tastes, first/last activity, the first churn episode (last
//!   activity before ≥ 30 days of silence) and the return after it, and whether the user is
//!   churned at the end of the data (as judged at the last event time).
//!
//! Memory is bounded by one user's events plus a few numbers per user: 25 M ratings generate in
//! 24 MB peak RSS (`scripts/bench.sh`). Each user draws from its own RNG seeded by `(seed, user)`, so a user's data
//! does not depend on the others, except in a sparse catalogue, where which
//! long-tail titles are still unrated is shared (generation stays deterministic).
//!
//! May import: `streamflix-schemas` and this crate's own modules, never the processor; this module uses `movielens`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use thiserror::Error;

/// MovieLens genres with their movie counts in ml-25m (the generator's genre mix).
pub const GENRES: [(&str, u32); 19] = [
    ("Drama", 25606),
    ("Comedy", 16870),
    ("Thriller", 8654),
    ("Romance", 7719),
    ("Action", 7348),
    ("Horror", 5989),
    ("Documentary", 5605),
    ("Crime", 5319),
    ("Adventure", 4145),
    ("Sci-Fi", 3595),
    ("Children", 2935),
    ("Animation", 2929),
    ("Mystery", 2925),
    ("Fantasy", 2731),
    ("War", 1874),
    ("Western", 1399),
    ("Musical", 1054),
    ("Film-Noir", 353),
    ("IMAX", 195),
];

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// The churn definition the ground truth uses: no activity for this long.
pub const CHURN_AFTER: i64 = 30 * DAY;
/// MovieLens switched from whole to half stars on 2003-02-18.
pub const HALF_STARS_SINCE: i64 = 1_045_526_400;

/// Output dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// ml-latest / ml-25m: `movies.csv`, `ratings.csv`, `tags.csv`.
    Csv,
    /// ml-1m / ml-10m: `movies.dat`, `ratings.dat`, `tags.dat` (`::`-separated, whole stars).
    Dat,
}

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateConfig {
    /// Number of users (ids 1..=users).
    pub users: u32,
    /// Number of movies.
    pub movies: u32,
    /// Exact number of ratings; at least 20 per user.
    pub ratings: u64,
    /// Exact number of tags.
    pub tags: u64,
    /// RNG seed; the same seed gives the same files.
    pub seed: u64,
    /// First possible event time (seconds).
    pub start: i64,
    /// Last possible event time (seconds).
    pub end: i64,
    /// File dialect.
    pub format: Format,
    /// Effects planted for the insights report to find, recorded in `generator.json` as
    /// ground truth. None by default: the data is then byte for byte what it was before
    /// effects existed.
    pub planted: Planted,
}

/// Effects the generator plants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Planted {
    /// The time between consecutive events of a session that starts on a Saturday or Sunday
    /// (UTC) is multiplied by this (1: no effect). Weekend sessions then span this factor longer
    /// on average, with the same number of events (so `weekend_vs_weekday.session_events`
    /// stays a null comparison).
    pub weekend_session_span: f64,
}

impl Default for Planted {
    fn default() -> Self {
        Planted { weekend_session_span: 1.0 }
    }
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            users: 1_000,
            movies: 3_000,
            ratings: 150_000,
            tags: 6_000,
            seed: 42,
            start: 820_454_400, // 1996-01-01, MovieLens's first year
            end: 1_574_294_400, // 2019-11-21, ml-25m's last day
            format: Format::Csv,
            planted: Planted::default(),
        }
    }
}

/// Bad generator parameters.
#[derive(Debug, Error)]
pub enum GenerateError {
    /// Parameters that cannot produce MovieLens-like data.
    #[error("{0}")]
    Invalid(String),
    /// Writing the files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What was generated.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateSummary {
    /// Users written.
    pub users: u32,
    /// Movies written.
    pub movies: u32,
    /// Ratings written.
    pub ratings: u64,
    /// Tags written.
    pub tags: u64,
    /// Earliest event time.
    pub first_ts: i64,
    /// Latest event time: "the end of the data".
    pub last_ts: i64,
    /// Users churned at the end of the data, per the ground truth.
    pub churned_at_end: u32,
    /// Users with at least one churn episode followed by a return.
    pub returned: u32,
}

impl GenerateConfig {
    /// The largest rating count one user may get: half the catalog, so distinct movies are
    /// always easy to find.
    fn max_per_user(&self) -> u64 {
        (self.movies as u64 / 2).max(20)
    }

    /// Checks the parameters can produce MovieLens-shaped data.
    ///
    /// # Errors
    /// [`GenerateError::Invalid`] with the reason.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Invalid(m));
        let span = self.planted.weekend_session_span;
        if !(0.5..=1.4).contains(&span) {
            return bad(format!(
                "--plant-weekend-span must be between 0.5 and 1.4 (steps within a session stay under the 30-minute gap), got {span}"
            ));
        }
        if self.users == 0 {
            return bad("--users must be at least 1".into());
        }
        if self.movies < 40 {
            return bad("--movies must be at least 40 (every user rates at least 20 distinct movies)".into());
        }
        if self.ratings < 20 * self.users as u64 {
            return bad(format!(
                "--ratings must be at least 20 x --users = {} (every MovieLens user has at least 20 ratings)",
                20 * self.users as u64
            ));
        }
        if self.ratings > self.users as u64 * self.max_per_user() {
            return bad(format!(
                "--ratings {} is too many for {} users and {} movies (at most {} per user); add users or movies",
                self.ratings,
                self.users,
                self.movies,
                self.max_per_user()
            ));
        }
        if self.tags > self.ratings {
            return bad("--tags must not exceed --ratings".into());
        }
        if self.end - self.start < 365 * DAY {
            return bad("--end must be at least a year after --start".into());
        }
        Ok(())
    }
}

/// The generator's hidden truth about one user.
#[derive(Debug, Clone, Default)]
struct Truth {
    favorite: u8,
    second: Option<u8>,
    disliked: Option<u8>,
    ratings: u32,
    tags: u32,
    sessions: u32,
    first_ts: i64,
    last_ts: i64,
    /// Last activity before the first silence of ≥ 30 days between two activities.
    gap_churn_ts: Option<i64>,
    /// First activity after that silence.
    return_ts: Option<i64>,
}

/// A movie as the generator sees it.
struct GenMovie {
    id: u32,
    /// Bit i set = genre i of [`GENRES`].
    genres: u32,
    quality: f32,
}

/// Picks movies by popularity, optionally within one genre (cumulative weights, binary search).
struct Sampler {
    /// Index into the movie table, and cumulative weight up to and including it.
    items: Vec<u32>,
    cumulative: Vec<f64>,
}

impl Sampler {
    fn new(items: Vec<u32>, weight: impl Fn(u32) -> f64) -> Self {
        let mut total = 0.0;
        let cumulative = items
            .iter()
            .map(|&i| {
                total += weight(i);
                total
            })
            .collect();
        Sampler { items, cumulative }
    }

    fn pick(&self, rng: &mut Pcg64Mcg) -> Option<u32> {
        let total = *self.cumulative.last()?;
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= x).min(self.items.len() - 1);
        Some(self.items[i])
    }
}

/// Ratings per title in the mainstream catalogue: the `ratings / CORE_RATINGS` most popular titles
/// follow the head's power law, and the rest are a long tail that few users find (ml-latest-small:
/// 37.5 % of its 9,724 rated titles have ≥ 5 ratings and hold 90 % of them, ~33 per title).
const CORE_RATINGS: f64 = 33.0;
/// Exponent of the long tail's decay with popularity rank, beyond the mainstream catalogue.
const TAIL_EXPONENT: f64 = 3.5;

fn normal(rng: &mut Pcg64Mcg) -> f64 {
    // Box-Muller; 1 - u avoids ln(0).
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn exponential(rng: &mut Pcg64Mcg, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn pick_weighted(rng: &mut Pcg64Mcg, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// SplitMix64 finaliser: independent per-user seeds from one seed (also the processor's seeded
/// split and factor initialisation).
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Relative weight of each UTC hour for starting a session: quiet nights, busy evenings.
const HOUR_WEIGHTS: [f64; 24] = [
    3.0, 2.0, 1.2, 0.8, 0.6, 0.6, 0.8, 1.2, 1.8, 2.2, 2.5, 2.8, 3.0, 3.0, 3.0, 3.2, 3.5, 4.0, 5.0, 6.0, 6.5,
    6.5, 5.5, 4.2,
];
/// Relative weight of each weekday, Monday first: weekends are busier.
const WEEKDAY_WEIGHTS: [f64; 7] = [0.85, 0.85, 0.9, 0.95, 1.1, 1.35, 1.3];

const ADJECTIVES: [&str; 24] = [
    "Silent", "Last", "Broken", "Golden", "Hidden", "Lonely", "Crimson", "Wild", "Eternal", "Lost",
    "Midnight", "Frozen", "Burning", "Little", "Dark", "Bright", "Savage", "Gentle", "Electric", "Secret",
    "Final", "Iron", "Velvet", "Distant",
];
const NOUNS: [&str; 24] = [
    "River", "Empire", "Garden", "Stranger", "Summer", "Mirror", "Harbor", "Kingdom", "Letter", "Machine",
    "Road", "Island", "Witness", "Promise", "Station", "Storm", "Window", "Heart", "Shadow", "Voyage",
    "Circus", "Orchard", "Signal", "Frontier",
];
const FOREIGN: [&str; 10] =
    ["Amélie", "Léon", "Tōkyō", "Mañana", "Straße", "Ça ira", "Niño", "Björk", "Ōkami", "Café Noir"];
const TAGS: [&str; 20] = [
    "atmospheric",
    "funny",
    "dark comedy",
    "twist ending",
    "based on a book",
    "visually appealing",
    "thought-provoking",
    "great soundtrack",
    "quirky, funny",
    "a bit long, but good",
    "\"cult\" classic",
    "Oscar \"winner\", sort of",
    "In Netflix queue",
    "très bien",
    "アニメ",
    "slow",
    "classic",
    "boring",
    "BD-R",
    "must see",
];

/// Generates a dataset into `out` (created if missing). `progress` is called with the number of
/// users done, now and then.
///
/// # Errors
/// Invalid parameters or an unwritable directory.
pub fn generate(
    cfg: &GenerateConfig,
    out: &Path,
    mut progress: impl FnMut(u32),
) -> Result<GenerateSummary, GenerateError> {
    cfg.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let ext = match cfg.format {
        Format::Csv => "csv",
        Format::Dat => "dat",
    };
    let mut master = Pcg64Mcg::seed_from_u64(mix(cfg.seed, u64::MAX));

    // --- Movies -------------------------------------------------------------------------------
    let genre_weights: Vec<f64> = GENRES.iter().map(|(_, n)| *n as f64).collect();
    let mut movies = Vec::with_capacity(cfg.movies as usize);
    let mut id = 0u32;
    let movies_path = out.join(format!("movies.{ext}"));
    let mut w = BufWriter::new(File::create(&movies_path).map_err(io(&movies_path))?);
    if cfg.format == Format::Csv {
        writeln!(w, "movieId,title,genres").map_err(io(&movies_path))?;
    }
    let end_year = 1970 + (cfg.end / (365 * DAY + DAY / 4)) as u32;
    for _ in 0..cfg.movies {
        id += 1 + if master.random::<f64>() < 0.1 { master.random_range(1..40) } else { 0 };
        let mut genres = 0u32;
        if master.random::<f64>() >= 0.01 {
            let k = 1 + master.random_range(0..3);
            for _ in 0..k {
                genres |= 1 << pick_weighted(&mut master, &genre_weights);
            }
        }
        let quality = (normal(&mut master) * 0.45) as f32;
        let year = end_year - (exponential(&mut master, 18.0) as u32).min(end_year - 1915);
        let title = movie_title(&mut master, year);
        let genre_text = if genres == 0 {
            crate::movielens::NO_GENRES.to_string()
        } else {
            (0..GENRES.len())
                .filter(|g| genres & (1 << g) != 0)
                .map(|g| GENRES[g].0)
                .collect::<Vec<_>>()
                .join("|")
        };
        match cfg.format {
            Format::Csv => write_csv_row(&mut w, &[&id.to_string(), &title, &genre_text]),
            Format::Dat => writeln!(w, "{id}::{title}::{genre_text}"),
        }
        .map_err(io(&movies_path))?;
        movies.push(GenMovie { id, genres, quality });
    }
    w.flush().map_err(io(&movies_path))?;

    // Power-law popularity over a random ranking of the catalog.
    let mut rank: Vec<u32> = (0..cfg.movies).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, master.random_range(0..=i));
    }
    let mut popularity = vec![0.0f64; movies.len()];
    // A sparse catalogue (more titles than `ratings / CORE_RATINGS`) gets a broken power law: the
    // head's law up to the core's edge, then a steep decay; every title still gets rated once, as
    // MovieLens lists only titles someone rated or tagged (see `UserEvents::undiscovered`). Dense
    // catalogues (the default, ml-1m, ml-25m) are all core and generate as before.
    let core = ((cfg.ratings as f64 / CORE_RATINGS) as usize).clamp(1, movies.len());
    let head = |r: usize| 1.0 / (r as f64 + 5.0).powf(1.05);
    for (r, &m) in rank.iter().enumerate() {
        popularity[m as usize] =
            if r < core { head(r) } else { head(core) * (r as f64 / core as f64).powf(-TAIL_EXPONENT) };
    }
    let global = Sampler::new((0..cfg.movies).collect(), |m| popularity[m as usize]);
    let by_genre: Vec<Sampler> = (0..GENRES.len())
        .map(|g| {
            let items = (0..cfg.movies).filter(|&m| movies[m as usize].genres & (1 << g) != 0).collect();
            Sampler::new(items, |m| popularity[m as usize])
        })
        .collect();

    // --- Rating and tag counts per user (exact totals) ------------------------------------------
    let counts = split_total(&mut master, cfg.users, cfg.ratings, 20, cfg.max_per_user(), 1.25);
    let taggers: Vec<bool> = (0..cfg.users).map(|_| master.random::<f64>() < 0.15).collect();
    let tag_counts = split_tags(&mut master, &counts, &taggers, cfg.tags);

    // --- Users ----------------------------------------------------------------------------------
    let ratings_path = out.join(format!("ratings.{ext}"));
    let tags_path = out.join(format!("tags.{ext}"));
    let mut rw = BufWriter::with_capacity(1 << 20, File::create(&ratings_path).map_err(io(&ratings_path))?);
    let mut tw = BufWriter::new(File::create(&tags_path).map_err(io(&tags_path))?);
    if cfg.format == Format::Csv {
        writeln!(rw, "userId,movieId,rating,timestamp").map_err(io(&ratings_path))?;
        writeln!(tw, "userId,movieId,tag,timestamp").map_err(io(&tags_path))?;
    }
    let ctx =
        Ctx { cfg, movies: &movies, global: &global, by_genre: &by_genre, genre_weights: &genre_weights };
    let mut truths = Vec::with_capacity(cfg.users as usize);
    let mut user_events = UserEvents::default();
    if core < movies.len() {
        user_events.undiscovered = rank.iter().rev().copied().collect();
        user_events.rated = vec![false; movies.len()];
        user_events.discover_p = (cfg.movies as f64 / cfg.ratings as f64).min(0.5);
    }
    let (mut first_ts, mut last_ts) = (i64::MAX, i64::MIN);
    for u in 0..cfg.users {
        let user = u + 1;
        let truth = ctx.user(user, counts[u as usize], tag_counts[u as usize], &mut user_events);
        first_ts = first_ts.min(truth.first_ts);
        last_ts = last_ts.max(truth.last_ts);
        user_events.write(user, cfg.format, &mut rw, &mut tw).map_err(io(&ratings_path))?;
        truths.push(truth);
        if u % 256 == 255 {
            progress(u + 1);
        }
    }
    rw.flush().map_err(io(&ratings_path))?;
    tw.flush().map_err(io(&tags_path))?;
    progress(cfg.users);

    // --- Ground truth ---------------------------------------------------------------------------
    let truth_path = out.join("ground_truth.csv");
    let mut gw = BufWriter::new(File::create(&truth_path).map_err(io(&truth_path))?);
    let (mut churned_at_end, mut returned) = (0, 0);
    writeln!(
        gw,
        "userId,favoriteGenre,secondGenre,dislikedGenre,ratings,tags,sessions,firstTs,lastTs,churnTs,returnTs,churnedAtEnd"
    )
    .map_err(io(&truth_path))?;
    for (u, t) in truths.iter().enumerate() {
        let at_end = last_ts - t.last_ts >= CHURN_AFTER;
        // The first churn episode: a silence between two activities, or the final one.
        let churn_ts = t.gap_churn_ts.or(at_end.then_some(t.last_ts));
        churned_at_end += at_end as u32;
        returned += t.return_ts.is_some() as u32;
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let name = |g: Option<u8>| g.map(|g| GENRES[g as usize].0).unwrap_or("");
        writeln!(
            gw,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            u + 1,
            GENRES[t.favorite as usize].0,
            name(t.second),
            name(t.disliked),
            t.ratings,
            t.tags,
            t.sessions,
            t.first_ts,
            t.last_ts,
            opt(churn_ts),
            opt(t.return_ts),
            at_end
        )
        .map_err(io(&truth_path))?;
    }
    gw.flush().map_err(io(&truth_path))?;

    let summary = GenerateSummary {
        users: cfg.users,
        movies: cfg.movies,
        ratings: cfg.ratings,
        tags: cfg.tags,
        first_ts,
        last_ts,
        churned_at_end,
        returned,
    };
    let meta_path = out.join("generator.json");
    let meta =
        serde_json::json!({ "generator": "streamflix-replay generate", "config": cfg, "summary": summary });
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta).expect("plain data") + "\n")
        .map_err(io(&meta_path))?;
    Ok(summary)
}

fn movie_title(rng: &mut Pcg64Mcg, year: u32) -> String {
    let adj = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    let x = rng.random::<f64>();
    let base = if x < 0.05 {
        format!("{adj} {noun}, The") // MovieLens moves articles to the end: a comma, so quoted
    } else if x < 0.08 {
        format!("{} {noun}", FOREIGN[rng.random_range(0..FOREIGN.len())])
    } else if x < 0.09 {
        format!("\"{adj}\" {noun}") // embedded quotes, like "Crocodile" Dundee
    } else if x < 0.2 {
        format!("{noun} of the {adj} {noun}s")
    } else {
        format!("{adj} {noun}")
    };
    if rng.random::<f64>() < 0.02 {
        base // no year, like some MovieLens entries
    } else {
        format!("{base} ({year})")
    }
}

fn write_csv_row(w: &mut impl Write, fields: &[&str]) -> std::io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        if f.contains([',', '"', '\n']) {
            write!(w, "\"{}\"", f.replace('"', "\"\""))?;
        } else {
            w.write_all(f.as_bytes())?;
        }
    }
    w.write_all(b"\n")
}

/// Splits `total` into `n` log-normal-ish parts, each within `[min, max]`, summing exactly.
fn split_total(rng: &mut Pcg64Mcg, n: u32, total: u64, min: u64, max: u64, sigma: f64) -> Vec<u64> {
    let raw: Vec<f64> = (0..n).map(|_| (normal(rng) * sigma).exp()).collect();
    let sum: f64 = raw.iter().sum();
    let spare = (total - min * n as u64) as f64;
    let mut out: Vec<u64> = raw.iter().map(|r| (min + (r / sum * spare) as u64).min(max)).collect();
    let mut left = total - out.iter().sum::<u64>();
    // Hand out what rounding and the cap left over, one at a time to random users under the cap.
    while left > 0 {
        let i = rng.random_range(0..n as usize);
        if out[i] < max {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// Tags per user: only taggers tag, in proportion to how much they rate, exact total.
fn split_tags(rng: &mut Pcg64Mcg, counts: &[u64], taggers: &[bool], total: u64) -> Vec<u64> {
    let mut out = vec![0u64; counts.len()];
    let pool: Vec<usize> = (0..counts.len()).filter(|&i| taggers[i]).collect();
    // A user tags at most what they rate: when the taggers' ratings cannot hold every tag (tags
    // near the ratings' total), everyone tags, which `validate` guarantees can (tags ≤ ratings).
    let room: u64 = pool.iter().map(|&i| counts[i]).sum();
    let pool = if room < total { (0..counts.len()).collect() } else { pool };
    let weight: u64 = pool.iter().map(|&i| counts[i]).sum();
    for &i in &pool {
        out[i] = (total as f64 * counts[i] as f64 / weight as f64) as u64;
        out[i] = out[i].min(counts[i]);
    }
    let mut left = total.saturating_sub(out.iter().sum());
    while left > 0 {
        let i = pool[rng.random_range(0..pool.len())];
        if out[i] < counts[i] {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// One user's events, reused across users to keep memory flat.
#[derive(Default)]
struct UserEvents {
    /// (movie id, stars, ts)
    ratings: Vec<(u32, f32, i64)>,
    /// (movie id, tag, ts)
    tags: Vec<(u32, &'static str, i64)>,
    seen: HashSet<u32>,
    /// Sparse catalogues only (else empty): titles that may not be rated yet, most popular last
    /// (popped first). Shared across users, so every title ends up with a rating.
    undiscovered: Vec<u32>,
    /// Sparse catalogues only: titles someone has rated.
    rated: Vec<bool>,
    /// Sparse catalogues only: the chance that a pick goes to a title nobody has rated yet
    /// (titles / ratings, so the tail is covered by the end of the data).
    discover_p: f64,
    /// Session (start, end) times, for the truth.
    sessions: Vec<(i64, i64)>,
}

impl UserEvents {
    /// Writes in MovieLens order: by user, then movie (so not by time).
    fn write(
        &mut self,
        user: u32,
        format: Format,
        rw: &mut impl Write,
        tw: &mut impl Write,
    ) -> std::io::Result<()> {
        self.ratings.sort_unstable_by_key(|r| r.0);
        self.tags.sort_by_key(|t| (t.0, t.2));
        for &(movie, stars, ts) in &self.ratings {
            match format {
                Format::Csv => writeln!(rw, "{user},{movie},{stars:.1},{ts}")?,
                Format::Dat => writeln!(rw, "{user}::{movie}::{}::{ts}", stars as u32)?,
            }
        }
        for &(movie, tag, ts) in &self.tags {
            match format {
                Format::Csv => {
                    write_csv_row(tw, &[&user.to_string(), &movie.to_string(), tag, &ts.to_string()])?
                }
                Format::Dat => writeln!(tw, "{user}::{movie}::{tag}::{ts}")?,
            }
        }
        Ok(())
    }
}

/// Shared, read-only generation context.
struct Ctx<'a> {
    cfg: &'a GenerateConfig,
    movies: &'a [GenMovie],
    global: &'a Sampler,
    by_genre: &'a [Sampler],
    genre_weights: &'a [f64],
}

impl Ctx<'_> {
    /// Generates one user's ratings and tags into `ev`, returning the truth about them.
    fn user(&self, user: u32, n: u64, n_tags: u64, ev: &mut UserEvents) -> Truth {
        let cfg = self.cfg;
        let rng = &mut Pcg64Mcg::seed_from_u64(mix(cfg.seed, user as u64));
        ev.ratings.clear();
        ev.tags.clear();
        ev.seen.clear();
        ev.sessions.clear();

        // Taste.
        let favorite = pick_weighted(rng, &self.genre_weights[..17]) as u8;
        let other = |rng: &mut Pcg64Mcg, not: &[u8]| loop {
            let g = pick_weighted(rng, &self.genre_weights[..17]) as u8;
            if !not.contains(&g) {
                break g;
            }
        };
        let second = (rng.random::<f64>() < 0.6).then(|| other(rng, &[favorite]));
        let disliked =
            (rng.random::<f64>() < 0.5).then(|| other(rng, &[favorite, second.unwrap_or(favorite)]));
        let bias = normal(rng) * 0.35;

        // Session sizes: one onboarding burst, then (for returning users) smaller sessions.
        let p_multi = (0.18 + 0.34 * (n as f64 / 20.0).log10()).clamp(0.1, 0.92);
        let multi = n >= 21 && rng.random::<f64>() < p_multi;
        let mut sizes = Vec::new();
        if multi {
            let first = ((n as f64 * rng.random_range(0.05..0.3)) as u64).clamp(1, n - 1);
            sizes.push(first);
            let mut left = n - first;
            while left > 0 {
                // 1 + geometric(0.3): most sessions are a few ratings, about a quarter binges (≥ 5).
                let mut s = 1;
                while rng.random::<f64>() < 0.7 && s < 40 {
                    s += 1;
                }
                let s = s.min(left);
                sizes.push(s);
                left -= s;
            }
        } else {
            sizes.push(n);
        }

        // Relative timeline: gaps between sessions < 30 days while active; an optional long break.
        let gap_median = (6.0 * DAY as f64) * (normal(rng) * 0.9).exp();
        let break_at =
            (sizes.len() >= 3 && rng.random::<f64>() < 0.25).then(|| rng.random_range(1..sizes.len()));
        let break_len = rng.random_range(60 * DAY..900 * DAY);
        let mut starts = Vec::with_capacity(sizes.len());
        let mut gaps_in = Vec::with_capacity(sizes.len());
        let mut t = 0i64;
        for (i, &size) in sizes.iter().enumerate() {
            if i > 0 {
                t += (exponential(rng, gap_median) as i64).clamp(3 * 3600, 25 * DAY);
                if break_at == Some(i) {
                    t += break_len;
                }
            }
            starts.push(t);
            // Onboarding: seconds apart. Later sessions: minutes apart, always under 20 minutes.
            let mean = if i == 0 { (12.0f64).min(3.0 * 3600.0 / size as f64) } else { 150.0 };
            let mut d = 0;
            let mut g = Vec::with_capacity(size as usize);
            for k in 0..size {
                let step = if k == 0 { 0 } else { 1 + (exponential(rng, mean) as i64).min(20 * 60) };
                d += step;
                g.push(step);
            }
            t += d;
            gaps_in.push(g);
        }
        // Fit the timeline into the data window (compressing only in extreme cases).
        let window = cfg.end - cfg.start - 3 * DAY;
        let scale = if t > window { window as f64 / t as f64 } else { 1.0 };
        let offset = cfg.start + DAY + rng.random_range(0..=(window - (t as f64 * scale) as i64).max(0));

        // Place sessions at the hours and weekdays people watch, keeping order and separation.
        let mut prev_end = i64::MIN;
        for (i, g) in gaps_in.iter().enumerate() {
            let target = offset + (starts[i] as f64 * scale) as i64;
            let mut day = target.div_euclid(DAY);
            while rng.random::<f64>() > WEEKDAY_WEIGHTS[((day + 3).rem_euclid(7)) as usize] / 1.35 {
                day += 1;
            }
            let hour = pick_weighted(rng, &HOUR_WEIGHTS) as i64;
            // The planted weekend effect stretches the session's steps (no extra random draws,
            // so without it nothing changes). Steps stay under 20 min × factor.
            let span = cfg.planted.weekend_session_span;
            let weekend = (day + 3).rem_euclid(7) >= 5;
            let stretched: Vec<i64>;
            let g: &Vec<i64> = if weekend && span != 1.0 {
                stretched = g.iter().map(|&s| (s as f64 * span).round() as i64).collect();
                &stretched
            } else {
                g
            };
            let duration: i64 = g.iter().sum();
            let mut start = day * DAY + hour * 3600 + rng.random_range(0..3600);
            if sizes.len() == 1 {
                // A one-day user stays within one UTC day.
                start = start.min(day * DAY + DAY - 1 - duration).max(day * DAY);
            }
            if start < prev_end + 2 * 3600 {
                start = prev_end + 2 * 3600 + rng.random_range(0..3600);
            }
            let mut ts = start;
            for &step in g {
                ts += step;
                let movie = self.pick_movie(rng, favorite, second, ev);
                let m = &self.movies[movie as usize];
                let mut v = 3.3 + bias + m.quality as f64 + normal(rng) * 0.6;
                if m.genres & (1 << favorite) != 0 {
                    v += 0.9;
                }
                if second.is_some_and(|s| m.genres & (1 << s) != 0) {
                    v += 0.45;
                }
                if disliked.is_some_and(|d| m.genres & (1 << d) != 0) {
                    v -= 0.9;
                }
                let stars = if cfg.format == Format::Dat || ts < HALF_STARS_SINCE {
                    v.round().clamp(1.0, 5.0)
                } else {
                    ((v * 2.0).round() / 2.0).clamp(0.5, 5.0)
                };
                ev.ratings.push((m.id, stars as f32, ts));
            }
            ev.sessions.push((start, ts));
            prev_end = ts;
        }

        // Tags: on movies the user rated, a little after the rating.
        for _ in 0..n_tags {
            let &(movie, _, ts) = &ev.ratings[rng.random_range(0..ev.ratings.len())];
            let tag = TAGS[rng.random_range(0..TAGS.len())];
            ev.tags.push((movie, tag, ts + rng.random_range(1..120)));
        }

        // Placing sessions at preferred hours and weekdays can push the last ones a few days past
        // --end: move the whole user back so every event stays inside the window.
        let last = ev.ratings.iter().map(|r| r.2).chain(ev.tags.iter().map(|t| t.2)).max();
        let overrun = last.unwrap_or(i64::MIN) - cfg.end;
        if overrun > 0 {
            ev.ratings.iter_mut().for_each(|r| r.2 -= overrun);
            ev.tags.iter_mut().for_each(|t| t.2 -= overrun);
            ev.sessions.iter_mut().for_each(|s| *s = (s.0 - overrun, s.1 - overrun));
        }

        // Truth from the actual times: activity = ratings and tags.
        let last_tag = ev.tags.iter().map(|t| t.2).max().unwrap_or(i64::MIN);
        let mut truth = Truth {
            favorite,
            second,
            disliked,
            ratings: n as u32,
            tags: n_tags as u32,
            sessions: ev.sessions.len() as u32,
            first_ts: ev.sessions[0].0,
            last_ts: ev.sessions.last().map(|s| s.1).unwrap_or(0).max(last_tag),
            ..Default::default()
        };
        let mut activity: Vec<i64> =
            ev.ratings.iter().map(|r| r.2).chain(ev.tags.iter().map(|t| t.2)).collect();
        activity.sort_unstable();
        if let Some(w) = activity.windows(2).find(|w| w[1] - w[0] >= CHURN_AFTER) {
            truth.gap_churn_ts = Some(w[0]);
            truth.return_ts = Some(w[1]);
        }
        truth
    }

    /// A movie the user has not rated yet: in a sparse catalogue sometimes one nobody has rated,
    /// else usually from their genres, else anything popular.
    fn pick_movie(&self, rng: &mut Pcg64Mcg, favorite: u8, second: Option<u8>, ev: &mut UserEvents) -> u32 {
        if ev.discover_p == 0.0 {
            return self.pick_unseen(rng, favorite, second, ev);
        }
        let mut m = None;
        if rng.random::<f64>() < ev.discover_p {
            while let Some(d) = ev.undiscovered.pop() {
                if !ev.rated[d as usize] && ev.seen.insert(d) {
                    m = Some(d);
                    break;
                }
            }
        }
        let m = m.unwrap_or_else(|| self.pick_unseen(rng, favorite, second, ev));
        ev.rated[m as usize] = true;
        m
    }

    /// A movie the user has not rated yet: usually from their genres, else anything popular.
    fn pick_unseen(&self, rng: &mut Pcg64Mcg, favorite: u8, second: Option<u8>, ev: &mut UserEvents) -> u32 {
        for _ in 0..64 {
            let x = rng.random::<f64>();
            let sampler = if x < 0.45 {
                &self.by_genre[favorite as usize]
            } else if x < 0.65 && second.is_some() {
                &self.by_genre[second.unwrap() as usize]
            } else {
                self.global
            };
            if let Some(m) = sampler.pick(rng) {
                if ev.seen.insert(m) {
                    return m;
                }
            }
        }
        // Heavy raters exhaust the popular titles: take any unrated movie.
        loop {
            let m = rng.random_range(0..self.movies.len() as u32);
            if ev.seen.insert(m) {
                return m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GenerateConfig {
        GenerateConfig { users: 120, movies: 600, ratings: 12_000, tags: 400, ..Default::default() }
    }

    #[test]
    fn tags_beyond_what_the_taggers_rate_go_to_everyone() {
        // `--preset ml25m --ratings 3300000` kept the ml-25m tag count (1.09 M), more than the
        // taggers' ratings held: handing out the rest looped forever.
        let counts = vec![20u64; 100];
        let taggers: Vec<bool> = (0..100).map(|i| i < 10).collect();
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        for total in [0, 150, 200, 201, 1_500, 2_000] {
            let tags = split_tags(&mut rng, &counts, &taggers, total);
            assert_eq!(tags.iter().sum::<u64>(), total);
            assert!(tags.iter().zip(&counts).all(|(t, c)| t <= c));
            if total <= 200 {
                assert!(tags[10..].iter().all(|&t| t == 0), "only taggers tag while they can hold it");
            }
        }
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let (a, b, c) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&small(), a.path(), |_| {}).unwrap();
        generate(&small(), b.path(), |_| {}).unwrap();
        generate(&GenerateConfig { seed: 7, ..small() }, c.path(), |_| {}).unwrap();
        for f in ["movies.csv", "ratings.csv", "tags.csv", "ground_truth.csv"] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(f)).unwrap();
            assert_eq!(read(&a), read(&b), "{f}");
        }
        assert_ne!(
            std::fs::read(a.path().join("ratings.csv")).unwrap(),
            std::fs::read(c.path().join("ratings.csv")).unwrap()
        );
    }

    #[test]
    fn exact_counts_and_readable_by_our_readers() {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(&small(), dir.path(), |_| {}).unwrap();
        let (ratings, report) = crate::movielens::read_ratings(&dir.path().join("ratings.csv")).unwrap();
        assert_eq!(report.skipped, 0, "{:?}", report.examples);
        assert_eq!(ratings.len(), 12_000);
        let (tags, report) = crate::movielens::read_tags(&dir.path().join("tags.csv")).unwrap();
        assert_eq!((tags.len(), report.skipped), (400, 0));
        let (movies, report) = crate::movielens::read_movies(&dir.path().join("movies.csv")).unwrap();
        assert_eq!((movies.len(), report.skipped), (600, 0));
        assert!(movies.iter().any(|m| m.title.contains(", The")));
        let mut per_user = std::collections::HashMap::new();
        for r in &ratings {
            *per_user.entry(r.user).or_insert(0) += 1;
            assert!(r.ts >= summary.first_ts && r.ts <= summary.last_ts);
            assert!(r.ts >= small().start && r.ts <= small().end, "inside --start..--end");
        }
        assert_eq!(per_user.len(), 120);
        assert!(per_user.values().all(|&n| n >= 20));
        // Ordered by user, then movie, like MovieLens.
        assert!(ratings.windows(2).all(|w| (w[0].user, w[0].movie) < (w[1].user, w[1].movie)));
    }

    #[test]
    fn dat_format_reads_back_with_whole_stars() {
        let dir = tempfile::tempdir().unwrap();
        generate(&GenerateConfig { format: Format::Dat, ..small() }, dir.path(), |_| {}).unwrap();
        let (ratings, report) = crate::movielens::read_ratings(&dir.path().join("ratings.dat")).unwrap();
        assert_eq!((ratings.len(), report.skipped), (12_000, 0));
        assert!(ratings.iter().all(|r| r.rating.fract() == 0.0));
        let (movies, report) = crate::movielens::read_movies(&dir.path().join("movies.dat")).unwrap();
        assert_eq!((movies.len(), report.skipped), (600, 0));
    }

    #[test]
    fn rejects_impossible_parameters() {
        for cfg in [
            GenerateConfig { ratings: 100, users: 10, ..small() },
            GenerateConfig { movies: 10, ..small() },
            GenerateConfig { ratings: 120 * 300 + 1, ..small() },
            GenerateConfig { end: small().start + DAY, ..small() },
        ] {
            assert!(matches!(cfg.validate(), Err(GenerateError::Invalid(_))), "{cfg:?}");
        }
    }
}
