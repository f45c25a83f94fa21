//! Observability against real parts: the processor's `/metrics` checked by promtool, scraped by a
//! real Prometheus that evaluates every query of every Grafana dashboard, engagement metrics
//! compared with the HTTP state, and the compose stack's configs checked by real validators.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::*;

/// Parses a text exposition into (name{labels} → value), skipping comments.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN))))
        .collect()
}

/// Every PromQL expression in a dashboard: (panel title, expr).
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap().to_string();
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{title}: no description");
        assert!(p["fieldConfig"]["defaults"]["unit"].as_str().is_some(), "{title}: no unit");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

struct Prometheus {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// A real Prometheus scraping `target` (host:port) every second.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        // The compose stack's own configuration, pointed at this processor, scraping every second.
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus.yml"))
                .unwrap();
        assert!(shipped.contains("processor:8080") && shipped.contains("5s"), "{shipped}");
        std::fs::write(&config, shipped.replace("processor:8080", target).replace("5s", "1s")).unwrap();
        let port = free_port();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get_json(&format!("{}/api/v1/query?query=up", p.base)).map_or(true, |(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn query(&self, expr: &str) -> Value {
        let (status, body) =
            get_json_query(&format!("{}/api/v1/query", self.base), &[("query", expr)]).unwrap();
        assert_eq!(status, 200, "{expr}: {body}");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].clone()
    }
}

#[test]
fn metrics_pass_promtool_every_dashboard_query_returns_data_and_engagement_equals_http_state() {
    let data = generate(300, 1_000, 30_000, 600, 5);
    let (run, _state, base) = serve(data.path());

    // 1. The exposition passes promtool's checks (format and naming conventions).
    let exposition = get_text(&format!("{base}/metrics"));
    let mut promtool = Command::new(promtool_bin())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}");
    eprintln!("promtool check metrics: no problems in {} lines", exposition.lines().count());

