#!/usr/bin/env bash
# Replay benchmarks: prints numbers, asserts nothing (tests check behaviour, this measures speed).
#   1. generate 25 M ratings (ml-25m sizes): seconds and peak RSS
#   2. read + sort those 25 M ratings (streamflix-replay inspect): seconds and peak RSS
#   3. unthrottled replay of 1 M events into a real broker (tansu, in memory) vs an independent
#      librdkafka producer (confluent-kafka) sending byte-identical records to the same broker
#   4. the processor (ALS on): embedded on 1 M and 25 M events, a restart of the 25 M state, the
#      model alone (benches/als_stream), recommender quality (streamflix eval), and 1 M and 25 M
#      events through tansu
#      and the daily close: the 25 M run with its Parquet tables on (by day and by month), disk
#      per table, and the time of the largest close (every user, at a month end); the churn
#      model: the 25 M run with --no-churn-model, and the slowest day close with the model
#   5. the processor with --no-recommender (users' state, sessions, churn; no ALS): the same
#      1 M and 25 M runs, embedded and through tansu
# Environment: BENCH_DIR (default /tmp/streamflix-bench; needs ~12 GB of disk (the daily close
# writes two 25 M runs' tables, ~4 GB each with their states) and, for tansu's
# in-memory copy of the 25 M set, ~4 GB of memory), BENCH_RATINGS (default
# 25000095), BENCH_REPLAY_EVENTS (default 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup-test-tools.sh)"
if [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq time >/dev/null
fi

dir="${BENCH_DIR:-/tmp/streamflix-bench}"
ratings="${BENCH_RATINGS:-25000095}"
replay_events="${BENCH_REPLAY_EVENTS:-1000000}"
mkdir -p "$dir"
cargo build --release --workspace --quiet
bin="$PWD/target/release/streamflix-replay"
measure() { /usr/bin/time -f '%e %M' -o "$dir/time.txt" "$@"; read -r secs kb < "$dir/time.txt"; }

echo "== generate $ratings ratings (ml-25m sizes)"
measure "$bin" generate --preset ml25m --ratings "$ratings" --tags 1093360 --out "$dir/ml25m" --force --quiet
gen_secs=$secs; gen_mb=$((kb / 1024))
echo "   ${gen_secs}s, peak RSS ${gen_mb} MB"

echo "== read + sort $ratings ratings and 1093360 tags"
measure "$bin" inspect --data "$dir/ml25m" --json > "$dir/inspect.json"
read_secs=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["read_and_sort_seconds"],2))' "$dir/inspect.json")
read_mb=$((kb / 1024)); read_proc=$secs
echo "   ${read_secs}s (process ${read_proc}s), peak RSS ${read_mb} MB"

echo "== unthrottled replay of $replay_events events into tansu"
users=$((replay_events / 150))
"$bin" generate --users "$users" --movies 20000 --ratings "$replay_events" --tags 0 --out "$dir/replay" --force --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$STREAMFLIX_TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ --silent >/dev/null 2>&1 &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

"$bin" run --data "$dir/replay" --brokers "127.0.0.1:$port" --quiet --json > "$dir/replay.json"
ours=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["events_per_second"]))' "$dir/replay.json")
"$bin" run --data "$dir/replay" --sink stdout > "$dir/records.jsonl" 2>/dev/null
"$STREAMFLIX_PYTHON" benches/reference_producer.py --brokers "127.0.0.1:$port" --records "$dir/records.jsonl" > "$dir/reference.json"
theirs=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["events_per_second"]))' "$dir/reference.json")
ratio=$(python3 -c "print(round($ours / $theirs, 2))")
echo "   streamflix-replay ${ours} events/s, confluent-kafka ${theirs} events/s, ratio ${ratio}"

cat <<TABLE | tee "$dir/results.md"

| benchmark | result |
|---|---|
| generate $ratings ratings + 1,093,360 tags | ${gen_secs} s, peak RSS ${gen_mb} MB |
| read + sort $ratings ratings + 1,093,360 tags | ${read_secs} s (whole process ${read_proc} s), peak RSS ${read_mb} MB |
| replay $replay_events events into tansu, unthrottled | ${ours} events/s |
| confluent-kafka (librdkafka) producer, same records | ${theirs} events/s |
| ratio streamflix-replay / confluent-kafka | ${ratio} |
TABLE

