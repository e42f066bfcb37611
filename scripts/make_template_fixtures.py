"""Golden chat-template renderings from Hugging Face transformers for the template parity test
(model/tests/templates.rs).

Templates: the real chat templates of the model families users bring (scripts/parity/templates/,
each the `chat_template` of the model it is named after, as published with that model) and two
small ones of our own (scripts/parity/*.jinja). For each, a small byte-level BPE tokenizer knowing
the template's special tokens is trained and saved with the template by transformers'
`save_pretrained` (so `chat_template.jinja` sits beside `tokenizer_config.json`, as transformers 5
writes it); then `apply_chat_template` renders a set of conversations, with the template variables
a request can set (`chat_template_kwargs` in vLLM), to text and to token ids.

The conversations are given the way vLLM hands a chat request to `apply_chat_template`: message
content as a string (vLLM turns an OpenAI client's `null` into "" and joins text parts), and
tool-call arguments as the object they encode. The Rust test also sends each conversation the way
OpenAI clients write it and expects the same text.

Run on demand (not in CI), with the pinned versions of scripts/requirements-templates.txt:

    ./scripts/make-template-fixtures.sh

usage: make_template_fixtures.py OUT_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).parent / "parity"

SPECIALS = [
    "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<s>", "</s>", "[INST]", "[/INST]",
    "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
]
# Added tokens the model's tokenizer has but does not mark special (kept in decoded text).
ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# template file -> tokenizer settings and the template variables every rendering gets.
TEMPLATES = {
    "qwen_style.jinja": dict(bos="<|begin_of_text|>", eos="<|im_end|>", bos_on_text=False),
    "llama_style.jinja": dict(bos="<|begin_of_text|>", eos="<|eot_id|>", bos_on_text=True),
    "templates/Qwen-Qwen3-0.6B.jinja": dict(bos=None, eos="<|im_end|>", bos_on_text=False),
    # The date is fixed here; the Rust test checks `strftime_now` on its own.
    "templates/meta-llama-Llama-3.2-3B-Instruct.jinja": dict(
        bos="<|begin_of_text|>", eos="<|eot_id|>", bos_on_text=True,
        kwargs={"date_string": "03 Dec 2026"},
    ),
    "templates/mistralai-Mistral-Nemo-Instruct-2407.jinja": dict(bos="<s>", eos="</s>", bos_on_text=True),
}

# Tool schemas in the order the OpenAI SDK's users write them (not sorted), text HTML-escaping
# would change.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city, in °C <now> & \"later\"",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}
CALL = {
    "id": "call0c1ab",  # nine alphanumerics, as Mistral's template demands
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"days": 2, "city": "Zürich"}},
}
# name -> messages, tools, extra template variables (vLLM's `chat_template_kwargs`)
CONVERSATIONS = {
    "plain": dict(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi <b>there</b> & good morning, Zoë!"},
        ],
    ),
    "tools": dict(
        messages=[
            {"role": "system", "content": "You check the weather."},
            {"role": "user", "content": "Weather in Zürich?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call0c1ab", "content": "{\"temp\": 21}"},
            {"role": "assistant", "content": "21 °C and sunny."},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[WEATHER],
    ),
    "multi_turn": dict(
        messages=[
            {"role": "user", "content": "  Name a colour.  "},
            {"role": "assistant", "content": "<think>\nAny will do.\n</think>\n\nBlue."},
            {"role": "user", "content": "Another one?"},
        ],
    ),
    "no_generation_prompt": dict(
        messages=[
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
        ],
        kwargs={"add_generation_prompt": False},
    ),
    # An answer the client prefilled, continued by the model (`continue_final_message`).
    "prefill": dict(
        messages=[
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi! How  "},
        ],
        kwargs={"add_generation_prompt": False, "continue_final_message": True},
    ),
}
# Conversations a template is also rendered with, with its own variables.
OWN = {
    "templates/Qwen-Qwen3-0.6B.jinja": {
        "thinking_off": dict(CONVERSATIONS["plain"], kwargs={"enable_thinking": False}),
    },
    "templates/meta-llama-Llama-3.2-3B-Instruct.jinja": {
        "tools_in_system": dict(CONVERSATIONS["tools"], kwargs={"tools_in_user_message": False}),
    },
}


def tokenizer_for(template: str, settings: dict) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [template, json.dumps(CONVERSATIONS, ensure_ascii=False)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if settings["bos_on_text"]:
        # As Llama's and Mistral's tokenizers: a text prompt gets the BOS (`add_special_tokens`).
        bos = settings["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=settings["bos"], eos_token=settings["eos"])
    fast.add_tokens(ADDED)
    fast.chat_template = template
    return fast


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for file, settings in TEMPLATES.items():
        path = HERE / file
        fast = tokenizer_for(path.read_text(), settings)
        d = out / path.stem
        if d.exists():
            shutil.rmtree(d)
        fast.save_pretrained(d)
        expected = {}
        for name, conv in {**CONVERSATIONS, **OWN.get(file, {})}.items():
            kwargs = {**settings.get("kwargs", {}), **conv.get("kwargs", {})}
            args = dict(tools=conv.get("tools"), add_generation_prompt=True)
            args.update(kwargs)
            text = fast.apply_chat_template(conv["messages"], tokenize=False, **args)
            ids = fast.apply_chat_template(conv["messages"], tokenize=True, return_dict=False, **args)
            expected[name] = {"messages": conv["messages"], "tools": conv.get("tools"), "kwargs": kwargs,
                              "text": text, "ids": ids}
        prompt = "Once upon a time in Zürich,"
        expected["completion_prompt"] = {"text": prompt, "ids": fast(prompt)["input_ids"]}
        (d / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))
        names.append(d.name)
        print(f"{d.name}: {len(expected) - 1} conversations")
    index = {"transformers": transformers.__version__, "templates": names}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
