#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the broker and Python clients if missing
# (scripts/setup-test-tools.sh), checks formatting and lints, builds, and runs every test.
# End-to-end tests start their own tansu broker on a free loopback port and stop it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/setup-test-tools.sh)"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace "$@"
