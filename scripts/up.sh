#!/usr/bin/env bash
# Starts the whole system on this machine: installs what is missing, builds, runs `clawline up`.
# Arguments go to `clawline up` (e.g. --upstream http://127.0.0.1:8000/v1 to front your own engine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
cargo build --release --locked --bin clawline --bin clawline-gateway
exec "$CARGO_TARGET_DIR/release/clawline" up "$@"
