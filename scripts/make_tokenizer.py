#!/usr/bin/env python3
"""Writes data/tokenizer/: a small byte-level BPE tokenizer (tokenizer.json) with a ChatML chat
template (tokenizer_config.json), in the Hugging Face layout.

It needs no downloads and no packages: the vocabulary is the 256 byte symbols of GPT-2's byte-level
alphabet plus merges learned from data/tokenizer/corpus.txt, and ChatML's special tokens. The gateway
uses it for the retokenize fallback and the mock engine for its exact token ids, so tests can compare
the two paths. Regenerate: python3 scripts/make_tokenizer.py
"""
import collections
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tokenizer")
N_MERGES = 200


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(text, byte_map, n_merges):
    # Words as the ByteLevel pre-tokenizer roughly splits them: a leading space stays with the word.
    words = collections.Counter()
    for i, w in enumerate(text.split(" ")):
        word = (" " if i else "") + w
        if word.strip():
            words[tuple(byte_map[b] for b in word.encode("utf-8"))] += 1
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        merges.append((a, b))
        merged = collections.Counter()
        for word, c in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


def main():
    byte_map = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[byte_map[b]] = len(vocab)
    with open(os.path.join(ROOT, "corpus.txt"), encoding="utf-8") as f:
        corpus = " ".join(f.read().split())
    merges = learn_merges(corpus, byte_map, N_MERGES)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = []
    for tok in specials:
        added.append({"id": len(vocab), "content": tok, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        vocab[tok] = len(vocab)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    template = (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' and tools %}<|im_start|>system\n"
        "You can call these tools:\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% elif message['content'] %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}<tool_call>{{ call['function']['name'] }} {{ call['function']['arguments'] }}</tool_call>{% endfor %}{% endif %}"
        "<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": template,
    }
    with open(os.path.join(ROOT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(ROOT, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"vocab {len(vocab)} ({len(merges)} merges) -> {ROOT}")


if __name__ == "__main__":
    main()
