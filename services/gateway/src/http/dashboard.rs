//! `GET /dashboard` (the page; static, holds no data) and `GET /v1/dashboard/data` (behind the
//! API keys: what the caller's key may see).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clawline_schemas::now_ms;

use super::caller;
use crate::AppState;
use crate::error::ApiError;

// The page as written in dashboard/src, after uPlot's own build (vendored, MIT) in one script
// and one stylesheet: no bundler between the source and what is served.
const PAGE: &str = include_str!("../../dashboard/src/index.html");
const SCRIPT: &str = concat!(
    include_str!("../../dashboard/vendor/uplot/uPlot.iife.min.js"),
    "\n",
    include_str!("../../dashboard/src/app.js"),
);
const STYLE: &str = concat!(
    include_str!("../../dashboard/vendor/uplot/uPlot.min.css"),
    "\n",
    include_str!("../../dashboard/src/style.css"),
);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/dashboard.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/dashboard.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/v1/dashboard/data", get(data))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            ("content-type", content_type),
            // Scripts only from here, nothing inline: injected markup could not run.
            (
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:",
            ),
            ("x-content-type-options", "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn data(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = caller(&state, &headers)?;
    let board = state
        .board
        .lock()
        .map_err(|_| ApiError::Internal("the dashboard board is poisoned".into()))?;
    Ok(Json(board.snapshot(&caller, now_ms())))
}
