#!/usr/bin/env bash
# `make bench`: starts a bed of its own, installs pgcopydb (the peer to compare with), builds
# ferry-bench in release mode, runs it, writes docs/benchmarks.md and (the Redis part)
# docs/benchmarks-redis.md. Not part of CI: it takes ~20 minutes and generates a few GB.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FERRY_BED_DIR="${FERRY_BED_DIR:-/tmp/ferry-bed-bench}"
bash tests/setup.sh
if ! command -v pgcopydb >/dev/null 2>&1; then
  echo "[bench] apt-get install pgcopydb"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgcopydb \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgcopydb; }
fi
cargo build --release --locked -p ferry-bench --bins
trap 'python3 tests/bed/bed.py down' EXIT
python3 tests/bed/bed.py up
set -a
# shellcheck disable=SC1091
. "$FERRY_BED_DIR/bed.env"
set +a
"${CARGO_TARGET_DIR:-target}/release/ferry-bench" \
  --gb "${BENCH_GB:-2}" --pgbench-seconds "${BENCH_SECONDS:-30}" --throttle-mb "${BENCH_THROTTLE_MB:-40}" \
  --newer-source --out "${BENCH_OUT:-docs/benchmarks.md}"
# The Redis part: copy, live-sync lag, the switch's freeze -> docs/benchmarks-redis.md.
"${CARGO_TARGET_DIR:-target}/release/ferry-bench-redis" \
  --mb "${BENCH_REDIS_MB:-1024}" --out "${BENCH_REDIS_OUT:-docs/benchmarks-redis.md}"
