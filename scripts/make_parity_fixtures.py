"""Golden outputs from Hugging Face transformers for the model crate's parity suite
(model/tests/parity.rs). For each family and config variant clawline supports, it
creates a small random-weight checkpoint with transformers itself (`save_pretrained`, so the
config.json is written the way transformers writes it), and records transformers' per-token
logprobs and greedy next tokens on a fixed token sequence. Variants in transformers 4.x's config
layout are the same weights with the config rewritten as 4.x wrote it; transformers must load
them to the same logits, which this script checks.

PEFT adapters (rank and alpha patterns, rsLoRA, DoRA) are made the same way, on the `llama` case's
weights, with peft.

Run on demand (not in CI), with the pinned versions of scripts/requirements-parity.txt:

    ./scripts/make-parity-fixtures.sh     # creates ~/.cache/clawline/parity-venv, runs this

usage: make_parity_fixtures.py OUT_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

SEQ = 48  # positions 0..47: past the small original contexts the scaled RoPE variants use
VOCAB = 64
PREFIX, DECODE = 40, 12  # greedy decoding past the sliding windows

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# name: (config class, extra config keys)
CASES = {
    "llama": ("LlamaConfig", dict(rope_theta=10000.0)),
    "llama-theta-500k": ("LlamaConfig", dict(rope_theta=500000.0)),
    "llama3-rope": (
        "LlamaConfig",
        dict(
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "llama-linear-rope": (
        "LlamaConfig",
        dict(rope_theta=10000.0, rope_scaling=dict(rope_type="linear", factor=2.0)),
    ),
    "llama-yarn-rope": (
        "LlamaConfig",
        dict(
            rope_theta=10000.0,
            rope_scaling=dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=16),
        ),
    ),
    "llama-biases": ("LlamaConfig", dict(attention_bias=True, mlp_bias=True)),
    "llama-tied": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(rope_theta=1000000.0)),
    "qwen2-sliding": (
        "Qwen2Config",
        dict(use_sliding_window=True, sliding_window=8, max_window_layers=1),
    ),
    "qwen3": ("Qwen3Config", dict(head_dim=16, rope_theta=1000000.0)),
    "qwen3-bias": ("Qwen3Config", dict(head_dim=16, attention_bias=True, tie_word_embeddings=True)),
    "mistral-sliding": ("MistralConfig", dict(sliding_window=8, head_dim=8)),
}

# Cases also written in transformers 4.x's config layout.
TF4_LAYOUT = [
    "llama",
    "llama3-rope",
    "llama-yarn-rope",
    "qwen2",
    "qwen2-sliding",
    "qwen3",
    "mistral-sliding",
]


def randomize(model, seed):
    """Weights far from transformers' tiny init, so logits are peaked and every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * 1.5)


def outputs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    next_lp = logp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    top2 = logp.topk(2, dim=-1)
    # Greedy decoding from the first PREFIX tokens, one full forward pass per token (what a KV
    # cache must reproduce), with each choice's margin over the runner-up.
    seq, margins = list(ids[:PREFIX]), []
    with torch.no_grad():
        for _ in range(DECODE):
            last = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].double(), dim=-1)
            top = last.topk(2)
            seq.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
    return {
        "continuation": seq[PREFIX:],
        "continuation_margin": margins,
        "logprobs": next_lp.tolist(),
        "greedy": top2.indices[:, 0].tolist(),
        # How far the best token is ahead of the second: a tie is no test of greedy agreement.
        "greedy_margin": (top2.values[:, 0] - top2.values[:, 1]).tolist(),
    }


