"""Drives the gateway with the official `openai` package, as an unmodified agent would.

Prints one JSON object with what the client saw; the Rust test checks it against the recorded steps.
"""
import json
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["GATEWAY_BASE_URL"], api_key=os.environ.get("GATEWAY_API_KEY", "none"))
out = {"version": openai.__version__}

messages = [{"role": "user", "content": "hello from the openai client"}]
completion = client.chat.completions.create(model="mock-model", messages=messages, temperature=0.5)
out["plain"] = completion.choices[0].message.content
messages.append({"role": "assistant", "content": completion.choices[0].message.content})
messages.append({"role": "user", "content": "now stream it"})

pieces = []
stream = client.chat.completions.create(model="mock-model", messages=messages, stream=True,
                                        stream_options={"include_usage": True})
usage = None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
out["streamed"] = "".join(pieces)
out["stream_usage"] = usage

tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
tool_answer = client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "find it"}], tools=tools)
call = tool_answer.choices[0].message.tool_calls[0]
out["tool_call"] = {"name": call.function.name, "arguments": json.loads(call.function.arguments)}

out["models"] = [m.id for m in client.models.list().data]

try:
    client.chat.completions.create(model="mock-model", messages="not a list")
    out["bad_request"] = None
except openai.BadRequestError as err:
    out["bad_request"] = err.status_code

json.dump(out, sys.stdout)
