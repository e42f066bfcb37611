//! Turning an answered call into step events, and recording them.

use std::time::{Duration, Instant};

use clawline_nats::subjects;
use clawline_schemas::{Envelope, StepRecorded, StepSource, TokenSource};
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::capture::SpoolEntry;
use crate::chat::{Answer, Choice, to_message};
use crate::sessions::Trajectory;

/// Everything about one chat call except the answer.
pub struct CallContext {
    pub caller: Caller,
    /// The trajectory, with `next_step` holding this call's step index.
    pub trajectory: Trajectory,
    /// The prompt group of this call (Claw-R1 agents put their dataset uid in the path).
    pub prompt_uid: String,
    /// The registration of a trajectory the gateway just created, being recorded while the engine
    /// answers (off the critical path); the steps are recorded after it, so order holds.
    pub registration: Option<tokio::task::JoinHandle<()>>,
    pub messages: Vec<Value>,
    pub tools: Option<Value>,
    pub params_json: Option<String>,
    /// The template variables the request set (`chat_template_kwargs`, …).
    pub template: clawline_runtime::tokenize::TemplateArgs,
    /// The prompt as text, for calls made with a prompt instead of messages (`/v1/completions`).
    pub prompt_text: Option<String>,
    pub request_id: String,
    pub stream: bool,
    pub started: Instant,
    pub ttft: Option<Duration>,
    pub upstream: String,
    pub policy_version: Option<u64>,
    /// A turn no user asked for ([`crate::background`]).
    pub background: bool,
}

impl CallContext {
    pub fn step_id(&self, choice_index: u32) -> String {
        StepRecorded::id_for(
            &self.caller.tenant,
            &self.trajectory.uid,
            self.trajectory.next_step,
            choice_index,
        )
    }
}

/// Exact ids from the engine when it gave them, else the tokenizer's, else none.
fn tokens_for(
    state: &AppState,
    ctx: &CallContext,
    answer: &Answer,
    choice: &Choice,
) -> (TokenSource, Vec<u32>, Vec<u32>, Option<Vec<f32>>) {
    if let (Some(prompt), Some(response)) = (&answer.prompt_token_ids, &choice.token_ids) {
        let logprobs = choice
            .logprobs
            .clone()
            .filter(|l| l.len() == response.len());
        return (
            TokenSource::Engine,
            prompt.clone(),
            response.clone(),
            logprobs,
        );
    }
    if let Some(tokenizer) = &state.tokenizer {
        let prompt = match &ctx.prompt_text {
            Some(text) => tokenizer.encode(text),
            None => tokenizer.encode_chat_with(&ctx.messages, ctx.tools.as_ref(), &ctx.template),
        };
        let text = if choice.tool_calls.is_empty() {
            choice.text.clone()
        } else {
            choice.text.clone()
                + &choice
                    .tool_calls
                    .iter()
                    .map(|c| format!("<tool_call>{} {}</tool_call>", c.name, c.arguments))
                    .collect::<String>()
        };
        let response = tokenizer.encode(&text).map(|mut ids| {
            // Engines count the end-of-sequence token they stopped on as generated.
            if matches!(choice.finish_reason.as_deref(), Some("stop" | "tool_calls"))
                && let Some(eos) = tokenizer.token_id(tokenizer.eos_token())
            {
                ids.push(eos);
            }
            ids
        });
        match (prompt, response) {
            (Ok(prompt), Ok(response)) => {
                return (TokenSource::Retokenized, prompt, response, None);
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(request_id = %ctx.request_id, error = %err, "retokenizing failed; step kept as text");
            }
        }
    }
    (TokenSource::Untokenized, Vec::new(), Vec::new(), None)
}

