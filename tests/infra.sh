#!/usr/bin/env bash
# Checks infra/template.yaml offline: cfn-lint, `sam validate --lint`, what the SAM transform adds
# (tests/infra_transform.py), and the checkov policy
# scan (skips explained in infra/.checkov.yaml and in resource Metadata). Each tool must also
# refuse a deliberately broken copy, so a check that accepts anything cannot pass.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${FERRY_CACHE:-/var/cache/ferry}"
lint="$cache/venv/bin/cfn-lint"
sam="$cache/sam-venv/bin/sam"
checkov="$cache/checkov-venv/bin/checkov"
for tool in "$lint" "$sam" "$checkov"; do
  [[ -x "$tool" ]] || { echo "[infra] $tool missing: run tests/setup.sh" >&2; exit 1; }
done
# Offline: no telemetry, no policy download, a region and dummy credentials for the SAM CLI.
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"

broken="$(mktemp -d)"
trap 'rm -rf "$broken"' EXIT
must_refuse() { # what, command...
  local what="$1"; shift
  if "$@" >"$broken/out" 2>&1; then
    echo "[infra] accepted $what: the check is broken" >&2
    cat "$broken/out" >&2
    exit 1
  fi
}

"$lint" infra/template.yaml
sed 's/BillingMode: PAY_PER_REQUEST/BillingMode: PER_REQUEST_TYPO/' infra/template.yaml > "$broken/billing.yaml"
must_refuse "a template with an invalid BillingMode (cfn-lint)" "$lint" "$broken/billing.yaml"
echo "[infra] cfn-lint ok"

"$sam" validate --lint -t infra/template.yaml
sed 's/    Timeout: 900$/    Timeout: 90000/' infra/template.yaml > "$broken/timeout.yaml"
must_refuse "a function timeout over Lambda's 900 s (sam validate --lint)" "$sam" validate --lint -t "$broken/timeout.yaml"
echo "[infra] sam validate --lint ok"

"$cache/sam-venv/bin/python" tests/infra_transform.py infra/template.yaml
awk '/^    VpcConfig:$/ {skip=5} skip>0 {skip--; next} {print}' infra/template.yaml > "$broken/novpc.yaml"
must_refuse "functions outside the VPC (SAM transform)" "$cache/sam-venv/bin/python" tests/infra_transform.py "$broken/novpc.yaml"

"$checkov" -f infra/template.yaml --config-file infra/.checkov.yaml
# The first log group loses its KMS key: CKV_AWS_158 must fail.
awk '!done && /^      KmsKeyId:$/ {skip=4; done=1} skip>0 {skip--; next} {print}' infra/template.yaml > "$broken/nokms.yaml"
must_refuse "a log group without a KMS key (checkov)" "$checkov" -f "$broken/nokms.yaml" --config-file infra/.checkov.yaml
echo "[infra] checkov ok"

"$checkov" -f Dockerfile --framework dockerfile --compact --quiet --skip-download
sed 's/^USER 10001$/USER root/' Dockerfile > "$broken/Dockerfile"
must_refuse "a worker image that runs as root (checkov)" "$checkov" -f "$broken/Dockerfile" --framework dockerfile --compact --quiet --skip-download
echo "[infra] checkov (Dockerfile) ok"
