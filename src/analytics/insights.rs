//! The insights report: the analysts' questions answered from committed state, with the tests of
//! [`crate::analytics::stats`] and a conclusion written from the numbers.
//!
//! Inputs are the engagement aggregates the processor keeps in event time (mergeable moments of
//! rating values per genre and of closed sessions' span and events) and one point per user with
//! ratings (their count, mean and days since the last activity at the watermark). Definitions,
//! exactly as computed here (also in docs/insights.md):
//!
//! - `action_vs_drama.ratings`: Welch's t-test of the rating values of movies whose genres include
//!   Action against those whose genres include Drama (a movie with both is in both samples).
//! - `action_vs_drama.session_minutes`: Welch's t-test of closed sessions' span in minutes
//!   ((last event − first event) / 60) for sessions that touched Action and not Drama against
//!   sessions that touched Drama and not Action, "touched" meaning a movie of the genre was rated
//!   or tagged in the session. MovieLens has no play durations: a session's span is the proxy
//!   for watch time.
//! - `anova_genres.ratings`: one-way ANOVA of rating values across genres (each rating in each of
//!   its movie's genres; movies with no genres listed are in none).
//! - `correlations.rating_vs_frequency`: over users with ratings, Pearson and Spearman of (mean
//!   rating, number of ratings).
//! - `correlations.recency_vs_rating`: over the same users, (days since the last activity, rating
//!   or tag, at the watermark; mean rating).
//! - `weekend_vs_weekday.session_minutes` / `.session_events`: Welch's t-tests of closed sessions
//!   starting on Saturday or Sunday (UTC) against those starting Monday to Friday.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses `crate::analytics::stats`, `crate::core::engagement`.

use serde::Serialize;

use crate::analytics::stats::{
    anova, chi_square, pearson, spearman, welch, Anova, ChiSquare, CoMoments, Correlation, Moments, TTest,
};
use crate::core::calendar::{month_index, DAY};
use crate::core::engagement::Engagement;
use crate::core::features::{Activity, FirstSession};

/// Days after the end of the first session within which a user counts as returned.
pub const RETURN_DAYS: i64 = 30;
/// The calendar month after signup whose activity `genre_retention` reports (0: the signup
/// month).
pub const RETENTION_MONTH: i32 = 3;
/// Movies need this many ratings for `highly_rated_engagement.movies`.
pub const MIN_MOVIE_RATINGS: u64 = 20;
/// Genres need this many users for `genre_retention`.
pub const MIN_GENRE_USERS: u64 = 30;
/// A first session "rated highly": its mean rating is at least this.
pub const HIGH_RATING: f64 = 4.0;

/// One user's first session, once closed and if it had ratings: the return and genre questions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserFirst {
    /// The user's first event.
    pub first_seen: i64,
    /// The first session's last event.
    pub end: i64,
    /// Its mean rating.
    pub mean_rating: f64,
    /// Its most-rated genre (bit), ties to the alphabetically first.
    pub top_genre: Option<u16>,
    /// The earliest event after it.
    pub returned_at: Option<i64>,
    /// Active calendar months since signup (bit k: month k after the signup month).
    pub active_months: u64,
}

impl UserFirst {
    /// Whether the user came back within [`RETURN_DAYS`] days after the first session; `None`
    /// while those days have not all passed by the watermark `wm`.
    pub fn returned(&self, wm: i64) -> Option<bool> {
        let by = self.end + RETURN_DAYS * DAY;
        (by <= wm).then(|| self.returned_at.is_some_and(|r| r <= by))
    }
}

/// The first-session point of a user whose first session has closed with ratings.
pub fn user_first(a: &Activity) -> Option<UserFirst> {
    match a.first_session {
        FirstSession::Closed { end, mean_rating: Some(mean_rating), top_genre } => Some(UserFirst {
            first_seen: a.first_seen,
            end,
            mean_rating,
            top_genre,
            returned_at: a.returned_at,
            active_months: a.active_months,
        }),
        _ => None,
    }
}

/// One movie's ratings: their number and mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoviePoint {
    /// Ratings.
    pub ratings: u64,
    /// Mean rating.
    pub mean: f64,
}

