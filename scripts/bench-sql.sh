#!/usr/bin/env bash
# The SQL benchmark (issue: history): generates a 10-million-step archive (cached under ~/.cache),
# runs a fixed set of queries on DataFusion and DuckDB over the same files, measures
# capture-to-queryable latency, and writes benches/results/sql.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CLAWLINE_SETUP_SKIP_TORCH=1 bash scripts/setup.sh --test
CACHE="${CLAWLINE_CACHE:-$HOME/.cache/clawline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$CACHE/nats/bin/nats-server}"
VENV="$CACHE/bench-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import duckdb, pytz' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check duckdb==1.4.2 pytz==2025.2
fi
cargo build --release --locked --bin sql-bench
"$CARGO_TARGET_DIR/release/sql-bench" --archive "$CACHE/bench/sql-archive" --python "$VENV/bin/python" "$@"
