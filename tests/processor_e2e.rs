//! The processor against a real Kafka-protocol broker (tansu): golden comparison with an
//! independent batch computation, churn ground truth, SIGKILL crash recovery, dead letters.
//!
//! Output topics are read back with kafka-python (consume.py), which validates every payload
//! against schemas/json/. The processor's producer runs with `batch.num.messages=1` here: tansu
//! 0.6 hides all but the first record of a partition's last batch (see README, limits), which
//! would hide outputs from the reader; one record per batch sidesteps that. Real Kafka needs no
//! such setting.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::*;

fn replay_into(data: &Path, brokers: &str, prefix: &str, extra: &[&str]) {
    let mut args =
        vec!["run", "--data", data.to_str().unwrap(), "--brokers", brokers, "--topic-prefix", prefix];
    args.push("--quiet");
    args.extend_from_slice(extra);
    replay_ok(&args);
}

/// Replay settings for one record per batch: tansu 0.6 answers a fetch from an offset inside a
/// batch with the *next* batch, silently skipping the rest of that one (README, limits), so a
/// processor restarted at a checkpointed offset would miss records. Real Kafka returns the whole
/// batch.
const ONE_RECORD_PER_BATCH: &[&str] = &["-X", "batch.num.messages=1"];

fn process_args<'a>(brokers: &'a str, prefix: &'a str, movies: &'a str, state: &'a str) -> Vec<&'a str> {
    vec![
        "process",
        "--brokers",
        brokers,
        "--topic-prefix",
        prefix,
        "--movies",
        movies,
        "--state",
        state,
        "--exit-when-done",
        "-X",
        "batch.num.messages=1",
        "-X",
        "linger.ms=0",
    ]
}

