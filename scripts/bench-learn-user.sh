#!/usr/bin/env bash
# Live traffic from plain clients: `clawline up` with its defaults, simulated users on the unmodified
# OpenAI SDK (scripts/learn_user.py) who like answers ending "Anything else?" and rate every answer
# with thumbs only. Writes benches/results/learn-user.md and learn-user.svg.
#
#   ./scripts/bench-learn-user.sh                    # 500 interactions, 4 users
#   CLAWLINE_BIN=target/debug/clawline ./scripts/bench-learn-user.sh --interactions 200
#   UP_ARGS="--kl-coef 0.3" ./scripts/bench-learn-user.sh    # other clawline up settings
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawline-target}"
PY="${CLAWLINE_PYTHON:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/venv/bin/python}"
BIN="${CLAWLINE_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --release --locked -p clawline-cli --bin clawline
    BIN="$CARGO_TARGET_DIR/release/clawline"
fi

DATA="$(mktemp -d)"
OUT="${LEARN_USER_OUT:-$(mktemp -d)}"
BASE=18100
trap 'kill -TERM "$UP" 2>/dev/null; wait "$UP" 2>/dev/null; rm -rf "$DATA"' EXIT
"$BIN" --log-level warn up --data-dir "$DATA/run" --nats-port 14322 --device cpu \
    --listen 127.0.0.1:$BASE --reward-listen 127.0.0.1:$((BASE + 1)) \
    --batcher-listen 127.0.0.1:$((BASE + 2)) --sql-listen 127.0.0.1:$((BASE + 3)) \
    --policy-listen 127.0.0.1:$((BASE + 4)) --trainer-listen 127.0.0.1:$((BASE + 5)) \
    --broadcaster-listen 127.0.0.1:$((BASE + 6)) ${UP_ARGS:-} >"$DATA/up.log" 2>&1 &
UP=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$BASE/ready" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$((BASE + 4))/v1/models" >/dev/null 2>&1 && break
    kill -0 "$UP" 2>/dev/null || { cat "$DATA/up.log"; exit 1; }
    sleep 1
done

STARTED=$(date +%s)
"$PY" scripts/learn_user.py --base-url "http://127.0.0.1:$BASE/v1" \
    --sql-url "http://127.0.0.1:$((BASE + 3))/sql" --engine-url "http://127.0.0.1:$((BASE + 4))/v1" \
    --out "$OUT" "$@"
ELAPSED=$(( $(date +%s) - STARTED ))
curl -s "http://127.0.0.1:$((BASE + 6))/status" >"$OUT/broadcaster.json" || true
curl -s "http://127.0.0.1:$((BASE + 5))/status" >"$OUT/trainer.json" || true
curl -s "http://127.0.0.1:$((BASE + 2))/stats" >"$OUT/batcher.json" || true

mkdir -p benches/results
cp "$OUT/learn-user.svg" benches/results/learn-user.svg
"$PY" - "$OUT" "$ELAPSED" "$(nproc)" "$BIN" "${UP_ARGS:-}" "$*" >benches/results/learn-user.md <<'EOF'
import json, sys
out, elapsed, cores, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
up_args, user_args = sys.argv[5], sys.argv[6]
s = json.load(open(f"{out}/summary.json"))
lat = s["thumbs_up_to_served_s"]
fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
print("# Learning from plain clients' live traffic\n")
print(f"`scripts/bench-learn-user.sh` on {cores} CPU cores ({binary}): `clawline up` with its defaults "
      "(built-in tiny model, canary on), simulated users on the unmodified OpenAI Python SDK who like "
      "answers ending \"Anything else?\" (no word of it is in the bundled reward model's lexicon) and "
      "rate every answer with a thumbs up or down (`POST /v1/feedback`, step id from the answer's headers). "
      "No `complete_trajectory`, no trajectory ids.\n")
print(f"Run as `{' '.join(x for x in [('UP_ARGS=' + repr(up_args)) if up_args else '', 'scripts/bench-learn-user.sh', user_args] if x)}`.\n")
print("| measure | first 100 | last 100 |\n| --- | --- | --- |")
print(f"| liked share | {s['liked_first']:.2f} | {s['liked_last']:.2f} |")
print(f"| well-formed share (independent of rewards) | {s['well_formed_first']:.2f} | {s['well_formed_last']:.2f} |\n")
print(f"- interactions: {s['interactions']}, failed: {s['failed']}, wall time {s['wall_s']} s (script total {elapsed} s)")
print(f"- liked share rise: {s['liked_last'] - s['liked_first']:+.2f} (target ≥ +0.30)")
wf = s['well_formed_last'] / max(1e-9, s['well_formed_first'])
print(f"- well-formed share, last/first: {wf:.2f}× (target ≥ 0.95×)")
ref = s.get("reference_likelihood") or {}
if ref.get("likelihood_ratio") is not None:
    print(f"- reference answers' per-token likelihood (held-out set, teacher-forced, no reward involved): "
          f"v0 NLL {ref['start_nll']:.3f} → v{ref['end_version']} {ref['end_nll']:.3f} nats/token, "
          f"{ref['likelihood_ratio']:.3f}× the start (target ≥ 0.95×)")
se = lambda p, n=100: (p * (1 - p) / n) ** 0.5
d = s['liked_last'] - s['liked_first']
print(f"- liked rise in standard errors of the difference: {d / max(1e-9, (se(s['liked_first'])**2 + se(s['liked_last'])**2) ** 0.5):.1f}")
print(f"- thumbs-up → first answer served by weights trained on it: median {fmt(lat['median'])} s, "
      f"p90 {fmt(lat['p90'])} s over {lat['n']} liked steps (target: median ≤ 5 s)")
stages = lat.get("median_stage_s") or {}
if stages:
    print("  - median of each stage: " + ", ".join(f"{k} {fmt(v)} s" for k, v in stages.items())
          + " (thumbs-up → its batch formed → the version trained on it published → that or a later version "
          "activated after the canary → the first answer it served)")
pe = s.get("paired")
if pe:
    print(f"- paired evaluation, straight from the engine (not recorded, not trained on): the same {pe['prompts']} "
          f"prompts with the same seeds before the users started (v{pe['versions'][0]}) and after they finished "
          f"(v{pe['versions'][1]}). Under no change the answers that changed split evenly both ways (McNemar); "
          "z is the change in standard errors.\n")
    print("  | measure | before | after | ratio | gained | lost | z |\n  | --- | --- | --- | --- | --- | --- | --- |")
    for k in ("liked", "well_formed"):
        m = pe[k]
        print(f"  | {k.replace('_', '-')} share | {m['before']:.3f} | {m['after']:.3f} | "
              f"{fmt(m['ratio'])}× | {m['gained']} | {m['lost']} | {m['z']:+.1f} |")
    print()
print(f"- highest version served: {s['versions_served_last']}\n")
print("![liked and well-formed shares](learn-user.svg)\n")
print("First answers:\n")
for t in s["examples_first"]:
    print(f"- {json.dumps(t)}")
print("\nLast answers:\n")
for t in s["examples_last"]:
    print(f"- {json.dumps(t)}")
for name in ("broadcaster", "trainer", "batcher"):
    try:
        print(f"\n<details><summary>{name} status at the end</summary>\n\n```json\n"
              + json.dumps(json.load(open(f"{out}/{name}.json")), indent=1)[:4000] + "\n```\n</details>")
    except Exception:
        pass
EOF
cat benches/results/learn-user.md
