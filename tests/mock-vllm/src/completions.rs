//! `/v1/completions`, whole or streamed, with vLLM's default of 16 tokens.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::reply::logprob;
use crate::{Shared, error, sse};

/// `/v1/completions` with a text or token-id prompt.
pub(crate) async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared
        .stats
        .completion_requests
        .fetch_add(1, Ordering::Relaxed);
    let config = shared.config();
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    if let Some(response) = crate::unknown_model(&shared, &request) {
        return response;
    }
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    let tok = &shared.tokenizer;
    let prompt_ids: Vec<u32> = match request.get("prompt") {
        Some(Value::String(s)) => tok.encode(s).unwrap_or_default(),
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_u64)
            .map(|i| i as u32)
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "prompt must be a string or a list of token ids",
            );
        }
    };
    let text = config
        .reply
        .clone()
        .unwrap_or_else(|| "echo completion".into());
    let mut ids = tok.encode(&text).unwrap_or_default();
    let mut finish = "stop";
    // vLLM's default for `/v1/completions`: 16 tokens.
    match request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .or(Some(16))
    {
        Some(max) if ids.len() >= max as usize => {
            ids.truncate(max as usize);
            finish = "length";
        }
        _ => ids.extend(tok.token_id(tok.eos_token())),
    }
    let tokens: Vec<String> = ids.iter().map(|&i| shared.token_text(i)).collect();
    let logprobs = request.get("logprobs").filter(|v| !v.is_null()).map(|_| {
        json!({"tokens": tokens, "token_logprobs": ids.iter().map(|&i| logprob(i)).collect::<Vec<_>>(), "top_logprobs": null, "text_offset": []})
    });
    let wants_ids = request
        .get("return_token_ids")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        && config.token_ids;
    if request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return stream(shared.clone(), &request, prompt_ids, ids, finish, wants_ids);
    }
    let mut choice =
        json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish});
    let mut body = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000, "model": config.model, "choices": []});
    if wants_ids {
        choice["token_ids"] = json!(ids);
        body["prompt_token_ids"] = json!(prompt_ids);
    }
    body["choices"] = json!([choice]);
    axum::Json(body).into_response()
}

/// A streamed text completion as vLLM sends it: one chunk per token with its text (incrementally
/// detokenized: a token that ends inside a character waits for the next), logprobs when asked,
/// `token_ids` per chunk and `prompt_token_ids` on the first with `return_token_ids`; the EOS token
/// comes last with the finish reason and no text; usage on its own chunk when
/// `stream_options.include_usage`; then `[DONE]`.
fn stream(
    shared: Arc<Shared>,
    request: &Value,
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    finish: &'static str,
    wants_ids: bool,
) -> Response {
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wants_logprobs = request.get("logprobs").is_some_and(|v| !v.is_null());
    let model = shared.config().model.clone();
    let token_delay = shared.config().token_delay;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let body_ids = if finish == "length" {
            &ids[..]
        } else {
            &ids[..ids.len().saturating_sub(1)]
        };
        // Pieces: (text, ids, finish).
        let (texts, pending) = crate::detokenized(&shared, body_ids);
        let mut pieces: Vec<(String, Vec<u32>, Option<&str>)> =
            texts.into_iter().map(|(t, ids)| (t, ids, None)).collect();
        let last: Vec<u32> = pending
            .into_iter()
            .chain(ids[body_ids.len()..].iter().copied())
            .collect();
        pieces.push((String::new(), last, Some(finish)));
        for (k, (text, piece_ids, finish)) in pieces.into_iter().enumerate() {
            if !token_delay.is_zero() {
                tokio::time::sleep(token_delay).await;
            }
            let logprobs = wants_logprobs.then(|| {
                let tokens: Vec<String> = piece_ids.iter().map(|&i| shared.token_text(i)).collect();
                json!({"tokens": tokens, "token_logprobs": piece_ids.iter().map(|&i| logprob(i)).collect::<Vec<_>>(), "top_logprobs": null, "text_offset": []})
            });
            let mut choice = json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": null});
            if wants_ids {
                choice["token_ids"] = json!(piece_ids);
                if k == 0 {
                    choice["prompt_token_ids"] = json!(prompt_ids);
                }
            }
            let chunk = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000, "model": model, "choices": [choice], "usage": null});
            if tx.send(Ok(sse(&chunk))).await.is_err() {
                return;
            }
        }
        let usage = include_usage.then(|| json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt_ids.len(), "completion_tokens": ids.len(), "total_tokens": prompt_ids.len() + ids.len()}}));
        crate::end_stream(&tx, usage).await;
    });
    crate::event_stream(rx)
}