/// One user's point for the correlations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserPoint {
    /// Ratings (at least one).
    pub ratings: u64,
    /// Mean rating.
    pub rating_mean: f64,
    /// Days from the last activity to the watermark.
    pub recency_days: f64,
}

/// A two-group comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The groups, in the order of the test's `n` and `mean`.
    pub groups: [String; 2],
    /// Welch's t-test of the first against the second.
    #[serde(flatten)]
    pub test: TTest,
    /// The result in words, written from the numbers.
    pub conclusion: String,
}

/// The ANOVA with its conclusion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnovaResult {
    /// The groups (genres), in bit order, with their sizes and means.
    pub genres: Vec<GroupMean>,
    /// The test.
    #[serde(flatten)]
    pub test: Anova,
    /// The result in words.
    pub conclusion: String,
}

/// One group's size and mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupMean {
    /// Its name.
    pub name: String,
    /// Values.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (`None` below two values).
    pub sd: Option<f64>,
}

/// Pearson's and Spearman's coefficients of one pair of user-level variables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrelationPair {
    /// The variables: (x, y).
    pub variables: [String; 2],
    /// Pearson's r (JSON: `n`, `r`, `df`, `p`).
    #[serde(serialize_with = "pearson_json")]
    pub pearson: Correlation,
    /// Spearman's rho (JSON: `n`, `rho`, `df`, `p`).
    #[serde(serialize_with = "spearman_json")]
    pub spearman: Correlation,
    /// The result in words.
    pub conclusion: String,
}

fn correlation_json<S: serde::Serializer>(c: &Correlation, key: &str, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(4))?;
    m.serialize_entry("n", &c.n)?;
    m.serialize_entry(key, &c.r)?;
    m.serialize_entry("df", &c.n.saturating_sub(2))?;
    m.serialize_entry("p", &c.p)?;
    m.end()
}

fn pearson_json<S: serde::Serializer>(c: &Correlation, s: S) -> Result<S::Ok, S::Error> {
    correlation_json(c, "r", s)
}

fn spearman_json<S: serde::Serializer>(c: &Correlation, s: S) -> Result<S::Ok, S::Error> {
    correlation_json(c, "rho", s)
}

/// Action against Drama.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionVsDrama {
    /// Rating values.
    pub ratings: Option<Comparison>,
    /// Session span in minutes.
    pub session_minutes: Option<Comparison>,
}

/// The ANOVA section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnovaGenres {
    /// Rating values across genres.
    pub ratings: Option<AnovaResult>,
}

/// The correlations section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correlations {
    /// (mean rating, number of ratings) over users.
    pub rating_vs_frequency: Option<CorrelationPair>,
    /// (days since last activity, mean rating) over users.
    pub recency_vs_rating: Option<CorrelationPair>,
}

/// Weekend against weekday sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeekendVsWeekday {
    /// Span in minutes.
    pub session_minutes: Option<Comparison>,
    /// Events per session.
    pub session_events: Option<Comparison>,
}

/// Do highly rated titles and first sessions go with more engagement?
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HighlyRatedEngagement {
    /// Over movies with at least [`MIN_MOVIE_RATINGS`] ratings: (mean rating, number of ratings).
    pub movies: Option<CorrelationPair>,
    /// Returned within [`RETURN_DAYS`] days after the first session (0/1), users whose first
    /// session's mean rating is at least [`HIGH_RATING`] against the rest.
    pub first_session_rating: Option<Comparison>,
}

/// One genre's row of `genre_retention`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenreRetentionRow {
    /// The genre most rated in the users' first sessions.
    pub genre: String,
    /// Users whose first session's end is at least [`RETURN_DAYS`] days before the watermark.
    pub users: u64,
    /// Of them, those back within [`RETURN_DAYS`] days.
    pub returned: u64,
    /// `returned / users`.
    pub returned_share: f64,
    /// Users whose month [`RETENTION_MONTH`] after signup is over by the watermark.
    pub month3_users: u64,
    /// Of them, those active in that month.
    pub month3_active: u64,
    /// `month3_active / month3_users` (`None` without such users).
    pub month3_share: Option<f64>,
}

