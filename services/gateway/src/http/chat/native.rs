//! A call in a protocol the engine speaks itself (`--engine-speaks`): the client's request goes to
//! the engine as it is, the engine's answer (or stream) comes back as it is, and the step is read
//! from it — recorded, as every step, before the response completes (a stream's closing event
//! waits for the ack).

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::add_call_headers;
use super::serve::{Native, Reply, is_event_stream, policy_version_of, read_answer};
use super::stream::{InFlight, stream_response};
use crate::AppState;
use crate::chat::{Answer, Wants};
use crate::error::ApiError;
use crate::http::steps::{CallContext, record_call};
use crate::protocols::anthropic::as_chat_completion;

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
        .post("/messages", |_| body.clone(), timeout, &headers);
    let (response, upstream) = tokio::time::timeout(state.config.upstream_timeout, send)
        .await
        .map_err(|_| ApiError::GatewayTimeout(state.config.upstream_timeout))??;
    ctx.upstream = upstream.base.clone();
    ctx.policy_version = policy_version_of(&state, &response);
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(ApiError::Upstream { status, body });
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
    let (bytes, message) = read_answer(&state, response, ctx.started).await?;
    let answer = Answer::from_response(&as_chat_completion(&message));
    record_call(&state, &mut ctx, &answer).await;
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        bytes,
    )
        .into_response();
    add_call_headers(response.headers_mut(), &ctx);
    Ok(response)
}
