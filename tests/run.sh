#!/usr/bin/env bash
# `make test`: set up, fmt check, clippy -D warnings, build, start the test bed, run every
# test, stop the bed (also on failure). Prints the wall time of each stage.
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_BED_DIR="${FERRY_BED_DIR:-/tmp/ferry-bed-test}"
start=$SECONDS
stage() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - start)); }

stage "setup"
bash tests/setup.sh

stage "fmt"
cargo fmt --all -- --check

stage "state machine (asl-validator)"
bash tests/asl.sh

stage "infrastructure template and worker image (cfn-lint, sam validate --lint, checkov)"
bash tests/infra.sh

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "build tests"
# The worker tests spawn the ferry-worker binary: build every binary, not only test targets.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --locked --profile ci)
  cargo nextest run --workspace --locked --no-run
else
  echo "cargo-nextest not found: using cargo test"
  runner=(cargo test --workspace --locked)
  cargo test --workspace --locked --no-run
fi

stage "test bed up"
trap 'python3 tests/bed/bed.py down' EXIT
python3 tests/bed/bed.py up

stage "tests"
set -a
# shellcheck disable=SC1091
. "$FERRY_BED_DIR/bed.env"
set +a
"${runner[@]}"

stage "IAM: every call of Ferry's allowed by the template's roles"
python3 tests/bed/iam_report.py "$FERRY_BED_DIR/iam.log"

stage "done"
