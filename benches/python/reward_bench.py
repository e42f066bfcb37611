#!/usr/bin/env python3
"""The Python side of the reward benchmark: what `reward-bench rust` does, with `tokenizers` and
`onnxruntime` called directly from Python, for comparison.

One run: load the model directory's `tokenizer.json` and `model.onnx`, set the tokenizer to pad each
batch to its longest text and cut texts longer than --max-length from the left (what the reward
service does by default), open an `InferenceSession` on the CPU with the given intra-op threads, one
inter-op thread and all graph optimizations; score the first --warmup texts, then the whole text
file --passes times, in batches of --batch, in file order. Each batch: `encode_batch`, int64 numpy
arrays for input_ids, attention_mask and token_type_ids, `session.run`. Prints one JSON line.

--serve: after the warm-up print {"ready": true}, then for each stdin line `START COUNT` score texts
START..START+COUNT (wrapping around the file) and print one JSON line; `reward-bench compare` drives
both sides this way, turn by turn.

--describe prints the model's and texts' statistics instead (parameters, token counts).

Run through `scripts/bench-reward.sh`.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort
import tokenizers
from tokenizers import Tokenizer


def load_texts(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_tokenizer(model_dir, max_length):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    # The tokenizer.json may carry its own padding (MiniLM's pads every text to 128); replace it
    # with the service's: pad to the batch's longest, truncate from the left.
    tok.no_padding()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    tok.enable_truncation(max_length=max_length, direction="left")
    return tok


def cpu_seconds():
    """Busy CPU seconds so far of the whole machine (steal counted as busy) and of this process,
    from /proc, as the Rust side reads them."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    machine = sum(v for i, v in enumerate(fields) if i in (0, 1, 2, 5, 6, 7))
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(") ", 1)[1].split()
    own = int(rest[11]) + int(rest[12])
    return machine * 0.01, own * 0.01


def percentile(sorted_values, q):
    """Nearest rank, as the Rust side computes it."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, int(math.floor(q * (len(sorted_values) - 1) + 0.5)))
    return sorted_values[rank]


class PythonSide:
    def __init__(self, args):
        self.args = args
        self.texts = load_texts(args.texts)
        self.tok = load_tokenizer(args.model, args.max_length)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(os.path.join(args.model, "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.timed(self.texts[: args.warmup])

    def score(self, batch):
        encodings = self.tok.encode_batch(batch, add_special_tokens=True)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self.names:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (logits,) = self.session.run(["logits"], feed)
        assert logits.shape[0] == len(batch)
        return float(logits.sum(dtype=np.float64))

    def timed(self, texts):
        """Scores texts in batches of --batch, in order; the JSON of `reward-bench rust`."""
        b = self.args.batch
        batch_ms = []
        full = 0
        logits_sum = 0.0
        machine_before, own_before = cpu_seconds()
        started = time.perf_counter()
        for i in range(0, len(texts), b):
            batch = texts[i:i + b]
            t0 = time.perf_counter()
            logits_sum += self.score(batch)
            batch_ms.append((time.perf_counter() - t0) * 1e3)
            full += len(batch) == b
        seconds = time.perf_counter() - started
        machine_after, own_after = cpu_seconds()
        own = own_after - own_before
        ordered = sorted(batch_ms)
        return {
            "side": "python",
            "threads": self.args.threads,
            "batch": b,
            "texts": len(texts),
            "seconds": seconds,
            "texts_per_s": len(texts) / seconds,
            "batches": len(batch_ms),
            "full_batches": full,
            "batch_ms": batch_ms,
            "batch_ms_p50": percentile(ordered, 0.5),
            "batch_ms_p99": percentile(ordered, 0.99),
            "cpu_s": own,
            "others_cores": (machine_after - machine_before - own) / seconds,
            "logits_sum": logits_sum,
        }

    def serve(self):
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            start, count = (int(x) for x in line.split())
            chunk = [self.texts[i % len(self.texts)] for i in range(start, start + count)]
            print(json.dumps(self.timed(chunk)), flush=True)


def describe(args):
    import onnx

    texts = load_texts(args.texts)
    tok = load_tokenizer(args.model, args.max_length)
    tok.no_padding()
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    tok.no_truncation()
    full = [len(e.ids) for e in tok.encode_batch(texts)]
    tok.enable_truncation(max_length=args.max_length, direction="left")
    words = [len(t.split()) for t in texts]
    model = onnx.load(os.path.join(args.model, "model.onnx"))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    padded = {}
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    for b in args.batches:
        cells = [len(texts[i:i + b]) * len(tok.encode_batch(texts[i:i + b])[0].ids)
                 for i in range(0, len(texts), b)]
        padded[str(b)] = sum(cells) / len(texts)
    print(json.dumps({
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "params": params,
        "layers": config.get("num_hidden_layers"),
        "hidden": config.get("hidden_size"),
        "heads": config.get("num_attention_heads"),
        "intermediate": config.get("intermediate_size"),
        "vocab": config.get("vocab_size"),
        "texts": len(texts),
        "words_mean": sum(words) / len(words),
        "words_min": min(words),
        "words_max": max(words),
        "tokens_mean": sum(lengths) / len(lengths),
        "tokens_min": min(lengths),
        "tokens_max": max(lengths),
        "truncated": sum(1 for n in full if n > args.max_length),
        "padded_tokens_per_text": padded,
    }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (model.onnx, tokenizer.json)")
    ap.add_argument("--texts", required=True, help="one text per line")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=64, help="texts scored before timing")
    ap.add_argument("--passes", type=int, default=1, help="times the text file is scored")
    ap.add_argument("--serve", action="store_true",
                    help='print {"ready": true}, then score the chunk of each stdin line "START COUNT"')
    ap.add_argument("--describe", action="store_true")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    args = ap.parse_args()
    if args.describe:
        describe(args)
        return
    side = PythonSide(args)
    if args.serve:
        side.serve()
    else:
        print(json.dumps(side.timed(side.texts * args.passes)), flush=True)


if __name__ == "__main__":
    main()
