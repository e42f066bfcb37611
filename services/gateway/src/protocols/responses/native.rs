//! An engine that speaks OpenAI Responses itself (`--engine-speaks responses`: vLLM's
//! `/v1/responses`, OpenAI's API): the client's request goes to the engine's `/v1/responses`, its
//! answer comes back as the engine sent it, and the gateway reads the answer, whole or event by
//! event, as the chat completion its steps record.
//!
//! Server-side state works whatever the engine keeps: the gateway stores each answered turn's
//! input and output items as the engine took and gave them. A `previous_response_id` the gateway
//! knows is sent as the whole input it stands for; vLLM keeps no responses unless told to. The
//! answer then names the client's `previous_response_id` again. An id the gateway does not know
//! goes to the engine as it is, for the engine to resolve or refuse.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{CUSTOM_INPUT, ResponseStore, Stored};

/// The chat finish reason of a Response.
fn finish_reason(response: &Value, called: bool) -> &'static str {
    if called {
        return "tool_calls";
    }
    match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => match response
            .pointer("/incomplete_details/reason")
            .and_then(Value::as_str)
        {
            Some("content_filter") => "content_filter",
            _ => "length",
        },
        _ => "stop",
    }
}

fn usage(response: &Value) -> Option<Value> {
    let u = response.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (prompt, completion) = (n("input_tokens"), n("output_tokens"));
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }))
}

/// A `function_call` or `custom_tool_call` output item as a chat tool call (a custom tool's text
/// as the one argument the translation gives it).
fn call_of(item: &Value) -> Option<Value> {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    let arguments = match item.get("type").and_then(Value::as_str)? {
        "function_call" => s("arguments").to_string(),
        "custom_tool_call" => json!({CUSTOM_INPUT: s("input")}).to_string(),
        _ => return None,
    };
    Some(json!({
        "id": s("call_id"), "type": "function",
        "function": {"name": s("name"), "arguments": arguments},
    }))
}

/// The text of an output item's parts of the given kinds, joined.
fn text_of(item: &Value, key: &str, kinds: &[&str]) -> String {
    item.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| kinds.contains(&t))
        })
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

/// A whole Response as the chat completion a step records: `message` items' output text as the
/// content, `function_call` and `custom_tool_call` items as tool calls, `reasoning` items as
/// `reasoning_content`.
pub fn as_chat_completion(response: &Value) -> Value {
    let output: &[Value] = response
        .get("output")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let kind = |i: &Value| {
        i.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let text: String = output
        .iter()
        .filter(|i| kind(i) == "message")
        .map(|i| text_of(i, "content", &["output_text"]))
        .collect();
    let reasoning: String = output
        .iter()
        .filter(|i| kind(i) == "reasoning")
        .map(|i| {
            let full = text_of(i, "content", &["reasoning_text"]);
            if full.is_empty() {
                text_of(i, "summary", &["summary_text"])
            } else {
                full
            }
        })
        .collect();
    let calls: Vec<Value> = output.iter().filter_map(call_of).collect();
    let mut message = json!({"role": "assistant", "content": text});
    if text.is_empty() && !calls.is_empty() {
        message["content"] = Value::Null;
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls.clone());
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let mut completion = json!({
        "id": response.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "model": response.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0, "message": message,
            "finish_reason": finish_reason(response, !calls.is_empty()),
        }],
    });
    if let Some(usage) = usage(response) {
        completion["usage"] = usage;
    }
    completion
}

/// Whether `event` ends the stream (`response.completed`, `.incomplete` or `.failed`): it is
/// held until the step is recorded.
pub fn is_closing(event: &Value) -> bool {
    matches!(
        event.get("type").and_then(Value::as_str),
        Some("response.completed" | "response.incomplete" | "response.failed")
    )
}

/// An `error` event for a stream that broke after it began.
pub fn stream_error(message: &str) -> bytes::Bytes {
    let data =
        json!({"type": "error", "code": "upstream_error", "message": message, "param": null});
    bytes::Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// The request as its step can record it in chat form: hosted tools (web search, file search,
/// …) and input items only the engine can take are left out of the record, not refused — the
/// engine gets the request whole.
pub fn recordable(request: &Map<String, Value>) -> Map<String, Value> {
    let mut request = request.clone();
    if let Some(Value::Array(tools)) = request.get_mut("tools") {
        tools.retain(|t| {
            matches!(
                t.get("type").and_then(Value::as_str),
                Some("function" | "custom" | "namespace")
            )
        });
    }
    const ITEMS: [&str; 6] = [
        "message",
        "function_call",
        "custom_tool_call",
        "function_call_output",
        "custom_tool_call_output",
        "reasoning",
    ];
    const PARTS: [&str; 5] = [
        "input_text",
        "output_text",
        "text",
        "refusal",
        "input_image",
    ];
    if let Some(Value::Array(items)) = request.get_mut("input") {
        items.retain(|i| {
            ITEMS.contains(&i.get("type").and_then(Value::as_str).unwrap_or("message"))
        });
        for item in items {
            if let Some(Value::Array(parts)) = item.get_mut("content") {
                parts.retain(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| PARTS.contains(&t))
                        && (p["type"] != "input_image"
                            || p.get("image_url").is_some_and(Value::is_string))
                });
            }
        }
    }
    request
}

