//! `POST /v1/messages`: Anthropic Messages (Claude Code, Anthropic's SDKs), translated to the
//! engine's chat completions and back ([`crate::protocols::anthropic`]), captured like any chat call.
//! Errors come back in Anthropic's shape.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value};

use super::chat::{Native, Reply, serve};
use super::{Body, parse_json};
use crate::AppState;
use crate::error::ApiError;
use crate::protocols::anthropic::{MessagesDialect, error_response, recordable, to_chat};
use crate::settings::EngineProtocol;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/messages", post(messages))
}

async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Response {
    let answer = async {
        let Body(body) = body?;
        let request: Map<String, Value> = parse_json(&body)?;
        let native = state
            .config
            .engine_speaks
            .contains(&EngineProtocol::Messages);
        let chat = if native {
            to_chat(&recordable(&request))
        } else {
            to_chat(&request)
        }
        .map_err(|(param, message)| ApiError::bad_param(&param, message))?;
        let reply = if native {
            Reply::Native(Box::new(Native::messages(request)))
        } else {
            Reply::Translated(Box::new(MessagesDialect::new(&request)))
        };
        serve(state, headers, None, chat, reply).await
    };
    answer.await.unwrap_or_else(error_response)
}
