//! Turning engine events into vLLM-shaped OpenAI responses, whole or streamed (SSE): text,
//! `token_ids` / `prompt_token_ids` with `return_token_ids`, per-token logprobs, stop strings,
//! finish reasons and usage. As vLLM does, an end-of-sequence token is in `token_ids` but not in
//! the text; what else the text leaves out, and where an answer ends, is in [`crate::text`].

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use clawline_model::Finish;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::engine::Event;
use clawline_runtime::http::ApiError;

use crate::http::{App, engine_failed};
use crate::text::AnswerText;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// The completion as it grows: ids, logprobs, text, and why it ended.
#[derive(Default)]
struct Growing {
    /// Every generated token (special ones included), and its logprob.
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    /// The clean text of the ids (special tokens excluded, cut at a stop string).
    text: AnswerText,
    finish: Option<&'static str>,
}

struct Wants {
    /// The end-of-sequence ids of this request (none with `ignore_eos`).
    stop_ids: Vec<u32>,
    ids: bool,
    logprobs: bool,
    stop: Vec<String>,
    /// Characters held back while streaming: a stop string may begin in them.
    hold: usize,
    usage_in_stream: bool,
}

fn wants(body: &Value, stop_ids: Vec<u32>) -> Wants {
    let stop = match body.get("stop") {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let hold = stop
        .iter()
        .map(|s| s.chars().count().saturating_sub(1))
        .max()
        .unwrap_or(0);
    Wants {
        stop_ids,
        ids: body
            .get("return_token_ids")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        logprobs: body
            .get("logprobs")
            .is_some_and(|v| v.as_bool().unwrap_or(!v.is_null())),
        stop,
        hold,
        usage_in_stream: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

impl Growing {
    /// Adds a token; returns the text it added (empty while a character is incomplete or a stop
    /// string may be beginning; the rest when the answer ends here).
    fn push(&mut self, app: &App, id: u32, logprob: f32, w: &Wants) -> String {
        self.ids.push(id);
        self.logprobs.push(logprob);
        if w.stop_ids.contains(&id) {
            return self.end("stop");
        }
        if app.special_ids.binary_search(&id).is_ok() {
            // Only with `ignore_eos`: the answer goes on, the token is not text.
            return String::new();
        }
        if self.text.push(&app.tokenizer, id, &w.stop) {
            return self.end("stop");
        }
        self.text.take(w.hold)
    }

    /// Ends the answer; returns the text not handed out yet.
    fn end(&mut self, reason: &'static str) -> String {
        self.finish = Some(reason);
        self.text.take(0)
    }
}

fn token_logprobs(app: &App, ids: &[u32], logprobs: &[f32], kind: Kind) -> Value {
    let tokens: Vec<String> = ids
        .iter()
        .map(|&i| app.tokenizer.decode(&[i]).unwrap_or_default())
        .collect();
    match kind {
        Kind::Chat => json!({"content": tokens.iter().zip(logprobs).map(|(t, lp)| json!({
            "token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": []
        })).collect::<Vec<_>>()}),
        Kind::Completion => json!({
            "tokens": tokens, "token_logprobs": logprobs, "top_logprobs": null, "text_offset": []
        }),
    }
}

fn with_version(mut response: Response, version: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(version) {
        response
            .headers_mut()
            .insert("x-clawline-policy-version", v);
    }
    response
}

/// Waits for the engine to start the request, then answers whole or as a stream.
pub async fn respond(
    app: Arc<App>,
    body: Value,
    prompt: Vec<u32>,
    kind: Kind,
    stop_ids: Vec<u32>,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let version = match events.recv().await {
        Some(Event::Started { version }) => version,
        Some(Event::Failed { message }) => return Err(engine_failed(message)),
        _ => return Err(engine_failed("the engine did not start the request")),
    };
    let id = clawline_schemas::new_event_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    let w = wants(&body, stop_ids);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let response = if stream {
        streamed(app, id, prompt, kind, w, events)
    } else {
        whole(&app, id, prompt, kind, &w, events).await?
    };
    Ok(with_version(response, &version))
}

async fn whole(
    app: &App,
    id: String,
    prompt: Vec<u32>,
    kind: Kind,
    w: &Wants,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let mut g = Growing::default();
    while g.finish.is_none() {
        match events.recv().await {
            Some(Event::Token { id, logprob }) => {
                g.push(app, id, logprob, w);
            }
            Some(Event::Done { finish }) => {
                g.end(finish_reason(finish));
            }
            Some(Event::Failed { message }) => return Err(engine_failed(message)),
            Some(Event::Started { .. }) => {}
            None => return Err(engine_failed("the engine stopped")),
        }
    }
    let lp = if w.logprobs {
        token_logprobs(app, &g.ids, &g.logprobs, kind)
    } else {
        Value::Null
    };
    let mut choice = match kind {
        Kind::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": g.text.sent()}, "logprobs": lp, "finish_reason": g.finish})
        }
        Kind::Completion => {
            json!({"index": 0, "text": g.text.sent(), "logprobs": lp, "finish_reason": g.finish})
        }
    };
    if w.ids {
        choice["token_ids"] = json!(g.ids);
    }
    let object = if kind == Kind::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let mut out = json!({
        "id": id, "object": object, "created": clawline_schemas::now_ms() / 1000, "model": app.model_name,
        "choices": [choice],
        "usage": usage(prompt.len(), g.ids.len()),
    });
    if w.ids {
        out["prompt_token_ids"] = json!(prompt);
    }
    Ok(axum::Json(out).into_response())
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::Cancelled => "abort",
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn streamed(
    app: Arc<App>,
    id: String,
    prompt: Vec<u32>,
    kind: Kind,
    w: Wants,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let object = if kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let created = clawline_schemas::now_ms() / 1000;
        let chunk = |choice: Value| json!({"id": id, "object": object, "created": created, "model": app.model_name, "choices": [choice]});
        let piece = |text: &str, lp: Value, ids: &[u32], finish: Option<&str>| {
            let mut c = match kind {
                Kind::Chat => {
                    json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": finish})
                }
                Kind::Completion => {
                    json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": finish})
                }
            };
            if w.ids {
                c["token_ids"] = json!(ids);
            }
            c
        };
        if kind == Kind::Chat {
            let mut first = chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            );
            if w.ids {
                first["prompt_token_ids"] = json!(prompt);
            }
            if tx.send(Ok(sse(&first))).await.is_err() {
                return;
            }
        }
        let mut g = Growing::default();
        while g.finish.is_none() {
            let c = match events.recv().await {
                Some(Event::Token { id: token, logprob }) => {
                    let added = g.push(&app, token, logprob, &w);
                    let lp = if w.logprobs {
                        token_logprobs(&app, &[token], &[logprob], kind)
                    } else {
                        Value::Null
                    };
                    let mut c = chunk(piece(&added, lp, &[token], g.finish));
                    if kind == Kind::Completion && g.ids.len() == 1 && w.ids {
                        c["prompt_token_ids"] = json!(prompt);
                    }
                    c
                }
                Some(Event::Done { finish }) => {
                    let rest = g.end(finish_reason(finish));
                    chunk(piece(&rest, Value::Null, &[], g.finish))
                }
                Some(Event::Started { .. }) => continue,
                Some(Event::Failed { .. }) | None => {
                    let rest = g.end("abort");
                    chunk(piece(&rest, Value::Null, &[], g.finish))
                }
            };
            if tx.send(Ok(sse(&c))).await.is_err() {
                return;
            }
        }
        if w.usage_in_stream {
            let mut u = chunk(Value::Null);
            u["choices"] = json!([]);
            u["usage"] = usage(prompt.len(), g.ids.len());
            let _ = tx.send(Ok(sse(&u))).await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
}
