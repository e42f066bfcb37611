//! HTTP routes. Each resource module exports `router()`; [`app`] assembles them with the body limit
//! and request metrics.

mod chat;
mod completions;
mod dashboard;
mod datapool;
mod explain;
mod messages;
mod ops;
mod responses;
mod reward;
pub(crate) mod steps;
mod trajectory;
mod whitebox;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use clawline_runtime::CancellationToken;
use serde::de::DeserializeOwned;

pub(crate) use datapool::ask;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

pub fn app(state: AppState) -> Router {
    // What any caller may send; each key's own cap is checked in `Body`.
    let limit = state
        .keys
        .largest_max_body()
        .unwrap_or(0)
        .max(state.config.max_body_bytes);
    Router::new()
        .merge(chat::router())
        .merge(messages::router())
        .merge(completions::router())
        .merge(responses::router())
        .merge(trajectory::router())
        .merge(whitebox::router())
        .merge(reward::router())
        .merge(datapool::router())
        .merge(explain::router())
        .merge(dashboard::router())
        .merge(ops::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("route".to_string(), route),
            ("status".to_string(), response.status().as_u16().to_string()),
        ])
        .inc();
    response
}

/// The raw request body, within the caller's size cap (its key's `max_body`, else
/// `--max-body-bytes`), a larger one refused with a 413 in our error shape.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state
            .keys
            .max_body(req.headers(), state.config.max_body_bytes);
        clawline_runtime::http::read_capped(req, limit)
            .await
            .map(Body)
    }
}

pub use clawline_runtime::http::parse_json;

/// Parses an optional JSON body: empty (or `null`) means `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// The caller behind the request's key (401 without a valid one), within its rate (429).
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    clawline_runtime::http::admit(&state.keys, &state.limiter, headers).inspect_err(|e| {
        if let ApiError::RateLimited(_) = e {
            state.metrics.rate_limited.inc();
        }
    })
}

/// Every 10 s: forget idle trajectories, and complete implicit sessions that went idle.
pub async fn sweep_sessions(state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        for ended in state.sessions.sweep() {
            trajectory::complete_idle(&state, &ended).await;
        }
        state.metrics.sessions.set(state.sessions.len() as i64);
    }
}
