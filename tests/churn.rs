//! Churn prediction (issue 19): `streamflix eval churn` on generated data (the processor with the
//! churn model, every active user scored at every close), its BG/NBD and MBG/NBD fits and
//! P(alive) checked against scipy (`tests/churn_check.py`), deterministic.

mod util;

use std::process::Command;

use util::{python, repo, streamflix};

/// Three years of ~600 users: enough closes after the 60-day burn-in to score thousands of pairs.
fn dataset() -> tempfile::TempDir {
    util::dense("2015-01-01", "2017-12-31", 5)
}

#[test]
fn eval_churn_fits_what_scipy_fits_and_is_deterministic() {
    let data = dataset();
    let out = tempfile::tempdir().unwrap();
    let patterns = out.path().join("patterns.csv");
    let args = ["eval", "churn", "--data", data.path().to_str().unwrap()];
    let run = |extra: &[&str]| {
        let o = streamflix(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    let report = run(&["--patterns", patterns.to_str().unwrap()]);
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report["pairs"].as_u64().unwrap() > 5_000, "pairs scored");
    assert!(report["churned"].as_u64().unwrap() > 100, "churned pairs");
    for score in ["churn_risk", "recency", "p_alive", "p_alive_bg"] {
        let auc = report["auc"][score].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{score}: {auc}");
        assert!(report["lift_top_decile"][score].as_f64().unwrap() > 0.0);
    }
    // The bar, on the generator's data: the model ranks churners at least as well as
    // both baselines, and its alerts warn most churners a week or more ahead.
    let auc = |k: &str| report["auc"][k].as_f64().unwrap();
    assert!(
        auc("churn_risk") >= auc("recency"),
        "churn_risk {} vs recency {}",
        auc("churn_risk"),
        auc("recency")
    );
    assert!(
        auc("churn_risk") >= auc("p_alive"),
        "churn_risk {} vs p_alive {}",
        auc("churn_risk"),
        auc("p_alive")
    );
    let alerts = &report["alerts"];
    assert!(
        alerts["at_risk"].as_u64().unwrap() > 100 && alerts["churned"].as_u64().unwrap() > 100,
        "{alerts}"
    );
    assert!(
        alerts["reach_7d"].as_f64().unwrap() >= 0.5,
        "at_risk alerts reach churners 7 days ahead: {alerts}"
    );
    // What the run alerted is what the replay of the rule at the same threshold alerts.
    let replayed = report["alerts_by_threshold"].as_array().unwrap();
    let same = replayed
        .iter()
        .find(|a| a["threshold"] == alerts["threshold"])
        .expect("the default threshold replayed");
    assert_eq!(same, alerts);
    let model = &report["churn_model"];
    assert_eq!(model["weights"].as_object().unwrap().len(), model["features"].as_array().unwrap().len());
    assert!(model["learning"]["examples"].as_u64().unwrap() > 1_000, "the model learned matured labels");
    let bins = report["calibration"]["p_alive"].as_array().unwrap();
    let pairs: u64 = bins.iter().map(|b| b["pairs"].as_u64().unwrap()).sum();
    assert_eq!(pairs, report["pairs"].as_u64().unwrap(), "every pair is in one calibration bin");

    let report_file = out.path().join("report.json");
    std::fs::write(&report_file, serde_json::to_vec(&report).unwrap()).unwrap();
    let check = Command::new(python())
        .arg(repo().join("tests/churn_check.py"))
        .args(["--data", data.path().to_str().unwrap()])
        .args(["--report", report_file.to_str().unwrap(), "--patterns", patterns.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    eprintln!("{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "scipy disagrees (see above)");
    assert_eq!(said.lines().filter(|l| l.starts_with("ok ")).count(), 7, "every check ran");

    assert_eq!(run(&[]), report, "a second run gives the same report");
}

#[test]
fn eval_churn_refuses_bad_input_in_one_line() {
    let o = streamflix(&["eval", "churn", "--data", "/nonexistent/streamflix"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = streamflix(&["eval", "churn", "--data", ".", "--threshold", "1.5"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("threshold"));
}

/// The churn model over HTTP: `/models/churn`, `/segments` (sizes add up), `/targets` (in the
/// segment asked for, above the P(alive) floor, ranked by priority) and the segment on
/// `/users/{id}`; bad parameters are 400s with a JSON body.
#[test]
fn segments_and_targets_are_served_and_agree_with_each_other() {
    let data = dataset();
    let (run, _state, base) = util::serve_with(data.path(), &["--no-snapshots"]);
    let get = |path: &str| util::get_json(&format!("{base}{path}")).unwrap();
    let (status, model) = get("/models/churn");
    assert_eq!(status, 200, "{model}");
    let (status, seg) = get("/segments");
    assert_eq!(status, 200, "{seg}");
    let sizes: Vec<(String, u64)> = seg["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["segment"].as_str().unwrap().to_string(), s["users"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes.len(), 11);
    let users = seg["users"].as_u64().unwrap();
    assert!(users > 50, "{seg}");
    assert_eq!(sizes.iter().map(|s| s.1).sum::<u64>(), users);
    assert!(sizes.iter().filter(|s| s.1 > 0).count() >= 4, "a few segments are populated: {sizes:?}");

    let (name, n) = sizes.iter().max_by_key(|s| s.1).unwrap().clone();
    let query = format!("/targets?segment={}&limit=1000&min_p_alive=0", name.replace(' ', "%20"));
    let (status, t) = get(&query);
    assert_eq!(status, 200, "{t}");
    let targets = t["targets"].as_array().unwrap();
    assert_eq!(targets.len() as u64, n, "every user of {name}, with no P(alive) floor");
    let priorities: Vec<f64> = targets.iter().map(|t| t["priority"].as_f64().unwrap()).collect();
    assert!(priorities.windows(2).all(|w| w[0] >= w[1]), "ranked by priority: {priorities:?}");
    for t in targets {
        assert_eq!(t["segment"], name.as_str());
        let (f, m, risk) = (
            t["f_score"].as_f64().unwrap(),
            t["m_score"].as_f64().unwrap(),
            t["churn_risk"].as_f64().unwrap(),
        );
        assert!((t["priority"].as_f64().unwrap() - (f + m) / 10.0 * risk).abs() < 1e-12, "{t}");
        assert!(t["reason"].as_str().unwrap().starts_with(&name), "{t}");
    }
    let first = &targets[0];
    let (status, user) = get(&format!("/users/{}", first["user_id"]));
    assert_eq!(status, 200);
    assert_eq!(&user["segment"], first, "/users/{{id}} shows the same segment and scores");

    // The default floor on P(alive), and a floor no one passes.
    let (_, all) = get("/targets?limit=10000");
    let floor = all["min_p_alive"].as_f64().unwrap();
    assert!(all["targets"].as_array().unwrap().iter().all(|t| t["p_alive"].as_f64().unwrap() >= floor));
    assert_eq!(
        get("/targets?min_p_alive=1&limit=5").1["targets"].as_array().map(|v| v.len() <= 5),
        Some(true)
    );
    // Segment names are matched without case or punctuation.
    assert_eq!(get("/targets?segment=cant-lose-them").0, 200);
    for (path, code) in [
        ("/targets?segment=Nobody", 400),
        ("/targets?min_p_alive=2", 400),
        ("/targets?min_p_alive=x", 400),
        ("/targets?limit=0", 400),
        ("/targets?colour=red", 400),
    ] {
        let (status, body) = get(path);
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    run.signal("-TERM");
    assert!(run.wait().0.success());
}
