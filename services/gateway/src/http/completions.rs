//! `POST /v1/completions`: text completions (older tools, and agents that render their own
//! template), forwarded to the engine's own `/v1/completions` and captured as steps whose prompt is
//! text (`prompt_text`), with the engine's exact ids.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value};

use super::chat::{Reply, serve};
use super::{Body, parse_json};
use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/completions", post(complete))
}

async fn complete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse_json(&body)?;
    serve(state, headers, None, request, Reply::Completions).await
}
