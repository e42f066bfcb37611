//! Chat-completions plumbing that needs no I/O: reading request messages, asking the engine for
//! exact tokens, collecting the answer (whole or streamed), and hiding what the client did not ask for.

use clawline_schemas::{Message, ToolCall};
use serde_json::{Map, Value};

/// The text of a message's `content`: the string itself, or the text parts of an array joined by
/// newlines (parts of any protocol: `text`, `input_text`, `output_text`); empty for null.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A message's reasoning (`reasoning_content`, or vLLM's newer `reasoning`); none when empty.
pub fn reasoning_of(message: &Value) -> Option<&str> {
    message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
}

/// One entry of a message's `tool_calls`: a whole call, or in a streamed delta the fragment of
/// call `slot` (its `index`) that this chunk carries. Absent parts are "".
pub struct CallPart<'a> {
    pub slot: usize,
    pub id: &'a str,
    pub name: &'a str,
    pub arguments: &'a str,
}

/// The `tool_calls` of a chat message or of a streamed chunk's delta.
pub fn call_parts(message: &Value) -> impl Iterator<Item = CallPart<'_>> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            let s = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or("");
            CallPart {
                slot: call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize,
                id: s("/id"),
                name: s("/function/name"),
                arguments: s("/function/arguments"),
            }
        })
}

fn tool_calls_of(message: &Value) -> Vec<ToolCall> {
    call_parts(message)
        .map(|c| ToolCall {
            id: c.id.to_string(),
            name: c.name.to_string(),
            arguments: c.arguments.to_string(),
        })
        .collect()
}

/// A request message as the step stores it.
pub fn to_message(value: &Value) -> Message {
    let s = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let content = value.get("content");
    Message {
        role: s("role").unwrap_or_default(),
        content: match content {
            None | Some(Value::Null) => None,
            other => Some(content_text(other)),
        },
        content_parts_json: match content {
            Some(parts @ Value::Array(_)) => Some(parts.to_string()),
            _ => None,
        },
        name: s("name"),
        tool_calls: tool_calls_of(value),
        tool_call_id: s("tool_call_id"),
    }
}

/// Checks the shape the gateway relies on: `messages` is a non-empty array of objects with a string
/// `role`. Returns a message naming the bad field.
pub fn validate_messages(request: &Map<String, Value>) -> Result<&Vec<Value>, (String, String)> {
    let bad = |param: &str, msg: &str| Err((param.to_string(), msg.to_string()));
    let Some(messages) = request.get("messages") else {
        return bad("messages", "`messages` is required");
    };
    let Some(messages) = messages.as_array() else {
        return bad("messages", "`messages` must be an array");
    };
    if messages.is_empty() {
        return bad("messages", "`messages` must not be empty");
    }
    for (i, m) in messages.iter().enumerate() {
        if !m.is_object() || !m.get("role").is_some_and(Value::is_string) {
            return Err((
                format!("messages[{i}]"),
                format!("messages[{i}] must be an object with a string `role`"),
            ));
        }
    }
    for (name, ok) in [
        (
            "stream",
            request
                .get("stream")
                .is_none_or(|v| v.is_boolean() || v.is_null()),
        ),
        (
            "n",
            request
                .get("n")
                .is_none_or(|v| v.as_u64().is_some_and(|n| (1..=128).contains(&n)) || v.is_null()),
        ),
        (
            "tools",
            request
                .get("tools")
                .is_none_or(|v| v.is_array() || v.is_null()),
        ),
        ("model", request.get("model").is_none_or(Value::is_string)),
    ] {
        if !ok {
            return bad(name, &format!("`{name}` has the wrong type or value"));
        }
    }
    Ok(messages)
}

/// What the client itself asked for, so the extensions the gateway adds can be removed again.
#[derive(Debug, Clone, Copy)]
pub struct Wants {
    pub logprobs: bool,
    pub token_ids: bool,
}

