#!/usr/bin/env bash
# The chaos suite (issue: operate it for real): every service and nats-server SIGKILLed in turn
# under load, then SQL counts of lost / doubled steps, batches and failed requests.
# Writes benches/results/chaos.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
cargo build --release --locked --bin chaos-bench --bin clawline-gateway --bin clawline-reward \
    --bin clawline-batcher --bin clawline-trainer --bin clawline-broadcaster --bin clawline-history \
    --bin clawline-mock-vllm
"$CARGO_TARGET_DIR/release/chaos-bench" "$@"
