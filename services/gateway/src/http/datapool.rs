//! `GET /v1/datapool/stats` (admin): Claw-R1's `get_statistics`, answered by the batcher over NATS
//! request/reply (`clawline.datapool.stats`): per channel steps, trajectories, ready groups,
//! consumed, dropped by reason, and lag to the log head.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clawline_nats::subjects;
use serde_json::Value;

use super::caller;
use crate::AppState;
use crate::auth::RequireAdmin as _;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/datapool/stats", get(stats))
}

async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers)?.require_admin()?;
    let reply = ask(
        state.nats(),
        subjects::DATAPOOL_STATS,
        Vec::new(),
        Duration::from_secs(5),
        ("batcher", "clawline-batcher"),
    )
    .await?;
    serde_json::from_slice(&reply)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("the batcher answered non-JSON: {e}")))
}

/// A NATS request to another clawline service: 503 when none runs, 504 when it does not answer
/// within `timeout`.
pub async fn ask(
    client: &async_nats::Client,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
    (service, binary): (&str, &str),
) -> Result<bytes::Bytes, ApiError> {
    let reply = tokio::time::timeout(timeout, client.request(subject, payload.into()))
        .await
        .map_err(|_| {
            ApiError::ServiceTimeout(format!("the {service} did not answer within {timeout:?}"))
        })?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                ApiError::Unavailable(format!("no {service} is running (start {binary})"))
            }
            async_nats::RequestErrorKind::TimedOut => {
                ApiError::ServiceTimeout(format!("the {service} did not answer in time"))
            }
            _ => ApiError::Unavailable(format!("{service} unreachable: {e}")),
        })?;
    Ok(reply.payload)
}
