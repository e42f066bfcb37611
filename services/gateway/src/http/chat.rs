//! `POST /v1/chat/completions` and Claw-R1's path-scoped `/{trajectory_uid}/{prompt_uid}/v1/chat/completions`.
//!
//! The request goes to the engine with every field untouched, plus `return_token_ids` and `logprobs`
//! when the engine may support them; the answer goes back to the client with those extensions removed
//! unless it asked for them. Streams are forwarded chunk by chunk as they arrive; the step is acked
//! before the final `[DONE]`.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clawline_schemas::{SCHEMA_VERSION, TrajectoryRegistered, derived_id, new_event_id, now_ms};
use serde_json::{Map, Value};

use super::steps::{CallContext, record_call};
use super::{Body, caller, parse_json};
use crate::AppState;
use crate::auth::Caller;
use crate::chat::{
    Answer, content_text, request_exact_tokens, strip_unrequested, validate_messages,
};
use crate::error::ApiError;
use crate::protocols::Dialect;
use crate::sessions::{Denied, Origin, Trajectory, Untaken};

mod stream;
use stream::{InFlight, stream_response};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_auto))
        .route(
            "/{trajectory_uid}/{prompt_uid}/v1/chat/completions",
            post(chat_path),
        )
}

async fn chat_auto(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    chat(state, headers, None, body).await
}

async fn chat_path(
    State(state): State<AppState>,
    Path((trajectory_uid, prompt_uid)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    chat(state, headers, Some((trajectory_uid, prompt_uid)), body).await
}

pub const TRAJECTORY_HEADER: &str = "x-clawline-trajectory";
pub const PROMPT_HEADER: &str = "x-clawline-prompt";
pub const CHANNEL_HEADER: &str = "x-clawline-channel";
pub const STEP_ID_HEADER: &str = "x-clawline-step-id";
pub const POLICY_VERSION_HEADER: &str = "x-clawline-policy-version";

/// A fresh trajectory uid: 32 hex digits, time-ordered, like Claw-R1's uuid4 hex.
pub fn new_trajectory_uid() -> String {
    format!("{:032x}", ulid::Ulid::new().0)
}

/// An id a client chose (header or path): printable, no whitespace, at most 128 bytes.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn channel_from(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    match header(headers, CHANNEL_HEADER) {
        None => Ok(state.config.default_channel.clone()),
        Some(c) if clawline_nats::subjects::is_valid_token(c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_param(
            CHANNEL_HEADER,
            format!("channel {c:?} must be 1-64 of [A-Za-z0-9_-]"),
        )),
    }
}

pub fn registration(state: &AppState, t: &Trajectory) -> TrajectoryRegistered {
    TrajectoryRegistered {
        event_id: new_event_id("trg"),
        event_time: now_ms(),
        producer: state.producer.clone(),
        schema_version: SCHEMA_VERSION,
        tenant: t.tenant.clone(),
        channel: t.channel.clone(),
        trajectory_uid: t.uid.clone(),
        prompt_uid: t.prompt_uid.clone(),
        metadata: t.metadata.clone(),
        policy_version: state.policy.get(),
    }
}

/// A prompt group for conversations without one: the same opening (system + first user message)
/// from the same tenant is the same prompt, so GRPO can group answers to it.
fn derived_prompt_uid(tenant: &str, messages: &[Value]) -> String {
    let opening: Vec<String> = messages
        .iter()
        .take_while(|m| m.get("role").and_then(Value::as_str) != Some("assistant"))
        .take(2)
        .map(|m| content_text(m.get("content")))
        .collect();
    let mut parts = vec![tenant];
    parts.extend(opening.iter().map(String::as_str));
    derived_id("prm", &parts)
}

/// The next step index of a trajectory whose uid the client chose, from a leased block
/// ([`crate::leases`]).
async fn leased_step(state: &AppState, tenant: &str, uid: &str) -> Result<Trajectory, Denied> {
    loop {
        match state.sessions.take_leased_step(uid, tenant) {
            Ok(t) => return Ok(t),
            Err(Untaken::Denied(d)) => return Err(d),
            Err(Untaken::NeedsLease(from)) => {
                let block = match state.leases.lease(tenant, uid, from).await {
                    Ok(block) => block,
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            trajectory = uid,
                            "no step-index lease; continuing from this gateway's own count"
                        );
                        state.leases.fallbacks.inc();
                        from..from.saturating_add(crate::leases::BLOCK)
                    }
                };
                state.sessions.grant(uid, tenant, block);
            }
        }
    }
}

