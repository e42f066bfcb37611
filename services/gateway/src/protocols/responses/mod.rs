//! OpenAI Responses (`POST /v1/responses`), the protocol of Codex CLI and the Agents SDK, over an
//! engine that speaks chat completions.
//!
//! Request: `instructions` becomes the system message; `input` items become chat messages
//! (`function_call` items the assistant's `tool_calls`, `function_call_output` items `tool`
//! messages, `custom_tool_call` items calls of a one-string-argument function); with
//! `previous_response_id` the stored conversation comes first, so the engine sees the whole history
//! (the gateway keeps what `store` asks it to keep, [`ResponseStore`]). `reasoning` items and
//! settings have no chat-completions meaning and are dropped; hosted tools (web search, file search,
//! computer use, …) are left out, since a chat-completions engine cannot run them. An engine that
//! speaks Responses itself gets the request as it is ([`native`]).
//!
//! Answer: text, reasoning and tool calls become output items; the stream becomes Responses
//! events (`response.created` … `response.completed`, the last sent after the step is recorded).

use serde_json::{Map, Value, json};

use super::{Invalid, invalid, parts_content};
use crate::chat::content_text;

mod dialect;
pub mod native;
mod store;

pub use dialect::ResponsesDialect;
pub use native::NativeResponses;
pub use store::{ResponseStore, Stored};

/// The argument a custom (free-form) tool's text travels in, as a chat-completions function.
pub(super) const CUSTOM_INPUT: &str = "input";

/// Names of the custom tools a request declared: their calls go back as `custom_tool_call` items.
pub(super) fn custom_tools(request: &Map<String, Value>) -> Vec<String> {
    request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("custom"))
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The chat messages of a request's `input` (what this turn adds to the conversation).
pub fn input_messages(request: &Map<String, Value>) -> Result<Vec<Value>, Invalid> {
    let mut messages: Vec<Value> = Vec::new();
    let items = match request.get("input") {
        Some(Value::String(text)) => return Ok(vec![json!({"role": "user", "content": text})]),
        Some(Value::Array(items)) => items,
        _ => {
            return Err(invalid(
                "input",
                "`input` must be a string or an array of items",
            ));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = match s("role") {
                    "developer" | "system" => "system",
                    r @ ("user" | "assistant") => r,
                    other => {
                        return Err(invalid(
                            format!("{at}.role"),
                            format!("unknown role {other:?}"),
                        ));
                    }
                };
                messages.push(
                    json!({"role": role, "content": message_content(item.get("content"), &at)?}),
                );
            }
            "function_call" | "custom_tool_call" => {
                let arguments = if kind == "function_call" {
                    s("arguments").to_string()
                } else {
                    json!({CUSTOM_INPUT: s("input")}).to_string()
                };
                let call = json!({"id": s("call_id"), "type": "function", "function": {"name": s("name"), "arguments": arguments}});
                // Calls made in one answer belong to one assistant message.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        if let Some(calls) =
                            last.get_mut("tool_calls").and_then(Value::as_array_mut)
                        {
                            calls.push(call);
                        } else {
                            last["tool_calls"] = json!([call]);
                        }
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    other => content_text(other),
                };
                messages
                    .push(json!({"role": "tool", "tool_call_id": s("call_id"), "content": output}));
            }
            // The model's reasoning (often encrypted) is not part of what a chat template renders back.
            "reasoning" => {}
            other => {
                return Err(invalid(
                    format!("{at}.type"),
                    format!(
                        "input item type {other:?} cannot be sent to a chat-completions engine"
                    ),
                ));
            }
        }
    }
    Ok(messages)
}

fn message_content(content: Option<&Value>, at: &str) -> Result<Value, Invalid> {
    let parts = match content {
        Some(Value::String(text)) => return Ok(json!(text)),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(invalid(
                format!("{at}.content"),
                "content must be a string or an array of parts",
            ));
        }
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => out.push(
                json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or("")}),
            ),
            Some("refusal") => out.push(
                json!({"type": "text", "text": part.get("refusal").and_then(Value::as_str).unwrap_or("")}),
            ),
            Some("input_image") if part.get("image_url").is_some_and(Value::is_string) => {
                out.push(json!({"type": "image_url", "image_url": {"url": part["image_url"]}}))
            }
            other => {
                return Err(invalid(
                    format!("{at}.content[{j}].type"),
                    format!("content part type {other:?} cannot be sent to a chat-completions engine"),
                ));
            }
        }
    }
    Ok(parts_content(out))
}

/// Tools that run on OpenAI's side (Codex CLI always offers `web_search` and `tool_search`): an
/// engine cannot run them, so they are left out of what it sees, and the model answers without them.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "tool_search",
    "file_search",
    "computer_use",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
];

