//! An Anthropic message from the engine's chat completion: content blocks, whole or as stream
//! events; errors in Anthropic's shape.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::{Dialect, NULL, arguments_value, first_choice, opening, sse_event, usage_of};
use crate::chat::{call_parts, content_text, reasoning_of};
use crate::error::ApiError;
use crate::http::steps::CallContext;

/// Anthropic's `stop_reason` for a chat choice's `finish_reason` (and vLLM's `stop_reason`, the stop
/// string that ended it, when it was one of the client's `stop_sequences`).
fn stop_reason(finish: Option<&str>, matched: Option<&str>) -> (&'static str, Option<String>) {
    match (finish, matched) {
        (Some("length"), _) => ("max_tokens", None),
        (Some("tool_calls"), _) => ("tool_use", None),
        (_, Some(seq)) => ("stop_sequence", Some(seq.to_string())),
        _ => ("end_turn", None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    Tool(usize),
}

/// Translates one call's answer into Anthropic's message shape, whole or as events.
pub struct MessagesDialect {
    id: String,
    model: String,
    stop_sequences: Vec<String>,
    started: bool,
    open: Option<(Block, usize)>,
    next_index: usize,
    finish: Option<String>,
    matched_stop: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
}

impl MessagesDialect {
    pub fn new(request: &Map<String, Value>) -> Self {
        Self {
            id: format!("msg_{}", ulid::Ulid::new()),
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            stop_sequences: request
                .get("stop_sequences")
                .and_then(Value::as_array)
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            started: false,
            open: None,
            next_index: 0,
            finish: None,
            matched_stop: None,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// The stop string vLLM reports (`stop_reason`) when it is one of the client's sequences.
    fn matched(&self, choice: &Value) -> Option<String> {
        let s = choice.get("stop_reason").and_then(Value::as_str)?;
        self.stop_sequences
            .iter()
            .any(|q| q == s)
            .then(|| s.to_string())
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((_, index)) = self.open.take() {
            out.push(sse_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// Makes `block` the open content block, starting it (after closing another) when needed;
    /// returns its index.
    fn open_block(&mut self, block: Block, start: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some((open, index)) = self.open
            && open == block
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        out.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        index
    }
}

impl Dialect for MessagesDialect {
    fn whole(&mut self, completion: &Value, _ctx: &CallContext) -> Value {
        let choice = first_choice(completion).unwrap_or(&NULL);
        let message = choice.get("message").unwrap_or(&NULL);
        let mut content = Vec::new();
        if let Some(r) = reasoning_of(message) {
            content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
        }
        let text = content_text(message.get("content"));
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in call_parts(message) {
            content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments_value(call.arguments)}));
        }
        let (reason, sequence) = stop_reason(
            choice.get("finish_reason").and_then(Value::as_str),
            self.matched(choice).as_deref(),
        );
        let (input, output) = usage_of(completion).unwrap_or((0, 0));
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": {"input_tokens": input, "output_tokens": output},
        })
    }

    fn chunk(&mut self, chunk: &Value, _ctx: &CallContext) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.input_tokens = chunk
                .get("prompt_token_ids")
                .and_then(Value::as_array)
                .map_or(0, |ids| ids.len() as u64);
            out.push(sse_event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
                }}),
            ));
        }
        if let Some((input, output)) = usage_of(chunk) {
            self.input_tokens = input;
            self.output_tokens = output;
        }
        let Some(choice) = first_choice(chunk) else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&NULL);
        if let Some(r) = reasoning_of(delta) {
            let index = self.open_block(
                Block::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                &mut out,
            );
            out.push(sse_event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": r}})));
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.open_block(Block::Text, json!({"type": "text", "text": ""}), &mut out);
            out.push(sse_event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
        }
        for call in call_parts(delta) {
            let start = json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
            let index = self.open_block(Block::Tool(call.slot), start, &mut out);
            if !call.arguments.is_empty() {
                out.push(sse_event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}})));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
            self.matched_stop = self.matched(choice);
        }
        out
    }

    fn finish(&mut self, ctx: &CallContext) -> Vec<Bytes> {
        let mut out = opening(self, self.started, ctx);
        self.close(&mut out);
        let (reason, sequence) = stop_reason(self.finish.as_deref(), self.matched_stop.as_deref());
        out.push(sse_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            }),
        ));
        out.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn stream_error(&mut self, message: &str) -> Bytes {
        stream_error(message)
    }
}

/// The event that tells a Messages client its stream failed.
pub fn stream_error(message: &str) -> Bytes {
    sse_event("error", &error_body("api_error", message))
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// An [`ApiError`] that answers in Anthropic's shape: what `/v1/messages` handlers return, so
/// that `?` on an `ApiError` gives a Messages client an error it reads.
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

/// An error in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`), with the
/// status it had; an engine's own error keeps its status and message.
fn error_response(err: ApiError) -> Response {
    let status = err.status();
    let message = match &err {
        ApiError::Upstream { body, .. } => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| {
                b.pointer("/error/message")
                    .or_else(|| b.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        ApiError::BadRequest {
            message,
            param: Some(p),
        } => format!("{p}: {message}"),
        other => other.to_string(),
    };
    let kind = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request_error",
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
        _ => "api_error",
    };
    (status, axum::Json(error_body(kind, &message))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_follow_the_finish() {
        assert_eq!(stop_reason(Some("length"), None).0, "max_tokens");
        assert_eq!(stop_reason(Some("tool_calls"), None).0, "tool_use");
        assert_eq!(
            stop_reason(Some("stop"), Some("END")),
            ("stop_sequence", Some("END".into()))
        );
        assert_eq!(stop_reason(Some("stop"), None).0, "end_turn");
    }
}
