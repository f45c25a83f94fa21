//! The insights report as one self-contained HTML page: inline SVG charts, one stylesheet, no
//! scripts and nothing fetched, so it opens from a file, a mail attachment or `GET /report`
//! alike. Each chart has labelled axes with units, and under it the test's numbers and the
//! conclusion [`crate::analytics::insights`] wrote from them; the data span and the watermark
//! head the page.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses `crate::analytics::insights`, `crate::core::calendar`.

use std::fmt::Write;

use crate::analytics::insights::{AnovaResult, Bin, Comparison, CorrelationPair, GenreRetention, Report};
use crate::core::calendar::format_datetime;

/// Chart width in pixels (the page scales it down on narrow screens).
const WIDTH: f64 = 640.0;
/// z for a two-sided 95 % interval (normal approximation).
const Z95: f64 = 1.959_963_984_540_054;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#1d2330;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin:2em 0 .4em;border-top:1px solid #dde2ea;padding-top:1em}\
.span{color:#4a5568}.test{font-family:ui-monospace,monospace;font-size:.85em;color:#4a5568;margin:.3em 0}\
.conclusion{margin:.3em 0 0}svg{max-width:100%;height:auto;display:block}\
svg text{font-family:system-ui,sans-serif;font-size:12px;fill:#2d3748}svg .axis{stroke:#4a5568;stroke-width:1}\
svg .grid{stroke:#e2e8f0;stroke-width:1}svg .bar{fill:#3b6fb6}svg .ci{stroke:#3b6fb6;stroke-width:2}\
svg .dot{fill:#c05621}svg .trend{fill:none;stroke:#3b6fb6;stroke-width:1.2}svg .title{font-weight:600}footer{margin-top:3em;font-size:.8em;color:#718096}";

/// `&`, `<`, `>` and quotes escaped for text and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Tick values covering `[lo, hi]` at a step of 1, 2 or 5 × 10^k, about `target` of them.
fn ticks(lo: f64, hi: f64, target: f64) -> Vec<f64> {
    let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    (0..=((last - first) as i64).max(1)).map(|i| (first + i as f64) * step).collect()
}

/// A tick label: thousands as k, millions as M, otherwise as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if v.abs() >= 1e6 && step >= 1e5 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v.abs() >= 1e4 && step >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else {
        let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
        trim(format!("{v:.decimals$}"))
    }
}

/// An `<svg>` start tag of the page's width and `height`, labelled for screen readers.
fn svg_open(height: f64, label: &str) -> String {
    format!(
        r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="{}">"#,
        esc(label)
    )
}

/// A count axis from 0 to at least `max` (about `target` ticks) drawn as horizontal grid lines
/// with their labels across the plot area; returns the value → y mapping.
fn count_grid(
    s: &mut String,
    max: f64,
    target: f64,
    left: f64,
    top: f64,
    plot_w: f64,
    plot_h: f64,
) -> impl Fn(f64) -> f64 {
    let t = ticks(0.0, max.max(1.0), target);
    let top_value = *t.last().expect("ticks");
    let step = t.get(1).map_or(1.0, |s| s - t[0]);
    let y = move |v: f64| top + plot_h - v / top_value * plot_h;
    for v in &t {
        let (gy, label) = (y(*v), tick_label(*v, step));
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left}" x2="{x2}" y1="{gy:.1}" y2="{gy:.1}"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = left + plot_w,
            tx = left - 6.0,
            ty = gy + 4.0,
        );
    }
    y
}

/// A vertical bar chart of counts (the value axis starts at 0).
fn bars(categories: &[String], values: &[f64], x_label: &str, y_label: &str) -> String {
    let (left, right, top, bottom) = (64.0, 16.0, 16.0, 52.0);
    let height = 260.0;
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let max = values.iter().copied().fold(0.0, f64::max);
    let mut s = svg_open(height, &format!("{y_label} by {x_label}"));
    let y = count_grid(&mut s, max, 5.0, left, top, plot_w, plot_h);
    let slot = plot_w / categories.len().max(1) as f64;
    let every = (categories.len() as f64 / 12.0).ceil().max(1.0) as usize;
    for (i, (c, v)) in categories.iter().zip(values).enumerate() {
        let x = left + slot * i as f64;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
            x + slot * 0.15,
            y(*v),
            slot * 0.7,
            (top + plot_h - y(*v)).max(0.0),
            esc(c),
            v
        );
        if i % every == 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + slot / 2.0,
                top + plot_h + 16.0,
                esc(c)
            );
        }
    }
    axes(&mut s, left, top, plot_w, plot_h, height, x_label, y_label);
    s.push_str("</svg>");
    s
}

