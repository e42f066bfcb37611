//! `POST /v1/messages`: Anthropic Messages (Claude Code, Anthropic's SDKs), translated to the
//! engine's chat completions and back ([`crate::protocols::anthropic`]), captured like any chat call.
//! Errors come back in Anthropic's shape.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clawline_runtime::tokenize::TemplateArgs;
use serde_json::{Map, Value, json};

use super::chat::{Native, Reply, prompt_tokens, serve};
use super::{Body, caller, parse_json};
use crate::AppState;
use crate::error::ApiError;
use crate::protocols::anthropic::{AnthropicError, MessagesDialect, recordable, to_chat};
use crate::settings::EngineProtocol;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// `POST /v1/messages/count_tokens` (Claude Code sizes its context with it): an engine that speaks
/// Messages answers itself; otherwise the prompt the engine would get is rendered and tokenized
/// with `--tokenizer` (exact), or estimated at four bytes a token without one ([`prompt_tokens`]).
async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Result<Response, AnthropicError> {
    let Body(body) = body?;
    caller(&state, &headers)?;
    let mut request: Map<String, Value> = parse_json(&body)?;
    if state.config.engine_speaks(EngineProtocol::Messages) {
        let bytes = state
            .upstreams
            .call(
                "/messages/count_tokens",
                &body,
                state.config.upstream_timeout,
                &headers,
            )
            .await?;
        return Ok(([("content-type", "application/json")], bytes).into_response());
    }
    // Counting takes no `max_tokens`; the translation wants one.
    request.entry("max_tokens").or_insert(Value::from(1));
    let chat = to_chat(&recordable(&request)).map_err(|(p, m)| ApiError::bad_param(&p, m))?;
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tokens = prompt_tokens(
        &state,
        &messages,
        chat.get("tools"),
        &TemplateArgs::default(),
    );
    Ok(Json(json!({"input_tokens": tokens})).into_response())
}

async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Result<Response, AnthropicError> {
    let Body(body) = body?;
    let request: Map<String, Value> = parse_json(&body)?;
    let native = state.config.engine_speaks(EngineProtocol::Messages);
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
    Ok(serve(state, headers, None, chat, reply).await?)
}
