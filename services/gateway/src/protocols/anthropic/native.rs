//! An engine that speaks Anthropic Messages itself (`--engine-speaks messages`: SGLang, vLLM's
//! Messages endpoint, Anthropic's own API): the client's request goes to the engine's
//! `/v1/messages` as it is, its answer comes back as the engine sent it, and the gateway reads the
//! answer — whole or event by event — as the chat completion its steps record. The engine gives
//! no token ids over this protocol; the step's tokens come from the gateway's `--tokenizer`.

use serde_json::{Map, Value, json};

/// A chat `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop: Option<&str>) -> Option<&'static str> {
    Some(match stop? {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    })
}

fn usage(usage: Option<&Value>, input: u64) -> Option<Value> {
    let u = usage.filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let prompt = n("input_tokens").unwrap_or(input)
        + n("cache_read_input_tokens").unwrap_or(0)
        + n("cache_creation_input_tokens").unwrap_or(0);
    let completion = n("output_tokens").unwrap_or(0);
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }))
}

/// A whole Anthropic message as the chat completion a step records: text blocks joined as the
/// content, `tool_use` blocks as tool calls (arguments as JSON text), thinking as
/// `reasoning_content`.
pub fn as_chat_completion(message: &Value) -> Value {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                thinking.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut assistant = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        assistant["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        assistant["reasoning_content"] = Value::String(thinking);
    }
    let mut completion = json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": assistant,
            "finish_reason": finish_reason(message.get("stop_reason").and_then(Value::as_str)),
        }],
    });
    if let Some(usage) = usage(message.get("usage"), 0) {
        completion["usage"] = usage;
    }
    completion
}

/// Reads an engine's Messages stream event by event as chat chunks.
#[derive(Debug, Default)]
pub struct NativeMessages {
    /// Content block index → tool call index, for the blocks that are tool calls.
    tools: Vec<(u64, usize)>,
    input_tokens: u64,
}

impl NativeMessages {
    /// The chat chunk one event of the engine's stream amounts to, if any.
    pub fn chunk(&mut self, event: &Value) -> Option<Value> {
        let delta = |delta: Value| json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]});
        match event.get("type").and_then(Value::as_str)? {
            "message_start" => {
                let message = event.get("message")?;
                self.input_tokens = message
                    .pointer("/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                Some(json!({
                    "id": message.get("id").cloned().unwrap_or(Value::Null),
                    "object": "chat.completion.chunk",
                    "model": message.get("model").cloned().unwrap_or(Value::Null),
                    "choices": [{"index": 0, "delta": {"role": "assistant"}}],
                }))
            }
            "content_block_start" => {
                let block = event.get("content_block")?;
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return None;
                }
                let at = event.get("index").and_then(Value::as_u64)?;
                let call = self.tools.len();
                self.tools.push((at, call));
                // Arguments arrive as `input_json_delta`s; an `input` given whole is the call's.
                let given = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    .map_or_else(String::new, Value::to_string);
                Some(delta(json!({"tool_calls": [{
                    "index": call,
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": given},
                }]})))
            }
            "content_block_delta" => {
                let d = event.get("delta")?;
                let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                match d.get("type").and_then(Value::as_str)? {
                    "text_delta" => Some(delta(json!({"content": text("text")}))),
                    "thinking_delta" => Some(delta(json!({"reasoning_content": text("thinking")}))),
                    "input_json_delta" => {
                        let at = event.get("index").and_then(Value::as_u64)?;
                        let call = self.tools.iter().find(|(i, _)| *i == at)?.1;
                        Some(delta(json!({"tool_calls": [{
                            "index": call,
                            "function": {"arguments": text("partial_json")},
                        }]})))
                    }
                    _ => None,
                }
            }
            "message_delta" => {
                let finish =
                    finish_reason(event.pointer("/delta/stop_reason").and_then(Value::as_str));
                let mut chunk = json!({
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                });
                if let Some(usage) = usage(event.get("usage"), self.input_tokens) {
                    chunk["usage"] = usage;
                }
                Some(chunk)
            }
            _ => None,
        }
    }
}

/// The request as its step can record it in chat form: what only an engine speaking Messages can
/// take (server tools such as `web_search_20250305`, documents, search results) is left out of the
/// record, not refused — the engine gets the request whole.
pub fn recordable(request: &Map<String, Value>) -> Map<String, Value> {
    let mut request = request.clone();
    if let Some(Value::Array(tools)) = request.get_mut("tools") {
        tools.retain(|t| t.get("type").and_then(Value::as_str).unwrap_or("custom") == "custom");
    }
    const KEPT: [&str; 6] = [
        "text",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
    ];
    if let Some(Value::Array(turns)) = request.get_mut("messages") {
        for turn in turns {
            if let Some(Value::Array(blocks)) = turn.get_mut("content") {
                blocks.retain(|b| {
                    b.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| KEPT.contains(&t))
                });
            }
        }
    }
    request
}

/// Whether `event` closes the stream (`message_stop`): it is held until the step is recorded.
pub fn is_closing(event: &Value) -> bool {
    event.get("type").and_then(Value::as_str) == Some("message_stop")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Answer;

    #[test]
    fn a_streamed_tool_call_reads_like_the_whole_message() {
        let whole = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.txt"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 7},
        });
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "m", "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "look."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"a.txt\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ];
        let mut native = NativeMessages::default();
        let mut streamed = Answer::default();
        for event in &events {
            if let Some(chunk) = native.chunk(event) {
                streamed.push_chunk(&chunk);
            }
        }
        streamed.finish_stream();
        assert!(is_closing(&events[11]) && !is_closing(&events[10]));
        let whole = Answer::from_response(&as_chat_completion(&whole));
        let (streamed, whole) = (&streamed.choices[0], &whole.choices[0]);
        assert_eq!(streamed.text, "Let me look.");
        assert_eq!(streamed.finish_reason.as_deref(), Some("tool_calls"));
        let args = |a: &str| serde_json::from_str::<Value>(a).unwrap();
        assert_eq!(
            args(&streamed.tool_calls[0].arguments),
            json!({"path": "a.txt"})
        );
        assert_eq!(
            args(&whole.tool_calls[0].arguments),
            args(&streamed.tool_calls[0].arguments)
        );
        assert_eq!(streamed.tool_calls[0].id, "toolu_1");
        assert_eq!(streamed.tool_calls[0].name, "read");
        // Apart from the arguments' spacing, the stream reads as the whole message.
        let mut same = streamed.clone();
        same.tool_calls[0].arguments = whole.tool_calls[0].arguments.clone();
        assert_eq!(&same, whole);
    }

    #[test]
    fn what_only_the_engine_can_take_is_left_out_of_the_record_only() {
        let request = json!({
            "model": "claude", "max_tokens": 64,
            "tools": [
                {"type": "web_search_20250305", "name": "web_search"},
                {"name": "read", "input_schema": {"type": "object"}},
            ],
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
                {"type": "text", "text": "summarize"},
            ]}],
        });
        let request = request.as_object().unwrap();
        assert!(
            super::super::to_chat(request).is_err(),
            "translation refuses both"
        );
        let chat = super::super::to_chat(&recordable(request)).unwrap();
        assert_eq!(chat["tools"].as_array().unwrap().len(), 1);
        assert_eq!(chat["messages"][0]["content"], "summarize");
    }
}
