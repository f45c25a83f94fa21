#!/usr/bin/env bash
# Installs what the end-to-end tests and benchmarks need, once, to a fixed place outside the
# repository, and reuses it afterwards:
#   - tansu, a Kafka-protocol broker (cargo install; ~8 minutes to build on 2 cores, first time only)
#   - a Python venv with kafka-python (the tests' independent consumer), jsonschema (validates
#     payloads against schemas/ and docker-compose.yml against the Compose spec), PyYAML and
#     confluent-kafka (the benchmark's reference producer), and pyarrow, duckdb and pandas (the
#     readers of the daily close's Parquet tables and the independent computation they are
#     checked against), and scipy (the churn model's fits are checked against its optimizer)
#   - the Compose specification's JSON Schema, from PyPI's docker-compose wheel (not installed:
#     its dependencies no longer build; only the schema file is taken)
#   - Prometheus and promtool (Debian's `prometheus` package) and Chromium (Debian's `chromium`,
#     renders the HTML report headless), via apt-get, as root or with sudo
# Prints `export` lines for the paths, so callers can `eval "$(scripts/setup-test-tools.sh)"`.
# Override the location with STREAMFLIX_TOOLS.
set -euo pipefail

TANSU_VERSION=0.6.0
PY_PACKAGES=(kafka-python==3.0.12 jsonschema==4.26.0 confluent-kafka==2.16.1 PyYAML==6.0.3
  pyarrow==26.0.1 duckdb==2.0.1 pandas==3.1.1 scipy==1.17.1)
COMPOSE_WHEEL=docker-compose==1.29.2

default_tools=/opt/streamflix-tools
if ! mkdir -p "$default_tools" 2>/dev/null || [ ! -w "$default_tools" ]; then
  default_tools="${XDG_CACHE_HOME:-$HOME/.cache}/streamflix-tools"
fi
tools="${STREAMFLIX_TOOLS:-$default_tools}"
mkdir -p "$tools"
log() { printf '[setup] %s\n' "$*" >&2; }

tansu="$tools/bin/tansu"
if [ -x "$tansu" ] && "$tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  log "tansu $TANSU_VERSION present at $tansu"
else
  log "installing tansu $TANSU_VERSION to $tools (first time only; several minutes)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$tools" >&2
fi

venv="$tools/venv"
stamp="$venv/.streamflix-packages"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_PACKAGES[*]}" ]; then
  log "python venv present at $venv"
else
  log "creating python venv at $venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
  printf '%s' "${PY_PACKAGES[*]}" > "$stamp"
fi

compose_schema="$tools/compose_spec.json"
if [ -s "$compose_schema" ]; then
  log "compose spec schema present at $compose_schema"
else
  log "fetching the Compose spec schema ($COMPOSE_WHEEL wheel)"
  tmp=$(mktemp -d)
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$COMPOSE_WHEEL" >&2
  "$venv/bin/python" - "$tmp"/*.whl "$compose_schema" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("compose/config/compose_spec.json"))
PY
  rm -rf "$tmp"
fi

# Debian packages: Prometheus and promtool (the metrics tests), Chromium (renders the HTML report).
apt_missing=()
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  log "prometheus present: $(prometheus --version 2>&1 | head -1)"
else
  apt_missing+=(prometheus)
fi
if command -v chromium >/dev/null; then
  log "chromium present: $(chromium --version 2>/dev/null | head -1)"
else
  apt_missing+=(chromium)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >&2
  # The prometheus package may start a system service; the tests run their own instances.
  $sudo service prometheus stop >/dev/null 2>&1 || true
fi

echo "export STREAMFLIX_TANSU='$tansu'"
echo "export STREAMFLIX_COMPOSE_SCHEMA='$compose_schema'"
echo "export STREAMFLIX_PROMETHEUS='$(command -v prometheus)'"
echo "export STREAMFLIX_PROMTOOL='$(command -v promtool)'"
echo "export STREAMFLIX_CHROMIUM='$(command -v chromium)'"
echo "export STREAMFLIX_PYTHON='$venv/bin/python'"