/// A line over time: `points` are (day number, value) in time order; the x ticks are dates.
fn line(points: &[(i64, f64)], x_label: &str, y_label: &str) -> String {
    let (left, right, top, bottom) = (64.0, 24.0, 16.0, 52.0);
    let height = 240.0;
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let (d0, d1) = (
        points.first().map_or(0, |p| p.0),
        points.last().map_or(1, |p| p.0).max(points.first().map_or(0, |p| p.0) + 1),
    );
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let x = |d: i64| left + (d - d0) as f64 / (d1 - d0) as f64 * plot_w;
    let mut s = svg_open(height, &format!("{y_label} over {x_label}"));
    let y = count_grid(&mut s, max, 4.0, left, top, plot_w, plot_h);
    for i in 0..=4 {
        let d = d0 + (d1 - d0) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            x(d),
            top + plot_h + 16.0,
            crate::core::calendar::day_label(d)
        );
    }
    let path: Vec<String> = points.iter().map(|&(d, v)| format!("{:.1},{:.1}", x(d), y(v))).collect();
    let _ = write!(s, r#"<polyline class="trend" points="{}"/>"#, path.join(" "));
    axes(&mut s, left, top, plot_w, plot_h, height, x_label, y_label);
    s.push_str("</svg>");
    s
}

/// The two axis lines and their titles (the y title rotated).
#[allow(clippy::too_many_arguments)]
fn axes(s: &mut String, left: f64, top: f64, plot_w: f64, plot_h: f64, height: f64, x: &str, y: &str) {
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{0}"/><line class="axis" x1="{left}" x2="{1}" y1="{0}" y2="{0}"/>"#,
        top + plot_h,
        left + plot_w
    );
    let _ = write!(
        s,
        r#"<text class="title" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        height - 8.0,
        esc(x)
    );
    let _ = write!(
        s,
        r#"<text class="title" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        esc(y)
    );
}

/// One row of a dot chart: a label, a value and its interval (`None`: no interval).
struct Row {
    label: String,
    value: f64,
    interval: Option<(f64, f64)>,
}

/// The mean and its 95 % interval (normal approximation), if the spread is known.
fn mean_row(label: String, n: u64, mean: f64, sd: Option<f64>) -> Row {
    let interval = sd.filter(|_| n > 1).map(|sd| {
        let h = Z95 * sd / (n as f64).sqrt();
        (mean - h, mean + h)
    });
    Row { label, value: mean, interval }
}

/// A horizontal dot chart: one row per category, the value as a dot and its interval as a line;
/// the value axis spans the data (it need not start at 0: the rows are compared by position).
fn dots(rows: &[Row], x_label: &str, y_label: &str) -> String {
    let (left, right, top, bottom) = (200.0, 24.0, 12.0, 52.0);
    let row_h = 24.0;
    let plot_h = row_h * rows.len().max(1) as f64;
    let height = top + plot_h + bottom;
    let plot_w = WIDTH - left - right;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for r in rows {
        let (a, b) = r.interval.unwrap_or((r.value, r.value));
        lo = lo.min(a.min(r.value));
        hi = hi.max(b.max(r.value));
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(1e-9);
    let t = ticks(lo - pad, hi + pad, 5.0);
    let (t0, t1) = (t[0], *t.last().expect("ticks"));
    let step = t.get(1).map_or(1.0, |s| s - t[0]);
    let x = |v: f64| left + (v - t0) / (t1 - t0) * plot_w;
    let mut s = svg_open(height, &format!("{x_label} by {y_label}"));
    for v in &t {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"#,
            x(*v),
            top + plot_h,
            top + plot_h + 16.0,
            tick_label(*v, step)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let cy = top + row_h * (i as f64 + 0.5);
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            cy + 4.0,
            esc(&r.label)
        );
        if let Some((a, b)) = r.interval {
            let _ = write!(
                s,
                r#"<line class="ci" x1="{:.1}" x2="{:.1}" y1="{cy:.1}" y2="{cy:.1}"/>"#,
                x(a),
                x(b)
            );
        }
        let tip = match r.interval {
            Some((a, b)) => format!("{}: {:.4} (95 % CI {:.4} to {:.4})", r.label, r.value, a, b),
            None => format!("{}: {:.4}", r.label, r.value),
        };
        let _ = write!(
            s,
            r#"<circle class="dot" cx="{:.1}" cy="{cy:.1}" r="5"><title>{}</title></circle>"#,
            x(r.value),
            esc(&tip)
        );
    }
    axes(&mut s, left, top, plot_w, plot_h, height, x_label, y_label);
    s.push_str("</svg>");
    s
}

