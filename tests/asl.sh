#!/usr/bin/env bash
# Validates every state machine in statemachines/ with asl-validator (npm, pinned), which
# catches what the emulator accepts and AWS refuses. A deliberately broken copy must fail,
# so a validator that accepts anything cannot pass this check.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${FERRY_CACHE:-/var/cache/ferry}/node"
validator="$cache/node_modules/.bin/asl-validator"
if [[ ! -x "$validator" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "[asl] apt-get install nodejs npm"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  mkdir -p "$cache"
  echo "[asl] npm install asl-validator@4.0.0 into $cache"
  npm install --silent --no-audit --no-fund --prefix "$cache" asl-validator@4.0.0
fi
for f in statemachines/*.asl.json; do
  "$validator" --json-path "$f"
done
broken="$(mktemp)"
trap 'rm -f "$broken"' EXIT
python3 - "$broken" <<'PY'
import json, sys
asl = json.load(open("statemachines/migration.asl.json"))
asl["States"]["Verify"]["Next"] = "NoSuchState"
json.dump(asl, open(sys.argv[1], "w"))
PY
if "$validator" --silent --json-path "$broken" >/dev/null 2>&1; then
  echo "[asl] asl-validator accepted a state machine with a dangling Next: the check is broken" >&2
  exit 1
fi
echo "[asl] ok"