/// Which genres retain users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenreRetention {
    /// Genres with at least [`MIN_GENRE_USERS`] users, in genre order.
    pub genres: Vec<GenreRetentionRow>,
    /// Chi-square test of independence of (genre × returned) over those genres.
    pub test: Option<ChiSquare>,
    /// The result in words.
    pub conclusion: Option<String>,
}

/// One calendar week with activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Week {
    /// Its Monday, `YYYY-MM-DD` (UTC).
    pub start: String,
    /// Its Monday, days since 1970-01-01 (not in the JSON).
    #[serde(skip)]
    pub day: i64,
    /// Ratings applied in it.
    pub ratings: u64,
    /// Closed sessions that started in it.
    pub sessions: u64,
}

/// Mean, median and largest value of a count over the active weeks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerWeek {
    /// Mean.
    pub mean: f64,
    /// Median (the mean of the two middle values for an even number of weeks).
    pub median: f64,
    /// Largest.
    pub max: u64,
}

impl PerWeek {
    fn of(mut v: Vec<u64>) -> Option<PerWeek> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0 };
        let mean = v.iter().sum::<u64>() as f64 / n as f64;
        Some(PerWeek { mean, median, max: v[n - 1] })
    }
}

/// Ratings and sessions per active week: weeks (UTC, Monday to Sunday) with at least one rating
/// or one closed session starting in them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeeklyActivity {
    /// Weeks with activity.
    pub active_weeks: u64,
    /// Ratings per active week.
    pub ratings: Option<PerWeek>,
    /// Closed sessions (by their start) per active week.
    pub sessions: Option<PerWeek>,
    /// Every active week, in time order.
    pub weeks: Vec<Week>,
}

fn weekly(e: &Engagement) -> WeeklyActivity {
    let weeks: Vec<Week> = e
        .weeks
        .iter()
        .filter(|(_, (r, s))| r + s > 0)
        .map(|(&w, &(ratings, sessions))| Week {
            start: crate::core::calendar::day_label(crate::core::engagement::week_start_day(w)),
            day: crate::core::engagement::week_start_day(w),
            ratings,
            sessions,
        })
        .collect();
    WeeklyActivity {
        active_weeks: weeks.len() as u64,
        ratings: PerWeek::of(weeks.iter().map(|w| w.ratings).collect()),
        sessions: PerWeek::of(weeks.iter().map(|w| w.sessions).collect()),
        weeks,
    }
}

/// Users grouped by one variable, with the mean of their mean ratings: the correlations' charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// The range of the variable, e.g. "4–7".
    pub label: String,
    /// Users in it.
    pub users: u64,
    /// The mean of their mean ratings.
    pub mean_rating: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The earliest event (seconds since the epoch): the data span is `data_from` to `as_of`.
    pub data_from: Option<i64>,
    /// The committed watermark the report describes (seconds since the epoch).
    pub as_of: Option<i64>,
    /// Users with ratings (the correlations' population).
    pub users_with_ratings: u64,
    /// Ratings by value, 0.5 to 5.0.
    pub rating_distribution: Vec<(f32, u64)>,
    /// Events by UTC hour of day.
    pub activity_by_hour: [u64; 24],
    /// Events by UTC weekday, Monday first.
    pub activity_by_weekday: [u64; 7],
    /// Ratings and sessions per active week.
    pub weekly_activity: WeeklyActivity,
    /// Action against Drama.
    pub action_vs_drama: ActionVsDrama,
    /// Ratings across genres.
    pub anova_genres: AnovaGenres,
    /// User-level correlations.
    pub correlations: Correlations,
    /// Weekend against weekday sessions.
    pub weekend_vs_weekday: WeekendVsWeekday,
    /// Highly rated titles and first sessions against engagement.
    pub highly_rated_engagement: HighlyRatedEngagement,
    /// Retention by the genre of the first session.
    pub genre_retention: GenreRetention,
    /// Users by number of ratings (1, 2–3, 4–7, … doubling), with their mean rating.
    pub rating_by_frequency: Vec<Bin>,
    /// Users by days since the last activity, with their mean rating.
    pub rating_by_recency: Vec<Bin>,
}

