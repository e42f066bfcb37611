//! White-box endpoints for agents that hold token ids: `POST /submit_steps` (admin) and
//! `POST /generate` (token-id prompt → the engine's own ids and logprobs).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use clawline_nats::subjects;
use clawline_schemas::{
    CompletionReason, Envelope, StepRecorded, StepSource, TokenSource, TrajectoryCompleted,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, caller, parse_json};
use crate::AppState;
use crate::auth::RequireAdmin as _;
use crate::capture::{Outcome, SpoolEntry};
use crate::error::ApiError;
use crate::identity::{new_trajectory_uid, valid_client_id};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/submit_steps", post(submit_steps))
        .route("/generate", post(generate))
}

/// Claw-R1's `StepPayload`.
#[derive(Debug, Deserialize)]
struct StepPayload {
    prompt_ids: Vec<u32>,
    response_ids: Vec<u32>,
    reward: Option<f64>,
    rollout_log_probs: Option<Vec<f32>>,
    #[serde(default)]
    trajectory_uid: String,
    #[serde(default)]
    prompt_uid: String,
    #[serde(default)]
    step_index: u32,
    policy_version: Option<u64>,
    #[serde(default)]
    is_last: bool,
    metadata: Option<Value>,
    // Accepted for compatibility; not stored (no multimodal capture yet).
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for Claw-R1 compatibility, not stored")]
    multi_modal_data: Option<Value>,
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for Claw-R1 compatibility, not stored")]
    routed_experts: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct SubmitBody {
    steps: Vec<StepPayload>,
}

#[derive(Debug, Deserialize)]
struct ChannelQuery {
    channel: Option<String>,
}

fn validate(i: usize, step: &StepPayload) -> Result<(), ApiError> {
    let bad = |field: &str, msg: &str| {
        Err(ApiError::bad_param(
            &format!("steps[{i}].{field}"),
            format!("steps[{i}].{field}: {msg}"),
        ))
    };
    if step.prompt_ids.is_empty() {
        return bad("prompt_ids", "must not be empty");
    }
    if step.response_ids.is_empty() {
        return bad("response_ids", "must not be empty");
    }
    if let Some(lp) = &step.rollout_log_probs {
        if lp.len() != step.response_ids.len() {
            return bad("rollout_log_probs", "must have one logprob per response id");
        }
        if lp.iter().any(|l| !l.is_finite() || *l > 0.0) {
            return bad("rollout_log_probs", "logprobs must be finite and <= 0");
        }
    }
    if step.reward.is_some_and(|r| !r.is_finite()) {
        return bad("reward", "must be a finite number");
    }
    if !step.trajectory_uid.is_empty() && !valid_client_id(&step.trajectory_uid) {
        return bad("trajectory_uid", "must be 1-128 printable characters");
    }
    if !step.prompt_uid.is_empty() && !valid_client_id(&step.prompt_uid) {
        return bad("prompt_uid", "must be 1-128 printable characters");
    }
    if step
        .metadata
        .as_ref()
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return bad("metadata", "must be an object");
    }
    Ok(())
}

