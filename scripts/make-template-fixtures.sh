#!/usr/bin/env bash
# Regenerates runtime/tests/fixtures/templates (chat templates rendered by Hugging Face
# transformers' apply_chat_template) in a venv of its own with the pinned versions of
# scripts/requirements-templates.txt. On demand: the fixtures are committed.
set -euo pipefail
source "$(dirname "$0")/lib/fixtures.sh"
make_fixtures CLAWLINE_TEMPLATES_VENV templates-venv scripts/requirements-templates.txt \
    runtime/tests/fixtures/templates scripts/make_template_fixtures.py
