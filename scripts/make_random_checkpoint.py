"""A random-weight checkpoint at a real model's geometry, written by transformers' own
`save_pretrained` (its config layout, its safetensors), with a tokenizer copied beside it.

For measuring the policy server and trainer at real sizes without downloading a model:
    python3 scripts/make_random_checkpoint.py OUT --like qwen2.5-0.5b --tokenizer data/tokenizer

The tokenizer is only for serving (its vocabulary may be smaller than the model's; ids beyond it
decode to nothing). Needs torch and transformers (the GPU machine's image has both).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers

# Geometries as the published configs give them.
GEOMETRIES = {
    "qwen2.5-0.5b": dict(
        cls="Qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "qwen3-0.6b": dict(
        cls="Qwen3",
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--like", choices=sorted(GEOMETRIES), default="qwen2.5-0.5b")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    spec = dict(GEOMETRIES[args.like])
    family = spec.pop("cls")
    tokenizer_config = json.loads((args.tokenizer / "tokenizer_config.json").read_text())
    vocab = json.loads((args.tokenizer / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
    eos = added[tokenizer_config["eos_token"]]
    pad = added.get(tokenizer_config.get("pad_token") or "", eos)

    config = getattr(transformers, f"{family}Config")(
        eos_token_id=eos, bos_token_id=pad, pad_token_id=pad, **spec
    )
    torch.manual_seed(args.seed)
    model = getattr(transformers, f"{family}ForCausalLM")(config)
    model = model.to(getattr(torch, args.dtype))
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(args.tokenizer / name, args.out / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.like}: {params} parameters, {args.dtype}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
