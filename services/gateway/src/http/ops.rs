//! Operations: health, readiness, metrics, and the model list of the engines.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/{trajectory_uid}/{prompt_uid}/v1/models", get(models))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// 200 once the topology exists and the tokenizer (if any) is loaded; 503 with the reason before.
async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"detail": "waiting for NATS JetStream topology"})),
        )
            .into_response()
    }
}

/// Prometheus metrics: an admin key when API keys are on (scrape with a bearer token).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    use crate::auth::RequireAdmin as _;
    super::caller(&state, &headers)?.require_admin()?;
    state.metrics.sessions.set(state.sessions.len() as i64);
    Ok((
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.registry.render(),
    )
        .into_response())
}

/// The engines' model list (from the first healthy one).
async fn models(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    super::caller(&state, &headers)?;
    let response = state.upstreams.get("/models").await?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(e.to_string()))?;
    if !status.is_success() {
        return Err(ApiError::Upstream { status, body });
    }
    Ok(([("content-type", "application/json")], body).into_response())
}
