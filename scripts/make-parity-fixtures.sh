#!/usr/bin/env bash
# Regenerates model/tests/fixtures/parity (golden outputs of Hugging Face transformers
# for every model family and config variant clawline supports) in a venv of its own with the
# pinned versions of scripts/requirements-parity.txt. On demand: the fixtures are committed.
set -euo pipefail
source "$(dirname "$0")/lib/fixtures.sh"
USE_HUB_KERNELS=0 make_fixtures CLAWLINE_PARITY_VENV parity-venv scripts/requirements-parity.txt \
    model/tests/fixtures/parity scripts/make_parity_fixtures.py
