#!/usr/bin/env bash
# Regenerates model/tests/fixtures/parity (golden outputs of Hugging Face transformers
# for every model family and config variant clawline supports) in a venv of its own with the
# pinned versions of scripts/requirements-parity.txt. On demand: the fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CLAWLINE_PARITY_VENV:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/parity-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r scripts/requirements-parity.txt
OUT=model/tests/fixtures/parity
rm -rf "$OUT"
USE_HUB_KERNELS=0 "$VENV/bin/python" scripts/make_parity_fixtures.py "$OUT"
du -sh "$OUT"
