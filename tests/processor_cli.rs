//! The processor binary without a broker: embedded mode against the batch computation, graceful
//! shutdown and resume, HTTP errors, bad input on the command line.

mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use util::*;

fn run_args<'a>(data: &'a str, state: &'a str) -> Vec<&'a str> {
    vec!["run", "--data", data, "--state", state, "--exit-when-done", "--no-http"]
}

#[test]
fn embedded_run_matches_the_batch_computation_and_the_ground_truth() {
    let data = generated(400, 40_000, 1_500);
    let state = tempfile::tempdir().unwrap();
    let (d, s) = (data.path().to_str().unwrap(), state.path().to_str().unwrap());
    let mut args = run_args(d, s);
    args.extend(["--checkpoint-every", "7000"]);
    let out = streamflix(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let expected = batch::compute(data.path());
    let users = dump(state.path(), "users");
    let sessions = dump(state.path(), "sessions");
    let (u, n) = batch::assert_matches(&expected, &users, &sessions);
    assert!(u == 400 && n > 3_000, "compared {u} users and {n} sessions");

    let flagged: BTreeSet<u32> = users
        .iter()
        .filter(|u| u["status"] == "churned")
        .map(|u| u["user_id"].as_u64().unwrap() as u32)
        .collect();
    let (p, r) = precision_recall(&flagged, &ground_truth_churned(data.path()));
    eprintln!("embedded: churn precision {p:.4} recall {r:.4} ({} flagged)", flagged.len());
    assert!(p >= 0.95 && r >= 0.95, "precision {p} recall {r}");
}

#[test]
fn sigint_checkpoints_and_a_restart_finishes_with_the_same_state() {
    let data = generated(300, 30_000, 0);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = data.path().to_str().unwrap();

    let out = streamflix(&run_args(d, a.path().to_str().unwrap()));
    assert!(out.status.success());

    // Paced so that it is still running when interrupted: 24 years of data at 2e8 event-s/s
    // takes about 4 s.
    let mut args = run_args(d, b.path().to_str().unwrap());
    args.extend(["--speed", "200000000"]);
    let run = Running::start(&args);
    std::thread::sleep(Duration::from_millis(1500));
    run.signal("-INT");
    let (status, lines) = run.wait();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    assert!(lines.iter().any(|l| l.starts_with("interrupted; checkpoint written")), "{lines:#?}");
    let meta = &dump(b.path(), "meta")[0];
    assert_eq!(meta["finished"], false);
    let partial = meta["counters"]["ratings"].as_u64().unwrap();
    assert!(partial > 0 && partial < 30_000, "interrupted mid-way: {partial} ratings");

    let out = streamflix(&run_args(d, b.path().to_str().unwrap()));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("resuming from checkpoint"));
    assert_eq!(dump(a.path(), "users"), dump(b.path(), "users"));
    assert_eq!(dump(a.path(), "sessions"), dump(b.path(), "sessions"));
    assert_eq!(dump(a.path(), "alerts"), dump(b.path(), "alerts"));
}

#[test]
fn http_answers_bad_requests_with_json_errors() {
    let data = generated(50, 3_000, 100);
    let state = tempfile::tempdir().unwrap();
    let mut run = Running::start(&[
        "run",
        "--data",
        data.path().to_str().unwrap(),
        "--state",
        state.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    let base = run.http_base();
    run.wait_line("serving http://");
    let get = |path: &str| get_json(&format!("{base}{path}")).unwrap();
    let (status, stats) = get("/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["ratings"], 3_000);
    assert_eq!(get("/readyz").0, 200);
    let dumped = streamflix(&["dump", "--state", state.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&dumped.stderr).contains("in use by another process"));
    let user = get("/churn?status=any&limit=1").1["users"][0]["user_id"].as_u64().unwrap();
    let (status, body) = get(&format!("/users/{user}"));
    assert_eq!((status, body["user_id"].as_u64()), (200, Some(user)));
    assert_eq!(get(&format!("/users/{user}/sessions?limit=3")).0, 200);
    for (path, want) in [
        ("/users/abc", 400),
        ("/users/-1", 400),
        ("/users/4000000", 404),
        ("/users/1/sessions?limit=0", 400),
        ("/users/1/sessions?limit=x", 400),
        ("/churn?status=maybe", 400),
        ("/churn?limit=99999999", 400),
        ("/churn?colour=red", 400),
        ("/nowhere", 404),
    ] {
        let (status, body) = get(path);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    run.signal("-TERM");
    let (status, _) = run.wait();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

#[test]
fn demo_runs_end_to_end() {
    let out = streamflix(&["demo", "--users", "100", "--ratings", "8000", "--exit-when-done", "--no-http"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("processed "), "{stdout}");
    assert!(stdout.contains("8000 ratings"), "{stdout}");
}

#[test]
fn bad_command_lines_get_one_line_errors() {
    let data = generated(20, 500, 0);
    let d = data.path().to_str().unwrap();
    for (args, code, needle) in [
        (vec!["run", "--data", d, "--session-gap", "5x"], 2, "unit must be"),
        (vec!["run", "--data", d, "--churn-after", "10m"], 1, "churn period"),
        (vec!["run", "--data", "/nonexistent/ml", "--no-http"], 1, "no movies.csv"),
        (vec!["dump", "--state", "/nonexistent/state"], 1, "no state directory"),
        (vec!["process", "--movies", "x.csv"], 2, "--brokers"),
    ] {
        let out = streamflix(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        if code == 1 {
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line: {stderr}");
        }
    }
}

#[test]
fn a_state_directory_refuses_other_settings() {
    let data = generated(20, 500, 0);
    let state = tempfile::tempdir().unwrap();
    let (d, s) = (data.path().to_str().unwrap(), state.path().to_str().unwrap());
    assert!(streamflix(&run_args(d, s)).status.success());
    let mut args = run_args(d, s);
    args.extend(["--session-gap", "1h"]);
    let out = streamflix(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));
}
