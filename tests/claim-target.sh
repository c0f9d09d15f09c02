#!/usr/bin/env bash
# Makes the shared cargo target dir build this checkout's own sources.
#
# The Makefile puts the target dir outside the clone so that a fresh clone builds warm. Cargo
# names a workspace crate's artifacts by its path *relative to the workspace root*, so every
# checkout on the machine shares them. A checkout whose sources are older than the artifacts
# another checkout built then takes those artifacts as fresh. Its binaries are then the other
# checkout's code, and its test binaries read files through the other checkout's
# CARGO_MANIFEST_DIR, which may be gone (seen here: four `ferry-cli::validate` tests failed
# with "No such file or directory" after a CI clone under /tmp was built and removed).
#
# When another checkout built here last, this touches the workspace's own tracked sources, so
# cargo rebuilds the workspace crates (about a minute) and not the dependencies. Two checkouts
# building at the same time would still share the target dir; give one its own
# CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without CARGO_TARGET_DIR the target dir is this checkout's own `target/`: nothing is shared.
[ -n "${CARGO_TARGET_DIR:-}" ] || exit 0
target="$CARGO_TARGET_DIR"
here="$(pwd -P)"
stamp="$target/.ferry-checkout"
if [ -d "$target" ] && [ "$(cat "$stamp" 2>/dev/null || true)" != "$here" ]; then
  if [ -f "$stamp" ]; then
    echo "[setup] $target was last built from $(cat "$stamp"): rebuilding this checkout's crates"
  fi
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z -- '*.rs' '*.sql' '*.toml' | xargs -0 -r touch -c
  else
    find . -path ./target -prune -o \( -name '*.rs' -o -name '*.sql' -o -name '*.toml' \) -print0 \
      | xargs -0 -r touch -c
  fi
fi
mkdir -p "$target"
printf '%s\n' "$here" > "$stamp"