/// `POST /submit_steps?channel=train` (admin): validates every step first (a bad one rejects the
/// whole request and stores nothing), then stores them with ids derived from (tenant,
/// trajectory_uid, step_index), so a re-submitted step is stored once. Answers `{"accepted": N,
/// "duplicates": D}`.
async fn submit_steps(
    State(state): State<AppState>,
    Query(query): Query<ChannelQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require_admin()?;
    let channel = match query.channel {
        None => state.config.default_channel.clone(),
        Some(c) if clawline_nats::subjects::is_valid_token(&c) => c,
        Some(c) => {
            return Err(ApiError::bad_param(
                "channel",
                format!("channel {c:?} must be 1-64 of [A-Za-z0-9_-]"),
            ));
        }
    };
    let submit: SubmitBody = parse_json(&body)?;
    for (i, step) in submit.steps.iter().enumerate() {
        validate(i, step)?;
    }
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::with_capacity(submit.steps.len());
    let mut completions = Vec::new();
    for step in submit.steps {
        let trajectory_uid = if step.trajectory_uid.is_empty() {
            new_trajectory_uid()
        } else {
            step.trajectory_uid
        };
        let prompt_uid = if step.prompt_uid.is_empty() {
            trajectory_uid.clone()
        } else {
            step.prompt_uid
        };
        let event_id = StepRecorded::id_for(&caller.tenant, &trajectory_uid, step.step_index, 0);
        if !seen.insert(event_id.clone()) {
            continue; // the same (trajectory, step) twice in one request
        }
        // The text the reward models read (without it they score the step as empty): the ids
        // decoded with the gateway's tokenizer, the answer without special tokens.
        let (prompt_text, response_text) = match &state.tokenizer {
            Some(tok) => (
                tok.decode(&step.prompt_ids).ok(),
                tok.decode_text(&step.response_ids).unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let event = StepRecorded {
            envelope: Envelope::new(event_id, &state.producer),
            tenant: caller.tenant.clone(),
            channel: channel.clone(),
            trajectory_uid: trajectory_uid.clone(),
            prompt_uid: prompt_uid.clone(),
            step_index: step.step_index,
            choice_index: 0,
            is_last: step.is_last,
            policy_version: step.policy_version.or_else(|| state.policy.get()),
            source: StepSource::Submitted,
            token_source: TokenSource::Client,
            prompt_text,
            response_text,
            prompt_ids: step.prompt_ids,
            response_ids: step.response_ids,
            response_logprobs: step.rollout_log_probs,
            reward: step.reward,
            metadata: step.metadata,
            ..Default::default()
        };
        if step.is_last {
            completions.push(TrajectoryCompleted {
                envelope: Envelope::new(
                    TrajectoryCompleted::id_for(&caller.tenant, &trajectory_uid),
                    &state.producer,
                ),
                tenant: caller.tenant.clone(),
                channel: channel.clone(),
                trajectory_uid,
                prompt_uid: Some(prompt_uid),
                reward: None,
                last_step_index: Some(step.step_index),
                reason: CompletionReason::LastStep,
            });
        }
        let payload =
            clawline_schemas::encode(&event).map_err(|e| ApiError::Internal(e.to_string()))?;
        entries.push(SpoolEntry {
            subject: subjects::steps(&channel),
            msg_id: event.envelope.event_id,
            payload: payload.into(),
        });
    }
    let steps_in_request = entries.len();
    for c in &completions {
        let payload = clawline_schemas::encode(c).map_err(|e| ApiError::Internal(e.to_string()))?;
        entries.push(SpoolEntry {
            subject: subjects::TRAJECTORY_COMPLETED.to_string(),
            msg_id: c.envelope.event_id.clone(),
            payload: payload.into(),
        });
    }
    let outcomes = state
        .capture
        .record_many(entries)
        .await
        .map_err(|e| ApiError::Unavailable(format!("steps could not be stored: {e}")))?;
    let duplicates = outcomes[..steps_in_request]
        .iter()
        .filter(|o| matches!(o, Outcome::Acked { duplicate: true }))
        .count();
    for _ in 0..steps_in_request {
        state.metrics.count_step(TokenSource::Client.as_str());
    }
    Ok(Json(
        json!({"accepted": steps_in_request - duplicates, "duplicates": duplicates}),
    ))
}

#[derive(Debug, Deserialize)]
struct GenerateBody {
    prompt_ids: Vec<u32>,
    #[serde(default)]
    sampling_params: Value,
}

/// `POST /generate`: a token-id prompt to the engine's `/completions`; returns the engine's own
/// token ids and logprobs (Claw-R1 re-encodes the text instead). Not recorded as a step: white-box
/// agents submit their steps, with rewards, through `/submit_steps`.
async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers)?;
    let request: GenerateBody = parse_json(&body)?;
    if request.prompt_ids.is_empty() {
        return Err(ApiError::bad_param(
            "prompt_ids",
            "`prompt_ids` must not be empty",
        ));
    }
    let params = match &request.sampling_params {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => {
            return Err(ApiError::bad_param(
                "sampling_params",
                "`sampling_params` must be an object",
            ));
        }
    };
    let want_logprobs = params
        .get("logprobs")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut upstream_body = serde_json::Map::new();
    for key in [
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "stop",
        "seed",
        "model",
    ] {
        if let Some(v) = params.get(key) {
            upstream_body.insert(key.to_string(), v.clone());
        }
    }
    if let Some(model) = state
        .engine_model(params.get("model").and_then(Value::as_str))
        .await
    {
        upstream_body.insert("model".into(), json!(model));
    }
    if !upstream_body.contains_key("max_tokens") {
        // The engine's own default would cut the answer (vLLM's: 16 tokens).
        let room = state
            .upstreams
            .served()
            .await
            .and_then(|s| s.max_model_len)
            .map(|len| len.saturating_sub(request.prompt_ids.len() as u64).max(1));
        let max = room.map_or(state.config.generate_max_tokens, |room| {
            room.min(state.config.generate_max_tokens)
        });
        upstream_body.insert("max_tokens".into(), json!(max));
    }
    upstream_body.insert("prompt".into(), json!(request.prompt_ids));
    upstream_body.insert("logprobs".into(), json!(1));
    upstream_body.insert("return_token_ids".into(), json!(true));
    let body = serde_json::to_vec(&Value::Object(upstream_body))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let bytes = state
        .upstreams
        .call(
            "/completions",
            &body,
            state.config.upstream_timeout,
            &headers,
        )
        .await?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadGateway(format!("the upstream answered invalid JSON: {e}")))?;
    let choice = answer
        .get("choices")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let token_ids: Option<Vec<u32>> = choice
        .get("token_ids")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let token_ids = match (token_ids, &state.tokenizer) {
        (Some(ids), _) => ids,
        (None, Some(tok)) => tok
            .encode(choice.get("text").and_then(Value::as_str).unwrap_or(""))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        (None, None) => {
            return Err(ApiError::BadGateway(
                "the engine returned no token ids and the gateway has no --tokenizer".into(),
            ));
        }
    };
    let log_probs: Option<Vec<f64>> = want_logprobs
        .then(|| {
            choice
                .get("logprobs")
                .and_then(|l| l.get("token_logprobs"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
        })
        .flatten();
    Ok(Json(json!({
        "token_ids": token_ids,
        "log_probs": log_probs,
        "stop_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
    })))
}
