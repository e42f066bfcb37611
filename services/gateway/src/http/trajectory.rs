//! Claw-R1's trajectory endpoints (`/init_trajectory`, `register_trajectory`, `complete_trajectory`)
//! and explicit feedback (`/v1/feedback`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use clawline_nats::subjects;
use clawline_schemas::{
    CompletionReason, Envelope, FeedbackKind, FeedbackReceived, StepRecorded, Thumbs,
    TrajectoryCompleted, new_event_id,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, caller, parse_optional_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::identity::{new_trajectory_uid, registration, valid_client_id};
use crate::sessions::{Origin, Trajectory};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/init_trajectory", post(init_trajectory))
        .route(
            "/{trajectory_uid}/{prompt_uid}/v1/register_trajectory",
            post(register_trajectory),
        )
        .route(
            "/{trajectory_uid}/{prompt_uid}/v1/complete_trajectory",
            post(complete_in_path),
        )
        .route(
            "/complete_trajectory/{trajectory_uid}",
            post(complete_by_id),
        )
        .route("/v1/feedback", post(feedback))
}

#[derive(Debug, Default, Deserialize)]
struct InitBody {
    prompt_uid: Option<String>,
    channel: Option<String>,
    metadata: Option<Value>,
}

fn check_channel(channel: Option<String>, default: &str) -> Result<String, ApiError> {
    match channel {
        None => Ok(default.to_string()),
        Some(c) if clawline_nats::subjects::is_valid_token(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_param(
            "channel",
            format!("channel {c:?} must be 1-64 of [A-Za-z0-9_-]"),
        )),
    }
}

fn check_metadata(metadata: &Option<Value>) -> Result<(), ApiError> {
    match metadata {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_param(
            "metadata",
            "`metadata` must be an object",
        )),
    }
}

fn unknown(uid: &str) -> ApiError {
    ApiError::NotFound(format!("unknown trajectory {uid:?}"))
}

async fn record<E: clawline_schemas::Event>(
    state: &AppState,
    subject: &str,
    event: &E,
) -> Result<(), ApiError> {
    state
        .capture
        .record_event(subject.to_string(), event)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::Internal(format!("recording {}: {e}", E::KIND)))
}

/// `POST /init_trajectory` → `{"trajectory_uid", "base_url"}`; the base URL includes `/v1`.
async fn init_trajectory(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers)?;
    let init: InitBody = parse_optional_json(&body)?;
    let channel = check_channel(init.channel, &state.config.default_channel)?;
    check_metadata(&init.metadata)?;
    let prompt_uid = init.prompt_uid.unwrap_or_else(|| "1".to_string());
    if !valid_client_id(&prompt_uid) {
        return Err(ApiError::bad_param(
            "prompt_uid",
            "prompt_uid must be 1-128 printable characters",
        ));
    }
    let uid = new_trajectory_uid();
    let (t, _) = state
        .sessions
        .create(
            &uid,
            &caller.tenant,
            &channel,
            &prompt_uid,
            init.metadata,
            Origin::Init,
        )
        .map_err(|_| ApiError::Internal("fresh trajectory uid collided".into()))?;
    record(
        &state,
        subjects::TRAJECTORY_REGISTERED,
        &registration(&state, &t),
    )
    .await?;
    let base = public_base(&state, &headers);
    Ok(Json(json!({
        "trajectory_uid": uid,
        "base_url": format!("{base}/{uid}/{prompt_uid}/v1"),
    })))
}

/// `--public-url`, else the Host the caller used, else the listen address.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    match headers.get("host").and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => match state.local_addr.get() {
            Some(addr) => format!("http://{addr}"),
            None => format!("http://{}", crate::settings::LISTEN),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
struct RegisterBody {
    channel: Option<String>,
    metadata: Option<Value>,
}

