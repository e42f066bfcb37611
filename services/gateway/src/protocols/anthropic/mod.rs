//! Anthropic Messages (`POST /v1/messages`), the protocol of Claude Code and Anthropic's SDKs, over an
//! engine that speaks chat completions.
//!
//! Request: `system` becomes the first message; `tool_use` blocks become the assistant's
//! `tool_calls` (input re-serialized as the arguments string), `tool_result` blocks become `tool`
//! messages placed before the rest of their user turn; `max_tokens`, `stop_sequences`,
//! `temperature`, `top_p`, `top_k`, `tools` and `tool_choice` map to their chat fields. `thinking`,
//! `metadata` and cache hints have no chat-completions meaning and are dropped; content blocks that
//! cannot be expressed (documents, server tools) are refused with a 400 naming them.
//!
//! Answer: text, reasoning (`thinking`) and tool calls become content blocks; the stream becomes
//! `message_start`, `content_block_*`, `message_delta` and `message_stop` events, the last two sent
//! after the step is recorded.

use serde_json::{Map, Value, json};

use super::{Invalid, invalid, parts_content};
use crate::chat::content_text;

mod dialect;
mod native;

pub use dialect::{AnthropicError, MessagesDialect, stream_error};
pub use native::{NativeMessages, as_chat_completion, is_closing, recordable};

/// The chat-completions request for a Messages request, or the field that cannot be translated.
pub fn to_chat(request: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    let mut chat = Map::new();
    match request.get("model") {
        Some(Value::String(m)) => {
            chat.insert("model".into(), json!(m));
        }
        _ => return Err(invalid("model", "`model` is required and must be a string")),
    }
    match request.get("max_tokens").and_then(Value::as_u64) {
        Some(n) if n >= 1 => {
            chat.insert("max_tokens".into(), json!(n));
        }
        _ => {
            return Err(invalid(
                "max_tokens",
                "`max_tokens` is required and must be a positive integer",
            ));
        }
    }
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(s @ (Value::String(_) | Value::Array(_))) => {
            messages.push(json!({"role": "system", "content": content_text(Some(s))}))
        }
        Some(_) => {
            return Err(invalid(
                "system",
                "`system` must be a string or text blocks",
            ));
        }
    }
    let Some(turns) = request.get("messages").and_then(Value::as_array) else {
        return Err(invalid(
            "messages",
            "`messages` is required and must be an array",
        ));
    };
    if turns.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    for (i, turn) in turns.iter().enumerate() {
        translate_turn(turn, i, &mut messages)?;
    }
    // A final assistant turn is an answer the client prefilled: the model goes on from it, as
    // vLLM and SGLang do with these fields (and Anthropic's API does for its own).
    if messages
        .last()
        .is_some_and(|m| m["role"] == "assistant" && m.get("tool_calls").is_none())
    {
        chat.insert("continue_final_message".into(), Value::Bool(true));
        chat.insert("add_generation_prompt".into(), Value::Bool(false));
    }
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("stop_sequences", "stop"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stream", "stream"),
    ] {
        if let Some(v) = request.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        chat.insert("tools".into(), translate_tools(tools)?);
    }
    if let Some(choice) = request.get("tool_choice").filter(|t| !t.is_null()) {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => match choice.get("name").and_then(Value::as_str) {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => return Err(invalid("tool_choice.name", "`tool` choice needs a `name`")),
            },
            other => {
                return Err(invalid(
                    "tool_choice.type",
                    format!("unknown tool_choice type {other:?}"),
                ));
            }
        };
        chat.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&json!(true)) {
            chat.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(chat)
}

