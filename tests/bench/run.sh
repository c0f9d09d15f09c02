#!/usr/bin/env bash
# `make bench`: starts a bed of its own, installs pgcopydb (the peer to compare with), builds
# ferry-bench in release mode, runs it, writes docs/benchmarks.md and (the Redis part)
# docs/benchmarks-redis.md. Not part of CI: it takes ~20 minutes and generates a few GB.
# With BENCH_SCALE=1 (`make bench-scale`) it runs Ferry's copy alone on one BENCH_GB (20) GB
# dataset of BENCH_SHAPE (uuid) -> docs/benchmarks-scale.md, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FERRY_BED_DIR="${FERRY_BED_DIR:-/tmp/ferry-bed-bench}"
if [ -n "${BENCH_SCALE:-}" ]; then
  gb="${BENCH_GB:-20}"
  mkdir -p "$(dirname "$FERRY_BED_DIR")"
  free_gb=$(df -P -BG "$(dirname "$FERRY_BED_DIR")" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
  need_gb=$(python3 -c "import math, sys; print(math.ceil(float(sys.argv[1]) * 2.5 + 5))" "$gb")
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "[bench] BENCH_GB=$gb needs about ${need_gb} GB free beside FERRY_BED_DIR ($FERRY_BED_DIR): the source, its copy and their WAL; ${free_gb} GB is free. Free space or lower BENCH_GB." >&2
    exit 2
  fi
fi
bash tests/setup.sh
if ! command -v pgcopydb >/dev/null 2>&1; then
  echo "[bench] apt-get install pgcopydb"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgcopydb \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgcopydb; }
fi
cargo build --release --locked -p ferry-bench --bins
trap 'python3 tests/bed/bed.py down' EXIT
# Both servers get the shared buffers RDS gives a 4 GB instance (a quarter of its memory), not
# PostgreSQL's 128MB default: Ferry sizes its index builds' sort memory from them.
FERRY_BED_SHARED_BUFFERS="${FERRY_BED_SHARED_BUFFERS:-1GB}" python3 tests/bed/bed.py up
set -a
# shellcheck disable=SC1091
. "$FERRY_BED_DIR/bed.env"
set +a
if [ -n "${BENCH_SCALE:-}" ]; then
  "${CARGO_TARGET_DIR:-target}/release/ferry-bench" --scale --gb "$gb" \
    --shape "${BENCH_SHAPE:-uuid}" --out "${BENCH_OUT:-docs/benchmarks-scale.md}"
  exit 0
fi
"${CARGO_TARGET_DIR:-target}/release/ferry-bench" \
  --gb "${BENCH_GB:-2}" --pgbench-seconds "${BENCH_SECONDS:-30}" --throttle-mb "${BENCH_THROTTLE_MB:-40}" \
  --newer-source --out "${BENCH_OUT:-docs/benchmarks.md}"
# The Redis part: copy, live-sync lag, the switch's freeze -> docs/benchmarks-redis.md.
"${CARGO_TARGET_DIR:-target}/release/ferry-bench-redis" \
  --mb "${BENCH_REDIS_MB:-1024}" --out "${BENCH_REDIS_OUT:-docs/benchmarks-redis.md}"