/// Asks the engine for exact ids and logprobs (vLLM's `return_token_ids`, OpenAI's `logprobs`).
pub fn request_exact_tokens(request: &mut Map<String, Value>, ask_token_ids: bool) -> Wants {
    let wants = Wants {
        logprobs: request
            .get("logprobs")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        token_ids: request
            .get("return_token_ids")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    if ask_token_ids {
        request.insert("logprobs".into(), Value::Bool(true));
        request.insert("return_token_ids".into(), Value::Bool(true));
    }
    wants
}

/// Removes the extension fields the client did not ask for, from a response or a stream chunk.
/// Returns whether anything changed.
pub fn strip_unrequested(body: &mut Value, wants: Wants) -> bool {
    let mut changed = false;
    if !wants.token_ids
        && let Some(obj) = body.as_object_mut()
    {
        changed |= obj.remove("prompt_token_ids").is_some();
    }
    if let Some(choices) = body.get_mut("choices").and_then(|c| c.as_array_mut()) {
        for choice in choices {
            let Some(choice) = choice.as_object_mut() else {
                continue;
            };
            if !wants.token_ids {
                changed |= choice.remove("token_ids").is_some();
                changed |= choice.remove("prompt_token_ids").is_some();
            }
            if !wants.logprobs && choice.get("logprobs").is_some_and(|l| !l.is_null()) {
                choice.insert("logprobs".into(), Value::Null);
                changed = true;
            }
        }
    }
    changed
}

/// A whole chat completion as the one stream chunk that would carry it (choices' messages as
/// deltas, tool calls indexed, usage kept), for a client that asked for a stream from an engine that
/// answered whole.
pub fn as_chunk(body: &Value) -> Value {
    let mut chunk = body.clone();
    if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            let Some(obj) = choice.as_object_mut() else {
                continue;
            };
            let mut delta = obj.remove("message").unwrap_or(Value::Null);
            if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for (i, call) in calls.iter_mut().enumerate() {
                    if let Some(call) = call.as_object_mut() {
                        call.entry("index").or_insert(Value::from(i));
                    }
                }
            }
            obj.insert("delta".into(), delta);
        }
    }
    chunk
}

/// Largest choice or tool-call index accepted from a stream.
const MAX_INDEX: usize = 256;

/// One answered choice, whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choice {
    pub text: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub token_ids: Option<Vec<u32>>,
    pub logprobs: Option<Vec<f32>>,
}

impl Choice {
    /// The answer as an assistant message, the way a client sends it back in its history.
    pub fn as_message(&self) -> Value {
        let mut m = serde_json::json!({"role": "assistant", "content": self.text});
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = Value::Array(
                self.tool_calls
                    .iter()
                    .map(|c| serde_json::json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect(),
            );
        }
        m
    }
}

/// The engine's answer, collected from a whole response or from stream chunks.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub model: Option<String>,
    pub prompt_token_ids: Option<Vec<u32>>,
    pub choices: Vec<Choice>,
    /// Tool-call argument fragments per (choice, call index) while streaming.
    pending_calls: Vec<Vec<ToolCall>>,
}

fn token_ids(value: Option<&Value>) -> Option<Vec<u32>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// Sampled-token logprobs: chat's `{"content": [{"logprob"}]}` or completions'
/// `{"token_logprobs": [...]}`.
fn logprobs(value: Option<&Value>) -> Option<Vec<f32>> {
    let value = value?;
    if let Some(lps) = value.get("token_logprobs").and_then(Value::as_array) {
        return lps.iter().map(|l| l.as_f64().map(|l| l as f32)).collect();
    }
    value
        .get("content")?
        .as_array()?
        .iter()
        .map(|t| t.get("logprob").and_then(Value::as_f64).map(|l| l as f32))
        .collect()
}

