//! The insights report (issue 21): `streamflix report` on generated data, every number checked
//! against scipy and pandas computed from the CSV files alone (`tests/insights_check.py`),
//! deterministic, with one-line errors.

mod util;

use std::process::Command;

use util::{chromium, get_json, get_text, python, repo, serve, streamflix};

/// `streamflix run` over `data` into the state directory `state` until the input ends (no HTTP,
/// no tables), with `extra` flags; asserts it succeeds.
fn run_to_the_end(data: &str, state: &str, extra: &[&str]) {
    let mut args =
        vec!["run", "--data", data, "--state", state, "--exit-when-done", "--no-http", "--no-snapshots"];
    args.extend_from_slice(extra);
    let run = streamflix(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
}

#[test]
fn report_equals_scipy_on_the_csv_files_and_is_deterministic() {
    let data = util::dense("2015-01-01", "2017-12-31", 11);
    let state = tempfile::tempdir().unwrap();
    let (d, s) = (data.path().to_str().unwrap(), state.path().to_str().unwrap());
    run_to_the_end(d, s, &["--checkpoint-every", "7000"]);

    let json = streamflix(&["report", "--state", s, "--format", "json"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let again = streamflix(&["report", "--state", s, "--format", "json"]);
    assert_eq!(json.stdout, again.stdout, "the same state gives the same report");

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("report.json");
    let written = streamflix(&["report", "--state", s, "--format", "json", "--out", file.to_str().unwrap()]);
    assert!(written.status.success() && written.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), json.stdout, "--out writes what stdout shows");

    let check = Command::new(python())
        .arg(repo().join("tests/insights_check.py"))
        .args(["--report", file.to_str().unwrap(), "--data", d])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    eprintln!("{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "scipy or pandas disagrees (see above)");
    assert_eq!(said.lines().filter(|l| l.starts_with("ok ")).count(), 12, "every check ran");

    let md = streamflix(&["report", "--state", s]);
    assert!(md.status.success());
    let md = String::from_utf8(md.stdout).unwrap();
    for heading in [
        "# streamflix insights",
        "## Action vs Drama: ratings",
        "## Ratings across genres",
        "## Weekend vs weekday: session minutes",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let conclusion = report["action_vs_drama"]["ratings"]["conclusion"].as_str().unwrap();
    assert!(md.contains(conclusion), "the Markdown carries the conclusions");
}

#[test]
fn report_refuses_bad_input_in_one_line() {
    let o = streamflix(&["report", "--state", "/nonexistent/streamflix"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let empty = tempfile::tempdir().unwrap();
    let o = streamflix(&["report", "--state", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let o = streamflix(&["report", "--state", ".", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The console messages in Chromium's log.
fn console_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// What an HTML text node holds for `s` once Chromium serializes the DOM.
fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[test]
fn html_report_renders_in_headless_chromium_without_console_errors() {
    let data = util::dense("2015-01-01", "2016-12-31", 5);
    let (run, state, base) = serve(data.path());
    let (status, json) = get_json(&format!("{base}/report.json")).unwrap();
    assert_eq!(status, 200);
    let page = get_text(&format!("{base}/report"));
    assert!(page.starts_with("<!DOCTYPE html>") && !page.contains("<script"), "one static page");

    // Chromium loads the page from the running server, as a user's browser would.
    let dom = chromium(&format!("{base}/report"), &["--dump-dom"]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    assert_eq!(console_lines(&dom), Vec::<String>::new(), "console messages while rendering");
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(dom.matches("<svg").count() >= 10, "the charts are in the rendered DOM");
    for key in ["action_vs_drama", "weekend_vs_weekday", "highly_rated_engagement"] {
        for c in json[key].as_object().unwrap().values() {
            let text = c["conclusion"].as_str().unwrap();
            assert!(dom.contains(&as_dom_text(text)), "{text:?} is under its chart");
        }
    }
    for text in [&json["anova_genres"]["ratings"]["conclusion"], &json["genre_retention"]["conclusion"]] {
        let text = text.as_str().unwrap();
        assert!(dom.contains(&as_dom_text(text)), "{text:?} is under its chart");
    }

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("report.png");
    let shot = chromium(
        &format!("{base}/report"),
        &["--window-size=800,2400", &format!("--screenshot={}", png.display())],
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "a screenshot with content");

    // The check above can fail: a page that logs an error is caught.
    let bad = shots.path().join("bad.html");
    std::fs::write(&bad, "<html><body><script>console.error('broken chart')</script></body></html>").unwrap();
    let caught = chromium(&format!("file://{}", bad.display()), &["--dump-dom"]);
    assert_eq!(console_lines(&caught).len(), 1, "{}", String::from_utf8_lossy(&caught.stderr));

    // The HTTP report is the CLI's, number for number.
    run.signal("-TERM");
    let (st, _) = run.wait();
    assert!(st.success());
    let cli = streamflix(&["report", "--state", state.path().to_str().unwrap(), "--format", "json"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli, json, "GET /report.json is streamflix report --format json");
    let html = streamflix(&["report", "--state", state.path().to_str().unwrap(), "--format", "html"]);
    assert_eq!(String::from_utf8(html.stdout).unwrap(), page, "GET /report is --format html");
}

/// The report finds what the generator planted and does not find what it did not: weekend
/// sessions' steps stretched 1.3× (`--plant-weekend-span`) give longer weekend sessions at
/// p < 0.001 for every seed, while events per session, not planted, are significant at the 5 %
/// level in at most 2 of 20 seeds.
#[test]
fn planted_weekend_effect_is_found_and_the_null_is_not_in_20_seeds() {
    let mut not_significant = 0;
    let mut lines = Vec::new();
    for seed in 1..=20u64 {
        let data = util::dense_with("2015-01-01", "2017-12-31", seed, &["--plant-weekend-span", "1.3"]);
        let d = data.path().to_str().unwrap();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.path().join("generator.json")).unwrap()).unwrap();
        assert_eq!(truth["config"]["planted"]["weekend_session_span"], 1.3, "recorded as ground truth");
        let state = tempfile::tempdir().unwrap();
        let s = state.path().to_str().unwrap();
        run_to_the_end(d, s, &["--no-recommender", "--no-churn-model"]);
        let out = streamflix(&["report", "--state", s, "--format", "json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let planted = &r["weekend_vs_weekday"]["session_minutes"];
        let null = &r["weekend_vs_weekday"]["session_events"];
        let (t, p) = (planted["t"].as_f64().unwrap(), planted["p"].as_f64().unwrap());
        assert!(t > 0.0 && p < 0.001, "seed {seed}: the planted effect: t = {t}, p = {p}");
        let rel = planted["rel_diff"].as_f64().unwrap();
        let null_p = null["p"].as_f64().unwrap();
        not_significant += usize::from(null_p >= 0.05);
        lines.push(format!(
            "seed {seed}: weekend span {:+.1} % (p = {p:.1e}); events per session p = {null_p:.3}",
            rel * 100.0
        ));
    }
    eprintln!("{}", lines.join("\n"));
    assert!(
        not_significant >= 18,
        "the null comparison was significant in {} of 20 seeds",
        20 - not_significant
    );
}
