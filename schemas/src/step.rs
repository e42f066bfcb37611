//! `StepRecorded`: one LLM call (one state, action pair) as the gateway saw it.
//!
//! Produced by the gateway (chat completions, `/generate`, `/submit_steps`) and later by import and
//! replay; consumed by the reward scorer, the batcher and the archiver.

use serde::{Deserialize, Serialize};

use crate::event;

/// Where a step's token ids came from, which decides whether it is fit for on-policy training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The serving engine returned the exact prompt and completion ids it used.
    Engine,
    /// The client sent the ids itself (`/submit_steps`, white-box agents).
    Client,
    /// The engine gave none; the gateway rendered the chat template and tokenized the text.
    Retokenized,
    /// No ids at all: neither the engine nor a tokenizer was available. Text only.
    #[default]
    Untokenized,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Engine => "engine",
            TokenSource::Client => "client",
            TokenSource::Retokenized => "retokenized",
            TokenSource::Untokenized => "untokenized",
        }
    }
}

/// Which path through the system produced the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepSource {
    /// `POST /v1/chat/completions` (plain or path-scoped).
    #[default]
    Chat,
    /// `POST /generate` (token-id prompt).
    Generate,
    /// `POST /submit_steps` (white-box).
    Submitted,
    /// `clawline import`.
    Imported,
    /// `clawline replay`.
    Replayed,
}

/// One tool call, as the OpenAI API spells it (`arguments` is the raw JSON string the model wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ToolCall {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// One chat message of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Message {
    pub role: String,
    /// The text; for array content, the text parts joined by newlines.
    #[serde(default)]
    pub content: Option<String>,
    /// The original array content as JSON when it was not plain text (images, audio…).
    #[serde(default)]
    pub content_parts_json: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

event! {
    kind = "step_recorded";
    /// An LLM call, captured whole: what was asked, what was answered, the exact tokens, and
    /// provenance.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct StepRecorded {
        /// Derived from (tenant, trajectory_uid, step_index, choice_index): a retried capture or a
        /// re-submitted white-box step has the same id and is stored once.
        pub envelope: Envelope,

        pub tenant: String,
        pub channel: String,
        pub trajectory_uid: String,
        pub prompt_uid: String,
        /// Position of the call in its trajectory, from 0.
        pub step_index: u32,
        /// Which choice of an `n > 1` request this step is; 0 otherwise.
        #[serde(default)]
        pub choice_index: u32,
        /// The client marked this as the trajectory's last step.
        #[serde(default)]
        pub is_last: bool,
        /// The policy version that produced the answer (KV `policy.version` or the engine's
        /// header).
        #[serde(default)]
        pub policy_version: Option<u64>,
        #[serde(default)]
        pub source: StepSource,
        /// The gateway's id for the HTTP request (`x-request-id`).
        #[serde(default)]
        pub request_id: Option<String>,
        /// The step this call continues (its messages end with that step's answer plus the user's
        /// next message), when the gateway knows it. The reward scorer reads the new message as
        /// implicit feedback on that step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub previous_step_id: Option<String>,
        /// The gateway grouped this call into a conversation by its messages: the client sent no
        /// trajectory id and will not complete one (a plain OpenAI client). The batcher lets such
        /// steps train one by one, as soon as their rewards and the user's reaction are in.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub implicit_trajectory: bool,
        /// A turn no user asked for: the agent woke itself (OpenClaw's heartbeat, a scheduled wake)
        /// or the client said so (`x-clawline-background`). Kept in the history, but no one's
        /// reaction to it exists, so it does not train unless the channel asks
        /// (`train_background`), and it is never read as feedback on the step before it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub background: bool,

        #[serde(default)]
        pub messages: Vec<Message>,
        /// The request's `tools` array as JSON.
        #[serde(default)]
        pub tools_json: Option<String>,
        /// Every other request field (temperature, stop, seed, …) as a JSON object.
        #[serde(default)]
        pub request_params_json: Option<String>,
        /// The prompt as text where there were no messages (`/generate` decodes it when it can).
        #[serde(default)]
        pub prompt_text: Option<String>,

        #[serde(default)]
        pub response_text: String,
        #[serde(default)]
        pub response_tool_calls: Vec<ToolCall>,
        #[serde(default)]
        pub reasoning_text: Option<String>,
        #[serde(default)]
        pub finish_reason: Option<String>,

        #[serde(default)]
        pub token_source: TokenSource,
        #[serde(default)]
        pub prompt_ids: Vec<u32>,
        #[serde(default)]
        pub response_ids: Vec<u32>,
        /// Behaviour logprob of each response token, aligned with `response_ids`.
        #[serde(default)]
        pub response_logprobs: Option<Vec<f32>>,

        /// The upstream base URL that answered.
        #[serde(default)]
        pub upstream: Option<String>,
        /// The `model` the upstream reported.
        #[serde(default)]
        pub upstream_model: Option<String>,
        /// Wall time of the upstream call.
        #[serde(default)]
        pub latency_ms: Option<f64>,
        /// Time to the first streamed chunk.
        #[serde(default)]
        pub ttft_ms: Option<f64>,
        #[serde(default)]
        pub stream: bool,
        /// A reward the client attached (white-box steps); scorers add theirs as separate events.
        #[serde(default)]
        pub reward: Option<f64>,
        #[serde(default)]
        pub metadata: Option<serde_json::Value>,
    }
}

impl StepRecorded {
    /// The id a step gets from what identifies it, so captures and submissions are idempotent.
    pub fn id_for(
        tenant: &str,
        trajectory_uid: &str,
        step_index: u32,
        choice_index: u32,
    ) -> String {
        crate::derived_id(
            "stp",
            &[
                tenant,
                trajectory_uid,
                &step_index.to_string(),
                &choice_index.to_string(),
            ],
        )
    }
}

/// The batcher's view of a [`StepRecorded`]: the fields it forms batches from, decoded from a
/// step's bytes without the rest (messages, texts, metadata). Its fields and defaults are the
/// event's own (a golden test decodes the pinned step both ways).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StepForBatching {
    pub event_id: String,
    pub event_time: i64,
    pub tenant: String,
    pub channel: String,
    pub trajectory_uid: String,
    pub prompt_uid: String,
    pub step_index: u32,
    #[serde(default)]
    pub choice_index: u32,
    #[serde(default)]
    pub is_last: bool,
    #[serde(default)]
    pub implicit_trajectory: bool,
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub policy_version: Option<u64>,
    #[serde(default)]
    pub token_source: TokenSource,
    #[serde(default)]
    pub prompt_ids: Vec<u32>,
    #[serde(default)]
    pub response_ids: Vec<u32>,
    #[serde(default)]
    pub response_logprobs: Option<Vec<f32>>,
}

impl From<StepRecorded> for StepForBatching {
    fn from(s: StepRecorded) -> Self {
        Self {
            event_id: s.envelope.event_id,
            event_time: s.envelope.event_time,
            tenant: s.tenant,
            channel: s.channel,
            trajectory_uid: s.trajectory_uid,
            prompt_uid: s.prompt_uid,
            step_index: s.step_index,
            choice_index: s.choice_index,
            is_last: s.is_last,
            implicit_trajectory: s.implicit_trajectory,
            background: s.background,
            policy_version: s.policy_version,
            token_source: s.token_source,
            prompt_ids: s.prompt_ids,
            response_ids: s.response_ids,
            response_logprobs: s.response_logprobs,
        }
    }
}
