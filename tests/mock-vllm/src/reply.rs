//! What the mock answers, whole or streamed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clawline_runtime::tokenize::TemplateArgs;
use serde_json::{Value, json};

use crate::{Shared, error, sse};

/// One generated choice: its text (or tool call), ids (EOS included when it stopped) and logprobs.
pub(crate) struct Generated {
    pub(crate) text: String,
    pub(crate) tool_call: Option<(String, String)>,
    pub(crate) ids: Vec<u32>,
    pub(crate) finish: &'static str,
}

impl Generated {
    /// The answer's text as an engine streams it, piece by piece (the end-of-sequence token
    /// it stopped on shows no text).
    pub(crate) fn text_pieces(&self, shared: &Shared) -> Vec<String> {
        let body = if self.finish == "length" {
            &self.ids[..]
        } else {
            &self.ids[..self.ids.len().saturating_sub(1)]
        };
        let (pieces, _) = crate::detokenized(shared, body);
        pieces
            .into_iter()
            .map(|(text, _)| text)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// A tool call's arguments in two pieces, as streamed arguments arrive.
    pub(crate) fn halves(args: &str) -> [&str; 2] {
        let half = (0..=args.len() / 2)
            .rev()
            .find(|&i| args.is_char_boundary(i))
            .unwrap_or(0);
        [&args[..half], &args[half..]]
    }
}

pub(crate) fn logprob(id: u32) -> f32 {
    -(0.05 + (id % 10) as f32 * 0.1)
}

pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub(crate) fn generate(shared: &Shared, request: &Value, choice: usize) -> Generated {
    let config = shared.config();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_text = content_text(last.get("content"));
    let tools = request
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty());
    let tok = &shared.tokenizer;
    let eos = tok.token_id(tok.eos_token());
    let max_tokens = request
        .get("max_tokens")
        .or_else(|| request.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    let offered = |name: &str| {
        tools.is_some_and(|t| {
            t.iter()
                .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
        })
    };
    let answered = messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
    let (text, tool_call) = match (tools, &config.call_tool) {
        (_, Some((name, args))) if offered(name) && !answered => (
            format!("<tool_call>{name} {args}</tool_call>"),
            Some((name.clone(), args.clone())),
        ),
        (Some(tools), None) if last.get("role").and_then(Value::as_str) == Some("user") => {
            let name = tools[0]
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("tool")
                .to_string();
            let args = json!({"query": last_text}).to_string();
            (
                format!("<tool_call>{name} {args}</tool_call>"),
                Some((name, args)),
            )
        }
        _ => {
            let base = config
                .reply
                .clone()
                .unwrap_or_else(|| format!("echo: {last_text}"));
            (
                if choice > 0 {
                    format!("{base} ({choice})")
                } else {
                    base
                },
                None,
            )
        }
    };
    let mut ids = tok.encode(&text).unwrap_or_default();
    let mut finish = if tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    if let Some(max) = max_tokens
        && ids.len() >= max
    {
        ids.truncate(max);
        finish = "length";
    } else if let Some(eos) = eos {
        ids.push(eos);
    }
    let text = if finish == "length" {
        tok.decode(&ids).unwrap_or_default()
    } else {
        text
    };
    Generated {
        text: if tool_call.is_some() {
            String::new()
        } else {
            text
        },
        tool_call,
        ids,
        finish,
    }
}

/// One answer to a request another protocol made (read as `chat`): what was generated, the
/// prompt's length in tokens, and the answer's number (for its ids).
pub(crate) fn generate_numbered(shared: &Shared, chat: &Value) -> (Generated, usize, u64) {
    let generated = generate(shared, chat, 0);
    let prompt_tokens = shared
        .tokenizer
        .encode_chat(
            chat["messages"].as_array().map_or(&[][..], Vec::as_slice),
            None,
        )
        .unwrap_or_default()
        .len();
    let n = shared.counter.fetch_add(1, Ordering::Relaxed);
    (generated, prompt_tokens, n)
}

fn token_logprobs(shared: &Shared, ids: &[u32]) -> Value {
    let content: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let token = shared.token_text(id);
            json!({"token": token, "logprob": logprob(id), "bytes": token.as_bytes(), "top_logprobs": []})
        })
        .collect();
    json!({ "content": content })
}

/// A request body as JSON, kept as the last request; refused as vLLM refuses bad JSON and a model
/// it does not serve.
/// The request of a route the mock serves only when `served` (another protocol's): a 404 as
/// vLLM's server gives for a route it lacks, else [`read_request`].
pub(crate) fn read_request_if(
    shared: &Shared,
    served: bool,
    body: &[u8],
) -> Result<Value, Box<Response>> {
    if !served {
        return Err(Box::new(
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"detail": "Not Found"})),
            )
                .into_response(),
        ));
    }
    read_request(shared, body)
}

pub(crate) fn read_request(shared: &Shared, body: &[u8]) -> Result<Value, Box<Response>> {
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON: {e}"),
        ))
    })?;
    *shared
        .stats
        .last_request
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(request.clone());
    match crate::unknown_model(shared, &request) {
        Some(response) => Err(Box::new(response)),
        None => Ok(request),
    }
}

