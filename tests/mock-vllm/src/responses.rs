//! OpenAI Responses at `/v1/responses`, when the mock is configured to speak it (`responses`), as
//! vLLM's OpenAI server does: the same generation as chat completions, in the Responses shape and
//! stream events. Faithful to vLLM's defaults: it keeps no responses
//! (`VLLM_ENABLE_RESPONSES_API_STORE` unset), so any `previous_response_id` is a 404, and
//! function tools without a tool-call parser are a 400.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::reply::{Generated, content_text, generate_numbered, read_request_if};
use crate::{Shared, error};

/// The request as the chat messages and tools the generator reads.
fn as_chat(request: &Value) -> Value {
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for item in items {
                let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
                match item.get("type").and_then(Value::as_str).unwrap_or("message") {
                    "message" => messages.push(
                        json!({"role": s("role"), "content": content_text(item.get("content"))}),
                    ),
                    "function_call" => messages.push(json!({"role": "assistant", "content": null,
                        "tool_calls": [{"id": s("call_id"), "type": "function", "function": {"name": s("name"), "arguments": s("arguments")}}]})),
                    "function_call_output" => messages.push(
                        json!({"role": "tool", "tool_call_id": s("call_id"), "content": s("output")}),
                    ),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let tools: Vec<Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .map(|t| json!({"type": "function", "function": {"name": t.get("name"), "parameters": t.get("parameters")}}))
        .collect();
    json!({"messages": messages, "tools": tools, "max_tokens": request.get("max_output_tokens")})
}

fn event(sequence: &mut u64, name: &str, mut data: Value) -> Bytes {
    data["type"] = name.into();
    data["sequence_number"] = (*sequence).into();
    *sequence += 1;
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

pub(crate) async fn responses(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let config = shared.config();
    let request = match read_request_if(&shared, config.responses, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if let Some(id) = request.get("previous_response_id").and_then(Value::as_str) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Response with id '{id}' not found."),
        );
    }
    let chat = as_chat(&request);
    if chat["tools"].as_array().is_some_and(|t| !t.is_empty()) && !config.tool_parser {
        return error(
            StatusCode::BAD_REQUEST,
            "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
        );
    }
    let (generated, prompt_tokens, n) = generate_numbered(&shared, &chat);
    let ids = Ids {
        response: format!("resp_mock_{n}"),
        item: format!("item_mock_{n}"),
        call: format!("call_mock_{n}"),
    };
    let whole = response(&request, &config.model, &ids, prompt_tokens, &generated);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(shared, whole, generated);
    }
    axum::Json(whole).into_response()
}

struct Ids {
    response: String,
    item: String,
    call: String,
}

fn output_item(ids: &Ids, g: &Generated) -> Value {
    match &g.tool_call {
        Some((name, args)) => json!({
            "id": ids.item, "type": "function_call", "status": "completed",
            "call_id": ids.call, "name": name, "arguments": args,
        }),
        None => json!({
            "id": ids.item, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": g.text, "annotations": []}],
        }),
    }
}

fn response(request: &Value, model: &str, ids: &Ids, prompt_tokens: usize, g: &Generated) -> Value {
    let (status, incomplete) = if g.finish == "length" {
        ("incomplete", json!({"reason": "max_output_tokens"}))
    } else {
        ("completed", Value::Null)
    };
    let field = |k: &str| request.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": ids.response, "object": "response", "created_at": 0, "status": status,
        "incomplete_details": incomplete, "error": null, "model": model,
        "instructions": field("instructions"), "previous_response_id": null,
        "output": [output_item(ids, g)],
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": field("tools"),
        "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
        "truncation": "disabled", "metadata": {}, "store": false,
        "usage": {
            "input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": g.ids.len(), "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + g.ids.len(),
        },
    })
}

fn stream(shared: Arc<Shared>, whole: Value, g: Generated) -> Response {
    let events = {
        let mut n = 0;
        let mut started = whole.clone();
        started["status"] = "in_progress".into();
        started["output"] = json!([]);
        started["usage"] = Value::Null;
        let item = whole["output"][0].clone();
        let id = item["id"].clone();
        let mut events = vec![
            event(&mut n, "response.created", json!({"response": started})),
            event(&mut n, "response.in_progress", json!({"response": started})),
        ];
        let mut opened = item.clone();
        opened["status"] = "in_progress".into();
        match &g.tool_call {
            Some((_, args)) => {
                opened["arguments"] = "".into();
                events.push(event(
                    &mut n,
                    "response.output_item.added",
                    json!({"output_index": 0, "item": opened}),
                ));
                for part in Generated::halves(args) {
                    events.push(event(
                        &mut n,
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": 0, "delta": part}),
                    ));
                }
                events.push(event(
                    &mut n,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": 0, "arguments": args}),
                ));
            }
            None => {
                opened["content"] = json!([]);
                events.push(event(
                    &mut n,
                    "response.output_item.added",
                    json!({"output_index": 0, "item": opened}),
                ));
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                events.push(event(
                    &mut n,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": 0, "content_index": 0, "part": part}),
                ));
                for text in g.text_pieces(&shared) {
                    events.push(event(&mut n, "response.output_text.delta", json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": text, "logprobs": []})));
                }
                events.push(event(&mut n, "response.output_text.done", json!({"item_id": id, "output_index": 0, "content_index": 0, "text": g.text, "logprobs": []})));
                let part = json!({"type": "output_text", "text": g.text, "annotations": []});
                events.push(event(
                    &mut n,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": 0, "content_index": 0, "part": part}),
                ));
            }
        }
        events.push(event(
            &mut n,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ));
        let closing = if whole["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(event(&mut n, closing, json!({"response": whole})));
        events
    };
    crate::paced_events(shared.config().token_delay, events)
}