/// `POST /{trajectory_uid}/{prompt_uid}/v1/register_trajectory` — channel and metadata.
async fn register_trajectory(
    State(state): State<AppState>,
    Path((uid, prompt_uid)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers)?;
    let reg: RegisterBody = parse_optional_json(&body)?;
    let current = state
        .sessions
        .get(&uid, &caller.tenant)
        .map_err(|_| unknown(&uid))?;
    let channel = check_channel(reg.channel, &current.channel)?;
    check_metadata(&reg.metadata)?;
    if let Some(version) = reg
        .metadata
        .as_ref()
        .and_then(|m| m.get("policy_version"))
        .and_then(Value::as_u64)
    {
        tracing::debug!(trajectory_uid = %uid, version, "agent reported its policy version");
    }
    let t = state
        .sessions
        .update(&uid, &caller.tenant, |t| {
            t.channel = channel;
            t.prompt_uid = prompt_uid;
            if reg.metadata.is_some() {
                t.metadata = reg.metadata;
            }
        })
        .map_err(|_| unknown(&uid))?;
    record(
        &state,
        subjects::TRAJECTORY_REGISTERED,
        &registration(&state, &t),
    )
    .await?;
    Ok(Json(json!({"status": "ok"})))
}

#[derive(Debug, Default, Deserialize)]
struct CompleteBody {
    reward: Option<f64>,
    channel: Option<String>,
}

async fn complete_in_path(
    State(state): State<AppState>,
    Path((uid, _prompt_uid)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    complete(state, headers, uid, body).await
}

async fn complete_by_id(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    complete(state, headers, uid, body).await
}

/// Marks the trajectory complete with an optional final reward. Completing twice is harmless: the
/// event id is derived from the trajectory, so JetStream keeps one.
async fn complete(
    state: AppState,
    headers: HeaderMap,
    uid: String,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&state, &headers)?;
    let done: CompleteBody = parse_optional_json(&body)?;
    if done.reward.is_some_and(|r| !r.is_finite()) {
        return Err(ApiError::bad_param(
            "reward",
            "`reward` must be a finite number",
        ));
    }
    let current = state
        .sessions
        .get(&uid, &caller.tenant)
        .map_err(|_| unknown(&uid))?;
    let channel = check_channel(done.channel, &current.channel)?;
    let t = state
        .sessions
        .update(&uid, &caller.tenant, |t| t.completed = true)
        .map_err(|_| unknown(&uid))?;
    let event = completion(&state, &t, &channel, done.reward, CompletionReason::Client);
    record(&state, subjects::TRAJECTORY_COMPLETED, &event).await?;
    Ok(Json(json!({"status": "ok"})))
}

fn completion(
    state: &AppState,
    t: &Trajectory,
    channel: &str,
    reward: Option<f64>,
    reason: CompletionReason,
) -> TrajectoryCompleted {
    TrajectoryCompleted {
        envelope: Envelope::new(
            TrajectoryCompleted::id_for(&t.tenant, &t.uid),
            &state.producer,
        ),
        tenant: t.tenant.clone(),
        channel: channel.to_string(),
        trajectory_uid: t.uid.clone(),
        prompt_uid: Some(t.prompt_uid.clone()),
        reward,
        last_step_index: t.next_step.checked_sub(1),
        reason,
    }
}

