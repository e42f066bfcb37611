//! Serving one call: trajectory, engine request (chat completions, text completions, or in token-in
//! mode the engine's completions with the rendered prompt's ids), the answer or stream back, and the
//! step recorded before the response completes.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clawline_runtime::tokenize::TemplateArgs;
use clawline_schemas::new_event_id;
use serde_json::{Map, Value};

use super::add_call_headers;
use super::native::Native;
use super::stream::{InFlight, stream_response};
use crate::AppState;
use crate::chat::{Answer, request_exact_tokens, strip_unrequested, validate_messages};
use crate::error::ApiError;
use crate::http::caller;
use crate::http::steps::{CallContext, record_call};
use crate::identity::{POLICY_VERSION_HEADER, header, resolve};
use crate::protocols::Dialect;
use crate::upstream::upstream_error;

/// The request fields other than the conversation itself, for provenance.
fn params_of(request: &Map<String, Value>) -> Option<String> {
    let params: Map<String, Value> = request
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "messages" | "tools"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!params.is_empty()).then(|| Value::Object(params).to_string())
}

/// How the engine's chat-completions answer reaches the client.
pub(crate) enum Reply {
    /// As the engine sent it, minus the extensions the client did not ask for.
    Chat,
    /// In another protocol, translated by the dialect.
    Translated(Box<dyn Dialect>),
    /// A text completion (`/v1/completions`), forwarded to the engine's own and back like `Chat`.
    Completions,
    /// Another protocol the engine speaks itself: the client's request forwarded as it is, the
    /// engine's answer back as it is, read as a chat completion for the step.
    Native(Box<Native>),
}

