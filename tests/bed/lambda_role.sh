#!/bin/sh
# Runs a function binary with its role's credentials, as Lambda does: cargo runs every binary
# of `cargo lambda watch` through this runner (CARGO_TARGET_<triple>_RUNNER), which puts the
# role session that iam_roles.py made for the binary into its environment. A binary without a
# role is refused rather than run with some other identity.
set -eu
bin="$1"
name=$(basename "$bin")
creds="${FERRY_BED_ROLES:?FERRY_BED_ROLES is not set}/$name.env"
if [ ! -f "$creds" ]; then
    echo "lambda_role: no role for $name in $FERRY_BED_ROLES (is it a function of infra/template.yaml?)" >&2
    exit 1
fi
unset AWS_PROFILE AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
set -a
. "$creds"
set +a
exec "$@"
