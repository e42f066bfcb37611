//! `POST /v1/responses` (OpenAI Responses: Codex CLI, the Agents SDK), translated to the engine's
//! chat completions and back ([`crate::protocols::responses`]), captured like any chat call;
//! `GET` and `DELETE /v1/responses/{id}` for the answers the gateway keeps (`store`, default true).
//! With `--engine-speaks responses` the request goes to the engine's own `/v1/responses`
//! ([`crate::protocols::responses::native`]).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::chat::{Native, Reply, serve};
use super::{Body, caller, parse_json};
use crate::AppState;
use crate::error::ApiError;
use crate::protocols::responses::{
    NativeResponses, ResponsesDialect, input_messages, native, to_chat,
};
use crate::settings::EngineProtocol;

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
    let previous = match request.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::bad_param(
                "previous_response_id",
                "`previous_response_id` must be a string",
            ));
        }
    };
    let chain = match &previous {
        Some(id) => {
            let tenant = caller(&state, &headers)?.tenant;
            state.responses.chain(&tenant, id).await
        }
        None => None,
    };
    let store =
        (request.get("store") != Some(&Value::Bool(false))).then(|| state.responses.clone());
    let bad = |(param, message): (String, String)| ApiError::bad_param(&param, message);
    if state.config.engine_speaks(EngineProtocol::Responses) {
        // The engine takes the request itself; the step records what chat form can hold.
        let record = native::recordable(&request);
        let input = input_messages(&record).map_err(bad)?;
        let (history, prior) = chain.unwrap_or_default();
        let chat = to_chat(&record, history, input.clone()).map_err(bad)?;
        let mut forwarded = request.clone();
        // A conversation the gateway kept goes to the engine whole: vLLM keeps none by default.
        let expanded = !prior.is_empty();
        let items = native::input_items(&request);
        if expanded {
            forwarded.remove("previous_response_id");
            let whole: Vec<Value> = prior.into_iter().chain(items.iter().cloned()).collect();
            forwarded.insert("input".into(), Value::Array(whole));
        }
        let reader = NativeResponses::new(store, previous, expanded, items, input);
        let reply = Reply::Native(Box::new(Native::responses(forwarded, reader)));
        return serve(state, headers, None, chat, reply).await;
    }
    let history = match (&previous, chain) {
        (None, _) => Vec::new(),
        (Some(_), Some((messages, _))) => messages,
        (Some(id), None) => {
            return Err(ApiError::bad_param(
                "previous_response_id",
                format!("Previous response with id '{id}' not found."),
            ));
        }
    };
    let input = input_messages(&request).map_err(bad)?;
    let chat = to_chat(&request, history, input.clone()).map_err(bad)?;
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
