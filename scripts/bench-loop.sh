#!/usr/bin/env bash
# The closed loop (issue: deploy = train). First `clawline demo` (simulated users, canary on) for the
# reward curve and interaction → served update, then swap under load: constant-rate traffic through
# the gateway while the broadcaster activates versions on the built-in policy server. Writes
# benches/results/loop.md, demo.svg and demo.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
cargo build --release --locked --bin loop-bench --bin clawline
demo_dir="$(mktemp -d)"
trap 'rm -rf "$demo_dir"' EXIT
"$CARGO_TARGET_DIR/release/clawline" --log-level warn demo --data-dir "$demo_dir" --device cpu \
    --out benches/results/demo.svg
"$CARGO_TARGET_DIR/release/loop-bench" --demo benches/results/demo.json "$@"