/// Which trajectory this call belongs to, with this call's step index taken.
async fn resolve(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    path: Option<(String, String)>,
    messages: &[Value],
) -> Result<(Trajectory, String, Option<TrajectoryRegistered>), ApiError> {
    let tenant = &caller.tenant;
    let unknown = |uid: &str| {
        ApiError::NotFound(format!(
            "unknown trajectory {uid:?}: call /init_trajectory first"
        ))
    };
    if let Some((uid, prompt_uid)) = path {
        let t = state
            .sessions
            .next_step(&uid, tenant)
            .map_err(|_| unknown(&uid))?;
        return Ok((t, prompt_uid, None));
    }
    if let Some(uid) = header(headers, TRAJECTORY_HEADER) {
        if !valid_client_id(uid) {
            return Err(ApiError::bad_param(
                TRAJECTORY_HEADER,
                "trajectory id must be 1-128 printable characters",
            ));
        }
        let prompt = header(headers, PROMPT_HEADER).map(str::to_string);
        if prompt.as_deref().is_some_and(|p| !valid_client_id(p)) {
            return Err(ApiError::bad_param(
                PROMPT_HEADER,
                "prompt id must be 1-128 printable characters",
            ));
        }
        let prompt = prompt.unwrap_or_else(|| derived_prompt_uid(tenant, messages));
        let channel = channel_from(state, headers)?;
        let (created, is_new) = state
            .sessions
            .create(uid, tenant, &channel, &prompt, None, Origin::Client)
            .map_err(|_| unknown(uid))?;
        let t = leased_step(state, tenant, uid)
            .await
            .map_err(|_| unknown(uid))?;
        let reg = is_new.then(|| registration(state, &created));
        let prompt_uid = t.prompt_uid.clone();
        return Ok((t, prompt_uid, reg));
    }
    if let Some(existing) = state.sessions.continuing(tenant, messages)
        && let Ok(t) = state.sessions.next_step(&existing.uid, tenant)
    {
        let prompt_uid = t.prompt_uid.clone();
        return Ok((t, prompt_uid, None));
    }
    let uid = new_trajectory_uid();
    let channel = channel_from(state, headers)?;
    let prompt = derived_prompt_uid(tenant, messages);
    let (created, _) = state
        .sessions
        .create(&uid, tenant, &channel, &prompt, None, Origin::Conversation)
        .map_err(|_| ApiError::Internal("fresh trajectory uid collided".into()))?;
    let t = state
        .sessions
        .next_step(&uid, tenant)
        .map_err(|_| unknown(&uid))?;
    Ok((t, prompt, Some(registration(state, &created))))
}

/// The request fields other than the conversation itself, for provenance.
fn params_of(request: &Map<String, Value>) -> Option<String> {
    let params: Map<String, Value> = request
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "messages" | "tools"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!params.is_empty()).then(|| Value::Object(params).to_string())
}

async fn chat(
    state: AppState,
    headers: HeaderMap,
    path: Option<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse_json(&body)?;
    serve(state, headers, path, request, Reply::Chat).await
}

/// How the engine's chat-completions answer reaches the client.
pub(crate) enum Reply {
    /// As the engine sent it, minus the extensions the client did not ask for.
    Chat,
    /// In another protocol, translated by the dialect.
    Translated(Box<dyn Dialect>),
    /// A text completion (`/v1/completions`), forwarded to the engine's own and back like `Chat`.
    Completions,
}

/// Serves one chat-completions request (the client's own, or one translated from another
/// protocol): the trajectory it belongs to, the engine's answer, the step recorded before the
/// response completes.
pub(crate) async fn serve(
    state: AppState,
    headers: HeaderMap,
    path: Option<(String, String)>,
    mut request: Map<String, Value>,
    reply: Reply,
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
        request.insert("model".into(), Value::String(model));
    }
    if matches!(reply, Reply::Translated(_)) {
        cap_max_tokens(&state, &mut request, &messages, tools.as_ref()).await;
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
    let engine_path = if completions {
        "/completions"
    } else {
        "/chat/completions"
    };
    let extended = serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let body_for = |u: &crate::upstream::Upstream| {
        if u.may_support_token_ids() {
            extended.clone()
        } else {
            plain.clone()
        }
    };

    let started = Instant::now();
    // Streams get no total timeout (they may run long); the wait between chunks is bounded instead.
    let timeout = (!stream).then_some(state.config.upstream_timeout);
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
    let policy_version = response
        .headers()
        .get(POLICY_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| state.policy.get());
    if !status.is_success() {
        let error_body = response.bytes().await.unwrap_or_default();
        return Err(ApiError::Upstream {
            status,
            body: error_body,
        });
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
        prompt_text,
        request_id,
        stream,
        started,
        ttft: None,
        upstream: upstream.base.clone(),
        policy_version,
    };
    let is_event_stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if stream && is_event_stream {
        return Ok(stream_response(
            state, ctx, response, wants, reply, in_flight,
        ));
    }

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
    let mut answer_body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadGateway(format!("the upstream answered invalid JSON: {e}")))?;
    let answer = Answer::from_response(&answer_body);
    record_call(&state, &mut ctx, &answer).await;
    let (out, content_type) = match reply {
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
    };
    let mut response = ([("content-type", content_type)], out).into_response();
    add_call_headers(response.headers_mut(), &ctx);
    Ok(response)
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
    messages: &[Value],
    tools: Option<&Value>,
) {
    let Some(asked) = request.get("max_tokens").and_then(Value::as_u64) else {
        return;
    };
    let Some(context) = state.upstreams.served().await.and_then(|s| s.max_model_len) else {
        return;
    };
    let prompt = state
        .tokenizer
        .as_ref()
        .and_then(|t| t.encode_chat(messages, tools).ok())
        .map(|ids| ids.len() as u64)
        .unwrap_or_else(|| {
            let bytes = serde_json::to_vec(messages).map_or(0, |b| b.len())
                + tools.map_or(0, |t| t.to_string().len());
            bytes as u64 / 4
        });
    let room = context.saturating_sub(prompt);
    if room > 0 && asked > room {
        request.insert("max_tokens".into(), Value::from(room));
    }
}

pub(crate) fn add_call_headers(headers: &mut HeaderMap, ctx: &CallContext) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(TRAJECTORY_HEADER, &ctx.trajectory.uid);
    set(STEP_ID_HEADER, &ctx.step_id(0));
    set(
        "x-clawline-step-index",
        &ctx.trajectory.next_step.to_string(),
    );
    set("x-request-id", &ctx.request_id);
    if let Some(v) = ctx.policy_version {
        set(POLICY_VERSION_HEADER, &v.to_string());
    }
}