fn translate_tools(tools: &Value) -> Result<Value, Invalid> {
    let Some(tools) = tools.as_array() else {
        return Err(invalid("tools", "`tools` must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
        if kind != "custom" {
            return Err(invalid(
                format!("tools[{i}].type"),
                format!(
                    "tool type {kind:?} runs on Anthropic's servers; only custom tools (name, description, input_schema) can be served here"
                ),
            ));
        }
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return Err(invalid(format!("tools[{i}].name"), "a tool needs a `name`"));
        };
        let mut function = json!({
            "name": name,
            "parameters": tool.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
        });
        if let Some(d) = tool.get("description").and_then(Value::as_str) {
            function["description"] = json!(d);
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// A user content part in chat form (text or image), or the block that cannot be expressed.
fn user_part(block: &Value, at: &str) -> Result<Value, Invalid> {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => Ok(
            json!({"type": "text", "text": block.get("text").and_then(Value::as_str).unwrap_or("")}),
        ),
        Some("image") => {
            let source = block.get("source");
            let s = |k: &str| source.and_then(|s| s.get(k)).and_then(Value::as_str);
            let url = match s("type") {
                Some("base64") => format!(
                    "data:{};base64,{}",
                    s("media_type").unwrap_or("image/png"),
                    s("data").unwrap_or("")
                ),
                Some("url") => s("url").unwrap_or("").to_string(),
                _ => {
                    return Err(invalid(
                        format!("{at}.source"),
                        "image source must be base64 or url",
                    ));
                }
            };
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        other => Err(invalid(
            format!("{at}.type"),
            format!("content block type {other:?} cannot be sent to a chat-completions engine"),
        )),
    }
}

fn translate_turn(turn: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), Invalid> {
    let at = format!("messages[{i}]");
    let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
    if role == "system" {
        // Claude Code puts per-turn context in system messages between the turns.
        messages.push(json!({"role": "system", "content": content_text(turn.get("content"))}));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(invalid(
            format!("{at}.role"),
            "role must be \"user\", \"assistant\" or \"system\"",
        ));
    }
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            messages.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(
                format!("{at}.content"),
                "content must be a string or an array of blocks",
            ));
        }
    };
    if role == "assistant" {
        let mut text = Vec::new();
        let mut calls = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => text.push(block.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => {
                    let s = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
                    let input = block.get("input").cloned().unwrap_or(json!({}));
                    let arguments = match input {
                        Value::String(raw) => raw,
                        other => other.to_string(),
                    };
                    calls.push(json!({"id": s("id"), "type": "function", "function": {"name": s("name"), "arguments": arguments}}));
                }
                // The model's own reasoning is not part of what a chat template renders back.
                Some("thinking" | "redacted_thinking") => {}
                other => {
                    return Err(invalid(
                        format!("{at}.content[{j}].type"),
                        format!(
                            "assistant content block type {other:?} cannot be sent to a chat-completions engine"
                        ),
                    ));
                }
            }
        }
        let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text.join("\n")) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        messages.push(m);
        return Ok(());
    }
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        if block.get("type").and_then(Value::as_str) == Some("tool_result") {
            let id = block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let content = match block.get("content") {
                Some(Value::Array(inner)) => {
                    let mut texts = Vec::new();
                    for (k, b) in inner.iter().enumerate() {
                        match b.get("type").and_then(Value::as_str) {
                            Some("text") => texts.push(
                                b.get("text")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string(),
                            ),
                            other => {
                                return Err(invalid(
                                    format!("{at}.content[{j}].content[{k}].type"),
                                    format!(
                                        "tool result block type {other:?} cannot be sent to a chat-completions engine"
                                    ),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
                other => content_text(other),
            };
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
        } else {
            parts.push(user_part(block, &format!("{at}.content[{j}]"))?);
        }
    }
    if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": parts_content(parts)}));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn a_tool_round_trip_becomes_chat_messages_in_order() {
        let chat = to_chat(&map(json!({
            "model": "claude", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": [{"type": "text", "text": "Looking."}, {"type": "tool_use", "id": "t1", "name": "ls", "input": {"path": "."}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a.txt"}]}, {"type": "text", "text": "thanks"}]},
            ],
            "tools": [{"name": "ls", "description": "list", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "metadata": {"user_id": "u"},
        })))
        .expect("translates");
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": "Looking.", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "a.txt"},
                {"role": "user", "content": "thanks"},
            ])
        );
        assert_eq!(chat["tools"][0]["function"]["name"], "ls");
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["max_tokens"], 64);
        assert!(chat.get("metadata").is_none());
    }

    #[test]
    fn what_cannot_be_translated_is_refused_by_name() {
        let err = |v: Value| to_chat(&map(v)).expect_err("refused").0;
        assert_eq!(
            err(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
            "max_tokens"
        );
        assert_eq!(
            err(
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})
            ),
            "messages[0].content[0].type"
        );
        assert_eq!(
            err(
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
            ),
            "tools[0].type"
        );
    }
}
