//! `POST /v1/responses` (OpenAI Responses: Codex CLI, the Agents SDK), translated to the engine's
//! chat completions and back ([`crate::protocols::responses`]), captured like any chat call;
//! `GET` and `DELETE /v1/responses/{id}` for the answers the gateway keeps (`store`, default true).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::chat::{Reply, serve};
use super::{Body, caller, parse_json};
use crate::AppState;
use crate::error::ApiError;
use crate::protocols::responses::{ResponsesDialect, input_messages, to_chat};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/v1/responses/{id}", get(retrieve).delete(delete))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Response with id '{id}' not found."))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request: Map<String, Value> = parse_json(&body)?;
    let history = match request.get("previous_response_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(id)) => {
            let tenant = caller(&state, &headers)?.tenant;
            state
                .responses
                .conversation(&tenant, id)
                .await
                .ok_or_else(|| {
                    ApiError::bad_param(
                        "previous_response_id",
                        format!("Previous response with id '{id}' not found."),
                    )
                })?
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "previous_response_id",
                "`previous_response_id` must be a string",
            ));
        }
    };
    let bad = |(param, message): (String, String)| ApiError::bad_param(&param, message);
    let input = input_messages(&request).map_err(bad)?;
    let chat = to_chat(&request, history, input.clone()).map_err(bad)?;
    let store =
        (request.get("store") != Some(&Value::Bool(false))).then(|| state.responses.clone());
    let dialect = ResponsesDialect::new(&request, input, store);
    serve(
        state,
        headers,
        None,
        chat,
        Reply::Translated(Box::new(dialect)),
    )
    .await
}

async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller(&state, &headers)?.tenant;
    let stored = state
        .responses
        .get(&tenant, &id)
        .await
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(stored.response))
}

async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller(&state, &headers)?.tenant;
    if !state.responses.remove(&tenant, &id).await {
        return Err(not_found(&id));
    }
    Ok(Json(
        json!({"id": id, "object": "response.deleted", "deleted": true}),
    ))
}
