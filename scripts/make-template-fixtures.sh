#!/usr/bin/env bash
# Regenerates runtime/tests/fixtures/templates (chat templates rendered by Hugging Face
# transformers' apply_chat_template) in a venv of its own with the pinned versions of
# scripts/requirements-templates.txt. On demand: the fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CLAWLINE_TEMPLATES_VENV:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/templates-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r scripts/requirements-templates.txt
OUT=runtime/tests/fixtures/templates
rm -rf "$OUT"
"$VENV/bin/python" scripts/make_template_fixtures.py "$OUT"
du -sh "$OUT"