    // 2. Engagement metrics equal the HTTP state at the same watermark.
    let m = samples(&exposition);
    let (_, stats) = get_json(&format!("{base}/stats")).unwrap();
    let wm = stats["watermark"].as_i64().unwrap();
    assert_eq!(m["streamflix_watermark_timestamp_seconds"], wm as f64);
    assert_eq!(m["streamflix_churned_users"], stats["churned"].as_f64().unwrap());
    assert_eq!(m["streamflix_state_users"], stats["users"].as_f64().unwrap());
    assert_eq!(m[r#"streamflix_events_total{kind="rating"}"#], stats["ratings"].as_f64().unwrap());
    let (mut active, mut churned) = ([0u64; 3], 0u64);
    for id in 1..=300u32 {
        let (status, u) = get_json(&format!("{base}/users/{id}")).unwrap();
        assert_eq!(status, 200, "{u}");
        let last = u["features"]["last_activity"].as_i64().unwrap();
        for (i, days) in [1, 7, 30].into_iter().enumerate() {
            active[i] += u64::from(wm - last < days * 86_400);
        }
        churned += u64::from(u["status"] == "churned");
    }
    for (i, w) in ["1d", "7d", "30d"].into_iter().enumerate() {
        assert_eq!(m[&format!(r#"streamflix_active_users{{window="{w}"}}"#)], active[i] as f64, "active {w}");
    }
    assert_eq!(m["streamflix_churned_users"], churned as f64);
    // The churn model's segments: one gauge per segment, equal to /segments.
    let (status, seg) = get_json(&format!("{base}/segments")).unwrap();
    assert_eq!(status, 200, "{seg}");
    let mut segmented = 0.0;
    for s in seg["segments"].as_array().unwrap() {
        let name = s["segment"].as_str().unwrap();
        let users = s["users"].as_f64().unwrap();
        assert_eq!(m[&format!(r#"streamflix_segment_users{{segment="{name}"}}"#)], users, "segment {name}");
        segmented += users;
    }
    assert!(segmented > 0.0 && segmented == seg["users"].as_f64().unwrap(), "{seg}");
    assert_eq!(stats["users"], 300);
    // The insights gauges: the report's numbers at the same checkpoint.
    let (status, report) = get_json(&format!("{base}/report.json")).unwrap();
    assert_eq!(status, 200, "{report}");
    let mut insights = 0;
    for (section, test) in [
        ("action_vs_drama", "ratings"),
        ("action_vs_drama", "session_minutes"),
        ("weekend_vs_weekday", "session_minutes"),
        ("weekend_vs_weekday", "session_events"),
        ("anova_genres", "ratings"),
    ] {
        let t = &report[section][test];
        let name = format!("{section}.{test}");
        // Equal up to serde_json's float parsing, which can be 1 ulp off (without its
        // float_roundtrip feature); the exposition is parsed exactly.
        let same = |a: f64, b: f64| (a - b).abs() <= 4.0 * f64::EPSILON * b.abs();
        let (gauge, json) =
            (m[&format!(r#"streamflix_insight_p_value{{test="{name}"}}"#)], t["p"].as_f64().unwrap());
        assert!(same(gauge, json), "{name}: p {gauge} in /metrics, {json} in /report.json");
        let effect = if section == "anova_genres" {
            ("eta_squared", "eta_squared")
        } else {
            ("relative_difference", "rel_diff")
        };
        let (gauge, json) = (
            m[&format!(r#"streamflix_insight_effect{{measure="{}",test="{name}"}}"#, effect.0)],
            t[effect.1].as_f64().unwrap(),
        );
        assert!(same(gauge, json), "{name}: {} {gauge} in /metrics, {json} in /report.json", effect.0);
        insights += 1;
    }
    assert_eq!(insights, 5);
    eprintln!("engagement: active 1d/7d/30d {active:?}, churned {churned} — equal in /metrics and over HTTP");

    // 3. A real Prometheus scrapes the run; every dashboard query returns data.
    let target = base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Rates need two samples in their window: wait for a few scrapes.
    loop {
        let r = prom.query("count_over_time(up{job=\"streamflix\"}[1m])");
        if r.as_array()
            .and_then(|a| a.first())
            .is_some_and(|s| s["value"][1].as_str().unwrap_or("0").parse::<f64>().unwrap_or(0.0) >= 4.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus never scraped the processor: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(prom.query("up{job=\"streamflix\"}")[0]["value"][1], "1");
    // Names from a fresh exposition (HTTP metrics exist once a request has completed).
    let exposition = get_text(&format!("{base}/metrics"));
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ").and_then(|r| r.split_whitespace().next()).map(str::to_string)
        })
        .collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in ["engagement.json", "operations.json"] {
        for (title, expr) in dashboard_queries(&repo().join("grafana/dashboards").join(file)) {
            // Names the query uses must be exported (histogram series count as their family).
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("streamflix_"))
            {
                let family =
                    ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                if !exported.contains(family) {
                    failures.push(format!("{file} / {title}: unknown metric {name}"));
                }
            }
            let result = prom.query(&expr);
            if result.as_array().is_none_or(|a| a.is_empty()) {
                failures.push(format!("{file} / {title}: no data for {expr}"));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "dashboard queries failing against Prometheus:\n{}", failures.join("\n"));
    assert!(checked >= 40, "{checked} queries");
    eprintln!("prometheus: all {checked} dashboard queries return data");

    // The scraped values are the exposition's (same watermark).
    let scraped = prom.query("streamflix_active_users{window=\"30d\"}");
    assert_eq!(scraped[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap(), active[2] as f64);
    run.signal("-TERM");
    assert!(run.wait().0.success());
}

#[test]
fn compose_stack_and_prometheus_config_pass_real_validators() {
    let root = repo();
    let out = Command::new(promtool_bin())
        .args(["check", "config"])
        .arg(root.join("deploy/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let check = |compose: &Path| {
        Command::new(python())
            .arg(root.join("scripts/check_compose.py"))
            .arg(compose)
            .arg(compose_schema())
            .output()
            .unwrap()
    };
    let out = check(&root.join("docker-compose.yml"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "docker-compose.yml: {text}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", text.trim());

    // The validator does reject a broken file (a misspelt key, a missing mount).
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    // What the compose file refers to, beside the broken copies.
    for sub in ["deploy", "grafana", "Dockerfile"] {
        std::os::unix::fs::symlink(root.join(sub), dir.path().join(sub)).unwrap();
    }
    for (from, to, needle) in [
        ("    depends_on:\n      kafka:", "    depends_onn:\n      kafka:", "depends_onn"),
        ("./deploy/prometheus.yml", "./deploy/missing.yml", "does not exist"),
    ] {
        let broken = dir.path().join("docker-compose.yml");
        std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
        let out = check(&broken);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && text.contains(needle), "{from:?} → {to:?} passed: {text}");
    }

    // Grafana provisioning points at the dashboards the compose file mounts, with the uid they use.
    let ds = std::fs::read_to_string(root.join("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(ds.contains("uid: prometheus") && ds.contains("http://prometheus:9090"));
    let provider =
        std::fs::read_to_string(root.join("grafana/provisioning/dashboards/streamflix.yml")).unwrap();
    let path = provider.lines().find_map(|l| l.trim().strip_prefix("path: ")).expect("provider path");
    assert!(
        original.contains(&format!("./grafana/dashboards:{path}:ro")),
        "compose mounts the dashboards at {path}"
    );
    for file in ["engagement.json", "operations.json"] {
        let d: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("grafana/dashboards").join(file)).unwrap(),
        )
        .unwrap();
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], "prometheus", "{file}: {}", p["title"]);
        }
    }
}
