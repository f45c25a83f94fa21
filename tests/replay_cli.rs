//! The `streamflix-replay` command line, without a broker: bad input gets a one-line error and a
//! non-zero exit; malformed lines are skipped, counted and reported; the sinks that need no
//! broker work.

mod util;

use std::process::Output;

use util::{replay, replay_ok};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{err}");
}

#[test]
fn missing_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(&["run", "--data", dir.path().to_str().unwrap(), "--sink", "null", "--quiet"]);
    assert_one_line_error(&out, 1, "no ratings.csv or ratings.dat");
}

#[test]
fn wrong_header_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ratings.csv"), "user,item,score,time\n1,2,3.0,4\n").unwrap();
    let out = replay(&["inspect", "--data", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, 1, "expected the header `userId,movieId,rating,timestamp`");
}

#[test]
fn malformed_lines_are_reported_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ratings.csv"),
        // Event times from 2001 (rows before 1995 are malformed too: see the readers' own tests).
        "userId,movieId,rating,timestamp\n1,1,4.0,1000000100\n1,2,9.0,1000000101\n1,3,4.5,1000000102\nbroken line\n2,1,3.0,1000000099\n",
    )
    .unwrap();
    let out =
        replay_ok(&["run", "--data", dir.path().to_str().unwrap(), "--sink", "null", "--quiet", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ratings"], 3);
    let err = stderr(&out);
    assert!(err.contains("skipped 2 malformed lines"), "{err}");
    assert!(err.contains("ratings.csv:3: rating 9.0 outside 0.5-5.0"), "{err}");
    assert!(err.contains("ratings.csv:5: expected 4 fields, found 1"), "{err}");
}

#[test]
fn bad_flag_values_exit_2_with_usage() {
    for args in [
        ["run", "--data", ".", "--speed", "0"],
        ["run", "--data", ".", "--rate", "-5"],
        ["run", "--data", ".", "--from", "last tuesday"],
        ["run", "--data", ".", "--sink", "carrier-pigeon"],
    ] {
        let out = replay(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
}

#[test]
fn generator_rejects_impossible_sizes_and_protects_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = replay(&["generate", "--out", d, "--users", "10", "--ratings", "100"]);
    assert_one_line_error(&out, 1, "at least 20 x --users");
    replay_ok(&["generate", "--out", d, "--users", "50", "--ratings", "2000", "--quiet"]);
    let out = replay(&["generate", "--out", d, "--users", "50", "--ratings", "2000", "--quiet"]);
    assert_one_line_error(&out, 1, "--force");
    replay_ok(&["generate", "--out", d, "--users", "50", "--ratings", "2000", "--quiet", "--force"]);
}

#[test]
fn stdout_sink_writes_one_json_line_per_record() {
    let dir = util::generated(50, 2_000, 40);
    let d = dir.path().to_str().unwrap();
    let out = replay_ok(&["run", "--data", d, "--sink", "stdout", "--partitions", "2"]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let events = lines.iter().filter(|l| l["record"]["type"] != "heartbeat").count();
    assert_eq!(events, 2040);
    assert!(lines.iter().all(|l| l["partition"].as_u64().unwrap() < 2));
    assert!(stderr_summary_mentions(&out.stderr, "sent 2000 ratings, 40 tags"));
}

fn stderr_summary_mentions(err: &[u8], s: &str) -> bool {
    String::from_utf8_lossy(err).contains(s)
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    let dir = util::generated(20, 400, 16);
    let d = dir.path().to_str().unwrap();
    let port = util::free_port().to_string();
    let out = replay(&["run", "--data", d, "--brokers", &format!("127.0.0.1:{port}"), "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: cannot reach the broker at 127.0.0.1:"), "{err}");
}

#[test]
fn sigint_flushes_reports_and_exits_0() {
    let dir = util::generated(20, 400, 16);
    let d = dir.path().to_str().unwrap();
    let child = std::process::Command::new(util::replay_bin())
        .args(["run", "--data", d, "--sink", "null", "--rate", "50", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    // A clean stop exits 0, as the processor's does (replay's `cli` module: one convention).
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interrupted: everything sent was flushed; continue with --resume"), "{stdout}");
    assert!(!stdout.contains("sent 0 ratings"), "some events were sent before the signal: {stdout}");
}