/// One step per answered choice.
pub fn build_steps(state: &AppState, ctx: &CallContext, answer: &Answer) -> Vec<StepRecorded> {
    let latency = ctx.started.elapsed();
    let messages: Vec<_> = ctx.messages.iter().map(to_message).collect();
    answer
        .choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let (token_source, prompt_ids, response_ids, response_logprobs) =
                tokens_for(state, ctx, answer, choice);
            StepRecorded {
                envelope: Envelope::new(ctx.step_id(i as u32), &state.producer),
                tenant: ctx.caller.tenant.clone(),
                channel: ctx.trajectory.channel.clone(),
                trajectory_uid: ctx.trajectory.uid.clone(),
                prompt_uid: ctx.prompt_uid.clone(),
                step_index: ctx.trajectory.next_step,
                choice_index: i as u32,
                is_last: false,
                policy_version: ctx.policy_version,
                source: StepSource::Chat,
                request_id: Some(ctx.request_id.clone()),
                // A background turn's message is the agent's, not the user's reaction.
                previous_step_id: (!ctx.background)
                    .then(|| ctx.trajectory.last_step.as_ref().map(|(_, id)| id.clone()))
                    .flatten(),
                implicit_trajectory: ctx.trajectory.implicit,
                background: ctx.background,
                messages: messages.clone(),
                tools_json: ctx.tools.as_ref().map(Value::to_string),
                request_params_json: ctx.params_json.clone(),
                prompt_text: ctx.prompt_text.clone(),
                response_text: choice.text.clone(),
                response_tool_calls: choice.tool_calls.clone(),
                reasoning_text: choice.reasoning.clone(),
                finish_reason: choice.finish_reason.clone(),
                token_source,
                prompt_ids,
                response_ids,
                response_logprobs,
                upstream: Some(ctx.upstream.clone()),
                upstream_model: answer.model.clone(),
                latency_ms: Some(latency.as_secs_f64() * 1000.0),
                ttft_ms: ctx.ttft.map(|t| t.as_secs_f64() * 1000.0),
                stream: ctx.stream,
                reward: None,
                metadata: ctx.trajectory.metadata.clone(),
            }
        })
        .collect()
}

/// Records the call's steps (and a pending registration) before the response completes, and moves
/// the session forward. Capture problems are logged and counted, never returned: the user's answer
/// is already on its way.
pub async fn record_call(state: &AppState, ctx: &mut CallContext, answer: &Answer) {
    let started = Instant::now();
    if let Some(registration) = ctx.registration.take() {
        let _ = registration.await;
    }
    let steps = build_steps(state, ctx, answer);
    let mut entries = Vec::with_capacity(steps.len());
    for step in &steps {
        match clawline_schemas::encode(step) {
            Ok(payload) => {
                state.metrics.count_step(step.token_source.as_str());
                entries.push(SpoolEntry {
                    subject: subjects::steps(&step.channel),
                    msg_id: step.envelope.event_id.clone(),
                    payload: payload.into(),
                })
            }
            Err(err) => {
                tracing::error!(step_id = %step.envelope.event_id, error = %err, "encoding step failed; step lost")
            }
        }
    }
    if let Err(err) = state.capture.record_many(entries).await {
        tracing::error!(request_id = %ctx.request_id, error = %err, "capture failed; steps lost");
    }
    state
        .metrics
        .capture_seconds
        .observe(started.elapsed().as_secs_f64());
    // The user's next message reacts to the last answer they saw, not to a background turn's.
    if !steps.is_empty() {
        state.sessions.step_recorded(
            &ctx.trajectory.uid,
            &ctx.caller.tenant,
            ctx.trajectory.next_step,
            &ctx.step_id(0),
            !ctx.background,
        );
    }
    if let Some(first) = answer.choices.first()
        && ctx.trajectory.implicit
    {
        state.sessions.remember_turn(
            &ctx.trajectory.uid,
            &ctx.caller.tenant,
            &ctx.messages,
            &first.as_message(),
            (ctx.trajectory.next_step, ctx.step_id(0)),
            ctx.background,
        );
    }
}
