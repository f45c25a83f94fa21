#!/usr/bin/env bash
# Installs what the end-to-end tests and benchmarks need, once, to a fixed place outside the
# repository, and reuses it afterwards:
#   - tansu, a Kafka-protocol broker (cargo install; ~8 minutes to build on 2 cores, first time only)
#   - a Python venv with kafka-python (the tests' independent consumer), jsonschema (validates
#     payloads against schemas/) and confluent-kafka (the benchmark's reference producer)
# Prints `export` lines for the paths, so callers can `eval "$(scripts/setup-test-tools.sh)"`.
# Override the location with STREAMFLIX_TOOLS.
set -euo pipefail

TANSU_VERSION=0.6.0
PY_PACKAGES=(kafka-python==3.0.12 jsonschema==4.26.0 confluent-kafka==2.16.1)

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

echo "export STREAMFLIX_TANSU='$tansu'"
echo "export STREAMFLIX_PYTHON='$venv/bin/python'"