pub(crate) async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.stats.chat_requests.fetch_add(1, Ordering::Relaxed);
    let config = shared.config();
    let request = match read_request(&shared, &body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let tool_choice = request.get("tool_choice").and_then(Value::as_str);
    if request
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
        && !config.tool_parser
        && tool_choice != Some("none")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
        );
    }
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    if let Some(status) = config.fail_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "mock failure");
    }
    let wants_ids = request
        .get("return_token_ids")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_ids && !config.token_ids {
        return error(
            StatusCode::BAD_REQUEST,
            "Unrecognized request argument supplied: return_token_ids",
        );
    }
    let wants_logprobs = request
        .get("logprobs")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let n = request.get("n").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // As vLLM: the request's template variables, and a template that cannot render is a 400.
    let template = match request.as_object().map(TemplateArgs::of_request) {
        Some(Ok(template)) => template,
        None => TemplateArgs::default(),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let prompt_ids = match shared.tokenizer.encode_chat_with(
        &messages,
        request.get("tools").filter(|t| !t.is_null()),
        &template,
    ) {
        Ok(ids) => ids,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let choices: Vec<Generated> = (0..n).map(|i| generate(&shared, &request, i)).collect();
    let id = format!(
        "chatcmpl-mock-{}",
        shared.counter.fetch_add(1, Ordering::Relaxed)
    );
    let mut response = if request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        stream(
            shared.clone(),
            id,
            config.model.clone(),
            prompt_ids,
            choices,
            wants_ids,
            wants_logprobs,
            &request,
        )
    } else {
        whole(
            &shared,
            id,
            &config.model,
            &prompt_ids,
            &choices,
            wants_ids,
            wants_logprobs,
        )
    };
    if let Some(v) = config.policy_version
        && let Ok(v) = v.to_string().parse()
    {
        response
            .headers_mut()
            .insert("x-clawline-policy-version", v);
    }
    response
}

fn tool_call_json(index: usize, name: &str, args: &str) -> Value {
    json!({"index": 0, "id": format!("call_mock_{index}"), "type": "function", "function": {"name": name, "arguments": args}})
}

fn whole(
    shared: &Shared,
    id: String,
    model: &str,
    prompt_ids: &[u32],
    choices: &[Generated],
    wants_ids: bool,
    wants_logprobs: bool,
) -> Response {
    let mut completion_tokens = 0;
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, g)| {
            completion_tokens += g.ids.len();
            let mut message = json!({"role": "assistant", "content": if g.tool_call.is_some() { Value::Null } else { json!(g.text) }});
            if let Some((name, args)) = &g.tool_call {
                message["tool_calls"] = json!([tool_call_json(i, name, args)]);
            }
            let mut choice = json!({
                "index": i,
                "message": message,
                "logprobs": if wants_logprobs { token_logprobs(shared, &g.ids) } else { Value::Null },
                "finish_reason": g.finish,
            });
            if wants_ids {
                choice["token_ids"] = json!(g.ids);
            }
            choice
        })
        .collect();
    let mut body = json!({
        "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_ids.len(), "completion_tokens": completion_tokens, "total_tokens": prompt_ids.len() + completion_tokens},
    });
    if wants_ids {
        body["prompt_token_ids"] = json!(prompt_ids);
    }
    axum::Json(body).into_response()
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of one stream"
)]
fn stream(
    shared: Arc<Shared>,
    id: String,
    model: String,
    prompt_ids: Vec<u32>,
    choices: Vec<Generated>,
    wants_ids: bool,
    wants_logprobs: bool,
    request: &Value,
) -> Response {
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let token_delay = shared.config().token_delay;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let chunk = |choice: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [choice]});
        let mut first = chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        );
        if wants_ids {
            first["prompt_token_ids"] = json!(prompt_ids);
        }
        if tx.send(Ok(sse(&first))).await.is_err() {
            return;
        }
        let mut completion_tokens = 0;
        for (index, g) in choices.iter().enumerate() {
            completion_tokens += g.ids.len();
            // Pieces: (delta, ids). Text streams one token at a time with incremental detokenizing;
            // a tool call streams its header, then its arguments.
            let mut pieces: Vec<(Value, Vec<u32>)> = Vec::new();
            let body_ids: Vec<u32> = if g.finish == "length" {
                g.ids.clone()
            } else {
                g.ids[..g.ids.len().saturating_sub(1)].to_vec()
            };
            if let Some((name, args)) = &g.tool_call {
                let half = body_ids.len() / 2;
                let mut header = tool_call_json(index, name, "");
                header["index"] = json!(0);
                pieces.push((json!({"tool_calls": [header]}), body_ids[..half].to_vec()));
                pieces.push((
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                    body_ids[half..].to_vec(),
                ));
            } else {
                let (texts, pending) = crate::detokenized(&shared, &body_ids);
                pieces.extend(
                    texts
                        .into_iter()
                        .map(|(t, ids)| (json!({"content": t}), ids)),
                );
                if !pending.is_empty() {
                    pieces.push((json!({"content": ""}), pending));
                }
            }
            let eos: Vec<u32> = if g.finish == "length" {
                vec![]
            } else {
                g.ids.last().copied().into_iter().collect()
            };
            pieces.push((json!({}), eos));
            let last = pieces.len() - 1;
            for (k, (delta, ids)) in pieces.into_iter().enumerate() {
                if !token_delay.is_zero() {
                    tokio::time::sleep(token_delay).await;
                }
                let mut choice = json!({
                    "index": index,
                    "delta": delta,
                    "logprobs": if wants_logprobs { token_logprobs(&shared, &ids) } else { Value::Null },
                    "finish_reason": if k == last { json!(g.finish) } else { Value::Null },
                });
                if wants_ids {
                    choice["token_ids"] = json!(ids);
                }
                if tx.send(Ok(sse(&chunk(choice)))).await.is_err() {
                    return;
                }
            }
        }
        let usage = include_usage.then(|| json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt_ids.len(), "completion_tokens": completion_tokens, "total_tokens": prompt_ids.len() + completion_tokens}}));
        crate::end_stream(&tx, usage).await;
    });
    crate::event_stream(rx)
}
