"""Drives the gateway's `/v1/messages` with the official `anthropic` package, as Claude Code and agents
built on Anthropic's SDK do: a plain message, a streamed one, a tool round trip (streamed), and a bad
request. Prints one JSON object with what the client saw; the Rust test checks it against the steps.
"""
import json
import os
import sys

import anthropic

client = anthropic.Anthropic(base_url=os.environ["GATEWAY_BASE_URL"], api_key=os.environ.get("GATEWAY_API_KEY", "none"))
out = {"version": anthropic.__version__}

system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
history = [{"role": "user", "content": "hello from the anthropic client"}]
message = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, system=system, messages=history)
out["plain"] = message.content[0].text
out["plain_stop"] = message.stop_reason
out["plain_usage"] = [message.usage.input_tokens, message.usage.output_tokens]
out["plain_model"] = message.model
try:
    out["count_tokens"] = client.messages.count_tokens(model="claude-sonnet-4-5", system=system, messages=history).input_tokens
except anthropic.APIStatusError as err:
    out["count_tokens"] = [err.status_code, err.body["error"]["type"]]
history.append({"role": "assistant", "content": message.content})
history.append({"role": "user", "content": [{"type": "text", "text": "now stream it"}]})

with client.messages.stream(model="claude-sonnet-4-5", max_tokens=256, system=system, messages=history) as stream:
    out["streamed_deltas"] = sum(1 for _ in stream.text_stream)
    final = stream.get_final_message()
out["streamed"] = final.content[0].text
out["streamed_stop"] = final.stop_reason
out["streamed_usage"] = final.usage.output_tokens

tools = [{"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}]
task = [{"role": "user", "content": "read notes.txt"}]
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=task, tools=tools) as stream:
    first = stream.get_final_message()
use = [b for b in first.content if b.type == "tool_use"][0]
out["tool_use"] = {"name": use.name, "input": use.input, "stop": first.stop_reason}
task.append({"role": "assistant", "content": first.content})
task.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "buy milk"}]})
second = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=task, tools=tools)
out["after_tool"] = second.content[0].text
task.append({"role": "assistant", "content": second.content})
task.append({"role": "user", "content": "No, that is wrong. Try again."})
third = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=task, tools=tools)
out["third_stop"] = third.stop_reason

try:
    client.messages.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "no max_tokens"}], max_tokens=0)
    out["bad_request"] = None
except anthropic.BadRequestError as err:
    out["bad_request"] = [err.status_code, err.body["error"]["type"]]

json.dump(out, sys.stdout)
