"""Drives the gateway's `/v1/responses` with the official `openai` package, as Codex CLI and the Agents
SDK do: a plain response, a streamed one continuing it through `previous_response_id`, a function-call
round trip re-sending the whole input with `store=False` (Codex CLI's way), retrieval, deletion and
errors, and a text completion. Prints one JSON object with what the client saw; the Rust test checks it against the steps.
"""
import json
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["GATEWAY_BASE_URL"], api_key=os.environ.get("GATEWAY_API_KEY", "none"))
out = {}

first = client.responses.create(model="gpt-5-codex", instructions="You are terse.", input="hello from the responses client")
out["plain"] = first.output_text
out["plain_status"] = first.status
out["plain_usage"] = first.usage.total_tokens

text = []
events = []
with client.responses.stream(model="gpt-5-codex", instructions="You are terse.", input="now stream it",
                             previous_response_id=first.id) as stream:
    for event in stream:
        events.append(event.type)
        if event.type == "response.output_text.delta":
            text.append(event.delta)
    streamed = stream.get_final_response()
out["streamed"] = "".join(text)
out["streamed_final"] = streamed.output_text
out["streamed_previous"] = streamed.previous_response_id == first.id
out["events"] = sorted(set(events))
out["retrieved"] = client.responses.retrieve(streamed.id).output_text

tools = [{"type": "function", "name": "exec_command", "description": "Run a command",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}, "strict": False},
         {"type": "web_search"}]
task = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You run commands."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]}]
calls = []
with client.responses.stream(model="gpt-5-codex", input=task, tools=tools, store=False, parallel_tool_calls=True) as stream:
    for event in stream:
        pass
    called = stream.get_final_response()
call = [o for o in called.output if o.type == "function_call"][0]
out["call"] = {"name": call.name, "arguments": json.loads(call.arguments)}
task += [o.model_dump(exclude_none=True) for o in called.output]
task.append({"type": "function_call_output", "call_id": call.call_id, "output": "notes.txt"})
after = client.responses.create(model="gpt-5-codex", input=task, tools=tools, store=False)
out["after_call"] = after.output_text
task += [o.model_dump(exclude_none=True) for o in after.output]
task.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "No, that is wrong."}]})
client.responses.create(model="gpt-5-codex", input=task, tools=tools, store=False)

try:
    client.responses.create(model="gpt-5-codex", input="x", previous_response_id=called.id)
    out["unstored"] = None
except (openai.BadRequestError, openai.NotFoundError) as err:
    out["unstored"] = err.status_code
client.responses.delete(first.id)
try:
    client.responses.retrieve(first.id)
    out["deleted"] = None
except openai.NotFoundError as err:
    out["deleted"] = err.status_code

# Text completions (older tools): forwarded to the engine's own endpoint.
completion = client.completions.create(model="gpt-5-codex", prompt="Once upon a time", max_tokens=32)
out["completion"] = completion.choices[0].text
out["completion_logprobs"] = completion.choices[0].logprobs
try:
    client.completions.create(model="gpt-5-codex", prompt=["one", "two"], max_tokens=8)
    out["completion_batch"] = None
except openai.BadRequestError as err:
    out["completion_batch"] = err.status_code

json.dump(out, sys.stdout)
