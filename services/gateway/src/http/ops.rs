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
        .route("/docs", get(docs))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/{trajectory_uid}/{prompt_uid}/v1/models", get(models))
}

/// A page naming the endpoints: Claw-R1's launcher waits for `GET /docs` (FastAPI's page) to
/// answer before it starts its agents.
async fn docs() -> impl IntoResponse {
    axum::response::Html(concat!(
        "<!doctype html><title>clawline gateway</title><h1>clawline gateway ",
        env!("CARGO_PKG_VERSION"),
        "</h1><p>OpenAI-compatible: <code>POST /v1/chat/completions</code>, <code>GET /v1/models</code>. ",
        "Claw-R1: <code>POST /init_trajectory</code>, <code>/{trajectory_uid}/{prompt_uid}/v1/…</code>, ",
        "<code>/complete_trajectory/{uid}</code>, <code>/submit_steps</code>, <code>/generate</code>, ",
        "<code>/compute_reward</code>. Feedback: <code>POST /v1/feedback</code>. Operations: ",
        "<code>/healthz</code>, <code>/ready</code>, <code>/metrics</code>, <code>/dashboard</code>. ",
        "See the README.</p>"
    ))
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
    let body = crate::upstream::answer_body(response).await?;
    Ok(([("content-type", "application/json")], body).into_response())
}
