#!/usr/bin/env bash
# Checks infra/template.yaml offline with cfn-lint (pinned, in the bed's venv). A deliberately
# broken copy must fail, so a linter that accepts anything cannot pass this check.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${FERRY_CACHE:-/var/cache/ferry}"
lint="$cache/venv/bin/cfn-lint"
[[ -x "$lint" ]] || { echo "[infra] $lint missing: run tests/setup.sh" >&2; exit 1; }
"$lint" infra/template.yaml
broken="$(mktemp --suffix .yaml)"
trap 'rm -f "$broken"' EXIT
sed 's/BillingMode: PAY_PER_REQUEST/BillingMode: PER_REQUEST_TYPO/' infra/template.yaml > "$broken"
if "$lint" "$broken" >/dev/null 2>&1; then
  echo "[infra] cfn-lint accepted a template with an invalid BillingMode: the check is broken" >&2
  exit 1
fi
echo "[infra] cfn-lint ok"
