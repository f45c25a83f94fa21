//! The insights report (issue 21): `streamflix report` on generated data, every number checked
//! against scipy and pandas computed from the CSV files alone (`tests/insights_check.py`),
//! deterministic, with one-line errors.

mod util;

use std::process::Command;

use util::{python, repo, streamflix};

#[test]
fn report_equals_scipy_on_the_csv_files_and_is_deterministic() {
    let data = util::dense("2015-01-01", "2017-12-31", 11);
    let state = tempfile::tempdir().unwrap();
    let (d, s) = (data.path().to_str().unwrap(), state.path().to_str().unwrap());
    let run = streamflix(&[
        "run",
        "--data",
        d,
        "--state",
        s,
        "--exit-when-done",
        "--no-http",
        "--no-snapshots",
        "--checkpoint-every",
        "7000",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

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
    assert_eq!(said.lines().filter(|l| l.starts_with("ok ")).count(), 8, "every check ran");

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