/// Completes an implicit session that went idle (called by the sweeper).
pub async fn complete_idle(state: &AppState, t: &Trajectory) {
    if t.next_step == 0 {
        return;
    }
    let event = completion(state, t, &t.channel, None, CompletionReason::IdleTimeout);
    if let Err(err) = state
        .capture
        .record_event(subjects::TRAJECTORY_COMPLETED.to_string(), &event)
        .await
    {
        tracing::error!(trajectory_uid = %t.uid, error = %err, "recording idle completion failed");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    /// Optional when `step_id` names a step this gateway recorded.
    trajectory_uid: Option<String>,
    /// The step, by id (`x-clawline-step-id`) or by index; neither means the whole trajectory.
    step_id: Option<String>,
    step_index: Option<u32>,
    thumbs: Option<Thumbs>,
    rating: Option<f64>,
    /// The scale `rating` is on: 1..=rating_scale (default 5).
    rating_scale: Option<f64>,
    correction: Option<String>,
    comment: Option<String>,
    metadata: Option<Value>,
}

/// `POST /v1/feedback`: explicit feedback on a step or a trajectory, accepted as long as the gateway
/// knows the trajectory (`--trajectory-ttl` after its last activity).
async fn feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let caller: Caller = caller(&state, &headers)?;
    let fb: FeedbackBody = super::parse_json(&body)?;
    let t = match (&fb.trajectory_uid, &fb.step_id) {
        (Some(uid), _) => state
            .sessions
            .get(uid, &caller.tenant)
            .map_err(|_| unknown(uid))?,
        // The step's id (`x-clawline-step-id`) is enough: it names its trajectory.
        (None, Some(step)) => state
            .sessions
            .trajectory_of_step(step, &caller.tenant)
            .map_err(|_| {
                ApiError::NotFound(format!(
                    "step {step} is unknown to this gateway (recorded before its last restart, \
                     or expired): name its trajectory_uid too"
                ))
            })?,
        (None, None) => {
            return Err(ApiError::bad_param(
                "trajectory_uid",
                "feedback needs trajectory_uid, or step_id (the x-clawline-step-id of the answer)",
            ));
        }
    };
    if fb.thumbs.is_none() && fb.rating.is_none() && fb.correction.is_none() && fb.comment.is_none()
    {
        return Err(ApiError::bad_request(
            "feedback needs at least one of thumbs, rating, correction, comment",
        ));
    }
    check_metadata(&fb.metadata)?;
    let rating = match fb.rating {
        None => None,
        Some(r) => {
            let scale = fb.rating_scale.unwrap_or(5.0);
            if !(scale.is_finite() && scale > 1.0) {
                return Err(ApiError::bad_param(
                    "rating_scale",
                    "`rating_scale` must be a number above 1",
                ));
            }
            if !(r.is_finite() && (1.0..=scale).contains(&r)) {
                return Err(ApiError::bad_param(
                    "rating",
                    format!("`rating` must be between 1 and {scale}"),
                ));
            }
            Some((r - 1.0) / (scale - 1.0))
        }
    };
    // A step named by index must exist; a step named by id must belong to this trajectory.
    let step_index = match (&fb.step_id, fb.step_index) {
        (_, Some(i)) if i >= t.next_step => {
            return Err(ApiError::bad_param(
                "step_index",
                format!("trajectory has no step {i}"),
            ));
        }
        (Some(id), index) => {
            let found =
                (0..t.next_step).find(|&i| &StepRecorded::id_for(&t.tenant, &t.uid, i, 0) == id);
            match (found, index) {
                (None, _) => {
                    return Err(ApiError::bad_param(
                        "step_id",
                        "no such step in this trajectory",
                    ));
                }
                (Some(f), Some(i)) if f != i => {
                    return Err(ApiError::bad_param(
                        "step_index",
                        "step_id and step_index disagree",
                    ));
                }
                (Some(f), _) => Some(f),
            }
        }
        (None, index) => index,
    };
    let event = FeedbackReceived {
        envelope: Envelope::new(new_event_id("fbk"), &state.producer),
        tenant: caller.tenant.clone(),
        trajectory_uid: t.uid.clone(),
        step_id: step_index.map(|i| StepRecorded::id_for(&t.tenant, &t.uid, i, 0)),
        step_index,
        kind: FeedbackKind::Explicit,
        thumbs: fb.thumbs,
        rating,
        correction: fb.correction,
        comment: fb.comment,
        implicit: None,
        metadata: fb.metadata,
    };
    record(&state, subjects::FEEDBACK, &event).await?;
    Ok(Json(
        json!({"status": "ok", "feedback_id": event.envelope.event_id, "step_id": event.step_id}),
    ))
}
