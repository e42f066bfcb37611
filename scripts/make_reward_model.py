#!/usr/bin/env python3
"""Writes ONNX reward models in the Hugging Face sequence-classification export layout.

A model directory holds what `optimum` exports for a `*ForSequenceClassification` model:

    model.onnx       graph inputs  input_ids       int64 [batch, sequence]
                                   attention_mask  int64 [batch, sequence]
                                   token_type_ids  int64 [batch, sequence]   (transformer kind only)
                     graph output  logits          float32 [batch, num_labels]
    tokenizer.json   a Hugging Face `tokenizers` tokenizer
    config.json      HF-style config (max_position_embeddings, id2label, label2id, num_labels,
                     model_type, ...) plus a "clawline" object saying what the model is and how a
                     reward is read off its logits ("reward": "sigmoid" = sigmoid(logits[0]),
                     "softmax:1" = softmax(logits)[1]).

Two kinds:

  lexicon      The small reward model bundled in the repo (data/reward-model/). A hand-written
               WordLevel tokenizer (NFKC + lowercase, words with their contractions kept whole,
               every punctuation mark a token of its own) over ~1,750 common English words, and a
               graph that averages one weight per token over the unpadded tokens and adds a bias:
                   logit = sum_i(w[id_i] * mask_i) / max(sum_i(mask_i), 1) + bias
               It prefers helpful, polite, confident answers ("Sure, here is the answer: 42.")
               over refusals, rudeness and hedging ("Sorry, I cannot help with that."): words of
               POSITIVE_WORDS weigh +3, words of NEGATIVE_WORDS -3, every other token (neutral
               words, punctuation, [UNK], [PAD]) 0. The bias is 0, so text with no lexicon word
               scores logit 0, i.e. reward 0.5.

  transformer  A BERT-shaped classifier (embeddings + LayerNorm, N post-LN encoder layers with
               multi-head self-attention and an erf-GELU feed-forward, masked mean pooling, a tanh
               pooler and a 2-way classifier) with random weights drawn from a seeded generator.
               Its scores mean nothing; it exists to exercise and benchmark the transformer path
               (three inputs, [batch, 2] logits, attention cost growing with the sequence). The
               given tokenizer.json is copied in unchanged and sets the vocabulary size.

Everything is reproducible byte for byte: fixed seeds, no timestamps, fixed producer name and
IR version, JSON written with fixed key order. Only the `onnx` and `numpy` packages are needed.

Regenerate the committed models:

    python scripts/make_reward_model.py lexicon
    python scripts/make_reward_model.py transformer --tokenizer data/reward-model/tokenizer.json \\
        --out data/reward-model-tiny-transformer

A MiniLM-sized one for benchmarks (with a real BERT WordPiece tokenizer.json; not committed):

    python scripts/make_reward_model.py transformer --tokenizer PATH/tokenizer.json --out DIR \\
        --layers 6 --hidden 384 --heads 12 --intermediate 1536 --max-positions 512
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PRODUCER = "clawline-make-reward-model"
PRODUCER_VERSION = "1"
OPSET = 17  # LayerNormalization is a standard op from opset 17
IR_VERSION = 8  # the IR version of opset 17; onnxruntime 1.32 reads it

# ---------------------------------------------------------------------------------------------
# Lexicon model
# ---------------------------------------------------------------------------------------------

LEXICON_MAX_LENGTH = 512
POSITIVE_WEIGHT = 3.0
NEGATIVE_WEIGHT = -3.0
LEXICON_BIAS = 0.0  # neutral tokens weigh 0, so neutral text has mean 0 and logit 0 (reward 0.5)

# The word lists live in reward_lexicon.py (beside this script).
from reward_lexicon import COMMON_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS  # noqa: E402


def lexicon_vocab():
    """Vocabulary for the lexicon tokenizer: [PAD]=0, [UNK]=1, punctuation, 0-100, words."""
    tokens = ["[PAD]", "[UNK]"]
    tokens += list(".,!?:;'\"()[]{}-_/\\*&%$#@+=<>~`^|")
    tokens += [str(n) for n in range(101)]
    words = POSITIVE_WORDS + NEGATIVE_WORDS + COMMON_WORDS.split()
    vocab = {}
    for tok in tokens + words:
        vocab.setdefault(tok, len(vocab))
    return vocab


def lexicon_tokenizer_json(vocab):
    special = [
        {"id": vocab[tok], "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for tok in ("[PAD]", "[UNK]")
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        # NFKC, then the typographic apostrophe to ASCII (so "can’t" is "can't"), then lowercase.
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"String": "\u2019"}, "content": "'"},
            {"type": "Lowercase"},
        ]},
        # Like the `Whitespace` pre-tokenizer (\w+|[^\w\s]+, matches kept, the rest dropped), but a
        # word keeps its contraction ("can't", "i'm") and each punctuation mark is its own token.
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"\w+(?:'\w+)*|[^\w\s]"},
                          "behavior": "Removed", "invert": True},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


def lexicon_weights(vocab):
    w = np.zeros((len(vocab), 1), dtype=np.float32)
    for word in POSITIVE_WORDS:
        w[vocab[word], 0] = POSITIVE_WEIGHT
    for word in NEGATIVE_WORDS:
        w[vocab[word], 0] = NEGATIVE_WEIGHT
    return w


def lexicon_graph(weights):
    """logits[B,1] = sum_s(w[input_ids] * mask) / max(sum_s(mask), 1) + bias."""
    g = GraphBuilder()
    ids = g.input("input_ids")
    mask = g.input("attention_mask")
    w = g.init("token_weight", weights)
    bias = g.init("bias", np.array([LEXICON_BIAS], dtype=np.float32))
    axis1 = g.init("axes_1", np.array([1], dtype=np.int64))
    axis2 = g.init("axes_2", np.array([2], dtype=np.int64))
    one = g.init("one", np.array(1.0, dtype=np.float32))

    per_token = g.op("Gather", w, ids, axis=0)                     # [B,S,1]
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)              # [B,S]
    masked = g.op("Mul", per_token, g.op("Unsqueeze", mask_f, axis2))
    total = g.op("ReduceSum", masked, axis1, keepdims=0)           # [B,1]
    count = g.op("ReduceSum", mask_f, axis1, keepdims=1)           # [B,1]
    mean = g.op("Div", total, g.op("Max", count, one))
    g.op("Add", mean, bias, out="logits")
    return g.model("clawline-lexicon-reward", ["input_ids", "attention_mask"], num_labels=1)


def make_lexicon(out):
    vocab = lexicon_vocab()
    assert not set(POSITIVE_WORDS) & set(NEGATIVE_WORDS)
    model = lexicon_graph(lexicon_weights(vocab))
    config = {
        "architectures": ["ClawlineLexiconRewardModel"],
        "model_type": "clawline-lexicon",
        "problem_type": "regression",
        "num_labels": 1,
        "id2label": {"0": "reward"},
        "label2id": {"reward": 0},
        "max_position_embeddings": LEXICON_MAX_LENGTH,
        "vocab_size": len(vocab),
        "pad_token_id": vocab["[PAD]"],
        "clawline": {
            "kind": "lexicon",
            "reward": "sigmoid",
            "max_length": LEXICON_MAX_LENGTH,
            "prefers": "Helpful, polite, confident answers over refusals, rudeness and hedging: "
                       "logit = mean over the unpadded tokens of a per-word weight "
                       f"({POSITIVE_WEIGHT:+g} for positive_words, {NEGATIVE_WEIGHT:+g} for "
                       f"negative_words, 0 otherwise) + bias ({LEXICON_BIAS:g}); reward = sigmoid(logit).",
            "positive_weight": POSITIVE_WEIGHT,
            "negative_weight": NEGATIVE_WEIGHT,
            "bias": LEXICON_BIAS,
            "positive_words": list(POSITIVE_WORDS),
            "negative_words": list(NEGATIVE_WORDS),
            "generator": "python scripts/make_reward_model.py lexicon",
        },
    }
    write_dir(out, model, config, tokenizer=lexicon_tokenizer_json(vocab))
    print(f"lexicon: vocab {len(vocab)}, {len(POSITIVE_WORDS)} positive and {len(NEGATIVE_WORDS)} "
          f"negative words -> {out}")


# ---------------------------------------------------------------------------------------------
# Transformer model
# ---------------------------------------------------------------------------------------------

def tokenizer_vocab_size(path):
    """Vocabulary size of a tokenizer.json: the largest token id it can produce, plus one."""
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok.get("model") or {}
    vocab = model.get("vocab")
    ids = []
    if isinstance(vocab, dict):  # WordLevel, WordPiece, BPE: {token: id}
        ids += [int(i) for i in vocab.values()]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids are positions
        ids.append(len(vocab) - 1)
    ids += [int(t["id"]) for t in tok.get("added_tokens") or []]
    if not ids:
        sys.exit(f"{path}: no vocabulary found (model type {model.get('type')!r})")
    return max(ids) + 1


def transformer_graph(vocab_size, layers, hidden, heads, intermediate, max_positions, seed):
    rng = np.random.default_rng(seed)
    std = 0.02
    eps = 1e-12
    head_dim = hidden // heads

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def zeros(*shape):
        return np.zeros(shape, dtype=np.float32)

    def ones(*shape):
        return np.ones(shape, dtype=np.float32)

    g = GraphBuilder()
    ids = g.input("input_ids")
    mask = g.input("attention_mask")
    types = g.input("token_type_ids")
    i64 = lambda name, v: g.init(name, np.array(v, dtype=np.int64))  # noqa: E731
    f32 = lambda name, v: g.init(name, np.array(v, dtype=np.float32))  # noqa: E731
    axes_1 = i64("axes_1", [1])
    axes_12 = i64("axes_1_2", [1, 2])
    axes_2 = i64("axes_2", [2])
    split_heads = i64("shape_split_heads", [0, 0, heads, head_dim])
    merge_heads = i64("shape_merge_heads", [0, 0, hidden])

    def layer_norm(x, name):
        gamma = g.init(f"{name}.weight", ones(hidden))
        beta = g.init(f"{name}.bias", zeros(hidden))
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps)

    def linear(x, name, n_in, n_out):
        weight = g.init(f"{name}.weight", normal(n_in, n_out))  # stored [in, out] for MatMul
        b = g.init(f"{name}.bias", zeros(n_out))
        return g.op("Add", g.op("MatMul", x, weight), b)

    # Embeddings: word + position (0..seq_len-1, from the shape of input_ids) + token type.
    word_emb = g.init("embeddings.word_embeddings.weight", normal(vocab_size, hidden))
    pos_emb = g.init("embeddings.position_embeddings.weight", normal(max_positions, hidden))
    type_emb = g.init("embeddings.token_type_embeddings.weight", normal(2, hidden))
    # The position rows 0..S-1 are sliced off the table (as HF's exports slice their position_ids
    # buffer) rather than gathered by Range(0, S): onnxruntime's constant sharing turns scalar
    # initializers into [1] tensors and its Gather(Range) -> Slice fusion then fails at run time
    # ("Starts must be a 1-D array"). A sequence longer than max_positions fails in the Add below.
    seq_len = g.op("Shape", ids, start=1, end=2)                          # [1] = [S]
    zero = i64("zero_1d", [0])
    positions = g.op("Slice", pos_emb, zero, seq_len, zero)              # starts [0], axes [0]: [S,H]
    x = g.op("Add", g.op("Gather", word_emb, ids, axis=0), positions)
    x = g.op("Add", x, g.op("Gather", type_emb, types, axis=0))           # [B,S,H]
    x = layer_norm(x, "embeddings.LayerNorm")

    # Attention mask as an additive bias: 0 where attended, -10000 on padding, shape [B,1,1,S].
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)                     # [B,S]
    inverted = g.op("Sub", f32("one_f32", 1.0), mask_f)
    mask_bias = g.op("Unsqueeze", g.op("Mul", inverted, f32("mask_min", -10000.0)), axes_12)
    scale = f32("attention_scale", 1.0 / math.sqrt(head_dim))
    inv_sqrt2 = f32("inv_sqrt2", 1.0 / math.sqrt(2.0))
    half = f32("half", 0.5)
    one = f32("one_gelu", 1.0)

    for n in range(layers):
        p = f"encoder.layer.{n}"
        # Q, K, V: [B,S,H] -> [B,S,A,D] -> Q,V [B,A,S,D], K [B,A,D,S].
        q = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.query", hidden, hidden),
                                   split_heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.key", hidden, hidden),
                                   split_heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.value", hidden, hidden),
                                   split_heads), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), mask_bias)  # [B,A,S,S]
        probs = g.op("Softmax", scores, axis=-1)
        ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])       # [B,S,A,D]
        ctx = g.op("Reshape", ctx, merge_heads)                                     # [B,S,H]
        attn = linear(ctx, f"{p}.attention.output.dense", hidden, hidden)
        x = layer_norm(g.op("Add", attn, x), f"{p}.attention.output.LayerNorm")
        # Feed-forward with the exact (erf) GELU: h * 0.5 * (1 + erf(h / sqrt(2))).
        h = linear(x, f"{p}.intermediate.dense", hidden, intermediate)
        gelu = g.op("Mul", g.op("Mul", h, half),
                    g.op("Add", g.op("Erf", g.op("Mul", h, inv_sqrt2)), one))
        ffn = linear(gelu, f"{p}.output.dense", intermediate, hidden)
        x = layer_norm(g.op("Add", ffn, x), f"{p}.output.LayerNorm")

    # Masked mean pooling over the sequence, then the tanh pooler and the classifier.
    summed = g.op("ReduceSum", g.op("Mul", x, g.op("Unsqueeze", mask_f, axes_2)), axes_1, keepdims=0)
    count = g.op("ReduceSum", mask_f, axes_1, keepdims=1)                 # [B,1]
    pooled = g.op("Div", summed, g.op("Max", count, f32("one_count", 1.0)))  # [B,H]
    pooled = g.op("Tanh", linear(pooled, "pooler.dense", hidden, hidden))
    weight = g.init("classifier.weight", normal(hidden, 2))
    b = g.init("classifier.bias", zeros(2))
    g.op("Add", g.op("MatMul", pooled, weight), b, out="logits")
    return g.model("clawline-random-bert-reward", ["input_ids", "attention_mask", "token_type_ids"],
                   num_labels=2)


def make_transformer(args):
    if args.hidden % args.heads:
        sys.exit(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    vocab_size = tokenizer_vocab_size(args.tokenizer)
    model = transformer_graph(vocab_size, args.layers, args.hidden, args.heads, args.intermediate,
                              args.max_positions, args.seed)
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "problem_type": "single_label_classification",
        "num_labels": 2,
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
        "vocab_size": vocab_size,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": args.max_positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "clawline": {
            "kind": "transformer",
            "reward": "softmax:1",
            "max_length": args.max_positions,
            "pooling": "masked mean over the sequence, then dense + tanh",
            "note": f"Random weights (numpy default_rng seed {args.seed}, normal std 0.02): the "
                    "scores mean nothing; this model exercises and benchmarks the transformer path.",
            "generator": (f"python scripts/make_reward_model.py transformer --tokenizer TOKENIZER "
                          f"--layers {args.layers} --hidden {args.hidden} --heads {args.heads} "
                          f"--intermediate {args.intermediate} --max-positions {args.max_positions} "
                          f"--seed {args.seed}"),
        },
    }
    write_dir(args.out, model, config, tokenizer_path=args.tokenizer)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"transformer: vocab {vocab_size}, {args.layers} layers, hidden {args.hidden}, "
          f"{n_params} parameters -> {args.out}")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

class GraphBuilder:
    """Collects nodes and initializers; names every node and value deterministically."""

    def __init__(self):
        self.nodes, self.inits, self.inputs = [], [], []
        self.counts = {}

    def input(self, name):
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]))
        return name

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        n = self.counts.get(op_type, 0)
        self.counts[op_type] = n + 1
        name = f"{op_type}_{n}"
        out = out or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def model(self, graph_name, input_order, num_labels):
        by_name = {i.name: i for i in self.inputs}
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_labels])
        graph = helper.make_graph(self.nodes, graph_name, [by_name[n] for n in input_order],
                                  [output], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
                                  ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def write_dir(out, model, config, tokenizer=None, tokenizer_path=None):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    onnx.checker.check_model(os.path.join(out, "model.onnx"))
    if tokenizer is not None:
        with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer, f, ensure_ascii=False, indent=1)
            f.write("\n")
    else:
        dest = os.path.join(out, "tokenizer.json")
        if os.path.abspath(tokenizer_path) != os.path.abspath(dest):
            shutil.copyfile(tokenizer_path, dest)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for what each kind is.")
    sub = ap.add_subparsers(dest="kind", required=True)
    lex = sub.add_parser("lexicon", help="the small bundled lexicon reward model")
    lex.add_argument("--out", default=os.path.normpath(os.path.join(ROOT, "data", "reward-model")))
    tr = sub.add_parser("transformer", help="a BERT-shaped classifier with seeded random weights")
    tr.add_argument("--out", required=True)
    tr.add_argument("--tokenizer", required=True, help="tokenizer.json to copy in; sets the vocab size")
    tr.add_argument("--layers", type=int, default=1)
    tr.add_argument("--hidden", type=int, default=32)
    tr.add_argument("--heads", type=int, default=2)
    tr.add_argument("--intermediate", type=int, default=64)
    tr.add_argument("--max-positions", type=int, default=128)
    tr.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.kind == "lexicon":
        make_lexicon(args.out)
    else:
        make_transformer(args)


if __name__ == "__main__":
    main()
