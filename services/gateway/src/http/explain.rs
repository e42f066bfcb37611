//! `GET /v1/explain/{step_id}` and `GET /v1/diagnosis`: "why isn't it learning?" — a step's way
//! into a served policy, and what the learning loop is stuck on. The gateway has no SQL engine:
//! it asks the SQL service (`clawline-history serve`) over NATS (`clawline.explain`), naming the
//! caller's tenant (none for an admin key), and passes its status and body through. A tenant's key
//! explains only its own steps: another tenant's step is a 404, as if it did not exist.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clawline_nats::subjects;
use serde_json::{Value, json};

use super::{ask, caller};
use crate::AppState;
use crate::error::ApiError;

/// Longer than the SQL service's own query timeout (30 s by default), so its answer (a 408 when
/// it gave up) arrives rather than ours.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(35);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/explain/{step_id}", get(step))
        .route("/v1/diagnosis", get(diagnosis))
}

async fn step(
    State(state): State<AppState>,
    Path(step_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(&state, &headers, Some(step_id)).await
}

async fn diagnosis(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(&state, &headers, None).await
}

async fn forward(
    state: &AppState,
    headers: &HeaderMap,
    step_id: Option<String>,
) -> Result<Response, ApiError> {
    let caller = caller(state, headers)?;
    let tenant = (!caller.admin).then_some(caller.tenant);
    let request = json!({"step_id": step_id, "tenant": tenant});
    let reply = ask(
        state.nats(),
        subjects::EXPLAIN,
        request.to_string().into_bytes(),
        EXPLAIN_TIMEOUT,
        ("SQL service", "clawline-history serve, or clawline up"),
    )
    .await?;
    let reply: Value = serde_json::from_slice(&reply)
        .map_err(|e| ApiError::Internal(format!("the SQL service answered non-JSON: {e}")))?;
    let status = reply
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
        .ok_or_else(|| ApiError::Internal(format!("explain reply without a status: {reply}")))?;
    let body = reply.get("body").cloned().unwrap_or(Value::Null);
    Ok((status, Json(body)).into_response())
}
