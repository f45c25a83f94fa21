//! Test harness shared by the end-to-end tests: a real tansu broker on a free loopback port,
//! the independent Python consumer, and running the real binaries.
//!
//! The broker and the Python venv are installed by `scripts/setup-test-tools.sh` (which the
//! README's test command runs); their paths arrive as `STREAMFLIX_TANSU` / `STREAMFLIX_PYTHON`.
//! A test that needs them and cannot find them fails with instructions rather than skipping:
//! a skipped end-to-end test would pass while proving nothing.

#![allow(dead_code)]

pub mod batch;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

fn tool(var: &str, fallback: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(fallback);
    assert!(
        p.exists(),
        "{var} is not set and {fallback} does not exist: run ./scripts/test.sh (it installs the \
         broker and the Python clients), or eval \"$(scripts/setup-test-tools.sh)\" first"
    );
    p
}

/// Prometheus, promtool (Debian's `prometheus` package) and the Compose spec schema.
pub fn prometheus_bin() -> PathBuf {
    tool("STREAMFLIX_PROMETHEUS", "/usr/bin/prometheus")
}

/// See [`prometheus_bin`].
pub fn promtool_bin() -> PathBuf {
    tool("STREAMFLIX_PROMTOOL", "/usr/bin/promtool")
}

/// See [`prometheus_bin`].
pub fn compose_schema() -> PathBuf {
    tool("STREAMFLIX_COMPOSE_SCHEMA", "/opt/streamflix-tools/compose_spec.json")
}

/// Debian's Chromium (renders the HTML report headless).
pub fn chromium_bin() -> PathBuf {
    tool("STREAMFLIX_CHROMIUM", "/usr/bin/chromium")
}

