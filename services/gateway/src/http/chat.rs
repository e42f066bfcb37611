//! `POST /v1/chat/completions` and Claw-R1's path-scoped `/{trajectory_uid}/{prompt_uid}/v1/chat/completions`.
//!
//! The request goes to the engine with every field untouched, plus `return_token_ids` and `logprobs`
//! when the engine may support them; the answer goes back to the client with those extensions removed
//! unless it asked for them. Streams are forwarded chunk by chunk as they arrive; the step is acked
//! before the final `[DONE]`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value};

use super::steps::CallContext;
use super::{Body, parse_json};
use crate::AppState;
use crate::error::ApiError;
use crate::identity::{POLICY_VERSION_HEADER, STEP_ID_HEADER, TRAJECTORY_HEADER};

mod native;
mod serve;
mod stream;
pub(crate) use native::Native;
pub(crate) use serve::{Reply, prompt_tokens, serve};

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

async fn chat(
    state: AppState,
    headers: HeaderMap,
    path: Option<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse_json(&body)?;
    serve(state, headers, path, request, Reply::Chat).await
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
