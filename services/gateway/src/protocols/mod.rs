//! Wire protocols other than chat completions, translated to and from the engine's chat completions:
//! Anthropic Messages ([`anthropic`]) and OpenAI Responses ([`responses`]). Each protocol turns its
//! request into a chat-completions request (the step records that request, the one the engine
//! answered, so its tokens are exact), and a [`Dialect`] turns the engine's answer back, whole or
//! chunk by chunk. No I/O here except what a dialect stores once its answer is complete.

pub mod anthropic;
pub mod responses;

use axum::body::Bytes;
use serde_json::Value;

use crate::http::steps::CallContext;

/// What a dialect reads where the engine's answer has no such part.
pub static NULL: Value = Value::Null;

/// A request field that cannot be translated: (the field's path, why).
pub type Invalid = (String, String);

pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Invalid {
    (param.into(), message.into())
}

/// Turns the engine's chat-completions answer into another protocol's answer.
pub trait Dialect: Send + 'static {
    /// The client's body for a whole (non-streamed) chat completion.
    fn whole(&mut self, completion: &Value, ctx: &CallContext) -> Value;
    /// The client's SSE events for one streamed chat-completion chunk (usage chunks included).
    fn chunk(&mut self, chunk: &Value, ctx: &CallContext) -> Vec<Bytes>;
    /// The closing events, sent once the step is recorded.
    fn finish(&mut self, ctx: &CallContext) -> Vec<Bytes>;
    /// An event telling the client the stream failed.
    fn stream_error(&mut self, message: &str) -> Bytes;
}

/// What a dialect's `finish` sends first: nothing once a chunk has opened the stream, else the
/// opening events an empty chunk makes (a stream that ended before its first chunk still opens).
pub fn opening(dialect: &mut impl Dialect, started: bool, ctx: &CallContext) -> Vec<Bytes> {
    if started {
        Vec::new()
    } else {
        dialect.chunk(&Value::Null, ctx)
    }
}

/// One named SSE event (`event:` and `data:` lines), as Anthropic and Responses streams send them.
pub fn sse_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Parses tool-call arguments the engine produced into the object Anthropic and Responses clients
/// expect; arguments that are not a JSON object stay as the string they were, so a broken call
/// reaches the agent (and its tool's validation) as it was made instead of as an empty call.
pub fn arguments_value(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => Value::Object(Default::default()),
        _ => Value::String(arguments.to_string()),
    }
}

/// `usage` of a chat completion as (prompt, completion) token counts.
pub fn usage_of(body: &Value) -> Option<(u64, u64)> {
    let u = body.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some((n("prompt_tokens"), n("completion_tokens")))
}

/// Chat content parts: text parts alone become one string (as engines join them), anything else
/// stays an array of parts.
pub fn parts_content(parts: Vec<Value>) -> Value {
    if parts
        .iter()
        .all(|p| p.get("type").and_then(Value::as_str) == Some("text"))
    {
        Value::String(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    } else {
        Value::Array(parts)
    }
}

/// The first choice of a chat completion or stream chunk (these protocols have no `n`).
pub fn first_choice(body: &Value) -> Option<&Value> {
    body.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}