/// Users in the ranges of `x` that `edges` bound (`[edges[i], edges[i + 1])`, the last open),
/// with the mean of `y`; empty ranges are left out.
fn bins(xs: &[f64], ys: &[f64], edges: &[f64], label: impl Fn(usize) -> String) -> Vec<Bin> {
    let mut sums = vec![(0u64, 0.0f64); edges.len()];
    for (x, y) in xs.iter().zip(ys) {
        let i = edges.partition_point(|e| e <= x).max(1) - 1;
        sums[i].0 += 1;
        sums[i].1 += y;
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(i, (n, sum))| Bin { label: label(i), users: *n, mean_rating: sum / *n as f64 })
        .collect()
}

/// One user's point, from their activity at watermark `as_of` (`None` without ratings).
pub fn user_point(a: &Activity, as_of: i64) -> Option<UserPoint> {
    if a.ratings == 0 {
        return None;
    }
    // Ratings are half stars, so their sum is a multiple of 0.5 that the running mean gives back
    // exactly; sum / n is then the exact mean, and users with equal means tie in Spearman's ranks
    // (a running mean can differ from it in the last bit).
    let n = a.ratings as f64;
    let rating_mean = (a.rating_mean * n * 2.0).round() / 2.0 / n;
    let recency_days = crate::core::features::recency_days(as_of, a.last);
    Some(UserPoint { ratings: a.ratings, rating_mean, recency_days })
}

/// "p < 0.001" or "p = 0.034".
fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

fn verdict(p: f64) -> &'static str {
    if p < 0.05 {
        "significant at the 5 % level"
    } else {
        "not significant at the 5 % level"
    }
}

/// Welch's test of `a` against `b` with its conclusion, e.g. "Action ratings are 4.1 % lower
/// than Drama ratings (3.41 vs 3.56); Welch t = −5.10, p < 0.001: significant at the 5 % level."
fn compare(what: &str, names: [&str; 2], a: &Moments, b: &Moments) -> Option<Comparison> {
    let test = welch(a, b)?;
    let how = match test.rel_diff {
        Some(r) if r != 0.0 => {
            format!("{:.1} % {} than", (r * 100.0).abs(), if r > 0.0 { "higher" } else { "lower" })
        }
        Some(_) => "the same as".to_string(),
        None => format!("{:+.3} against", test.diff),
    };
    let conclusion = format!(
        "{} {what} are {how} {} {what} ({:.3} vs {:.3}, n = {} and {}); Welch t = {:.2}, {}: {}.",
        names[0],
        names[1],
        test.mean_a,
        test.mean_b,
        test.n_a,
        test.n_b,
        test.t,
        p_text(test.p),
        verdict(test.p)
    );
    Some(Comparison { groups: names.map(str::to_string), test, conclusion })
}

fn strength(r: f64) -> &'static str {
    match r.abs() {
        a if a < 0.1 => "negligible",
        a if a < 0.3 => "weak",
        a if a < 0.5 => "moderate",
        _ => "strong",
    }
}

fn correlate(unit: &str, names: [&str; 2], xs: &[f64], ys: &[f64]) -> Option<CorrelationPair> {
    let mut c = CoMoments::default();
    for (x, y) in xs.iter().zip(ys) {
        c.push(*x, *y);
    }
    let (p, s) = (pearson(&c)?, spearman(xs, ys)?);
    let direction = if s.r > 0.0 { "positive" } else { "negative" };
    let conclusion = format!(
        "Across {} {unit}, {} and {} have a {} {direction} rank correlation (Spearman rho = {:.3}, {}; Pearson r = {:.3}, {}): {}.",
        s.n,
        names[0],
        names[1],
        strength(s.r),
        s.r,
        p_text(s.p),
        p.r,
        p_text(p.p),
        verdict(s.p)
    );
    Some(CorrelationPair { variables: names.map(str::to_string), pearson: p, spearman: s, conclusion })
}

