#!/usr/bin/env bash
# The learn benchmark at a 0.5B-class geometry on a CUDA machine (benches/results/learn.md, GPU
# section). Two steps, because such a machine usually has PyTorch but no Rust toolchain:
#
#   scripts/bench-learn-gpu.sh build TORCH_DIR   # here: learn-bench linked against TORCH_DIR (the
#                                                # `torch` folder of the GPU machine's PyTorch
#                                                # version, e.g. unpacked from its wheel), packed
#                                                # with nats-server into .gpu/bundle.tar.xz
#   scripts/bench-learn-gpu.sh run [ARGS]        # there, from the checkout: a random-weight
#                                                # checkpoint (LIKE=qwen2.5-0.5b), then the bench
#
# A libtorch older than the one tch expects builds only with the ops it lacks stubbed out of
# torch-sys (LIBTORCH_BYPASS_VERSION_CHECK=1 and a patched torch-sys via --config patch...);
# libtorch's CUDA library is linked with CLAWLINE_TORCH_CUDA=1 (see model/build.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
    torch=${2:?the torch folder of the PyTorch on the GPU machine}
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-gpu-target}"
    LIBTORCH="$torch" LIBTORCH_BYPASS_VERSION_CHECK=1 CLAWLINE_TORCH_CUDA=1 \
        cargo build --release -p clawline-benches --bin learn-bench "${@:3}"
    mkdir -p .gpu
    cp "$CARGO_TARGET_DIR/release/learn-bench" .gpu/ && strip .gpu/learn-bench
    cp "${NATS_SERVER_BIN:-$HOME/.cache/clawline/nats/bin/nats-server}" .gpu/
    tar -C .gpu -cJf .gpu/bundle.tar.xz learn-bench nats-server
    rm .gpu/learn-bench .gpu/nats-server
    ;;
run)
    shift
    OUT=${OUT:-$PWD/benches/results/raw}
    mkdir -p "$OUT" /tmp/clawline-gpu
    tar -C /tmp/clawline-gpu -xJf .gpu/bundle.tar.xz
    TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
    export LD_LIBRARY_PATH=$TORCH_LIB NATS_SERVER_BIN=/tmp/clawline-gpu/nats-server
    # (The 2026-12-04 run predates CLAWLINE_TORCH_CUDA and preloaded libtorch_cuda.so instead.)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 scripts/make_random_checkpoint.py /tmp/clawline-gpu/ckpt --like "${LIKE:-qwen2.5-0.5b}" \
        --tokenizer data/tokenizer
    /tmp/clawline-gpu/learn-bench --device cuda --model /tmp/clawline-gpu/ckpt \
        --machine "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
        --report "$OUT/learn-gpu.md" "$@"
    ;;
*)
    sed -n 2,17p "$0"
    exit 2
    ;;
esac