/// Serves one chat-completions request (the client's own, or one translated from another
/// protocol): the trajectory it belongs to, the engine's answer, the step recorded before the
/// response completes.
pub(crate) async fn serve(
    state: AppState,
    headers: HeaderMap,
    path: Option<(String, String)>,
    mut request: Map<String, Value>,
    mut reply: Reply,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let in_flight = InFlight::new(&state.metrics.in_flight);
    let completions = matches!(reply, Reply::Completions);
    let (messages, prompt_text) = if completions {
        let text = prompt_of(&state, &request)?;
        // A completion's prompt groups and continues like a conversation's single user turn.
        (
            vec![serde_json::json!({"role": "user", "content": text})],
            Some(text),
        )
    } else {
        let messages = validate_messages(&request)
            .map_err(|(param, message)| ApiError::bad_param(&param, message))?;
        (messages.clone(), None)
    };
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tools = request.get("tools").cloned().filter(|t| !t.is_null());
    // The template variables the engine renders this request with (vLLM's request fields).
    let template = TemplateArgs::of_request(&request)
        .map_err(|e| ApiError::bad_param(e.field, e.to_string()))?;
    let background =
        crate::background::is_background(&state.background_markers, &headers, &messages)?;
    let (trajectory, prompt_uid, new_registration) =
        resolve(&state, &caller, &headers, path, &messages).await?;
    state
        .config
        .apply_default_params(&trajectory.channel, &mut request);
    let params_json = params_of(&request);
    let request_id = header(&headers, "x-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| new_event_id("req"));
    // A new trajectory's registration is recorded while the engine answers.
    let registration = new_registration.map(|event| {
        let state = state.clone();
        tokio::spawn(async move {
            let subject = clawline_nats::subjects::TRAJECTORY_REGISTERED.to_string();
            if let Err(err) = state.capture.record_event(subject, &event).await {
                tracing::error!(trajectory_uid = %event.trajectory_uid, error = %err, "recording registration failed");
            }
        })
    });

    if let Some(model) = state
        .engine_model(request.get("model").and_then(Value::as_str))
        .await
    {
        if let Reply::Native(native) = &mut reply {
            native
                .request
                .insert("model".into(), Value::String(model.clone()));
        }
        request.insert("model".into(), Value::String(model));
    }
    if let Reply::Native(native) = reply {
        let ctx = CallContext {
            caller,
            trajectory,
            prompt_uid,
            registration,
            messages,
            tools,
            params_json,
            template: TemplateArgs::default(),
            prompt_text: None,
            request_id,
            stream,
            started: Instant::now(),
            ttft: None,
            upstream: String::new(),
            policy_version: None,
            background,
        };
        return super::native::forward(state, headers, ctx, *native, in_flight).await;
    }
    // Token-in mode: the prompt rendered and tokenized here; the engine completes its ids.
    let token_in = match (state.config.token_in && !completions, &state.tokenizer) {
        (true, Some(tokenizer)) => Some(
            tokenizer
                .encode_chat_with(&messages, tools.as_ref(), &template)
                .map_err(|e| ApiError::bad_request(format!("rendering the chat template: {e}")))?,
        ),
        _ => None,
    };
    if matches!(reply, Reply::Translated(_)) {
        // The prompt's length: token-in's ids where rendered already, else rendered for it.
        let prompt = || {
            token_in.as_ref().map_or_else(
                || prompt_tokens(&state, &messages, tools.as_ref(), &template),
                |ids| ids.len() as u64,
            )
        };
        cap_max_tokens(&state, &mut request, prompt).await;
    }
    if stream && matches!(reply, Reply::Translated(_)) {
        // Translated streams report usage at their end, as the engine does when asked.
        request.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
    }
    let plain = serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Completions take a number of top logprobs (0: the sampled token's own), not a flag.
    let completion_logprobs = request.get("logprobs").filter(|v| v.is_u64()).cloned();
    let mut wants = request_exact_tokens(&mut request, true);
    if completions {
        wants.logprobs = completion_logprobs.is_some();
        request.insert(
            "logprobs".into(),
            completion_logprobs.unwrap_or(Value::from(0)),
        );
    }
    if let Some(ids) = &token_in {
        let room = state
            .upstreams
            .served()
            .await
            .and_then(|s| s.max_model_len)
            .map(|len| len.saturating_sub(ids.len() as u64).max(1));
        let generate = state.config.generate_max_tokens;
        let default_max = room.map_or(generate, |room| room.min(generate));
        request = crate::token_in::completion_request(&request, ids, default_max);
    }
    let engine_path = if completions || token_in.is_some() {
        "/completions"
    } else {
        "/chat/completions"
    };
    let extended = serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let body_for = |u: &crate::upstream::Upstream| {
        if u.may_support_token_ids() || token_in.is_some() {
            extended.clone()
        } else {
            plain.clone()
        }
    };

    let started = Instant::now();
    let engine_streams = stream;
    // Streams get no total timeout (they may run long); the wait between chunks is bounded instead.
    let timeout = (!engine_streams).then_some(state.config.upstream_timeout);
    let send = state
        .upstreams
        .post(engine_path, &body_for, timeout, &headers);
    let (mut response, mut upstream) = tokio::time::timeout(state.config.upstream_timeout, send)
        .await
        .map_err(|_| ApiError::GatewayTimeout(state.config.upstream_timeout))??;
    if response.status() == StatusCode::BAD_REQUEST && upstream.may_support_token_ids() {
        // OpenAI's API and older engines refuse vLLM's extension: remember, and ask again without it.
        let status = response.status();
        let error_body = response.bytes().await.unwrap_or_default();
        if !String::from_utf8_lossy(&error_body).contains("return_token_ids") {
            return Err(ApiError::Upstream {
                status,
                body: error_body,
            });
        }
        upstream.mark_no_token_ids();
        (response, upstream) = state
            .upstreams
            .post(engine_path, &body_for, timeout, &headers)
            .await?;
    }
    let status = response.status();
    let policy_version = policy_version_of(&state, &response);
    if !status.is_success() {
        return Err(upstream_error(response).await);
    }
    let mut ctx = CallContext {
        caller,
        trajectory,
        prompt_uid,
        registration,
        // A completion's step keeps its prompt as text, with no messages.
        messages: if completions { Vec::new() } else { messages },
        tools,
        params_json,
        template,
        prompt_text,
        request_id,
        stream,
        started,
        ttft: None,
        upstream: upstream.base.clone(),
        policy_version,
        background,
    };
    if engine_streams && is_event_stream(&response) {
        let parser = token_in
            .as_ref()
            .map(|ids| crate::token_in::StreamParser::new(ids.clone(), &ctx.request_id));
        return Ok(stream_response(
            state,
            ctx,
            response,
            (wants, reply),
            parser,
            in_flight,
        ));
    }

    let (bytes, mut answer_body) = read_answer(&state, response, started).await?;
    if let Some(ids) = &token_in {
        answer_body = crate::token_in::chat_completion(&answer_body, ids, &ctx.request_id);
    }
    let answer = Answer::from_response(&answer_body);
    record_call(&state, &mut ctx, &answer).await;
    let (out, content_type) = match reply {
        Reply::Chat if stream && token_in.is_some() => {
            let mut chunk = crate::chat::as_chunk(&answer_body);
            chunk["object"] = Value::from("chat.completion.chunk");
            strip_unrequested(&mut chunk, wants);
            (
                Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n")),
                "text/event-stream",
            )
        }
        Reply::Chat | Reply::Completions if strip_unrequested(&mut answer_body, wants) => (
            Bytes::from(
                serde_json::to_vec(&answer_body).map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            "application/json",
        ),
        Reply::Chat | Reply::Completions => (bytes, "application/json"),
        // A client that asked for a stream gets one, even from an engine that answered whole.
        Reply::Translated(mut dialect) if stream => {
            let mut events = dialect.chunk(&crate::chat::as_chunk(&answer_body), &ctx);
            events.extend(dialect.finish(&ctx));
            (Bytes::from(events.concat()), "text/event-stream")
        }
        Reply::Translated(mut dialect) => (
            Bytes::from(
                serde_json::to_vec(&dialect.whole(&answer_body, &ctx))
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            "application/json",
        ),
        // Forwarded before the chat path (`native::forward`).
        Reply::Native(_) => {
            return Err(ApiError::Internal("a native call on the chat path".into()));
        }
    };
    let mut response = ([("content-type", content_type)], out).into_response();
    add_call_headers(response.headers_mut(), &ctx);
    Ok(response)
}

/// The policy version that answered: the engine's header, else the version serving now.
pub(super) fn policy_version_of(state: &AppState, response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(POLICY_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| state.policy.get())
}

/// Whether the engine answers with an event stream.
pub(super) fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The prompt's length in tokens as the engine gets it: rendered and tokenized with the model's
/// tokenizer when the gateway has it, else estimated at one token per four bytes.
pub(crate) fn prompt_tokens(
    state: &AppState,
    messages: &[Value],
    tools: Option<&Value>,
    template: &TemplateArgs,
) -> u64 {
    state
        .tokenizer
        .as_ref()
        .and_then(|t| t.encode_chat_with(messages, tools, template).ok())
        .map(|ids| ids.len() as u64)
        .unwrap_or_else(|| {
            let bytes = serde_json::to_vec(messages).map_or(0, |b| b.len())
                + tools.map_or(0, |t| t.to_string().len());
            bytes as u64 / 4
        })
}

/// A whole (non-streamed) answer of the engine: its bytes and their JSON, timed.
pub(super) async fn read_answer(
    state: &AppState,
    response: reqwest::Response,
    started: Instant,
) -> Result<(Bytes, Value), ApiError> {
    let bytes = response.bytes().await.map_err(|e| {
        if e.is_timeout() {
            ApiError::GatewayTimeout(state.config.upstream_timeout)
        } else {
            ApiError::BadGateway(format!("reading the upstream answer: {e}"))
        }
    })?;
    state
        .metrics
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let body = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadGateway(format!("the upstream answered invalid JSON: {e}")))?;
    Ok((bytes, body))
}

/// A completion request's prompt as text: a string, a one-string list, or token ids (decoded with
/// the model's tokenizer when the gateway has it). Several prompts in one request would be several
/// steps with one set of headers; they are refused.
fn prompt_of(state: &AppState, request: &Map<String, Value>) -> Result<String, ApiError> {
    let bad = |m: &str| ApiError::bad_param("prompt", m);
    let ids = |list: &[Value]| -> Option<Vec<u32>> {
        list.iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    match request.get("prompt") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            Ok(list[0].as_str().unwrap_or_default().to_string())
        }
        Some(Value::Array(list)) if !list.is_empty() && list.iter().all(Value::is_u64) => {
            let ids = ids(list).ok_or_else(|| bad("token ids must be 32-bit"))?;
            Ok(state
                .tokenizer
                .as_ref()
                .and_then(|t| t.decode(&ids).ok())
                .unwrap_or_default())
        }
        Some(Value::Array(_)) => Err(bad(
            "send one prompt per request (a string or a list of token ids): each answer is its own step",
        )),
        _ => Err(bad("`prompt` is required: a string or a list of token ids")),
    }
}

/// Caps `max_tokens` at what the engine's context leaves after the prompt. Agents of other
/// protocols size it for their own provider's models (Claude Code asks for 32000 or more), which a
/// vLLM engine with a shorter context refuses outright. The prompt is counted with the model's
/// tokenizer when the gateway has it, else estimated at one token per four bytes. A prompt that
/// leaves no room is sent as it is, for the engine to refuse with its own message: an answer
/// capped to nothing would only make the agent ask again.
async fn cap_max_tokens(
    state: &AppState,
    request: &mut Map<String, Value>,
    prompt: impl FnOnce() -> u64,
) {
    let Some(asked) = request.get("max_tokens").and_then(Value::as_u64) else {
        return;
    };
    let Some(context) = state.upstreams.served().await.and_then(|s| s.max_model_len) else {
        return;
    };
    let room = context.saturating_sub(prompt());
    if room > 0 && asked > room {
        request.insert("max_tokens".into(), Value::from(room));
    }
}