/// The return-rate comparison of first sessions rated highly against the rest.
fn first_session_rating(firsts: &[UserFirst], wm: i64) -> Option<Comparison> {
    let (mut high, mut low) = (Moments::default(), Moments::default());
    for (f, back) in firsts.iter().filter_map(|f| Some((f, f.returned(wm)?))) {
        let m = if f.mean_rating >= HIGH_RATING { &mut high } else { &mut low };
        m.push(f64::from(u8::from(back)));
    }
    let test = welch(&high, &low)?;
    let conclusion = format!(
        "Users whose first session averaged ≥ {HIGH_RATING} stars returned within {RETURN_DAYS} days {:.1} % of the time, against {:.1} % for the others (n = {} and {}); difference {:+.1} points, Welch t = {:.2}, {}: {}.",
        test.mean_a * 100.0,
        test.mean_b * 100.0,
        test.n_a,
        test.n_b,
        test.diff * 100.0,
        test.t,
        p_text(test.p),
        verdict(test.p)
    );
    Some(Comparison { groups: ["first session ≥ 4".into(), "first session < 4".into()], test, conclusion })
}

/// Retention by the most-rated genre of the first session.
fn genre_retention(firsts: &[UserFirst], genres: &[String], wm: i64) -> GenreRetention {
    let mut rows: Vec<GenreRetentionRow> = genres
        .iter()
        .map(|g| GenreRetentionRow {
            genre: g.clone(),
            users: 0,
            returned: 0,
            returned_share: 0.0,
            month3_users: 0,
            month3_active: 0,
            month3_share: None,
        })
        .collect();
    let wm_month = month_index(wm);
    for f in firsts {
        let Some(row) = f.top_genre.and_then(|g| rows.get_mut(usize::from(g))) else { continue };
        if let Some(back) = f.returned(wm) {
            row.users += 1;
            row.returned += u64::from(back);
        }
        if wm_month > month_index(f.first_seen) + RETENTION_MONTH {
            row.month3_users += 1;
            row.month3_active += (f.active_months >> RETENTION_MONTH) & 1;
        }
    }
    rows.retain(|r| r.users >= MIN_GENRE_USERS);
    for r in &mut rows {
        r.returned_share = r.returned as f64 / r.users as f64;
        r.month3_share = (r.month3_users > 0).then(|| r.month3_active as f64 / r.month3_users as f64);
    }
    let table: Vec<Vec<u64>> = rows.iter().map(|r| vec![r.returned, r.users - r.returned]).collect();
    let test = chi_square(&table);
    let conclusion = test.map(|t| {
        let lo = rows.iter().min_by(|a, b| a.returned_share.total_cmp(&b.returned_share)).expect("two rows");
        let hi = rows.iter().rev().max_by(|a, b| a.returned_share.total_cmp(&b.returned_share)).expect("two rows");
        format!(
            "The {RETURN_DAYS}-day return rate by first-session genre ranges from {:.1} % ({}) to {:.1} % ({}) across {} genres; chi-square = {:.2}, df = {}, {}, Cramér's V = {:.3}: {}.",
            lo.returned_share * 100.0,
            lo.genre,
            hi.returned_share * 100.0,
            hi.genre,
            rows.len(),
            t.chi2,
            t.df,
            p_text(t.p),
            t.cramers_v,
            verdict(t.p)
        )
    });
    GenreRetention { genres: rows, test, conclusion }
}

/// The tests that come from the event-time summaries alone, O(genres) with no pass over users:
/// Action vs Drama, the ANOVA across genres, weekend vs weekday (what the gauges export).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryTests {
    /// Action against Drama.
    pub action_vs_drama: ActionVsDrama,
    /// Ratings across genres.
    pub anova_genres: AnovaGenres,
    /// Weekend against weekday sessions.
    pub weekend_vs_weekday: WeekendVsWeekday,
}