fn process_ok(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--no-http");
    let out = streamflix(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "streamflix {args:?}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Reads an output topic, checks every payload against its schema, dedups by `id_field`
/// (checking duplicates are identical), and returns the values by id.
fn read_outputs(
    brokers: &str,
    topic: &str,
    schema: &str,
    id_field: &str,
) -> (BTreeMap<String, Value>, usize) {
    let (records, summary) = consume_topics(brokers, &[(topic, schema)]);
    assert_eq!(summary.invalid, 0, "{topic}: payloads violating {schema}: {}", summary.first_invalid);
    let mut by_id = BTreeMap::new();
    for r in &records {
        let id = r.value[id_field].as_str().unwrap().to_string();
        if let Some(prev) = by_id.insert(id.clone(), r.value.clone()) {
            assert_eq!(prev, r.value, "{topic}: two different records with {id_field} {id}");
        }
        assert_eq!(r.key.as_deref(), Some(r.value["user_id"].to_string().as_str()), "keyed by user");
    }
    (by_id, records.len())
}

#[test]
fn processing_through_the_broker_equals_the_batch_computation() {
    let broker = Broker::start();
    let data = generated(600, 60_000, 2_400);
    replay_into(data.path(), &broker.addr, "g", &[]);
    let state = tempfile::tempdir().unwrap();
    let movies = data.path().join("movies.csv");
    let mut args = process_args(&broker.addr, "g", movies.to_str().unwrap(), state.path().to_str().unwrap());
    let tables = state.path().join("tables");
    args.extend(["--snapshots", tables.to_str().unwrap(), "--snapshot-period", "month"]);
    let stdout = process_ok(&args);
    assert!(stdout.contains("60000 ratings, 2400 tags"), "{stdout}");

    // The day close's tables, read from the broker, are byte for byte an embedded run's of the
    // same files (the manifest names the input, so it differs).
    let embedded = tempfile::tempdir().unwrap();
    let out = streamflix(&[
        "run",
        "--data",
        data.path().to_str().unwrap(),
        "--state",
        embedded.path().to_str().unwrap(),
        "--exit-when-done",
        "--no-http",
        "--no-recommender",
        "--snapshot-period",
        "month",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let strip = |mut m: BTreeMap<String, Vec<u8>>| {
        m.remove("_streamflix.json");
        m
    };
    let (through_kafka, in_process) =
        (strip(files_under(&tables)), strip(files_under(&embedded.path().join("snapshots"))));
    assert!(through_kafka.len() > 500, "{} files", through_kafka.len());
    let differing: Vec<&String> = through_kafka
        .keys()
        .chain(in_process.keys())
        .filter(|k| through_kafka.get(*k) != in_process.get(*k))
        .take(5)
        .collect();
    assert!(differing.is_empty(), "tables through the broker differ from the embedded run's: {differing:?}");

    // Golden: every user's features, sessions and churn flags.
    let expected = batch::compute(data.path());
    let users = dump(state.path(), "users");
    let sessions = dump(state.path(), "sessions");
    let (u, n) = batch::assert_matches(&expected, &users, &sessions);
    eprintln!("golden: {u} users and {n} closed sessions equal the batch computation");

    // The topics carry the same sessions, and one churned alert per expected episode.
    let (topic_sessions, _) = read_outputs(&broker.addr, "g.sessions", "sessions.schema.json", "session_id");
    let dumped: BTreeMap<String, Value> =
        sessions.into_iter().map(|s| (s["session_id"].as_str().unwrap().to_string(), s)).collect();
    assert_eq!(topic_sessions, dumped);
    let (alerts, _) = read_outputs(&broker.addr, "g.churn-alerts", "churn-alerts.schema.json", "alert_id");
    let churned = alerts.values().filter(|a| a["status"] == "churned").count() as u64;
    let episodes: u64 = expected.users.values().map(|u| u["churn_episodes"].as_u64().unwrap()).sum();
    assert_eq!(churned, episodes);

    // Ground truth: the users the generator made inactive at the end are the ones flagged.
    let flagged: BTreeSet<u32> = users
        .iter()
        .filter(|u| u["status"] == "churned")
        .map(|u| u["user_id"].as_u64().unwrap() as u32)
        .collect();
    let truth = ground_truth_churned(data.path());
    let (p, r) = precision_recall(&flagged, &truth);
    eprintln!(
        "ground truth: churn precision {p:.4}, recall {r:.4} ({} flagged, {} true)",
        flagged.len(),
        truth.len()
    );
    assert!(p >= 0.95 && r >= 0.95, "precision {p} recall {r}");
}

fn jsonl_by_id(path: &Path, id_field: &str) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v[id_field].as_str().unwrap().to_string(), v))
        .collect()
}

#[test]
fn sigkill_at_random_moments_then_restart_equals_an_uninterrupted_run() {
    let broker = Broker::start();
    let data = generated(2_000, 200_000, 8_000);
    let started = Instant::now();
    // Every record on the input topics (events and heartbeats): the crash test's progress is
    // measured in input offsets.
    let mut replay_args = vec![
        "run",
        "--data",
        data.path().to_str().unwrap(),
        "--brokers",
        &broker.addr,
        "--topic-prefix",
        "b",
    ];
    replay_args.extend(["--quiet", "--json"]);
    replay_args.extend_from_slice(ONE_RECORD_PER_BATCH);
    let sent = replay_ok(&replay_args);
    let summary: Value = serde_json::from_slice(&sent.stdout).unwrap();
    let records = ["ratings", "tags", "heartbeats"].iter().map(|k| summary[k].as_u64().unwrap()).sum::<u64>();
    eprintln!("replayed 208,000 events one record per batch: {:.1}s", started.elapsed().as_secs_f64());
    let movies = data.path().join("movies.csv");
    let movies = movies.to_str().unwrap();
    let (sa, sb, outs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // The uninterrupted reference: the same data through the embedded pipeline (same partitioning).
    let out = streamflix(&[
        "run",
        "--data",
        data.path().to_str().unwrap(),
        "--state",
        sa.path().to_str().unwrap(),
        "--out",
        outs.path().to_str().unwrap(),
        "--exit-when-done",
        "--no-http",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // SIGKILLs at random moments (seeded: `SOAK_SEED`; `SOAK_KILLS` of them, 5 here, 20 in
    // `scripts/soak.sh`), each a random while after a checkpoint, so a restart can have
    // uncommitted work to re-do, not only a fresh checkpoint to resume from.
    let (mut rng, seed) = Rng::from_env("crash test through the broker");
    let mut args = process_args(&broker.addr, "b", movies, sb.path().to_str().unwrap());
    args.extend(["--checkpoint-every", "5000", "--http", "127.0.0.1:0"]);
    let kills =
        kill_at_random_moments(&args, sb.path(), (Progress::Offsets, records), soak_kills(5), &mut rng, seed);
    // Distinct points by construction: each run waits for progress past the previous kill.
    eprintln!(
        "through the broker: {} SIGKILLs at committed input offsets {kills:?} (of {records})",
        kills.len()
    );
    let mut args = process_args(&broker.addr, "b", movies, sb.path().to_str().unwrap());
    args.extend(["--checkpoint-every", "5000"]);
    process_ok(&args);

    // Final state, user by user, and every committed record; the ALS model (rebuilt from the
    // checkpoint's rating log) factor by factor.
    for what in ["users", "sessions", "alerts", "model"] {
        let (a, b) = (dump(sa.path(), what), dump(sb.path(), what));
        assert_eq!(a.len(), b.len(), "{what}");
        assert!(a == b, "{what} differ after crashes");
    }
    let (ma, mb) = (&dump(sa.path(), "meta")[0], &dump(sb.path(), "meta")[0]);
    let c = |m: &Value, k: &str| m["counters"][k].clone();
    for k in [
        "ratings",
        "tags",
        "sessions_closed",
        "binge_sessions",
        "churned_alerts",
        "reactivated_alerts",
        "churned_now",
    ] {
        assert_eq!(c(ma, k), c(mb, k), "counter {k}");
    }
    assert_eq!(mb["counters"]["dead_letters"], serde_json::json!({}));
    assert_eq!(ma["watermark"], mb["watermark"]);
    assert_eq!(ma["counters"]["ratings"], 200_000);

    // Alerts: none lost; duplicates only as identical records with the same alert_id.
    let alerts_a = jsonl_by_id(&outs.path().join("churn-alerts.jsonl"), "alert_id");
    let (alerts_b, published_b) =
        read_outputs(&broker.addr, "b.churn-alerts", "churn-alerts.schema.json", "alert_id");
    assert_eq!(alerts_a, alerts_b);
    eprintln!("alerts: {} distinct, {published_b} published across the crashed runs", alerts_b.len());
    let sessions_a = jsonl_by_id(&outs.path().join("sessions.jsonl"), "session_id");
    let (sessions_b, _) = read_outputs(&broker.addr, "b.sessions", "sessions.schema.json", "session_id");
    assert_eq!(sessions_a, sessions_b);
}

#[test]
fn every_kind_of_bad_event_lands_in_the_dlq_with_its_reason() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::ClientConfig;

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("movies.csv"),
        "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,\"American President, The (1995)\",Drama|Romance\n",
    )
    .unwrap();
    let t: i64 = 1_500_000_000;
    let rating = |user: u32, movie: u32, r: &str, ts: i64| {
        format!(
            r#"{{"type":"rating","v":1,"seq":0,"user_id":{user},"movie_id":{movie},"rating":{r},"ts":{ts}}}"#
        )
    };
    let big = format!(r#"{{"type":"rating","pad":"{}"}}"#, "x".repeat(70_000));
    // (payload, expected reason or None for a good record); all on ratings partition 0.
    let ratings: Vec<(String, Option<&str>)> = vec![
        (rating(1, 1, "4.0", t), None),
        ("{not json".into(), Some("undecodable_json")),
        (r#"{"type":"rating","v":1,"user_id":1}"#.into(), Some("schema_violation")),
        (rating(1, 1, "4.0", t).replace(r#""v":1"#, r#""v":2"#), Some("unsupported_version")),
        (rating(1, 1, "7.0", t), Some("rating_out_of_range")),
        (rating(1, 1, "3.7", t), Some("rating_not_half_step")),
        (rating(1, 999, "4.0", t), Some("unknown_movie")),
        (rating(1, 1, "4.0", 100), Some("timestamp_before_1995")),
        (rating(1, 1, "4.0", t * 1000), Some("timestamp_too_far_ahead")),
        (big.clone(), Some("oversized_payload")),
        (rating(1, 2, "2.5", t - 86_400), Some("late_event")),
        // Issue 17: a heartbeat far in the future used to move the partition's watermark for good.
        (
            r#"{"type":"heartbeat","v":1,"ts":99999999999999,"next_seq":0}"#.into(),
            Some("timestamp_too_far_ahead"),
        ),
        // Issue 17: a rating keyed by another user, and a tag on the ratings topic (the key of
        // each record is "k<offset>" except for good ratings and tags, keyed by their user).
        (rating(4, 1, "4.0", t + 30), Some("key_mismatch")),
        (
            format!(r#"{{"type":"tag","v":1,"seq":3,"user_id":3,"movie_id":1,"tag":"x","ts":{}}}"#, t + 30),
            Some("wrong_topic"),
        ),
        (rating(2, 2, "5.0", t + 60), None),
        (r#"{"type":"heartbeat","v":1,"ts":1500000120,"next_seq":0}"#.into(), None),
    ];
    let tags: Vec<(String, Option<&str>)> = vec![
        (
            format!(
                r#"{{"type":"tag","v":1,"seq":1,"user_id":3,"movie_id":2,"tag":"politics, \"sort of\"","ts":{t}}}"#
            ),
            None,
        ),
        (
            format!(r#"{{"type":"tag","v":1,"seq":2,"user_id":3,"movie_id":77,"tag":"x","ts":{t}}}"#),
            Some("unknown_movie"),
        ),
        (r#"{"type":"heartbeat","v":1,"ts":1500000120,"next_seq":0}"#.into(), None),
    ];
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = streamflix_replay::kafka::KafkaOptions { brokers: broker.addr.clone(), extra: vec![] };
    rt.block_on(streamflix_replay::kafka::ensure_topics(&opts, &["d.ratings", "d.tags"], 1, 1, &[])).unwrap();
    for (topic, records) in [("d.ratings", &ratings), ("d.tags", &tags)] {
        for (i, (payload, reason)) in records.iter().enumerate() {
            // Good ratings and tags are keyed by their user id, as streamflix-replay keys them.
            let user =
                serde_json::from_str::<serde_json::Value>(payload).ok().and_then(|v| v["user_id"].as_u64());
            let key = match (reason, user) {
                (None, Some(u)) => u.to_string(),
                _ => format!("k{i}"),
            };
            producer.send(BaseRecord::to(topic).partition(0).key(&key).payload(payload)).unwrap();
            // One record per batch (tansu 0.6 hides the tail of a partition's last batch).
            producer.flush(Duration::from_secs(10)).unwrap();
        }
    }

    let state = tempfile::tempdir().unwrap();
    let movies = dir.path().join("movies.csv");
    let args = process_args(&broker.addr, "d", movies.to_str().unwrap(), state.path().to_str().unwrap());
    process_ok(&args);

    let (records, summary) = consume_topics(&broker.addr, &[("d.dlq", "dlq.schema.json")]);
    assert_eq!(summary.invalid, 0, "{}", summary.first_invalid);
    let mut got: Vec<(String, u64, String)> = records
        .iter()
        .map(|r| {
            let v = &r.value;
            (
                v["source"]["topic"].as_str().unwrap().to_string(),
                v["source"]["offset"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, u64, String)> = Vec::new();
    for (topic, list) in [("d.ratings", &ratings), ("d.tags", &tags)] {
        for (i, (_, reason)) in list.iter().enumerate() {
            if let Some(r) = reason {
                want.push((topic.to_string(), i as u64, r.to_string()));
            }
        }
    }
    want.sort();
    assert_eq!(got, want);
    for r in &records {
        let v = &r.value;
        let (topic, offset) =
            (v["source"]["topic"].as_str().unwrap(), v["source"]["offset"].as_u64().unwrap() as usize);
        let original = if topic == "d.ratings" { &ratings[offset].0 } else { &tags[offset].0 };
        assert_eq!(v["payload_bytes"].as_u64(), Some(original.len() as u64));
        assert_eq!(v["key"].as_str(), Some(format!("k{offset}").as_str()), "original key kept");
        if v["reason"] == "oversized_payload" {
            assert_eq!(v["payload"].as_str().unwrap().len(), 64 * 1024, "truncated to 64 KiB");
        } else {
            assert_eq!(v["payload"].as_str(), Some(original.as_str()), "original payload kept");
        }
        assert!(!v["detail"].as_str().unwrap().is_empty());
    }

    // The good events around the bad ones were processed.
    let users = dump(state.path(), "users");
    let counts: BTreeMap<u64, (u64, u64)> = users
        .iter()
        .map(|u| {
            (
                u["user_id"].as_u64().unwrap(),
                (u["features"]["ratings"].as_u64().unwrap(), u["features"]["tags"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(counts, BTreeMap::from([(1, (1, 0)), (2, (1, 0)), (3, (0, 1))]));
    let meta = &dump(state.path(), "meta")[0];
    let by_reason = meta["counters"]["dead_letters"].as_object().unwrap();
    assert_eq!(by_reason.len(), 12, "every reason counted: {by_reason:?}");
    assert_eq!(by_reason["unknown_movie"], 2);
}

/// Issue 17, item 7: during a broker outage `/readyz` stayed 200 and the lag stayed 0. Now,
/// once nothing has come from the broker for --input-timeout, `/readyz` answers 503 with the
/// reason, and `streamflix_input_connected` / `streamflix_input_fetch_age_seconds` say so.
#[test]
fn readyz_turns_503_and_the_input_metrics_tell_when_the_broker_is_gone() {
    let broker = Broker::start();
    let data = generated(50, 3_000, 0);
    replay_into(data.path(), &broker.addr, "o", &[]);
    let movies = data.path().join("movies.csv");
    let state = tempfile::tempdir().unwrap();
    let mut args = process_args(&broker.addr, "o", movies.to_str().unwrap(), state.path().to_str().unwrap());
    args.retain(|a| *a != "--exit-when-done");
    args.extend(["--input-timeout", "2s", "--checkpoint-interval", "1s", "--http", "127.0.0.1:0"]);
    let mut run = Running::start(&args);
    let base = run.http_base();
    let metric = |name: &str| -> f64 {
        let text = get_text(&format!("{base}/metrics"));
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("ready", &|| get_json(&format!("{base}/readyz")).is_ok_and(|(s, _)| s == 200));
    wait_for("connected", &|| metric("streamflix_input_connected") == 1.0);
    assert!(metric("streamflix_input_fetch_age_seconds") < 2.0);
    // Caught up and idle, the input still hears from the broker: ready stays 200. Ready only
    // says a checkpoint exists: the processor must also have finished the 24 years of day closes
    // (the churn model refits weekly), and flushed their outputs, before the broker goes, or the
    // stop below is rightly unclean (outputs queued). A debug build took up to ~10 s for that on
    // this data after the generator's sparse catalogue (3 s had been enough before).
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(get_json(&format!("{base}/readyz")).unwrap().0, 200);
    let gone = Instant::now();
    drop(broker);
    wait_for("readyz 503", &|| get_json(&format!("{base}/readyz")).is_ok_and(|(s, _)| s == 503));
    let took = gone.elapsed();
    let (_, body) = get_json(&format!("{base}/readyz")).unwrap();
    assert!(body["error"].as_str().unwrap().contains("broker"), "{body}");
    // The timeout counts from the last receive librdkafka reported (in its statistics, every
    // second), which can be a little before the broker stopped (1.82 s was seen once): 503
    // comes no earlier than 1.5 s.
    assert!(took >= Duration::from_millis(1_500), "503 only after the timeout ({took:?})");
    assert!(metric("streamflix_input_fetch_age_seconds") > 2.0);
    wait_for("disconnected", &|| metric("streamflix_input_connected") == 0.0);
    eprintln!("readyz 503 {:.1} s after the broker stopped: {body}", took.as_secs_f64());
    run.signal("-TERM");
    assert!(run.wait().0.success(), "a stop during the outage is still clean");
}
