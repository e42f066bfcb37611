//! Anthropic Messages at `/v1/messages`, when the mock is configured to speak it (`messages`), as
//! engines that serve the protocol themselves do: the same generation as chat completions, in
//! Anthropic's message shape and stream events. Strict where Anthropic is: `max_tokens` is
//! required, an unknown model is 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::reply::{Generated, content_text, generate_numbered, read_request_if};
use crate::{Shared, error};

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ => "end_turn",
    }
}

/// The request as the chat messages and tools the generator reads.
fn as_chat(request: &Value) -> Value {
    let text = content_text;
    let mut messages = Vec::new();
    for turn in request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let blocks = turn.get("content").and_then(Value::as_array);
        let results = blocks
            .into_iter()
            .flatten()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
        let mut answered = false;
        for result in results {
            answered = true;
            messages.push(json!({"role": "tool", "content": text(result.get("content"))}));
        }
        let said = text(turn.get("content"));
        // A turn of tool results alone is the tools' answer, not a user speaking.
        if !(answered && said.is_empty()) {
            messages.push(json!({"role": turn.get("role"), "content": said}));
        }
    }
    let tools: Vec<Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| json!({"type": "function", "function": {"name": t.get("name"), "parameters": t.get("input_schema")}}))
        .collect();
    json!({"messages": messages, "tools": tools, "max_tokens": request.get("max_tokens")})
}

pub(crate) async fn messages(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let config = shared.config();
    let request = match read_request_if(&shared, config.messages, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        < 1
    {
        return error(
            StatusCode::BAD_REQUEST,
            "max_tokens: required, and at least 1",
        );
    }
    let chat = as_chat(&request);
    let (generated, prompt_tokens, n) = generate_numbered(&shared, &chat);
    let id = format!("msg_mock_{n}");
    let tool_id = format!("toolu_mock_{n}");
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(shared, id, tool_id, config.model, prompt_tokens, generated);
    }
    let block = match &generated.tool_call {
        Some((name, args)) => {
            json!({"type": "tool_use", "id": tool_id, "name": name, "input": serde_json::from_str::<Value>(args).unwrap_or(json!({}))})
        }
        None => json!({"type": "text", "text": generated.text}),
    };
    axum::Json(json!({
        "id": id, "type": "message", "role": "assistant", "model": config.model,
        "content": [block],
        "stop_reason": stop_reason(generated.finish), "stop_sequence": null,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": generated.ids.len()},
    }))
    .into_response()
}

fn stream(
    shared: Arc<Shared>,
    id: String,
    tool_id: String,
    model: String,
    prompt_tokens: usize,
    g: Generated,
) -> Response {
    let events = {
        let mut events = vec![
            event(
                "message_start",
                &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}),
            ),
            event("ping", &json!({"type": "ping"})),
        ];
        match &g.tool_call {
            Some((name, args)) => {
                events.push(event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}})));
                for part in Generated::halves(args) {
                    events.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})));
                }
            }
            None => {
                events.push(event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
                for text in g.text_pieces(&shared) {
                    events.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
                }
            }
        }
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(g.finish), "stop_sequence": null}, "usage": {"output_tokens": g.ids.len()}})));
        events.push(event("message_stop", &json!({"type": "message_stop"})));
        events
    };
    crate::paced_events(shared.config().token_delay, events)
}