def bf16_logprobs(model, ids):
    """Per-token logprobs of the same sequence computed in bf16 (eager attention: softmax in f32)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()


def tf4_layout(config: dict) -> dict:
    """The same config as transformers 4.x wrote it: rope_theta and rope_scaling at the top,
    torch_dtype, and no layer_types (4.53 added it; the layers come from max_window_layers)."""
    c = dict(config)
    c.pop("layer_types", None)
    params = c.pop("rope_parameters", None) or {}
    params = dict(params)
    if "rope_theta" in params:
        c["rope_theta"] = params.pop("rope_theta")
    if params.get("rope_type", "default") != "default":
        c["rope_scaling"] = params
    else:
        c["rope_scaling"] = None
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = "4.57.1"
    return c


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, VOCAB, (SEQ,), generator=g).tolist()
    index = {"transformers": transformers.__version__, "torch": torch.__version__, "ids": ids, "cases": [], "tf4_layout": []}
    for seed, (name, (cls_name, extra)) in enumerate(CASES.items()):
        cls = getattr(transformers, cls_name)
        config = cls(**{**BASE, **extra})
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        randomize(model, seed)
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        model.save_pretrained(d)
        for extra_file in ["generation_config.json"]:
            (d / extra_file).unlink(missing_ok=True)
        # What a user's checkpoint gives: loaded back from disk.
        loaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, use_kernels=False).eval()
        expected = outputs(loaded, ids)
        expected["bf16_logprobs"] = bf16_logprobs(
            AutoModelForCausalLM.from_pretrained(
                d, dtype=torch.bfloat16, use_kernels=False, attn_implementation="eager"
            ).eval(),
            ids,
        )
        (d / "expected.json").write_text(json.dumps(expected))
        index["cases"].append(name)
        if name in TF4_LAYOUT:
            # Only the config: the test reads the weights and expected outputs of `name`.
            d4 = out / f"{name}-tf4"
            if d4.exists():
                shutil.rmtree(d4)
            d4.mkdir()
            config4 = tf4_layout(json.loads((d / "config.json").read_text()))
            (d4 / "config.json").write_text(json.dumps(config4, indent=2) + "\n")
            check = out / ".check"
            shutil.rmtree(check, ignore_errors=True)
            shutil.copytree(d, check)
            shutil.copy(d4 / "config.json", check / "config.json")
            again = outputs(
                AutoModelForCausalLM.from_pretrained(check, dtype=torch.float32, use_kernels=False).eval(),
                ids,
            )
            shutil.rmtree(check)
            worst = max(abs(a - b) for a, b in zip(again["logprobs"], expected["logprobs"]))
            assert worst < 1e-6, f"{name}: the 4.x layout loads to a different model ({worst})"
            index["tf4_layout"].append(name)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")
    index["adapters"] = adapters(out, ids)
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


# PEFT adapters on the `llama` case's weights: name -> LoraConfig arguments.
ADAPTERS = {
    "lora-patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"layers.1.self_attn.q_proj": 2},
        alpha_pattern={"down_proj": 32},
    ),
    "lora-rslora": dict(r=8, lora_alpha=16, use_rslora=True, target_modules="all-linear"),
    # Refused (DoRA is not implemented): the test checks the error.
    "lora-dora": dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"]),
}


def adapters(out, ids):
    from peft import LoraConfig, PeftModel, get_peft_model

    names = []
    for seed, (name, args) in enumerate(ADAPTERS.items()):
        base = AutoModelForCausalLM.from_pretrained(out / "llama", dtype=torch.float32, use_kernels=False)
        model = get_peft_model(base, LoraConfig(init_lora_weights=False, **args))
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_" in pname:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        model.save_pretrained(d)
        (d / "README.md").unlink(missing_ok=True)
        base = AutoModelForCausalLM.from_pretrained(out / "llama", dtype=torch.float32, use_kernels=False)
        loaded = PeftModel.from_pretrained(base, d).eval()
        expected = outputs(loaded, ids)
        # A bf16 base with the adapters kept in f32 (PEFT's autocast_adapter_dtype).
        base16 = AutoModelForCausalLM.from_pretrained(
            out / "llama", dtype=torch.bfloat16, use_kernels=False, attn_implementation="eager"
        )
        expected["bf16_logprobs"] = bf16_logprobs(PeftModel.from_pretrained(base16, d).eval(), ids)
        (d / "expected.json").write_text(json.dumps(expected))
        names.append(name)
    return names



if __name__ == "__main__":
    main()