fn p_value(p: f64) -> String {
    if p == 0.0 {
        "p < 1e-300".to_string()
    } else {
        format!("p = {p:.3e}")
    }
}

fn section(
    out: &mut String,
    title: &str,
    chart: Option<String>,
    test: Option<String>,
    conclusion: Option<&str>,
) {
    let _ = write!(out, "<section><h2>{}</h2>", esc(title));
    match chart {
        Some(c) => {
            out.push_str(&c);
            if let Some(t) = test {
                let _ = write!(out, r#"<p class="test">{}</p>"#, esc(&t));
            }
            if let Some(text) = conclusion {
                let _ = write!(out, r#"<p class="conclusion">{}</p>"#, esc(text));
            }
        }
        None => out.push_str("<p>Not enough data for this test yet.</p>"),
    }
    out.push_str("</section>");
}

fn comparison(out: &mut String, title: &str, c: &Option<Comparison>, value: &str) {
    let chart = c.as_ref().map(|c| {
        let t = &c.test;
        let rows = [
            mean_row(format!("{} (n = {})", c.groups[0], t.n_a), t.n_a, t.mean_a, Some(t.sd_a)),
            mean_row(format!("{} (n = {})", c.groups[1], t.n_b), t.n_b, t.mean_b, Some(t.sd_b)),
        ];
        dots(&rows, &format!("{value}: mean and 95 % CI"), "group")
    });
    let test = c.as_ref().map(|c| {
        let t = &c.test;
        format!(
            "Welch's t-test: t = {:.4}, df = {:.1}, {}; difference {:+.4}{}",
            t.t,
            t.df,
            p_value(t.p),
            t.diff,
            t.rel_diff.map_or(String::new(), |r| format!(" ({:+.2} %)", r * 100.0))
        )
    });
    section(out, title, chart, test, c.as_ref().map(|c| c.conclusion.as_str()));
}

fn anova(out: &mut String, a: &Option<AnovaResult>) {
    let chart = a.as_ref().map(|a| {
        let rows: Vec<Row> = a
            .genres
            .iter()
            .filter(|g| g.n > 0)
            .map(|g| mean_row(g.name.clone(), g.n, g.mean, g.sd))
            .collect();
        dots(&rows, "rating (stars): mean and 95 % CI", "genre")
    });
    let test = a.as_ref().map(|a| {
        let t = &a.test;
        format!(
            "One-way ANOVA: F = {:.4}, df = ({}, {}), {}; η² = {:.5}; {} ratings in {} genres",
            t.f,
            t.df_between,
            t.df_within,
            p_value(t.p),
            t.eta_squared,
            t.n,
            t.groups
        )
    });
    section(out, "Ratings across genres", chart, test, a.as_ref().map(|a| a.conclusion.as_str()));
}

fn correlation(out: &mut String, title: &str, c: &Option<CorrelationPair>, bins: &[Bin], axis: &str) {
    let chart = (c.is_some() && !bins.is_empty()).then(|| {
        let rows: Vec<Row> = bins
            .iter()
            .map(|b| Row {
                label: format!("{} ({} users)", b.label, b.users),
                value: b.mean_rating,
                interval: None,
            })
            .collect();
        dots(&rows, "users' mean rating (stars), averaged over the group", axis)
    });
    let test = c.as_ref().map(|c| {
        format!(
            "Pearson r = {:.4} ({}), Spearman rho = {:.4} ({}); n = {} users, df = {}",
            c.pearson.r,
            p_value(c.pearson.p),
            c.spearman.r,
            p_value(c.spearman.p),
            c.spearman.n,
            c.spearman.n.saturating_sub(2)
        )
    });
    section(out, title, chart, test, c.as_ref().map(|c| c.conclusion.as_str()));
}

fn retention(out: &mut String, g: &GenreRetention) {
    let chart = (g.test.is_some() && !g.genres.is_empty()).then(|| {
        let rows: Vec<Row> = g
            .genres
            .iter()
            .map(|r| {
                let p = r.returned_share;
                let h = Z95 * (p * (1.0 - p) / r.users as f64).sqrt();
                Row {
                    label: format!("{} (n = {})", r.genre, r.users),
                    value: p * 100.0,
                    interval: Some(((p - h) * 100.0, (p + h) * 100.0)),
                }
            })
            .collect();
        dots(&rows, "returned within 30 days (% of users), 95 % CI", "genre of the first session")
    });
    let test = g.test.map(|t| {
        format!(
            "Chi-square test of independence: chi² = {:.4}, df = {}, {}; Cramér's V = {:.4}",
            t.chi2,
            t.df,
            p_value(t.p),
            t.cramers_v
        )
    });
    let month3: Vec<String> = g
        .genres
        .iter()
        .filter_map(|r| {
            r.month3_share.map(|s| format!("{} {:.1} % of {}", r.genre, s * 100.0, r.month3_users))
        })
        .collect();
    section(out, "Retention by the genre of the first session", chart, test, g.conclusion.as_deref());
    if !month3.is_empty() {
        let _ = write!(
            out,
            r#"<p class="test">Active in month 3 after signup: {}.</p>"#,
            esc(&month3.join("; "))
        );
    }
}

/// The report as one HTML page.
pub fn html(r: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>streamflix insights</title><style>{STYLE}</style></head><body>"#
    );
    out.push_str("<header><h1>streamflix insights</h1>");
    let when = |t: Option<i64>| t.map_or("—".to_string(), |t| format!("{} UTC", format_datetime(t)));
    let _ = write!(
        out,
        r#"<p class="span">Data from {} to the watermark {} (event time), {} users with ratings. Every number is computed from the committed state; definitions are in docs/insights.md. Intervals are 95 % normal-approximation confidence intervals of the mean.</p></header>"#,
        esc(&when(r.data_from)),
        esc(&when(r.as_of)),
        r.users_with_ratings
    );

    let labels: Vec<String> = r.rating_distribution.iter().map(|(v, _)| format!("{v:.1}")).collect();
    let values: Vec<f64> = r.rating_distribution.iter().map(|(_, n)| *n as f64).collect();
    let total: f64 = values.iter().sum();
    section(
        &mut out,
        "Ratings by value",
        Some(bars(&labels, &values, "rating (stars)", "ratings")),
        Some(format!("{total} ratings")),
        None,
    );
    let hours: Vec<String> = (0..24).map(|h| h.to_string()).collect();
    let by_hour: Vec<f64> = r.activity_by_hour.iter().map(|n| *n as f64).collect();
    section(
        &mut out,
        "Activity by hour of day",
        Some(bars(&hours, &by_hour, "hour of day (UTC)", "events (ratings and tags)")),
        None,
        None,
    );
    let days: Vec<String> =
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].iter().map(|d| d.to_string()).collect();
    let by_day: Vec<f64> = r.activity_by_weekday.iter().map(|n| *n as f64).collect();
    section(
        &mut out,
        "Activity by weekday",
        Some(bars(&days, &by_day, "weekday (UTC)", "events (ratings and tags)")),
        None,
        None,
    );

    let w = &r.weekly_activity;
    let ratings = |wk: &crate::analytics::insights::Week| wk.ratings;
    let sessions = |wk: &crate::analytics::insights::Week| wk.sessions;
    for (title, what, per, value) in [
        ("Ratings per active week", "ratings per week", &w.ratings, &ratings as &dyn Fn(&_) -> u64),
        ("Sessions per active week", "sessions per week", &w.sessions, &sessions),
    ] {
        let points: Vec<(i64, f64)> = w.weeks.iter().map(|wk| (wk.day, value(wk) as f64)).collect();
        let test = per.map(|p| {
            format!(
                "{} active weeks (UTC, Monday to Sunday): mean {:.1}, median {:.1}, most {}",
                w.active_weeks, p.mean, p.median, p.max
            )
        });
        let chart = (!points.is_empty()).then(|| line(&points, "week (UTC)", what));
        section(&mut out, title, chart, test, None);
    }
    comparison(&mut out, "Action vs Drama: ratings", &r.action_vs_drama.ratings, "rating (stars)");
    comparison(
        &mut out,
        "Action vs Drama: session span (the watch-time proxy)",
        &r.action_vs_drama.session_minutes,
        "session span (minutes)",
    );
    anova(&mut out, &r.anova_genres.ratings);
    correlation(
        &mut out,
        "Mean rating vs number of ratings (users)",
        &r.correlations.rating_vs_frequency,
        &r.rating_by_frequency,
        "ratings per user",
    );
    correlation(
        &mut out,
        "Days since last activity vs mean rating (users)",
        &r.correlations.recency_vs_rating,
        &r.rating_by_recency,
        "days since last activity",
    );
    let h = &r.highly_rated_engagement;
    let movie_test = h.movies.as_ref().map(|c| {
        format!(
            "Spearman rho = {:.4} ({}), Pearson r = {:.4} ({}); n = {} movies with ≥ 20 ratings",
            c.spearman.r,
            p_value(c.spearman.p),
            c.pearson.r,
            p_value(c.pearson.p),
            c.spearman.n
        )
    });
    let _ = write!(out, "<section><h2>Highly rated titles: mean rating vs number of ratings</h2>");
    match (&movie_test, &h.movies) {
        (Some(t), Some(c)) => {
            let _ = write!(
                out,
                r#"<p class="test">{}</p><p class="conclusion">{}</p>"#,
                esc(t),
                esc(&c.conclusion)
            );
        }
        _ => out.push_str("<p>Not enough data for this test yet.</p>"),
    }
    out.push_str("</section>");
    comparison(
        &mut out,
        "Highly rated first sessions: return within 30 days",
        &h.first_session_rating,
        "returned within 30 days (share of users)",
    );
    retention(&mut out, &r.genre_retention);
    comparison(
        &mut out,
        "Weekend vs weekday: session span",
        &r.weekend_vs_weekday.session_minutes,
        "session span (minutes)",
    );
    comparison(
        &mut out,
        "Weekend vs weekday: events per session",
        &r.weekend_vs_weekday.session_events,
        "events per session",
    );
    out.push_str("<footer>Generated by streamflix from event-time state; the same state gives the same page.</footer></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_at_round_steps() {
        assert_eq!(ticks(0.0, 9.0, 5.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(3.41, 3.58, 5.0);
        assert!((t[0] - 3.4).abs() < 1e-9, "{t:?}");
        assert!(*t.last().unwrap() >= 3.58 && t.len() <= 10, "{t:?}");
        assert_eq!(ticks(0.0, 0.0, 5.0), vec![0.0, 0.2]);
        assert_eq!(tick_label(1_500_000.0, 500_000.0), "1.5M");
        assert_eq!(tick_label(20_000.0, 10_000.0), "20k");
        assert_eq!(tick_label(3.45, 0.05), "3.45");
        assert_eq!(tick_label(4.0, 1.0), "4");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(esc(r#"<a & "b">"#), "&lt;a &amp; &quot;b&quot;&gt;");
        let chart = bars(&["<x>".to_string()], &[3.0], "a & b", "c");
        assert!(chart.contains("&lt;x&gt;") && chart.contains("a &amp; b") && !chart.contains("<x>"));
    }

    #[test]
    fn an_empty_report_is_a_page_without_tests() {
        let r = crate::analytics::insights::report(&Default::default(), &[], &[], &[], &[], None, None);
        let page = html(&r);
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert!(page.contains("Not enough data"));
        assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));
    }
}
