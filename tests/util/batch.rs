//! An independent, straightforward batch computation of what the processor should end with,
//! straight from the MovieLens files: group each user's events, sort them, split sessions at
//! pauses of the gap or more, recount every feature by brute force at the end of the data.
//! It shares no code with the processor (only the documented definitions).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

pub const GAP: i64 = 1800;
pub const CHURN: i64 = 30 * 86_400;
pub const DAY: i64 = 86_400;

struct Ev {
    ts: i64,
    movie: u32,
    rating: Option<f64>,
}

/// Expected final state.
pub struct Expected {
    /// Last event time of the data (the final watermark).
    pub end: i64,
    /// Per user: {"status", "churn_episodes", "features"} as `streamflix dump users` prints.
    pub users: BTreeMap<u32, Value>,
    /// Closed sessions, as the sessions topic / `dump sessions` carry them (without `v`).
    pub sessions: Vec<Value>,
}

pub fn compute(dir: &Path) -> Expected {
    let mut genres_of: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut all_genres = BTreeSet::new();
    let mut r = csv::Reader::from_path(dir.join("movies.csv")).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let g: Vec<String> =
            rec[2].split('|').filter(|g| *g != "(no genres listed)").map(str::to_string).collect();
        all_genres.extend(g.iter().cloned());
        genres_of.insert(rec[0].parse().unwrap(), g);
    }
    let mut by_user: BTreeMap<u32, Vec<Ev>> = BTreeMap::new();
    let mut r = csv::Reader::from_path(dir.join("ratings.csv")).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        by_user.entry(rec[0].parse().unwrap()).or_default().push(Ev {
            ts: rec[3].parse().unwrap(),
            movie: rec[1].parse().unwrap(),
            rating: Some(rec[2].parse().unwrap()),
        });
    }
    if dir.join("tags.csv").exists() {
        let mut r = csv::Reader::from_path(dir.join("tags.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            by_user.entry(rec[0].parse().unwrap()).or_default().push(Ev {
                ts: rec[3].parse().unwrap(),
                movie: rec[1].parse().unwrap(),
                rating: None,
            });
        }
    }
    let end = by_user.values().flatten().map(|e| e.ts).max().unwrap();
    let k = all_genres.len() as f64;
    let mut users = BTreeMap::new();
    let mut sessions = Vec::new();
    for (&u, evs) in &mut by_user {
        evs.sort_by_key(|e| e.ts);
        // Sessions.
        let mut groups: Vec<Vec<&Ev>> = Vec::new();
        for e in evs.iter() {
            match groups.last_mut() {
                Some(g) if e.ts - g.last().unwrap().ts < GAP => g.push(e),
                _ => groups.push(vec![e]),
            }
        }
        let mut closed = 0u64;
        let mut closed_secs = 0i64;
        let mut binges = 0u64;
        for (i, g) in groups.iter().enumerate() {
            let (start, stop) = (g[0].ts, g.last().unwrap().ts);
            if stop + GAP > end {
                continue;
            }
            let rated: Vec<f64> = g.iter().filter_map(|e| e.rating).collect();
            let genres: BTreeSet<&String> = g.iter().flat_map(|e| &genres_of[&e.movie]).collect();
            let binge = g.len() >= 5 && i > 0;
            closed += 1;
            closed_secs += stop - start;
            binges += u64::from(binge);
            sessions.push(json!({
                "session_id": format!("{u}-{start}"), "user_id": u, "start": start, "end": stop,
                "events": g.len(), "ratings": rated.len(), "tags": g.len() - rated.len(),
                "genres": genres, "mean_rating": if rated.is_empty() { Value::Null } else { json!(rated.iter().sum::<f64>() / rated.len() as f64) },
                "binge": binge, "first": i == 0,
            }));
        }
        // Features at the end of the data.
        let last = evs.last().unwrap().ts;
        let first = evs[0].ts;
        let today = end.div_euclid(DAY);
        let window =
            |n: i64| evs.iter().filter(|e| (today - n + 1..=today).contains(&e.ts.div_euclid(DAY))).count();
        let ratings: Vec<f64> = evs.iter().filter_map(|e| e.rating).collect();
        let mean = ratings.iter().sum::<f64>() / ratings.len().max(1) as f64;
        let var = ratings.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / ratings.len().max(1) as f64;
        let mut gc: BTreeMap<String, u64> = BTreeMap::new();
        for e in evs.iter().filter(|e| e.rating.is_some()) {
            for g in &genres_of[&e.movie] {
                *gc.entry(g.clone()).or_default() += 1;
            }
        }
        let total: u64 = gc.values().sum();
        let fav = gc.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(g, _)| g.clone());
        let h: f64 = gc.values().map(|&c| c as f64 / total as f64).map(|p| -p * p.ln()).sum();
        let days: BTreeSet<i64> = evs.iter().map(|e| e.ts.div_euclid(DAY)).collect();
        let cohort = chrono::DateTime::from_timestamp(first, 0).unwrap().format("%Y-%m").to_string();
        let churned = end - last >= CHURN;
        let pauses = evs.windows(2).filter(|w| w[1].ts - w[0].ts >= CHURN).count() as u64;
        users.insert(
            u,
            json!({
                "status": if churned { "churned" } else { "active" },
                "churn_episodes": pauses + u64::from(churned),
                "features": {
                    "as_of": end, "recency_days": (end - last) as f64 / DAY as f64,
                    "last_activity": last, "first_seen": first, "cohort": cohort,
                    "events_7d": window(7), "events_30d": window(30), "events_90d": window(90),
                    "events_lifetime": evs.len(), "ratings": ratings.len(), "tags": evs.len() - ratings.len(),
                    "rating_mean": if ratings.is_empty() { Value::Null } else { json!(mean) },
                    "rating_std": if ratings.is_empty() { Value::Null } else { json!(var.sqrt()) },
                    "genres": gc, "favourite_genre": fav,
                    "genre_diversity": if total > 0 && k > 1.0 { h / k.ln() } else { 0.0 },
                    "sessions": closed, "open_sessions": groups.len() as u64 - closed,
                    "mean_session_minutes": if closed > 0 { json!(closed_secs as f64 / closed as f64 / 60.0) } else { Value::Null },
                    "binge_sessions": binges, "active_days": days.len(),
                },
            }),
        );
    }
    sessions.sort_by_key(|s| (s["user_id"].as_u64().unwrap(), s["start"].as_i64().unwrap()));
    Expected { end, users, sessions }
}

/// Whether two JSON values are equal, numbers within 1e-9 (relative).
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| close(v, w)),
        _ => a == b,
    }
}

/// Compares `dump users` lines and `dump sessions` lines with the expectation; panics with the
/// first difference. Returns (users, sessions) compared.
pub fn assert_matches(expected: &Expected, users: &[Value], sessions: &[Value]) -> (usize, usize) {
    assert_eq!(users.len(), expected.users.len(), "user count");
    for got in users {
        let u = got["user_id"].as_u64().unwrap() as u32;
        let want = &expected.users[&u];
        for key in ["status", "churn_episodes", "features"] {
            assert!(close(&got[key], &want[key]), "user {u} {key}:\n got  {}\n want {}", got[key], want[key]);
        }
    }
    let mut got: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.as_object_mut().unwrap().remove("v");
            s
        })
        .collect();
    got.sort_by_key(|s| (s["user_id"].as_u64().unwrap(), s["start"].as_i64().unwrap()));
    assert_eq!(got.len(), expected.sessions.len(), "closed sessions");
    for (g, w) in got.iter().zip(&expected.sessions) {
        assert!(close(g, w), "session:\n got  {g}\n want {w}");
    }
    (users.len(), got.len())
}