/// [`SummaryTests`] from the engagement aggregates (`genres`: the catalog's names in bit order).
pub fn summary_tests(e: &Engagement, genres: &[String]) -> SummaryTests {
    let genre = |name: &str| {
        genres
            .iter()
            .position(|g| g.eq_ignore_ascii_case(name))
            .and_then(|i| e.rating_moments.get(i).copied())
    };
    let ratings = match (genre("Action"), genre("Drama")) {
        (Some(a), Some(d)) => compare("ratings", ["Action", "Drama"], &a, &d),
        _ => None,
    };
    let [action_only, drama_only] = &e.genre_only_minutes;
    let session_minutes = compare("session minutes", ["Action-only", "Drama-only"], action_only, drama_only);
    let groups: Vec<GroupMean> = genres
        .iter()
        .zip(&e.rating_moments)
        .map(|(name, m)| GroupMean {
            name: name.clone(),
            n: m.n,
            mean: m.mean,
            sd: m.variance().map(f64::sqrt),
        })
        .collect();
    let anova_ratings = anova(&e.rating_moments).map(|test| {
        // The lowest and highest mean, the first in genre order on a tie.
        let present = || groups.iter().filter(|g| g.n > 0);
        let lo = present().min_by(|a, b| a.mean.total_cmp(&b.mean)).expect("two groups");
        let hi = present().rev().max_by(|a, b| a.mean.total_cmp(&b.mean)).expect("two groups");
        let conclusion = format!(
            "Mean ratings differ across {} genres, from {} ({:.3}) to {} ({:.3}); F({}, {}) = {:.2}, {}, η² = {:.4}: {}.",
            test.groups,
            lo.name,
            lo.mean,
            hi.name,
            hi.mean,
            test.df_between,
            test.df_within,
            test.f,
            p_text(test.p),
            test.eta_squared,
            verdict(test.p)
        );
        AnovaResult { genres: groups, test, conclusion }
    });
    let [weekday_minutes, weekend_minutes] = &e.session_minutes;
    let [weekday_events, weekend_events] = &e.session_events;
    SummaryTests {
        action_vs_drama: ActionVsDrama { ratings, session_minutes },
        anova_genres: AnovaGenres { ratings: anova_ratings },
        weekend_vs_weekday: WeekendVsWeekday {
            session_minutes: compare(
                "session minutes",
                ["Weekend", "weekday"],
                weekend_minutes,
                weekday_minutes,
            ),
            session_events: compare(
                "events per session",
                ["Weekend", "weekday"],
                weekend_events,
                weekday_events,
            ),
        },
    }
}

/// The report from the engagement aggregates (`genres`: the catalog's names in bit order), the
/// users' points and first sessions and the movies' ratings, over the data from `data_from` to
/// the watermark `as_of`.
#[allow(clippy::too_many_arguments)]
pub fn report(
    e: &Engagement,
    genres: &[String],
    users: &[UserPoint],
    firsts: &[UserFirst],
    movies: &[MoviePoint],
    data_from: Option<i64>,
    as_of: Option<i64>,
) -> Report {
    let wm = as_of.unwrap_or(i64::MIN / 2);
    let rated: Vec<&MoviePoint> = movies.iter().filter(|m| m.ratings >= MIN_MOVIE_RATINGS).collect();
    let movie_mean: Vec<f64> = rated.iter().map(|m| m.mean).collect();
    let movie_count: Vec<f64> = rated.iter().map(|m| m.ratings as f64).collect();
    let highly_rated_engagement = HighlyRatedEngagement {
        movies: correlate("movies", ["mean rating", "number of ratings"], &movie_mean, &movie_count),
        first_session_rating: first_session_rating(firsts, wm),
    };
    let genre_retention = genre_retention(firsts, genres, wm);
    let summary = summary_tests(e, genres);
    let mean: Vec<f64> = users.iter().map(|u| u.rating_mean).collect();
    let count: Vec<f64> = users.iter().map(|u| u.ratings as f64).collect();
    let recency: Vec<f64> = users.iter().map(|u| u.recency_days).collect();
    let doubling: Vec<f64> = (0..24).map(|k| f64::from(1u32 << k)).collect();
    let rating_by_frequency = bins(&count, &mean, &doubling, |i| match i {
        0 => "1".to_string(),
        i => format!("{}–{}", 1u64 << i, (1u64 << (i + 1)) - 1),
    });
    const RECENCY: [(f64, &str); 7] = [
        (0.0, "< 1"),
        (1.0, "1–7"),
        (7.0, "7–30"),
        (30.0, "30–90"),
        (90.0, "90–365"),
        (365.0, "1–3 years"),
        (1095.0, "> 3 years"),
    ];
    let edges: Vec<f64> = RECENCY.iter().map(|(e, _)| *e).collect();
    let rating_by_recency = bins(&recency, &mean, &edges, |i| RECENCY[i].1.to_string());
    Report {
        data_from,
        as_of,
        users_with_ratings: users.len() as u64,
        rating_distribution: (1..=10u8)
            .map(|i| (f32::from(i) / 2.0, e.ratings_by_value[usize::from(i) - 1]))
            .collect(),
        activity_by_hour: e.events_by_hour,
        activity_by_weekday: e.events_by_weekday,
        weekly_activity: weekly(e),
        action_vs_drama: summary.action_vs_drama,
        anova_genres: summary.anova_genres,
        correlations: Correlations {
            rating_vs_frequency: correlate("users", ["mean rating", "number of ratings"], &mean, &count),
            recency_vs_rating: correlate(
                "users",
                ["days since last activity", "mean rating"],
                &recency,
                &mean,
            ),
        },
        weekend_vs_weekday: summary.weekend_vs_weekday,
        highly_rated_engagement,
        genre_retention,
        rating_by_frequency,
        rating_by_recency,
    }
}

