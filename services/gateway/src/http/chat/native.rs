//! A call in a protocol the engine speaks itself (`--engine-speaks`): the client's request goes to
//! the engine as it is, the engine's answer (or stream) comes back as it is, and the step is read
//! from it — recorded, as every step, before the response completes (a stream's closing event
//! waits for the ack).

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::add_call_headers;
use super::serve::{Reply, is_event_stream, policy_version_of, read_answer};
use super::stream::{InFlight, stream_response};
use crate::AppState;
use crate::chat::{Answer, Wants};
use crate::error::ApiError;
use crate::http::steps::{CallContext, record_call};
use crate::protocols::{anthropic, responses};

/// A call forwarded in the engine's own protocol.
pub(crate) struct Native {
    /// The client's request, sent to the engine with only the model name policy applied (and,
    /// for Responses, a `previous_response_id` the gateway knows sent as the whole input).
    pub(crate) request: Map<String, Value>,
    pub(crate) protocol: Protocol,
    /// The stream's closing event, sent once the step is recorded.
    pub(crate) closing: Option<Bytes>,
}

/// The protocol a native call speaks, with its reading of the engine's stream.
pub(crate) enum Protocol {
    Messages(anthropic::NativeMessages),
    Responses(responses::NativeResponses),
}

impl Native {
    pub(crate) fn messages(request: Map<String, Value>) -> Self {
        Self {
            request,
            protocol: Protocol::Messages(Default::default()),
            closing: None,
        }
    }

    pub(crate) fn responses(
        request: Map<String, Value>,
        reader: responses::NativeResponses,
    ) -> Self {
        Self {
            request,
            protocol: Protocol::Responses(reader),
            closing: None,
        }
    }

    /// The engine's endpoint, under its base URL.
    fn path(&self) -> &'static str {
        match self.protocol {
            Protocol::Messages(_) => "/messages",
            Protocol::Responses(_) => "/responses",
        }
    }

    /// The chat chunk one event of the engine's stream amounts to, if any.
    pub(crate) fn chunk(&mut self, event: &Value) -> Option<Value> {
        match &mut self.protocol {
            Protocol::Messages(m) => m.chunk(event),
            Protocol::Responses(r) => r.chunk(event),
        }
    }

    /// Whether `event` ends the engine's stream.
    pub(crate) fn is_closing(&self, event: &Value) -> bool {
        match self.protocol {
            Protocol::Messages(_) => anthropic::is_closing(event),
            Protocol::Responses(_) => responses::native::is_closing(event),
        }
    }

    /// The event that tells the client the stream broke.
    pub(crate) fn stream_error(&self, message: &str) -> Bytes {
        match self.protocol {
            Protocol::Messages(_) => anthropic::stream_error(message),
            Protocol::Responses(_) => responses::native::stream_error(message),
        }
    }

    /// What the client must see changed in an event or answer of the engine's; whether anything was.
    pub(crate) fn restore(&self, value: &mut Value) -> bool {
        match &self.protocol {
            Protocol::Messages(_) => false,
            Protocol::Responses(r) => r.restore_previous(value),
        }
    }

    /// What the call leaves behind once answered (a Responses answer kept for
    /// `previous_response_id`): the whole answer, or for a stream the one it closed with.
    pub(crate) fn finished(&self, ctx: &CallContext, whole: Option<&Value>) {
        if let Protocol::Responses(r) = &self.protocol {
            r.keep(&ctx.caller.tenant, whole);
        }
    }

    fn as_chat_completion(&self, whole: &Value) -> Value {
        match self.protocol {
            Protocol::Messages(_) => anthropic::as_chat_completion(whole),
            Protocol::Responses(_) => responses::native::as_chat_completion(whole),
        }
    }
}

/// Forwards `native.request` to the engine's own endpoint and answers with the engine's answer.
pub(super) async fn forward(
    state: AppState,
    headers: HeaderMap,
    mut ctx: CallContext,
    native: Native,
    in_flight: InFlight,
) -> Result<Response, ApiError> {
    let body =
        serde_json::to_vec(&native.request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = (!ctx.stream).then_some(state.config.upstream_timeout);
    ctx.started = Instant::now();
    let send = state
        .upstreams
        .post(native.path(), |_| body.clone(), timeout, &headers);
    let (response, upstream) = tokio::time::timeout(state.config.upstream_timeout, send)
        .await
        .map_err(|_| ApiError::GatewayTimeout(state.config.upstream_timeout))??;
    ctx.upstream = upstream.base.clone();
    ctx.policy_version = policy_version_of(&state, &response);
    if !response.status().is_success() {
        return Err(crate::upstream::upstream_error(response).await);
    }
    if is_event_stream(&response) {
        return Ok(stream_response(
            state,
            ctx,
            response,
            (
                Wants {
                    logprobs: false,
                    token_ids: false,
                },
                Reply::Native(Box::new(native)),
            ),
            None,
            in_flight,
        ));
    }
    let (mut bytes, mut message) = read_answer(&state, response, ctx.started).await?;
    let answer = Answer::from_response(&native.as_chat_completion(&message));
    record_call(&state, &mut ctx, &answer).await;
    native.finished(&ctx, Some(&message));
    if native.restore(&mut message) {
        bytes = Bytes::from(message.to_string());
    }
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        bytes,
    )
        .into_response();
    add_call_headers(response.headers_mut(), &ctx);
    Ok(response)
}
