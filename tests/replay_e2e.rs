//! End-to-end: the real `streamflix-replay` binary against a real Kafka-protocol broker (tansu),
//! read back by an independent client (kafka-python) that validates every payload against
//! `schemas/json/`.

mod util;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{consume, consumed_events, generated, replay_bin, replay_ok, source_events, Broker, Consumed};

/// Runs `streamflix-replay run` against `brokers` and returns its `--json` summary.
fn replay_json(data: &std::path::Path, brokers: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "--data", data.to_str().unwrap(), "--brokers", brokers, "--quiet", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_slice(&replay_ok(&args).stdout).unwrap()
}

fn seq(r: &Consumed) -> Option<u64> {
    (r.value["type"] != "heartbeat").then(|| r.value["seq"].as_u64().unwrap())
}

#[test]
fn replays_a_generated_dataset_exactly_once_in_event_time_order() {
    let broker = Broker::start();
    let data = generated(700, 100_000, 4_000);

    let summary = replay_json(data.path(), &broker.addr, &[]);

    assert_eq!((summary["ratings"].as_u64(), summary["tags"].as_u64()), (Some(100_000), Some(4_000)));

    let (records, report) = consume(&broker.addr, "streamflix");
    assert_eq!(report.invalid, 0, "payloads violating schemas/: {}", report.first_invalid);

    // Exactly the same multiset of events as the files.
    assert_eq!(consumed_events(&records), source_events(data.path()));

    // Every event once, numbered 0..N in replay order.
    let seqs: Vec<u64> = records.iter().filter_map(seq).collect();
    assert_eq!(seqs.iter().copied().collect::<HashSet<_>>().len(), seqs.len(), "duplicate seq");
    assert_eq!(seqs.iter().max(), Some(&103_999));

    let mut last_ts_by_user: HashMap<(String, String), i64> = HashMap::new();
    let last_event_ts =
        records.iter().filter(|r| seq(r).is_some()).map(|r| r.value["ts"].as_i64().unwrap()).max().unwrap();
    for r in &records {
        let ts = r.value["ts"].as_i64().unwrap();
        // Kafka timestamp (CreateTime) = event time in ms.
        assert_eq!(r.timestamp_type, 0, "CreateTime");
        assert_eq!(r.timestamp, ts * 1000, "{r:?}");
        if seq(r).is_some() {
            // Key = user id; per user (hence per partition and offset order) time never goes back.
            let user = r.value["user_id"].to_string();
            assert_eq!(r.key.as_deref(), Some(user.as_str()));
            let last = last_ts_by_user.entry((r.topic.clone(), user)).or_insert(i64::MIN);
            assert!(ts >= *last, "user went back in time: {r:?}");
            *last = ts;
        } else {
            assert_eq!(r.key, None, "heartbeats are unkeyed");
        }
    }
    // Every partition of both topics ends with a heartbeat at the last event time.
    let mut tails: HashMap<(&str, i32), &Consumed> = HashMap::new();
    for r in &records {
        tails.insert((r.topic.as_str(), r.partition), r);
    }
    assert_eq!(tails.len(), 6, "3 partitions per topic");
    for r in tails.values() {
        assert_eq!(r.value["type"], "heartbeat");
        assert_eq!(r.value["ts"].as_i64(), Some(last_event_ts));
    }
}

#[test]
fn resume_after_sigkill_delivers_every_event_exactly_once() {
    let broker = Broker::start();
    let data = generated(400, 60_000, 2_000);
    let dir = data.path().to_str().unwrap();

    // Two runs killed part-way (SIGKILL: no flush, no goodbye), then a resume to the end.
    for (i, after) in [Duration::from_millis(1500), Duration::from_millis(1200)].into_iter().enumerate() {
        let mut args = vec!["run", "--data", dir, "--brokers", &broker.addr, "--quiet", "--rate", "15000"];
        if i > 0 {
            args.push("--resume");
        }
        let mut child = Command::new(replay_bin()).args(&args).spawn().unwrap();
        std::thread::sleep(after);
        assert!(child.try_wait().unwrap().is_none(), "replay finished before it could be killed");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let (partial, _) = consume(&broker.addr, "streamflix");
    let sent_before = partial.iter().filter_map(seq).count();
    assert!(
        sent_before > 5_000 && sent_before < 60_000,
        "killed part-way: {sent_before} events on the topics"
    );

    let summary = replay_json(data.path(), &broker.addr, &["--resume"]);
    assert!(summary["already_delivered"].as_u64().unwrap() > 0);

    let (records, report) = consume(&broker.addr, "streamflix");
    assert_eq!(report.invalid, 0, "{}", report.first_invalid);
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for s in records.iter().filter_map(seq) {
        *counts.entry(s).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dups.is_empty(), "events delivered twice: {dups:?}");
    assert_eq!(counts.len(), 62_000, "every event exactly once");
    assert_eq!(consumed_events(&records), source_events(data.path()));
}

#[test]
fn speed_paces_the_replay_by_event_time() {
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    // 201 ratings, 20 event-seconds apart: a 4,000 s span, which --speed 1000 plays in 4 s.
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    for i in 0..=200 {
        csv.push_str(&format!("{},{},4.0,{}\n", i % 13 + 1, i + 1, 1_500_000_000 + i * 20));
    }
    std::fs::write(data.path().join("ratings.csv"), csv).unwrap();

    let started = Instant::now();
    let summary = replay_json(data.path(), &broker.addr, &["--speed", "1000"]);
    let wall = started.elapsed().as_secs_f64();
    let paced = summary["seconds"].as_f64().unwrap();
    assert!((paced - 4.0).abs() <= 0.4, "first to last event took {paced:.3}s, expected 4.0s ± 10%");
    assert!((3.6..=4.4 + 3.0).contains(&wall), "process took {wall:.3}s (4.0s of pacing plus start-up)");
    let (records, _) = consume(&broker.addr, "streamflix");
    assert_eq!(records.iter().filter_map(seq).count(), 201);
}