impl Answer {
    /// From a non-streaming chat completion.
    pub fn from_response(body: &Value) -> Self {
        let mut answer = Answer {
            model: body
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
            prompt_token_ids: token_ids(body.get("prompt_token_ids")),
            ..Default::default()
        };
        for choice in body
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let message = choice.get("message");
            let field = |name: &str| message.and_then(|m| m.get(name));
            // vLLM's completions put the prompt's ids in each choice.
            if answer.prompt_token_ids.is_none() {
                answer.prompt_token_ids = token_ids(choice.get("prompt_token_ids"));
            }
            answer.choices.push(Choice {
                // Completions answer with `text` where chat answers with a message.
                text: match message {
                    Some(_) => content_text(field("content")),
                    None => content_text(choice.get("text")),
                },
                reasoning: message.and_then(reasoning_of).map(str::to_string),
                tool_calls: message.map(tool_calls_of).unwrap_or_default(),
                finish_reason: choice
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                token_ids: token_ids(choice.get("token_ids")),
                logprobs: logprobs(choice.get("logprobs")),
            });
        }
        answer
    }

    fn choice_mut(&mut self, index: usize) -> &mut Choice {
        while self.choices.len() <= index {
            self.choices.push(Choice::default());
            self.pending_calls.push(Vec::new());
        }
        &mut self.choices[index]
    }

    /// Adds one streamed chunk.
    pub fn push_chunk(&mut self, chunk: &Value) {
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(ids) = token_ids(chunk.get("prompt_token_ids")) {
            self.prompt_token_ids = Some(ids);
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if index >= MAX_INDEX {
                continue; // no engine streams this many choices; do not let one make us allocate
            }
            let delta = choice.get("delta");
            let field = |name: &str| delta.and_then(|d| d.get(name));
            let text = match delta {
                Some(_) => field("content"),
                None => choice.get("text"),
            }
            .and_then(Value::as_str);
            if let Some(ids) = token_ids(choice.get("prompt_token_ids")) {
                self.prompt_token_ids = Some(ids);
            }
            let reasoning = delta.and_then(reasoning_of);
            let finish = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string);
            let ids = token_ids(choice.get("token_ids"));
            let lps = logprobs(choice.get("logprobs"));
            let c = self.choice_mut(index);
            if let Some(text) = text {
                c.text.push_str(text);
            }
            if let Some(r) = reasoning {
                c.reasoning.get_or_insert_with(String::new).push_str(r);
            }
            if finish.is_some() {
                c.finish_reason = finish;
            }
            if let Some(ids) = ids {
                c.token_ids.get_or_insert_with(Vec::new).extend(ids);
            }
            if let Some(lps) = lps {
                c.logprobs.get_or_insert_with(Vec::new).extend(lps);
            }
            for call in delta.into_iter().flat_map(call_parts) {
                if call.slot >= MAX_INDEX {
                    continue;
                }
                let pending = &mut self.pending_calls[index];
                while pending.len() <= call.slot {
                    pending.push(ToolCall::default());
                }
                let p = &mut pending[call.slot];
                if !call.id.is_empty() {
                    p.id = call.id.to_string();
                }
                p.name.push_str(call.name);
                p.arguments.push_str(call.arguments);
            }
        }
    }

    /// Ends a stream: moves the assembled tool calls into their choices.
    pub fn finish_stream(&mut self) {
        for (choice, calls) in self.choices.iter_mut().zip(self.pending_calls.drain(..)) {
            if !calls.is_empty() {
                choice.tool_calls = calls;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn streamed_chunks_assemble_text_tool_calls_ids_and_logprobs() {
        let mut a = Answer::default();
        a.push_chunk(&json!({"model": "m", "prompt_token_ids": [1, 2], "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}, "token_ids": [5], "logprobs": {"content": [{"token": "He", "logprob": -0.5}]}}]}));
        a.push_chunk(&json!({"choices": [{"index": 0, "delta": {"content": "llo", "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get", "arguments": "{\"a\""}}]}, "token_ids": [6], "logprobs": {"content": [{"token": "llo", "logprob": -0.25}]}}]}));
        a.push_chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls", "token_ids": []}]}));
        a.finish_stream();
        let c = &a.choices[0];
        assert_eq!(a.prompt_token_ids, Some(vec![1, 2]));
        assert_eq!(c.text, "Hello");
        assert_eq!(c.token_ids, Some(vec![5, 6]));
        assert_eq!(c.logprobs, Some(vec![-0.5, -0.25]));
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            c.tool_calls,
            vec![ToolCall {
                id: "c1".into(),
                name: "get".into(),
                arguments: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn extensions_the_client_did_not_ask_for_are_removed() {
        let mut req: Map<String, Value> =
            serde_json::from_value(json!({"messages": [], "logprobs": true})).expect("map");
        let wants = request_exact_tokens(&mut req, true);
        assert!(wants.logprobs && !wants.token_ids);
        assert_eq!(req["return_token_ids"], json!(true));
        let mut body = json!({"prompt_token_ids": [1], "choices": [{"token_ids": [2], "logprobs": {"content": []}}]});
        assert!(strip_unrequested(
            &mut body,
            Wants {
                logprobs: false,
                token_ids: false
            }
        ));
        assert_eq!(body, json!({"choices": [{"logprobs": null}]}));
    }

    #[test]
    fn malformed_messages_name_the_bad_field() {
        let check = |v: Value| {
            let m: Map<String, Value> = serde_json::from_value(v).expect("map");
            validate_messages(&m).err().map(|e| e.0)
        };
        assert_eq!(check(json!({})), Some("messages".into()));
        assert_eq!(check(json!({"messages": "hi"})), Some("messages".into()));
        assert_eq!(
            check(json!({"messages": [{"role": "user"}, {"content": "x"}]})),
            Some("messages[1]".into())
        );
        assert_eq!(
            check(json!({"messages": [{"role": "user"}], "stream": "yes"})),
            Some("stream".into())
        );
        assert_eq!(
            check(json!({"messages": [{"role": "user", "content": "x"}], "n": 2})),
            None
        );
    }
}
