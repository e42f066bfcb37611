#!/usr/bin/env bash
# The batcher benchmark (issue: DataPool): steps/s from the streams to batches against a plain
# consume of the same stream, and memory per million buffered steps. Writes benches/results/batcher.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CLAWLINE_SETUP_SKIP_TORCH=1 bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/nats/bin/nats-server}"
cargo build --release --locked --bin batcher-bench
"$CARGO_TARGET_DIR/release/batcher-bench" "$@"
