#!/usr/bin/env bash
# `make demo`: the local rehearsal. Sets up what is missing, builds the function binaries, the
# worker and the demo, starts a test bed of its own, runs a whole migration through the real
# state machine while the sample app writes, prints and writes the report, stops the bed.
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_BED_DIR="${FERRY_BED_DIR:-/tmp/ferry-bed-demo}"
export FERRY_REPORT_DIR="${FERRY_REPORT_DIR:-$PWD/target/ferry-report}"
bash tests/setup.sh
echo "[demo] building the functions, the worker and the demo (debug)"
cargo build --workspace --bins --locked
trap 'python3 tests/bed/bed.py down' EXIT
python3 tests/bed/bed.py up
set -a
# shellcheck disable=SC1091
. "$FERRY_BED_DIR/bed.env"
set +a
"${CARGO_TARGET_DIR:-target}/debug/ferry-demo"
