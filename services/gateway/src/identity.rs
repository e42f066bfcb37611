//! Which trajectory a call belongs to: the Claw-R1 path, a client's `x-clawline-trajectory`
//! header (step indexes leased so a restarted gateway never reuses one), a conversation that
//! continues an earlier call's history (or resumes it after the agent compacted it), or a new
//! one. Every protocol's handler asks [`resolve`]; the in-memory bookkeeping is [`crate::sessions`].

use axum::http::HeaderMap;
use clawline_schemas::{Envelope, TrajectoryRegistered, derived_id, new_event_id};
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::chat::content_text;
use crate::error::ApiError;
use crate::sessions::{Denied, Origin, Trajectory, Untaken};

pub const TRAJECTORY_HEADER: &str = "x-clawline-trajectory";
pub const PROMPT_HEADER: &str = "x-clawline-prompt";
pub const CHANNEL_HEADER: &str = "x-clawline-channel";
pub const STEP_ID_HEADER: &str = "x-clawline-step-id";
pub const POLICY_VERSION_HEADER: &str = "x-clawline-policy-version";

/// A fresh trajectory uid: 32 hex digits, time-ordered, like Claw-R1's uuid4 hex.
pub fn new_trajectory_uid() -> String {
    format!("{:032x}", ulid::Ulid::new().0)
}

/// An id a client chose (header or path): printable, no whitespace, at most 128 bytes.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn channel_from(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    match header(headers, CHANNEL_HEADER) {
        None => Ok(state.config.default_channel.clone()),
        Some(c) if clawline_nats::subjects::is_valid_token(c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_param(
            CHANNEL_HEADER,
            format!("channel {c:?} must be 1-64 of [A-Za-z0-9_-]"),
        )),
    }
}

pub fn registration(state: &AppState, t: &Trajectory) -> TrajectoryRegistered {
    TrajectoryRegistered {
        envelope: Envelope::new(new_event_id("trg"), &state.producer),
        tenant: t.tenant.clone(),
        channel: t.channel.clone(),
        trajectory_uid: t.uid.clone(),
        prompt_uid: t.prompt_uid.clone(),
        metadata: t.metadata.clone(),
        policy_version: state.policy.get(),
    }
}

/// A prompt group for conversations without one: the same opening (system + first user message)
/// from the same tenant is the same prompt, so GRPO can group answers to it.
fn derived_prompt_uid(tenant: &str, messages: &[Value]) -> String {
    let opening: Vec<String> = messages
        .iter()
        .take_while(|m| m.get("role").and_then(Value::as_str) != Some("assistant"))
        .take(2)
        .map(|m| content_text(m.get("content")))
        .collect();
    let mut parts = vec![tenant];
    parts.extend(opening.iter().map(String::as_str));
    derived_id("prm", &parts)
}

/// The next step index of a trajectory whose uid the client chose, from a leased block
/// ([`crate::leases`]).
async fn leased_step(state: &AppState, tenant: &str, uid: &str) -> Result<Trajectory, Denied> {
    loop {
        match state.sessions.take_leased_step(uid, tenant) {
            Ok(t) => return Ok(t),
            Err(Untaken::Denied(d)) => return Err(d),
            Err(Untaken::NeedsLease(from)) => {
                let block = match state.leases.lease(tenant, uid, from).await {
                    Ok(block) => block,
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            trajectory = uid,
                            "no step-index lease; continuing from this gateway's own count"
                        );
                        state.leases.fallbacks.inc();
                        from..from.saturating_add(crate::leases::BLOCK)
                    }
                };
                state.sessions.grant(uid, tenant, block);
            }
        }
    }
}

/// Headers in which agents carry their own session id: Claude Code, Codex CLI (both spellings),
/// and a generic one for any other agent.
const AGENT_SESSION_HEADERS: [&str; 4] = [
    "x-claude-code-session-id",
    "session-id",
    "session_id",
    "x-session-id",
];

/// The agent's own session id, kept as the trajectory's metadata (`{"agent_session": …}`) so its
/// trajectories can be found and grouped by it. Trajectories are still told apart by their
/// history: one agent session holds several conversations (Claude Code's subagents share their
/// parent's id), and joining them would make a subagent's first message feedback on its parent.
fn agent_session(headers: &HeaderMap) -> Option<Value> {
    agent_session_id(headers).map(|id| serde_json::json!({"agent_session": id}))
}

fn agent_session_id(headers: &HeaderMap) -> Option<&str> {
    AGENT_SESSION_HEADERS
        .iter()
        .find_map(|name| header(headers, name).filter(|id| valid_client_id(id)))
}

/// Which trajectory this call belongs to, with this call's step index taken.
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    path: Option<(String, String)>,
    messages: &[Value],
) -> Result<(Trajectory, String, Option<TrajectoryRegistered>), ApiError> {
    let tenant = &caller.tenant;
    let unknown = |uid: &str| {
        ApiError::NotFound(format!(
            "unknown trajectory {uid:?}: call /init_trajectory first"
        ))
    };
    if let Some((uid, prompt_uid)) = path {
        let t = state
            .sessions
            .next_step(&uid, tenant)
            .map_err(|_| unknown(&uid))?;
        return Ok((t, prompt_uid, None));
    }
    if let Some(uid) = header(headers, TRAJECTORY_HEADER) {
        if !valid_client_id(uid) {
            return Err(ApiError::bad_param(
                TRAJECTORY_HEADER,
                "trajectory id must be 1-128 printable characters",
            ));
        }
        let prompt = header(headers, PROMPT_HEADER).map(str::to_string);
        if prompt.as_deref().is_some_and(|p| !valid_client_id(p)) {
            return Err(ApiError::bad_param(
                PROMPT_HEADER,
                "prompt id must be 1-128 printable characters",
            ));
        }
        let prompt = prompt.unwrap_or_else(|| derived_prompt_uid(tenant, messages));
        let channel = channel_from(state, headers)?;
        let (created, is_new) = state
            .sessions
            .create(uid, tenant, &channel, &prompt, None, Origin::Client)
            .map_err(|_| unknown(uid))?;
        let t = leased_step(state, tenant, uid)
            .await
            .map_err(|_| unknown(uid))?;
        let reg = is_new.then(|| registration(state, &created));
        let prompt_uid = t.prompt_uid.clone();
        return Ok((t, prompt_uid, reg));
    }
    if let Some(existing) = state.sessions.continuing(tenant, messages)
        && let Ok(mut t) = state.sessions.next_step(&existing.uid, tenant)
    {
        // The step this call's history ends with is the one the new message reacts to.
        t.last_step = existing.last_step;
        let prompt_uid = t.prompt_uid.clone();
        return Ok((t, prompt_uid, None));
    }
    if let Some(existing) =
        state
            .sessions
            .resumed_after_compaction(tenant, agent_session_id(headers), messages)
        && let Ok(mut t) = state.sessions.next_step(&existing.uid, tenant)
    {
        t.last_step = existing.last_step;
        let prompt_uid = t.prompt_uid.clone();
        return Ok((t, prompt_uid, None));
    }
    let uid = new_trajectory_uid();
    let channel = channel_from(state, headers)?;
    let prompt = derived_prompt_uid(tenant, messages);
    let (created, _) = state
        .sessions
        .create(
            &uid,
            tenant,
            &channel,
            &prompt,
            agent_session(headers),
            Origin::Conversation,
        )
        .map_err(|_| ApiError::Internal("fresh trajectory uid collided".into()))?;
    let t = state
        .sessions
        .next_step(&uid, tenant)
        .map_err(|_| unknown(&uid))?;
    Ok((t, prompt, Some(registration(state, &created))))
}
