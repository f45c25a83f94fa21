#!/usr/bin/env bash
# Scores one random split with streamflix's ALS and Spark MLlib's (not part of CI); with --temporal,
# streamflix eval --temporal against Spark refitted every 30 event-days.
# Usage: scripts/spark-compare.sh [DATA_DIR] [extra args for spark_compare.py]
# Without DATA_DIR it generates 1 M ratings. Needs Java 17 (pyspark 3.5) and PyPI access the first
# time; pyspark goes to $STREAMFLIX_TOOLS/spark-venv (default /opt/streamflix-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${STREAMFLIX_TOOLS:-/opt/streamflix-tools}
venv="$tools/spark-venv"
command -v java >/dev/null || { echo "error: spark-compare needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import pyspark" 2>/dev/null; then
  echo "installing pyspark into $venv…" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "pyspark==3.5.3" numpy
fi
cargo build --release -q -p streamflix -p streamflix-replay
data=${1:-}
if [ -z "$data" ] || [ "${data#-}" != "$data" ]; then
  data=$(mktemp -d)/ml
  echo "generating 1 M ratings into $data…" >&2
  target/release/streamflix-replay generate --out "$data" --users 8000 --movies 3000 --ratings 1000000 --seed 42 >/dev/null
else
  shift
fi
exec "$venv/bin/python" scripts/spark_compare.py "$data" "$@"