fn section(out: &mut String, title: &str, conclusion: Option<&str>) {
    out.push_str(&format!("\n## {title}\n\n"));
    out.push_str(conclusion.unwrap_or("Not enough data for this test."));
    out.push('\n');
}

fn comparison_table(out: &mut String, c: &Option<Comparison>) {
    if let Some(c) = c {
        out.push_str("\n| group | n | mean |\n|---|---|---|\n");
        for i in 0..2 {
            let (n, mean) = if i == 0 { (c.test.n_a, c.test.mean_a) } else { (c.test.n_b, c.test.mean_b) };
            out.push_str(&format!("| {} | {} | {:.4} |\n", c.groups[i], n, mean));
        }
        out.push_str(&format!(
            "\nDifference {:+.4} ({}), t = {:.4}, df = {:.1}, p = {:.3e}.\n",
            c.test.diff,
            c.test.rel_diff.map_or("—".to_string(), |r| format!("{:+.2} %", r * 100.0)),
            c.test.t,
            c.test.df,
            c.test.p
        ));
    }
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::from("# streamflix insights\n");
    out.push_str(&format!(
        "\nAs of {} (event time), over {} users with ratings. Definitions: docs/insights.md.\n",
        r.as_of.map_or("the start".to_string(), crate::core::calendar::format_datetime),
        r.users_with_ratings
    ));
    let text = |c: &Option<Comparison>| c.as_ref().map(|c| c.conclusion.clone());
    section(&mut out, "Action vs Drama: ratings", text(&r.action_vs_drama.ratings).as_deref());
    comparison_table(&mut out, &r.action_vs_drama.ratings);
    section(
        &mut out,
        "Action vs Drama: session minutes (span of the session, the watch-time proxy)",
        text(&r.action_vs_drama.session_minutes).as_deref(),
    );
    comparison_table(&mut out, &r.action_vs_drama.session_minutes);
    let anova = r.anova_genres.ratings.as_ref();
    section(&mut out, "Ratings across genres (one-way ANOVA)", anova.map(|a| a.conclusion.as_str()));
    if let Some(a) = anova {
        out.push_str("\n| genre | ratings | mean | sd |\n|---|---|---|---|\n");
        for g in &a.genres {
            let sd = g.sd.map_or("—".to_string(), |s| format!("{s:.3}"));
            out.push_str(&format!("| {} | {} | {:.3} | {sd} |\n", g.name, g.n, g.mean));
        }
    }
    for (title, c) in [
        ("Mean rating vs number of ratings (users)", &r.correlations.rating_vs_frequency),
        ("Days since last activity vs mean rating (users)", &r.correlations.recency_vs_rating),
    ] {
        section(&mut out, title, c.as_ref().map(|c| c.conclusion.as_str()));
    }
    section(
        &mut out,
        "Weekend vs weekday: session minutes",
        text(&r.weekend_vs_weekday.session_minutes).as_deref(),
    );
    comparison_table(&mut out, &r.weekend_vs_weekday.session_minutes);
    section(
        &mut out,
        "Weekend vs weekday: events per session",
        text(&r.weekend_vs_weekday.session_events).as_deref(),
    );
    comparison_table(&mut out, &r.weekend_vs_weekday.session_events);
    let h = &r.highly_rated_engagement;
    section(
        &mut out,
        "Highly rated titles: mean rating vs number of ratings (movies with ≥ 20 ratings)",
        h.movies.as_ref().map(|c| c.conclusion.as_str()),
    );
    section(
        &mut out,
        "Highly rated first sessions: return within 30 days",
        text(&h.first_session_rating).as_deref(),
    );
    comparison_table(&mut out, &h.first_session_rating);
    let g = &r.genre_retention;
    section(&mut out, "Retention by the genre of the first session", g.conclusion.as_deref());
    if !g.genres.is_empty() {
        out.push_str("\n| genre | users | returned in 30 days | month-3 users | active in month 3 |\n|---|---|---|---|---|\n");
        for row in &g.genres {
            out.push_str(&format!(
                "| {} | {} | {:.1} % | {} | {} |\n",
                row.genre,
                row.users,
                row.returned_share * 100.0,
                row.month3_users,
                row.month3_share.map_or("—".to_string(), |s| format!("{:.1} %", s * 100.0))
            ));
        }
    }
    let w = &r.weekly_activity;
    out.push_str("\n## Ratings and sessions per active week\n\n");
    match (&w.ratings, &w.sessions) {
        (Some(rt), Some(st)) => out.push_str(&format!(
            "Over {} active weeks (UTC, Monday to Sunday): ratings per week mean {:.1}, median {:.1}, most {}; closed sessions per week mean {:.1}, median {:.1}, most {}.\n",
            w.active_weeks, rt.mean, rt.median, rt.max, st.mean, st.median, st.max
        )),
        _ => out.push_str("No activity yet.\n"),
    }
    out.push_str("\n## Ratings by value\n\n| rating | ratings |\n|---|---|\n");
    for (v, n) in &r.rating_distribution {
        out.push_str(&format!("| {v:.1} | {n} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conclusions are written from the numbers: the direction, the size and the verdict
    /// follow the data given.
    #[test]
    fn conclusions_follow_the_numbers() {
        let high = Moments::of((0..200).map(|i| 4.0 + f64::from(i % 5) * 0.1));
        let low = Moments::of((0..200).map(|i| 3.0 + f64::from(i % 5) * 0.1));
        let c = compare("ratings", ["A", "B"], &high, &low).unwrap();
        assert!(
            c.conclusion
                .starts_with("A ratings are 31.3 % higher than B ratings (4.200 vs 3.200, n = 200 and 200)"),
            "{}",
            c.conclusion
        );
        assert!(c.conclusion.contains("p < 0.001: significant"), "{}", c.conclusion);
        let c = compare("ratings", ["B", "A"], &low, &high).unwrap();
        assert!(c.conclusion.contains("lower than"), "{}", c.conclusion);
        let same = Moments::of((0..200).map(|i| 3.001 + f64::from((i + 2) % 5) * 0.1));
        let c = compare("ratings", ["B", "C"], &low, &same).unwrap();
        assert!(c.conclusion.contains(": not significant"), "{}", c.conclusion);
        assert!(compare("ratings", ["A", "B"], &Moments::of([1.0]), &low).is_none());
    }

    #[test]
    fn an_empty_state_reports_without_tests() {
        let r = report(&Engagement::default(), &[], &[], &[], &[], None, None);
        assert!(r.action_vs_drama.ratings.is_none() && r.anova_genres.ratings.is_none());
        assert!(r.correlations.rating_vs_frequency.is_none());
        assert!(markdown(&r).contains("Not enough data"));
    }
}