/// A request's `input` as items (a string is one user message).
pub fn input_items(request: &Map<String, Value>) -> Vec<Value> {
    match request.get("input") {
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// One call's reading of the engine's Responses stream, and what the gateway keeps of it.
#[derive(Default)]
pub struct NativeResponses {
    store: Option<Arc<ResponseStore>>,
    /// The client's `previous_response_id`.
    previous: Option<String>,
    /// Whether the engine was sent the whole input instead of `previous_response_id`.
    expanded: bool,
    /// This turn's input, as the engine's items and in chat form.
    items: Vec<Value>,
    messages: Vec<Value>,
    /// Output index → tool call index, for the items that are tool calls.
    calls: Vec<(u64, usize)>,
    /// The response the stream closed with.
    closed: Option<Value>,
}

impl NativeResponses {
    pub fn new(
        store: Option<Arc<ResponseStore>>,
        previous: Option<String>,
        expanded: bool,
        items: Vec<Value>,
        messages: Vec<Value>,
    ) -> Self {
        Self {
            store,
            previous,
            expanded,
            items,
            messages,
            ..Self::default()
        }
    }

    /// The chat chunk one event of the engine's stream amounts to, if any.
    pub fn chunk(&mut self, event: &Value) -> Option<Value> {
        let delta = |delta: Value| json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]});
        let text = |k: &str| {
            event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let at = event.get("output_index").and_then(Value::as_u64);
        match event.get("type").and_then(Value::as_str)? {
            "response.created" => {
                let response = event.get("response")?;
                Some(json!({
                    "id": response.get("id").cloned().unwrap_or(Value::Null),
                    "object": "chat.completion.chunk",
                    "model": response.get("model").cloned().unwrap_or(Value::Null),
                    "choices": [{"index": 0, "delta": {"role": "assistant"}}],
                }))
            }
            "response.output_text.delta" => Some(delta(json!({"content": text("delta")}))),
            "response.reasoning_text.delta" => {
                Some(delta(json!({"reasoning_content": text("delta")})))
            }
            "response.output_item.added" => {
                let item = event.get("item")?;
                let call = call_of(item)?;
                let index = self.calls.len();
                self.calls.push((at?, index));
                // Arguments arrive as deltas (a custom tool's input whole, when its item is done).
                let mut call = call;
                call["index"] = index.into();
                call["function"]["arguments"] = match item.get("type").and_then(Value::as_str) {
                    Some("function_call") => item.get("arguments").cloned().unwrap_or("".into()),
                    _ => "".into(),
                };
                Some(delta(json!({"tool_calls": [call]})))
            }
            "response.function_call_arguments.delta" => {
                let index = self.calls.iter().find(|(o, _)| Some(*o) == at)?.1;
                Some(delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": text("delta")}}]}),
                ))
            }
            "response.output_item.done" => {
                let item = event.get("item")?;
                if item.get("type").and_then(Value::as_str) != Some("custom_tool_call") {
                    return None;
                }
                let index = self.calls.iter().find(|(o, _)| Some(*o) == at)?.1;
                let arguments = call_of(item)?["function"]["arguments"].clone();
                Some(delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                ))
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = event.get("response")?;
                self.closed = Some(response.clone());
                let mut chunk = json!({
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason(response, !self.calls.is_empty())}],
                });
                if let Some(usage) = usage(response) {
                    chunk["usage"] = usage;
                }
                Some(chunk)
            }
            _ => None,
        }
    }

    /// Puts the client's `previous_response_id` back into a response object of the engine's
    /// (whole, or inside a stream event) where the gateway sent the whole input instead; whether
    /// it changed anything.
    pub fn restore_previous(&self, value: &mut Value) -> bool {
        if !self.expanded {
            return false;
        }
        let response = if value.get("response").is_some_and(Value::is_object) {
            &mut value["response"]
        } else if value.get("object").and_then(Value::as_str) == Some("response") {
            value
        } else {
            return false;
        };
        response["previous_response_id"] = self.previous.clone().into();
        true
    }

    /// Keeps the finished response for `previous_response_id` (and `GET`), when the request's
    /// `store` asked for it: the engine's whole response (the one the stream closed with, unless
    /// given), and this turn's input and output in chat form and as the engine's items.
    pub fn keep(&self, tenant: &str, whole: Option<&Value>) {
        let (Some(store), Some(response)) = (&self.store, whole.or(self.closed.as_ref())) else {
            return;
        };
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return;
        };
        let mut response = response.clone();
        self.restore_previous(&mut response);
        let answer = as_chat_completion(&response)["choices"][0]["message"].clone();
        let mut messages = self.messages.clone();
        messages.push(answer);
        let mut items = self.items.clone();
        items.extend(
            response
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        store.insert(
            id.to_string(),
            Stored {
                tenant: tenant.to_string(),
                previous: self.previous.clone(),
                messages,
                response,
                items,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Answer;

    fn whole() -> Value {
        json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "previous_response_id": null,
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Look first."}]},
                {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "read", "arguments": "{\"path\": \"a.txt\"}"},
                {"type": "custom_tool_call", "id": "ct_1", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch"},
            ],
            "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
        })
    }

    #[test]
    fn a_streamed_response_reads_like_the_whole_one() {
        let whole = whole();
        let events = [
            json!({"type": "response.created", "response": {"id": "resp_1", "model": "m", "output": []}}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1"}}),
            json!({"type": "response.reasoning_text.delta", "output_index": 0, "delta": "Look first."}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message", "id": "msg_1", "content": []}}),
            json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "Let me "}),
            json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "look."}),
            json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "read", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{\"path\": "}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "\"a.txt\"}"}),
            json!({"type": "response.output_item.added", "output_index": 3, "item": {"type": "custom_tool_call", "id": "ct_1", "call_id": "call_2", "name": "apply_patch", "input": ""}}),
            json!({"type": "response.custom_tool_call_input.delta", "output_index": 3, "delta": "*** Begin Patch"}),
            json!({"type": "response.output_item.done", "output_index": 3, "item": whole["output"][3]}),
            json!({"type": "response.completed", "response": whole}),
        ];
        let mut reader = NativeResponses::default();
        let mut streamed = Answer::default();
        for event in &events {
            if let Some(chunk) = reader.chunk(event) {
                streamed.push_chunk(&chunk);
            }
        }
        streamed.finish_stream();
        assert!(is_closing(&events[12]) && !is_closing(&events[11]));
        let whole = Answer::from_response(&as_chat_completion(&whole));
        assert_eq!(streamed.choices[0], whole.choices[0]);
        let choice = &whole.choices[0];
        assert_eq!(choice.text, "Let me look.");
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.tool_calls[0].name, "read");
        assert_eq!(choice.tool_calls[0].id, "call_1");
        assert_eq!(
            choice.tool_calls[1].arguments,
            r#"{"input":"*** Begin Patch"}"#
        );
    }

    #[test]
    fn the_clients_previous_id_is_named_again_where_the_input_was_sent_whole() {
        let mut reader =
            NativeResponses::new(None, Some("resp_0".into()), true, Vec::new(), Vec::new());
        let mut event = json!({"type": "response.completed", "response": whole()});
        assert!(reader.restore_previous(&mut event));
        assert_eq!(event["response"]["previous_response_id"], "resp_0");
        let mut answer = whole();
        assert!(reader.restore_previous(&mut answer));
        assert_eq!(answer["previous_response_id"], "resp_0");
        reader.expanded = false;
        let mut untouched = whole();
        assert!(
            !reader.restore_previous(&mut untouched),
            "sent as the client sent it"
        );
        assert_eq!(untouched["previous_response_id"], Value::Null);
    }

    #[test]
    fn what_only_the_engine_can_take_is_left_out_of_the_record_only() {
        let request = json!({
            "model": "m",
            "tools": [{"type": "web_search"}, {"type": "function", "name": "read", "parameters": {"type": "object"}}],
            "input": [
                {"type": "message", "role": "user", "content": [
                    {"type": "input_file", "file_id": "f_1"},
                    {"type": "input_text", "text": "summarize"},
                ]},
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            ],
        });
        let request = request.as_object().unwrap();
        assert!(
            input_messages_of(request).is_err(),
            "translation refuses them"
        );
        let record = recordable(request);
        let messages = input_messages_of(&record).unwrap();
        assert_eq!(
            messages,
            vec![json!({"role": "user", "content": "summarize"})]
        );
        assert_eq!(record["tools"].as_array().unwrap().len(), 1);
    }

    fn input_messages_of(request: &Map<String, Value>) -> Result<Vec<Value>, (String, String)> {
        super::super::input_messages(request)
    }
}
