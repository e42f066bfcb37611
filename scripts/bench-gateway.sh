#!/usr/bin/env bash
# The gateway benchmark (issue: capture): installs oha (cargo) and LiteLLM's proxy (PyPI, into its own
# venv), builds release binaries, and writes benches/results/gateway.md and gateway-protocols.md
# (`--protocols-only` with CLAWLINE_BENCH_SKIP_LITELLM=1: just the per-protocol latencies).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
CACHE="${CLAWLINE_CACHE:-$HOME/.cache/clawline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"

command -v oha >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/oha" ] || cargo install --locked oha@1.16.0
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")

LITELLM_VENV="$CACHE/litellm-venv"
if [ "${CLAWLINE_BENCH_SKIP_LITELLM:-0}" != "1" ] && [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    python3 -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check 'litellm[proxy]'
fi
LITELLM_ARGS=()
[ -x "$LITELLM_VENV/bin/litellm" ] && [ "${CLAWLINE_BENCH_SKIP_LITELLM:-0}" != "1" ] && LITELLM_ARGS=(--litellm "$LITELLM_VENV/bin/litellm")

cargo build --release --locked --bin clawline-gateway --bin clawline-mock-vllm --bin bare-proxy --bin gateway-bench
"$CARGO_TARGET_DIR/release/gateway-bench" --bin-dir "$CARGO_TARGET_DIR/release" --oha "$OHA" "${LITELLM_ARGS[@]}" "$@"
