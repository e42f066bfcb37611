#!/usr/bin/env bash
# Swap under load (issue: deploy = train): constant-rate traffic through the gateway while the
# broadcaster activates versions on the built-in policy server. Writes benches/results/loop.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
cargo build --release --locked --bin loop-bench
"$CARGO_TARGET_DIR/release/loop-bench" "$@"
