//! Claw-R1's `POST /compute_reward`, answered synchronously by the reward service over NATS
//! request/reply (`clawline.reward.compute`). The gateway decodes the token ids with its
//! `--tokenizer` so the scorer reads text; a client may also send `prompt_text` / `response_text`.
//! Ids decode as verl's reward managers decode them, special tokens left out: the `/generate`
//! answers Claw-R1's multi-step flow passes on end with the end-of-turn token, and `72<|im_end|>`
//! must score like `72`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use clawline_nats::subjects;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Body, caller, parse_json};
use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/compute_reward", post(compute_reward))
}

/// Claw-R1's request body, plus optional texts.
#[derive(Debug, Deserialize, Serialize)]
struct ComputeBody {
    #[serde(default)]
    prompt_ids: Option<Vec<u32>>,
    #[serde(default)]
    response_ids: Option<Vec<u32>>,
    #[serde(default)]
    prompt_text: Option<String>,
    #[serde(default)]
    response_text: Option<String>,
    #[serde(default)]
    num_turns: Option<u32>,
    #[serde(default)]
    extra_fields: Option<Map<String, Value>>,
    #[serde(default)]
    dataset_fields: Option<Map<String, Value>>,
}

async fn compute_reward(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers)?;
    let mut req: ComputeBody = parse_json(&body)?;
    let decode = |ids: &Option<Vec<u32>>, field: &str| -> Result<Option<String>, ApiError> {
        match (ids, &state.tokenizer) {
            (None, _) => Ok(None),
            (Some(ids), Some(tok)) => tok
                .decode_text(ids)
                .map(Some)
                .map_err(|e| ApiError::bad_param(field, format!("{field}: {e}"))),
            (Some(_), None) => Err(ApiError::bad_param(
                field,
                format!(
                    "{field} needs the gateway's --tokenizer to be decoded; send response_text instead"
                ),
            )),
        }
    };
    if req.response_text.is_none() {
        req.response_text = decode(&req.response_ids, "response_ids")?;
    }
    if req.prompt_text.is_none() && req.prompt_ids.is_some() && state.tokenizer.is_some() {
        req.prompt_text = decode(&req.prompt_ids, "prompt_ids")?;
    }
    if req.response_text.is_none() {
        return Err(ApiError::bad_param(
            "response_ids",
            "one of response_ids or response_text is required",
        ));
    }
    let payload = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let reply = super::ask(
        state.nats(),
        subjects::REWARD_COMPUTE,
        payload,
        state.config.reward_timeout,
        ("reward service", "clawline-reward"),
    )
    .await?;
    let answer: Value = serde_json::from_slice(&reply)
        .map_err(|e| ApiError::Internal(format!("reward service answered non-JSON: {e}")))?;
    if let Some(message) = answer.pointer("/error/message").and_then(Value::as_str) {
        return Err(ApiError::bad_request(message.to_string()));
    }
    Ok(Json(answer))
}