# --- processor ---------------------------------------------------------------------------------
proc="target/release/streamflix"
# Runs the processor with wall time and peak RSS appended, keeping its summary lines.
time_format="   wall %e s, peak RSS %M KB, CPU %P"
summary="read and sorted|resuming|processed|checkpoints|snapshots|day closes|churn model|recommender|wall"
timed() { /usr/bin/time -f "$time_format" "$proc" "$@" 2>&1 | grep -E "$summary"; }
# Runs the processor like `timed` and adds where the CPU went: seconds per thread (the busiest
# six) and tansu's, sampled from /proc every quarter second (the last quarter is not counted).
# Through the broker at 25 M this is what decides the throughput: two cores give 104 s of CPU
# for 26.1 M events at 500 k/s.
by_thread() {
  python3 - "$tansu_pid" "$dir/proc.out" "$time_format" "$summary" "$proc" "$@" <<'PY'
import os, re, subprocess, sys, time
tansu, out, time_format, summary, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
tick = os.sysconf("SC_CLK_TCK")
def cpu(stat):
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime
before = cpu(f"/proc/{tansu}/stat")
with open(out, "w") as log:
    p = subprocess.Popen(["/usr/bin/time", "-f", time_format] + cmd, stdout=log, stderr=log)
    seen = {}
    while p.poll() is None:
        try:
            # /usr/bin/time's child is the processor.
            children = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        except OSError:
            children = []
        for child in children:
            try:
                for tid in os.listdir(f"/proc/{child}/task"):
                    name = open(f"/proc/{child}/task/{tid}/comm").read().strip()
                    seen[tid] = (name, cpu(f"/proc/{child}/task/{tid}/stat"))
            except OSError:
                pass  # the thread or the process ended meanwhile
        time.sleep(0.25)
after = cpu(f"/proc/{tansu}/stat")
for line in open(out):
    if re.search(summary, line):
        print(line, end="")
top = sorted(seen.values(), key=lambda t: -t[1])[:6]
print("   CPU by thread: " + ", ".join(f"{n} {s:.1f} s" for n, s in top) + f"; tansu {after - before:.1f} s")
PY
}
# Consumes topic prefix $1 (replayed from data directory $2) through tansu into a fresh state,
# with `by_thread`; further arguments go to the processor.
consume() {
  local prefix=$1 data=$2
  shift 2
  rm -rf "$dir/pstate" # a state left by an earlier run would resume against this broker
  by_thread process --brokers "127.0.0.1:$port" --topic-prefix "$prefix" --movies "$data" --state "$dir/pstate" \
    --exit-when-done --no-http "$@"
  rm -rf "$dir/pstate"
}
echo "== processor, embedded: 1 M ratings"
"$bin" generate --out "$dir/p1m" --users 8000 --ratings 1000000 --tags 40000 --quiet --force
timed run --data "$dir/p1m" --exit-when-done --no-http
echo "== processor, embedded: 25 M ratings (ml-25m sizes; reuses the generated set), no tables"
rm -rf "$dir/s25m"
timed run --data "$dir/ml25m" --state "$dir/s25m" --exit-when-done --no-http --no-snapshots
echo "== the churn model off: the same 25 M run with --no-churn-model (the run above has it on)"
rm -rf "$dir/s25m-nochurn"
timed run --data "$dir/ml25m" --state "$dir/s25m-nochurn" --exit-when-done --no-http --no-snapshots --no-churn-model
rm -rf "$dir/s25m-nochurn"
echo "== restart of that 25 M state (loads it and rebuilds the model from the rating log)"
timed run --data "$dir/ml25m" --state "$dir/s25m" --exit-when-done --no-http --no-snapshots
rm -rf "$dir/s25m"
# The daily close: the same run with the tables on (compare with the first 25 M run above). The
# directories are fresh and deleted only afterwards: ext4 skips recently deleted inodes when it
# allocates new ones, so creating 60 k files right after deleting as many is slower than either.
for period in day month; do
  echo "== the daily close: 25 M embedded with every table, --snapshot-period $period"
  timed run --data "$dir/ml25m" --state "$dir/s25-$period" --exit-when-done --no-http --snapshot-period "$period"
  echo "   disk per table:" $(cd "$dir/s25-$period/snapshots" && du -sh -- */ | awk '{printf "%s %s, ", $2, $1}')
  echo "   files: $(find "$dir/s25-$period/snapshots" -type f | wc -l), directories: $(find "$dir/s25-$period/snapshots" -type d | wc -l)"
done
rm -rf "$dir/s25-day" "$dir/s25-month"
echo "== the model alone: Als::observe on the 25 M ratings in time order, one thread"
cargo bench --quiet --bench als_stream -- "$dir/ml25m" | grep als_stream
echo "== recommender quality and update latency (streamflix eval, 1 M ratings)"
"$proc" eval --data "$dir/p1m" 2>/dev/null > "$dir/eval.json"
python3 - "$dir/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["streaming"]
print(f"   batch RMSE {r['rmse']:.4f} MAE {r['mae']:.4f} (fit {r['batch']['fit_seconds']:.1f} s); "
      f"streaming RMSE {s['on_batch_events']['rmse']:.4f} vs frozen batch {s['batch_on_same_events']['rmse']:.4f}; "
      f"recall@10 {s['recall_at_10']:.3f}, NDCG@10 {s['ndcg_at_10']:.3f}, coverage {s['coverage_at_10']:.3f} "
      f"(popular: {s['popular_recall_at_10']:.3f}, {s['popular_ndcg_at_10']:.3f}); update p50 {s['update_latency']['p50_us']:.1f} µs, p99 {s['update_latency']['p99_us']:.1f} µs")
PY
echo "   (Spark MLlib side by side: scripts/spark-compare.sh $dir/p1m)"
echo "== processor through tansu: 1 M ratings replayed first, then consumed"
"$bin" run --data "$dir/p1m" --brokers "127.0.0.1:$port" --topic-prefix p --quiet
consume p "$dir/p1m"
echo "== processor through tansu: the 25 M set replayed first (tansu holds it in memory: ~3.3 GB), then consumed"
"$bin" run --data "$dir/ml25m" --brokers "127.0.0.1:$port" --topic-prefix q --quiet
consume q "$dir/ml25m"

echo "== --no-recommender, embedded: 1 M ratings"
timed run --data "$dir/p1m" --exit-when-done --no-http --no-recommender
echo "== --no-recommender, embedded: 25 M ratings"
timed run --data "$dir/ml25m" --exit-when-done --no-http --no-recommender
echo "== --no-recommender through tansu: 1 M ratings (the topics replayed above)"
consume p "$dir/p1m" --no-recommender
echo "== --no-recommender through tansu: 25 M ratings (the topics replayed above)"
consume q "$dir/ml25m" --no-recommender
