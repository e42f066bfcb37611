#!/usr/bin/env bash
# Runs every check and test of the workspace against the real parts (nats-server, …), after
# installing what is missing. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test
bash scripts/install-agents.sh
# A target dir outside the checkout keeps repeat runs (and CI's fresh clones) incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
export CLAWLINE_PYTHON="${CLAWLINE_PYTHON:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/venv/bin/python}"

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
