#!/usr/bin/env bash
# The learn-and-serve benchmark (issue: learn and serve): policy server tokens/s alone and
# concurrent, GRPO update tokens/s, version save and swap times. Writes benches/results/learn.md.
# Pass --device cuda on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
cargo build --release --locked --bin learn-bench
"$CARGO_TARGET_DIR/release/learn-bench" "$@"