/// A `function` or `custom` tool as a chat-completions function.
fn chat_tool(tool: &Value, at: &str) -> Result<Value, Invalid> {
    let s = |k: &str| tool.get(k).and_then(Value::as_str).unwrap_or("");
    let function = match s("type") {
        "function" => {
            json!({"name": s("name"), "description": s("description"), "parameters": tool.get("parameters").cloned().unwrap_or(json!({"type": "object"}))})
        }
        "custom" => {
            json!({"name": s("name"), "description": s("description"), "parameters": {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string"}}, "required": [CUSTOM_INPUT]}})
        }
        other => {
            return Err(invalid(
                format!("{at}.type"),
                format!("tool type {other:?} cannot be served by a chat-completions engine"),
            ));
        }
    };
    Ok(json!({"type": "function", "function": function}))
}

/// The chat-completions request: instructions, the stored history, this turn's input, settings.
pub fn to_chat(
    request: &Map<String, Value>,
    history: Vec<Value>,
    input: Vec<Value>,
) -> Result<Map<String, Value>, Invalid> {
    let mut chat = Map::new();
    if let Some(model) = request.get("model") {
        if !model.is_string() {
            return Err(invalid("model", "`model` must be a string"));
        }
        chat.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    match request.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(invalid("instructions", "`instructions` must be a string")),
    }
    messages.extend(history);
    messages.extend(input);
    if !messages.iter().any(|m| m["role"] != "system") {
        return Err(invalid("input", "`input` must not be empty"));
    }
    chat.insert("messages".into(), Value::Array(messages));
    if request.get("background") == Some(&json!(true)) {
        return Err(invalid(
            "background",
            "background responses are not supported; stream instead",
        ));
    }
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("stream", "stream"),
    ] {
        if let Some(v) = request.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let mut out = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            match tool.get("type").and_then(Value::as_str).unwrap_or("") {
                // A namespace groups function tools; the engine sees them as plain functions.
                "namespace" => {
                    for (j, inner) in tool
                        .get("tools")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        out.push(chat_tool(inner, &format!("tools[{i}].tools[{j}]"))?);
                    }
                }
                kind if HOSTED_TOOLS.iter().any(|h| kind.starts_with(h)) => {
                    tracing::debug!(
                        tool = kind,
                        "hosted tool left out: the engine cannot run it"
                    );
                }
                _ => out.push(chat_tool(tool, &format!("tools[{i}]"))?),
            }
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(choice) = request.get("tool_choice").filter(|c| !c.is_null()) {
        match choice {
            Value::String(_) => {
                chat.insert("tool_choice".into(), choice.clone());
            }
            _ => {
                // A choice of a hosted tool (no name) leaves the choice to the model.
                if let Some(name) = choice.get("name").and_then(Value::as_str) {
                    chat.insert(
                        "tool_choice".into(),
                        json!({"type": "function", "function": {"name": name}}),
                    );
                }
            }
        }
    }
    if let Some(format) = request
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    {
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = format.clone();
                if let Some(o) = schema.as_object_mut() {
                    o.remove("type");
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some(other) => {
                return Err(invalid(
                    "text.format.type",
                    format!("unknown text format {other:?}"),
                ));
            }
        }
    }
    Ok(chat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn codex_style_input_becomes_chat_messages() {
        let req = map(json!({
            "model": "gpt-5-codex", "instructions": "You are a coding agent.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env: linux"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "ok"},
            ],
            "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}, {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
                {"type": "web_search", "external_web_access": true}, {"type": "tool_search", "execution": "client"}],
            "max_output_tokens": 100, "store": false, "stream": true, "include": ["reasoning.encrypted_content"],
        }));
        let input = input_messages(&req).expect("input");
        let chat = to_chat(&req, Vec::new(), input).expect("translates");
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "You are a coding agent."},
                {"role": "system", "content": "env: linux"},
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}}]},
                {"role": "tool", "tool_call_id": "c2", "content": "ok"},
            ])
        );
        assert_eq!(chat["max_tokens"], 100);
        assert_eq!(
            chat["tools"][1]["function"]["parameters"]["required"],
            json!(["input"])
        );
        assert_eq!(
            chat["tools"].as_array().map(Vec::len),
            Some(2),
            "hosted tools left out"
        );
        assert!(chat.get("store").is_none() && chat.get("include").is_none());
    }

    #[test]
    fn hosted_tools_and_unknown_items_are_refused_by_name() {
        let err = |v: Value| {
            let req = map(v);
            input_messages(&req)
                .and_then(|i| to_chat(&req, Vec::new(), i))
                .expect_err("refused")
                .0
        };
        assert_eq!(
            err(json!({"input": "x", "tools": [{"type": "hologram"}]})),
            "tools[0].type"
        );
        assert_eq!(
            err(json!({"input": [{"type": "item_reference", "id": "x"}]})),
            "input[0].type"
        );
        assert_eq!(err(json!({"input": 3})), "input");
    }
}