/// Headless Chromium on `url` with a fresh profile and no background network (this machine's
/// network is closed), with `extra` flags: its output, with console messages on stderr
/// (`…:CONSOLE…` lines).
pub fn chromium(url: &str, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// The tests' Python (venv with kafka-python, jsonschema, PyYAML).
pub fn python() -> PathBuf {
    tool("STREAMFLIX_PYTHON", "/opt/streamflix-tools/venv/bin/python")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("schemas").is_dir())
        .unwrap()
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1 (bound then released; tansu binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker with in-memory storage, killed when dropped.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`, for `--brokers`.
    pub addr: String,
}

impl Broker {
    /// Starts a fresh broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let tansu = tool("STREAMFLIX_TANSU", "/opt/streamflix-tools/bin/tansu");
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let url = format!("tcp://{addr}");
            let mut child = Command::new(&tansu)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/", "--silent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in the meantime: try another
                }
                if TcpStream::connect(&addr).is_ok() {
                    return Broker { child, addr };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tansu did not start");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `streamflix-replay` binary cargo built for this test.
pub fn replay_bin() -> PathBuf {
    // Tests of the replay package get the path from Cargo; tests of the processor package find
    // it beside the processor binary (`cargo test --workspace` builds both).
    match option_env!("CARGO_BIN_EXE_streamflix-replay") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = streamflix_bin().with_file_name("streamflix-replay");
            assert!(p.exists(), "{} is missing: run `cargo build` (or cargo test --workspace)", p.display());
            p
        }
    }
}

/// The processor binary (only in the processor package's tests).
pub fn streamflix_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_streamflix") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = replay_bin().with_file_name("streamflix");
            assert!(p.exists(), "{} is missing: run `cargo build`", p.display());
            p
        }
    }
}

/// A temporary directory holding a generated dataset (seed 7, 4,000 movies).
pub fn generated(users: u32, ratings: u64, tags: u64) -> tempfile::TempDir {
    generate(users, 4_000, ratings, tags, 7)
}

/// ~600 users active at once (600 users, 1,500 movies, 40,000 ratings, 1,600 tags) from
/// `start` to `end` (YYYY-MM-DD), with `seed`: dense enough that every day has activity.
pub fn dense(start: &str, end: &str, seed: u64) -> tempfile::TempDir {
    dense_with(start, end, seed, &[])
}

/// [`dense`] with more `generate` arguments (e.g. a planted effect).
pub fn dense_with(start: &str, end: &str, seed: u64, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed.to_string();
    let mut args = vec![
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--users",
        "600",
        "--movies",
        "1500",
        "--ratings",
        "40000",
        "--tags",
        "1600",
        "--start",
        start,
        "--end",
        end,
        "--seed",
        &seed,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    replay_ok(&args);
    dir
}

/// A temporary directory holding a generated dataset of the given sizes and seed.
pub fn generate(users: u32, movies: u32, ratings: u64, tags: u64, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let [users, movies, ratings, tags, seed] =
        [users.into(), movies.into(), ratings, tags, seed].map(|n: u64| n.to_string());
    let out = dir.path().to_str().unwrap();
    replay_ok(&[
        "generate",
        "--out",
        out,
        "--users",
        &users,
        "--movies",
        &movies,
        "--ratings",
        &ratings,
        "--tags",
        &tags,
        "--seed",
        &seed,
        "--quiet",
    ]);
    dir
}

/// `streamflix run` on `data` with a fresh state directory and HTTP on a free port, once it has
/// processed everything and serves: the process, its state directory and the HTTP base URL.
pub fn serve(data: &Path) -> (Running, tempfile::TempDir, String) {
    serve_with(data, &[])
}

/// [`serve`] with more arguments.
pub fn serve_with(data: &Path, extra: &[&str]) -> (Running, tempfile::TempDir, String) {
    let state = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--state",
        state.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut run = Running::start(&args);
    let base = run.http_base();
    run.wait_line("serving http://");
    (run, state, base)
}

/// Runs `streamflix-replay ARGS`, returning its output (not asserting success).
pub fn replay(args: &[&str]) -> Output {
    Command::new(replay_bin()).args(args).output().expect("run streamflix-replay")
}

/// Runs `streamflix-replay ARGS` and asserts it succeeded.
pub fn replay_ok(args: &[&str]) -> Output {
    let out = replay(args);
    assert!(
        out.status.success(),
        "streamflix-replay {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One record as the independent consumer saw it.
#[derive(Debug, Clone, Deserialize)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: Option<String>,
    /// Record timestamp, ms.
    pub timestamp: i64,
    /// 0 = CreateTime.
    pub timestamp_type: i32,
    /// Parsed payload.
    pub value: serde_json::Value,
}

/// What the consumer reported.
#[derive(Debug, Deserialize)]
pub struct ConsumeSummary {
    /// Records read.
    pub records: u64,
    /// Records that failed schema validation.
    pub invalid: u64,
    /// The first failures.
    pub first_invalid: serde_json::Value,
}

/// Reads both input topics completely with kafka-python, validating every payload against
/// `schemas/json/`. Returns the records in (topic, partition, offset) order.
pub fn consume(brokers: &str, prefix: &str) -> (Vec<Consumed>, ConsumeSummary) {
    consume_topics(
        brokers,
        &[
            (&format!("{prefix}.ratings"), "ratings.schema.json"),
            (&format!("{prefix}.tags"), "tags.schema.json"),
        ],
    )
}

/// Reads `(topic, schema file)` pairs with consume.py; records sorted by topic, partition, offset.
pub fn consume_topics(brokers: &str, topics: &[(&str, &str)]) -> (Vec<Consumed>, ConsumeSummary) {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("records.jsonl");
    let out = Command::new(python)
        .arg(repo().join("tests/support/consume.py"))
        .args(["--brokers", brokers, "--out", out_file.to_str().unwrap()])
        .args(topics.iter().flat_map(|(t, s)| ["--topic".to_string(), format!("{t}={s}")]))
        .output()
        .expect("run consume.py");
    assert!(out.status.success(), "consume.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: ConsumeSummary = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("consume.py output {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let text = std::fs::read_to_string(&out_file).unwrap();
    let mut records: Vec<Consumed> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    records.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    (records, summary)
}

/// An event identity independent of the wire format: what the source files say.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceEvent {
    /// (user, movie, half-stars, ts)
    Rating(u32, u32, u32, i64),
    /// (user, movie, tag, ts)
    Tag(u32, u32, String, i64),
}

/// Reads ratings.csv and tags.csv with the csv crate directly (not the replay's readers).
pub fn source_events(dir: &Path) -> Vec<SourceEvent> {
    let mut out = Vec::new();
    let mut r = csv::Reader::from_path(dir.join("ratings.csv")).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let stars: f64 = rec[2].parse().unwrap();
        out.push(SourceEvent::Rating(
            rec[0].parse().unwrap(),
            rec[1].parse().unwrap(),
            (stars * 2.0) as u32,
            rec[3].parse().unwrap(),
        ));
    }
    if dir.join("tags.csv").exists() {
        let mut r = csv::Reader::from_path(dir.join("tags.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            out.push(SourceEvent::Tag(
                rec[0].parse().unwrap(),
                rec[1].parse().unwrap(),
                rec[2].to_string(),
                rec[3].parse().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// The events (not heartbeats) among consumed records, as [`SourceEvent`]s.
pub fn consumed_events(records: &[Consumed]) -> Vec<SourceEvent> {
    let mut out: Vec<SourceEvent> = records
        .iter()
        .filter_map(|r| {
            let v = &r.value;
            let (user, movie, ts) =
                (v["user_id"].as_u64()? as u32, v["movie_id"].as_u64()? as u32, v["ts"].as_i64()?);
            match v["type"].as_str()? {
                "rating" => Some(SourceEvent::Rating(user, movie, (v["rating"].as_f64()? * 2.0) as u32, ts)),
                "tag" => Some(SourceEvent::Tag(user, movie, v["tag"].as_str()?.to_string(), ts)),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

/// A running `streamflix` process whose stdout lines are collected by a thread.
pub struct Running {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    /// Starts `streamflix args…` with piped stdout.
    pub fn start(args: &[&str]) -> Running {
        let mut cmd = Command::new(streamflix_bin());
        cmd.args(args);
        Running::spawn(cmd)
    }

    /// Starts `cmd` (a `streamflix` command, with its arguments and environment) with piped
    /// stdout.
    pub fn spawn(mut cmd: Command) -> Running {
        use std::io::BufRead;
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start streamflix");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits (up to 120 s: CI machines can be slow and shared) for a stdout line starting with
    /// `prefix`; returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l.clone());
                if let Some(rest) = l.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
        }
        panic!("no line starting with {prefix:?}; saw {:#?}", self.seen);
    }

    /// The HTTP base URL the process printed.
    pub fn http_base(&mut self) -> String {
        self.wait_line("http: listening on ")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for exit (up to 120 s); returns the exit status and the remaining stdout.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut seen = std::mem::take(&mut self.seen);
                // The reader thread ends with the pipe.
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    seen.push(l);
                }
                return (st, seen);
            }
            assert!(Instant::now() < deadline, "streamflix did not exit; saw {:#?}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every file under `dir`, by path relative to it, with its bytes (to compare directories).
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Runs `streamflix args…` to completion.
pub fn streamflix(args: &[&str]) -> Output {
    Command::new(streamflix_bin()).args(args).output().expect("run streamflix")
}

/// `streamflix dump --state DIR what` as parsed JSON lines.
pub fn dump(state: &Path, what: &str) -> Vec<serde_json::Value> {
    let out = streamflix(&["dump", "--state", state.to_str().unwrap(), what]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Users the generator made inactive at the end (`ground_truth.csv`, `churnedAtEnd`).
pub fn ground_truth_churned(dir: &Path) -> std::collections::BTreeSet<u32> {
    ground_truth(dir)
        .into_iter()
        .filter(|(_, row)| matches!(row["churnedAtEnd"].as_str(), "true" | "1"))
        .map(|(user, _)| user)
        .collect()
}

/// The generator's `ground_truth.csv`: each user (first column) with its row by column name.
pub fn ground_truth(dir: &Path) -> Vec<(u32, std::collections::HashMap<String, String>)> {
    let mut r = csv::Reader::from_path(dir.join("ground_truth.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|r| r.unwrap())
        .map(|r| {
            (
                r[0].parse().unwrap(),
                headers.iter().zip(&r).map(|(h, v)| (h.to_string(), v.to_string())).collect(),
            )
        })
        .collect()
}

/// Precision and recall of `flagged` against `truth`.
pub fn precision_recall(
    flagged: &std::collections::BTreeSet<u32>,
    truth: &std::collections::BTreeSet<u32>,
) -> (f64, f64) {
    let hit = flagged.intersection(truth).count() as f64;
    (hit / flagged.len().max(1) as f64, hit / truth.len().max(1) as f64)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// GET `url`: status and JSON body, whatever the status.
pub fn get_json(url: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    get_json_query(url, &[])
}

/// [`get_json`] with query parameters (percent-encoded by ureq).
pub fn get_json_query(url: &str, query: &[(&str, &str)]) -> Result<(u16, serde_json::Value), ureq::Error> {
    let mut resp = agent().get(url).query_pairs(query.iter().copied()).call()?;
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_json()?))
}

/// GETs each path under `base` and checks its status and that the body is a JSON object with a
/// non-empty `error` message.
pub fn assert_json_errors(base: &str, cases: &[(&str, u16)]) {
    for &(path, want) in cases {
        let (status, body) = get_json(&format!("{base}{path}")).unwrap();
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
}

/// GET `url`: the body as text, whatever the status.
pub fn get_text(url: &str) -> String {
    agent().get(url).call().unwrap().body_mut().read_to_string().unwrap()
}

/// The crash tests' random source (a 64-bit LCG): seeded from `SOAK_SEED`, or from the clock,
/// and the seed printed, so a failure can be run again exactly (`SOAK_SEED=… cargo test …`).
pub struct Rng(u64);

impl Rng {
    /// The seed from `SOAK_SEED`, else the clock's nanoseconds; prints it.
    pub fn from_env(what: &str) -> (Rng, u64) {
        let seed = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{what}: SOAK_SEED={seed}");
        (Rng(seed), seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// How many SIGKILLs a crash test makes: `SOAK_KILLS` (`scripts/soak.sh` sets 20), else `short`.
pub fn soak_kills(short: usize) -> usize {
    std::env::var("SOAK_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(short)
}

/// How a crash test measures a run's progress.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Events applied (ratings + tags). Fine embedded, where they follow the input closely.
    Events,
    /// Input records read (the sum of the partitions' positions: offsets, heartbeats included).
    /// Through a broker applied events come in bursts, as the watermark releases the events
    /// waiting for it (tens of thousands at a time, and all the rest at the end of the input);
    /// the positions move smoothly.
    Offsets,
}

impl Progress {
    /// The progress in a `/stats` answer or a meta record (both carry `partitions`).
    fn of(self, v: &serde_json::Value) -> Option<u64> {
        match self {
            Progress::Events => v["events"].as_u64().or_else(|| {
                let c = &v["counters"];
                Some(c["ratings"].as_u64()? + c["tags"].as_u64()?)
            }),
            Progress::Offsets => {
                v["partitions"].as_array()?.iter().map(|p| p["position"].as_u64()).sum::<Option<u64>>()
            }
        }
    }
}

/// A state directory's committed progress.
///
/// Read from a copy: `dump` opens, recovers and, stopping cleanly, seals what it reads, and the
/// next run must start from the state exactly as the crash left it.
pub fn committed_in(state: &Path, progress: Progress) -> u64 {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let snapshot = tempfile::tempdir().unwrap();
    copy(state, snapshot.path());
    progress.of(&dump(snapshot.path(), "meta")[0]).expect("a meta record")
}

/// Runs `streamflix args…` (a processing command with `--http 127.0.0.1:0`, writing to `state`)
/// again and again, killing each run with SIGKILL at a random moment: once its committed
/// `progress` (`/stats`) passes a random target (ascending, within the first 85 % of `total`,
/// and past the previous kill), after a random 0–40 ms more (cut short once 5 % of `total` more
/// is committed, so that a fast run does not finish its input before the kill). Returns the
/// committed progress at the kills, `kills` of them; panics (naming `seed`) if a run finishes
/// before its kill.
pub fn kill_at_random_moments(
    args: &[&str],
    state: &Path,
    (progress, total): (Progress, u64),
    kills: usize,
    rng: &mut Rng,
    seed: u64,
) -> Vec<u64> {
    let lo = total / 50;
    let mut targets: Vec<u64> = (0..kills).map(|_| lo + rng.below(total * 85 / 100 - lo)).collect();
    targets.sort_unstable();
    let mut at = Vec::new();
    for target in targets {
        let mut run = Running::start(args);
        let base = run.http_base();
        let now = || get_json(&format!("{base}/stats")).ok().and_then(|(_, v)| progress.of(&v));
        let target = target.max(at.last().map_or(0, |k| k + 1));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                run.child.try_wait().unwrap().is_none(),
                "SOAK_SEED={seed}: the run ended before reaching {target} ({progress:?}; kills so far at {at:?})"
            );
            if now().is_some_and(|n| n >= target) {
                break;
            }
            assert!(Instant::now() < deadline, "SOAK_SEED={seed}: no progress to {target}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let until = Instant::now() + Duration::from_millis(rng.below(40));
        let cap = (target + total / 20).min(total * 9 / 10);
        while Instant::now() < until && now().is_none_or(|n| n < cap) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "SOAK_SEED={seed}: the run finished before kill {} (after {target}, {progress:?})",
            at.len() + 1
        );
        run.signal("-KILL");
        let (status, _) = run.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "SOAK_SEED={seed}");
        at.push(committed_in(state, progress));
    }
    at
}
