//! The daily close (issue 18): the processor's Parquet tables read by real readers (pyarrow,
//! DuckDB) and compared with an independent pandas computation from the generator's CSV files;
//! crash safety under SIGKILL at fixed points of a close; which days are closed; HTTP.

mod util;

use std::path::Path;
use std::process::Command;

use util::{files_under as files, get_json, python, repo, streamflix, Running};

const DAY: i64 = 86_400;

/// A dense two-year dataset: ~600 users active at once, so every table and query has rows.
fn dataset() -> tempfile::TempDir {
    util::dense("2015-01-01", "2016-12-31", 11)
}

fn run_args(data: &Path, state: &Path) -> Vec<String> {
    [
        "run",
        "--data",
        data.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--no-http",
        "--exit-when-done",
    ]
    .map(String::from)
    .to_vec()
}

fn run_ok(args: &[String]) -> std::process::Output {
    let out = streamflix(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "streamflix {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The event times of a generated dataset's ratings and tags (its last column).
fn event_times(data: &Path) -> Vec<i64> {
    let mut ts = Vec::new();
    for f in ["ratings.csv", "tags.csv"] {
        let mut r = csv::Reader::from_path(data.join(f)).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            ts.push(rec[rec.len() - 1].parse().unwrap());
        }
    }
    ts
}

fn day_label(day: i64) -> String {
    let out =
        Command::new("date").args(["-u", "-d", &format!("@{}", day * DAY), "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The processor's tables answer the analysts' eight queries (run by DuckDB) exactly as pandas
/// computes them from the CSV files; pyarrow reads every table with the schema docs/tables.md
/// gives; the closed days are exactly the first event's day to the day before the last one's;
/// the month ends' RFM segments equal a pandas segmentation of the same rows, and the dump's.
#[test]
fn the_tables_answer_the_sql_pack_as_pandas_computes_it_from_the_csv_files() {
    let data = dataset();
    let state = tempfile::tempdir().unwrap();
    run_ok(&run_args(data.path(), state.path()));
    let snapshots = state.path().join("snapshots");
    let root = repo();
    let churn_model = state.path().join("churn-model.json");
    // The dump's own bytes: serde_json's default parser may round a float by an ulp.
    let dumped = streamflix(&["dump", "--state", state.path().to_str().unwrap(), "churn-model"]);
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    std::fs::write(&churn_model, dumped.stdout).unwrap();
    let out = Command::new(python())
        .arg(root.join("tests/snapshots_check.py"))
        .args(["--snapshots", snapshots.to_str().unwrap(), "--data", data.path().to_str().unwrap()])
        .args(["--sql", root.join("sql").to_str().unwrap()])
        .args(["--tables-doc", root.join("docs/tables.md").to_str().unwrap()])
        .args(["--as-of", "2015-06-15", "--as-of", "2016-03-01", "--as-of", "2016-12-01"])
        .args(["--churn-model", churn_model.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SQL pack or the schemas disagree (see above)");
    for q in ["1_user_summary", "3_churn_label", "6_binge_watchers", "8_activity_by_hour_weekday", "segments"]
    {
        assert!(report.contains(&format!("ok {q}")), "{q} was not checked");
    }
    assert!(report.contains("ok segments vs churn-model"), "the dump's segments were not checked");

    // _SUCCESS: exactly the days from the first event's to the day before the last one's (the
    // final watermark, once the input ends, is the last event time).
    let ts = event_times(data.path());
    let (first, last) = (ts.iter().min().unwrap().div_euclid(DAY), ts.iter().max().unwrap().div_euclid(DAY));
    let want: Vec<String> = (first..last).map(day_label).collect();
    for table in ["ratings", "user_features", "sessions", "churn_alerts", "genre_daily"] {
        let mut closed = Vec::new();
        let mut open = Vec::new();
        for e in std::fs::read_dir(snapshots.join(table)).unwrap() {
            let e = e.unwrap();
            let dt = e.file_name().to_string_lossy().strip_prefix("dt=").unwrap().to_string();
            if e.path().join("_SUCCESS").is_file() {
                closed.push(dt);
            } else {
                open.push(dt);
            }
        }
        closed.sort();
        assert_eq!(closed.len(), want.len(), "{table}: closed days");
        assert!(
            closed == want,
            "{table}: the closed days differ from {} .. {}",
            want[0],
            want[want.len() - 1]
        );
        // The last, incomplete day is written without _SUCCESS (if it has rows).
        assert!(open.iter().all(|d| *d == day_label(last)), "{table}: incomplete {open:?}");
    }
    assert!(snapshots
        .join("user_features")
        .join(format!("dt={}", day_label(last)))
        .join("part-0.parquet")
        .is_file());
}

/// SIGKILL at three points of day closes (a part written to its temporary name; every part
/// renamed but no _SUCCESS; _SUCCESS written but the state after it not committed), each followed
/// by a restart: the snapshot directory ends byte-identical to an uninterrupted run's, and a
/// fresh run into a new directory writes the same bytes too.
#[test]
fn sigkill_during_day_closes_leaves_the_tables_as_an_uninterrupted_run() {
    let data = dataset();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_ok(&run_args(data.path(), a.path()));
    let reference = files(&a.path().join("snapshots"));
    assert!(reference.len() > 3_000, "{} files", reference.len());

    let args = {
        let mut v = run_args(data.path(), b.path());
        v.extend(["--checkpoint-every", "2000"].map(String::from));
        v
    };
    let snap = b.path().join("snapshots");
    let points = [("2015-04-10", "tmp"), ("2015-11-03", "parts"), ("2016-06-21", "success")];
    for (day, stage) in points {
        let mut cmd = Command::new(util::streamflix_bin());
        cmd.args(&args).env("STREAMFLIX_TEST_CLOSE_PAUSE", format!("{day}:{stage}"));
        let mut run = Running::spawn(cmd);
        run.wait_line(&format!("close paused at {stage} of {day}"));
        let partition = snap.join("ratings").join(format!("dt={day}"));
        match stage {
            "tmp" => {
                let tmp = std::fs::read_dir(&partition)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
                assert!(tmp, "a temporary file is there at the kill");
            }
            "parts" => {
                assert!(partition.join("part-0.parquet").is_file() && !partition.join("_SUCCESS").exists());
            }
            _ => assert!(partition.join("_SUCCESS").is_file()),
        }
        run.signal("-KILL");
        let (status, _) = run.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    }
    let out = run_ok(&args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resuming from checkpoint"));
    let after = files(&snap);
    let differing: Vec<&String> =
        reference.keys().chain(after.keys()).filter(|k| reference.get(*k) != after.get(*k)).take(5).collect();
    assert!(differing.is_empty(), "files differ after the kills: {differing:?}");

    // Same input, fresh directory: the same bytes.
    let c = tempfile::tempdir().unwrap();
    run_ok(&run_args(data.path(), c.path()));
    assert!(files(&c.path().join("snapshots")) == reference, "a second run wrote other bytes");
}

/// A snapshot directory written from another input or with other settings is refused with one
/// line, and so is one that cannot be created; the state is untouched and the next start (with a usable directory)
/// closes every day.
#[test]
fn foreign_and_unwritable_snapshot_directories_are_refused_with_one_line() {
    let data = dataset();
    let other = util::generated(50, 2_000, 50);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_ok(&run_args(data.path(), a.path()));
    let mut args = run_args(other.path(), b.path());
    args.extend(["--snapshots".into(), a.path().join("snapshots").to_str().unwrap().into()]);
    let out = streamflix(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("from another input") && err.trim().lines().count() == 1, "{err}");

    // The same input with other settings is refused too.
    let c = tempfile::tempdir().unwrap();
    let mut args = run_args(data.path(), c.path());
    args.extend(["--snapshots".into(), a.path().join("snapshots").to_str().unwrap().into()]);
    args.extend(["--session-gap".into(), "45m".into()]);
    let out = streamflix(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("other processing settings") && err.trim().lines().count() == 1, "{err}");

    // A path under a regular file cannot be created.
    let blocker = b.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let mut args = run_args(other.path(), b.path());
    args.extend(["--snapshots".into(), blocker.join("snapshots").to_str().unwrap().into()]);
    let out = streamflix(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot create") && err.trim().lines().count() == 1, "{err}");

    // A bad table name or period is a one-line usage error.
    for bad in [["--snapshot-tables", "ratings,nope"], ["--snapshot-period", "year"]] {
        let mut args = run_args(other.path(), b.path());
        args.extend(bad.map(String::from));
        let out = streamflix(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    run_ok(&run_args(other.path(), b.path()));
    assert!(b.path().join("snapshots/ratings").is_dir());
}

/// `GET /snapshots` lists the closed days; `GET /tables/user_features` is an Arrow IPC stream
/// pyarrow reads, with a row per user.
#[test]
fn http_lists_the_closed_days_and_streams_the_user_table_as_arrow() {
    let data = util::generated(200, 10_000, 300);
    let (run, _state, base) = util::serve(data.path());
    let (status, listing) = get_json(&format!("{base}/snapshots")).unwrap();
    assert_eq!(status, 200);
    let tables = listing["tables"].as_array().unwrap();
    let ratings = tables.iter().find(|t| t["table"] == "ratings").unwrap();
    let days = listing["days"].as_array().unwrap();
    assert!(days.len() > 100, "{} days", days.len());
    assert_eq!(ratings["closed"].as_u64(), Some(days.len() as u64));
    assert_eq!((&listing["last_closed"], &ratings["last"]), (&days[days.len() - 1], &days[days.len() - 1]));
    assert_eq!(
        ratings["incomplete"].as_array().map(Vec::len),
        Some(1),
        "the last day, at the end of the input"
    );
    assert_eq!(tables.iter().find(|t| t["table"] == "movies").unwrap()["closed"], 1);
    let users = get_json(&format!("{base}/stats")).unwrap().1["users"].as_u64().unwrap();
    let script = r#"
import sys, urllib.request, pyarrow.ipc as ipc
with urllib.request.urlopen(sys.argv[1]) as r:
    assert r.headers["Content-Type"] == "application/vnd.apache.arrow.stream", r.headers["Content-Type"]
    t = ipc.open_stream(r.read()).read_all()
print(t.num_rows, t.schema.names[0], t.schema.names[-1], t.column("user_id").to_pylist() == sorted(t.column("user_id").to_pylist()))
"#;
    let out = Command::new(python())
        .args(["-c", script, &format!("{base}/tables/user_features")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{users} user_id segment True"));
    run.signal("-TERM");
    assert!(run.wait().0.success());
}
