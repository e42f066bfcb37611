//! From an input event to its reward events: reward models, rules, client rewards and feedback.
//! Pure with respect to NATS: the consumers publish what this returns.

use clawline_schemas::{
    Envelope, FeedbackReceived, Message, RewardAssigned, RewardScope, StepRecorded,
    TrajectoryCompleted,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{FeedbackConfig, ImplicitConfig, ModelConfig, TextMode};
use crate::feedback::{self, ImplicitClassifier};
use crate::model::RewardModel;
use crate::rules::{Rule, RuleInput};

/// The source of rewards a client sent itself (with a step or a completion).
pub const CLIENT_SOURCE: &str = "client";
const CLIENT_VERSION: &str = "v1";

/// Everything that scores, loaded once.
pub struct Scorer {
    pub models: Vec<(RewardModel, ModelConfig)>,
    pub rules: Vec<Rule>,
    pub feedback: FeedbackConfig,
    pub implicit_config: ImplicitConfig,
    pub implicit: Option<ImplicitClassifier>,
    pub producer: String,
}

/// Who a reward is about and why; the rest of a `RewardAssigned`.
struct Target<'a> {
    tenant: &'a str,
    channel: Option<&'a str>,
    trajectory_uid: &'a str,
    step_id: Option<&'a str>,
    caused_by: &'a str,
}

impl Scorer {
    fn reward(
        &self,
        target: &Target<'_>,
        source: &str,
        version: &str,
        value: f64,
        details: Value,
    ) -> RewardAssigned {
        RewardAssigned {
            envelope: Envelope::new(
                RewardAssigned::id_for(target.caused_by, source, version),
                &self.producer,
            ),
            tenant: target.tenant.to_string(),
            channel: target.channel.map(str::to_string),
            trajectory_uid: target.trajectory_uid.to_string(),
            scope: if target.step_id.is_some() {
                RewardScope::Step
            } else {
                RewardScope::Trajectory
            },
            step_id: target.step_id.map(str::to_string),
            source: source.to_string(),
            source_version: version.to_string(),
            value,
            caused_by: target.caused_by.to_string(),
            details: (!details.is_null()).then_some(details),
        }
    }

    /// Every reward a step earns now: one per model, one per applicable rule, the client's reward
    /// if it sent one, and implicit feedback on the step it continues. An error means "retry".
    pub async fn score_step(&self, step: &StepRecorded) -> Result<Vec<RewardAssigned>, String> {
        let target = Target {
            tenant: &step.tenant,
            channel: Some(&step.channel),
            trajectory_uid: &step.trajectory_uid,
            step_id: Some(&step.envelope.event_id),
            caused_by: &step.envelope.event_id,
        };
        let response = response_text(step);
        let model_scores = futures::future::join_all(self.models.iter().map(|(model, cfg)| {
            let text = match cfg.text {
                TextMode::Response => response.clone(),
                TextMode::Conversation => conversation_text(&step.messages, &response),
            };
            let empty = response.trim().is_empty();
            async move {
                if empty {
                    return Ok((cfg.empty_value, json!({"empty": true})));
                }
                let (value, logits) = model.score(text).await?;
                Ok::<_, String>((value, json!({"logits": logits})))
            }
        }))
        .await;
        let mut out = Vec::new();
        for ((model, _), scored) in self.models.iter().zip(model_scores) {
            let (value, details) = scored?;
            out.push(self.reward(&target, &model.source, &model.version, value, details));
        }
        let input = RuleInput {
            response: &step.response_text,
            response_tokens: (!step.response_ids.is_empty()).then_some(step.response_ids.len()),
            metadata: step.metadata.as_ref(),
            tools_json: step.tools_json.as_deref(),
            tool_calls: step
                .response_tool_calls
                .iter()
                .map(|c| (c.name.as_str(), c.arguments.as_str()))
                .collect(),
        };
        for rule in &self.rules {
            if let Some(v) = rule.evaluate(&input) {
                out.push(self.reward(&target, &rule.source, &rule.version, v.value, v.details));
            }
        }
        if let Some(value) = step.reward {
            out.push(self.reward(&target, CLIENT_SOURCE, CLIENT_VERSION, value, Value::Null));
        }
        if let (Some(previous), Some(classifier)) = (&step.previous_step_id, &self.implicit)
            && let Some(text) = feedback::follow_up_text(&step.messages)
        {
            let signal = classifier.classify(&text).await?;
            let on_previous = Target {
                step_id: Some(previous),
                ..target
            };
            out.push(self.reward(
                &on_previous,
                feedback::IMPLICIT_SOURCE,
                &classifier.version,
                feedback::implicit_value(signal, &self.implicit_config),
                json!({"signal": feedback::signal_name(signal), "message": truncate(&text, 200)}),
            ));
        }
        Ok(out)
    }

    /// Explicit (or gateway-classified implicit) feedback: one reward on the step, or on the whole
    /// trajectory when the feedback names no step. A comment alone gives none.
    pub fn score_feedback(&self, fb: &FeedbackReceived) -> Vec<RewardAssigned> {
        let Some((source, value, details)) =
            feedback::explicit_reward(fb, &self.feedback, &self.implicit_config)
        else {
            return Vec::new();
        };
        let target = Target {
            tenant: &fb.tenant,
            channel: None,
            trajectory_uid: &fb.trajectory_uid,
            step_id: fb.step_id.as_deref(),
            caused_by: &fb.envelope.event_id,
        };
        vec![self.reward(&target, source, "v1", value, details)]
    }

    /// A completion that carries the client's final reward (Claw-R1's `complete_trajectory`).
    pub fn score_completion(&self, done: &TrajectoryCompleted) -> Vec<RewardAssigned> {
        let Some(value) = done.reward else {
            return Vec::new();
        };
        let target = Target {
            tenant: &done.tenant,
            channel: Some(&done.channel),
            trajectory_uid: &done.trajectory_uid,
            step_id: None,
            caused_by: &done.envelope.event_id,
        };
        vec![self.reward(
            &target,
            CLIENT_SOURCE,
            CLIENT_VERSION,
            value,
            json!({"reason": done.reason}),
        )]
    }

    /// Claw-R1's `/compute_reward`: the ground-truth rule's verdict when the dataset gives a ground
    /// truth, else the mean of the reward models, else the first rule that applies, else 0.
    pub async fn compute(&self, req: ComputeRequest) -> Result<ComputeResponse, String> {
        let response = req
            .response_text
            .clone()
            .ok_or("no response_text: the gateway needs --tokenizer to decode response_ids")?;
        // (The ground-truth rule also finds it under verl's `reward_model`.)
        let metadata = Value::Object(req.dataset_fields.clone().unwrap_or_default());
        let input = RuleInput {
            response: &response,
            response_tokens: req.response_ids.as_ref().map(Vec::len),
            metadata: Some(&metadata),
            tools_json: None,
            tool_calls: Vec::new(),
        };
        let mut extra = Map::new();
        let mut ground_truth = None;
        let mut first_rule = None;
        for rule in &self.rules {
            if let Some(v) = rule.evaluate(&input) {
                extra.insert(rule.source.clone(), json!(v.value));
                if rule.is_ground_truth() && ground_truth.is_none() {
                    ground_truth = Some((rule.source.clone(), v.value));
                }
                first_rule.get_or_insert((rule.source.clone(), v.value));
            }
        }
        let mut model_values = Vec::new();
        for (model, cfg) in &self.models {
            let text = match cfg.text {
                TextMode::Response => response.clone(),
                TextMode::Conversation => format!(
                    "{}\nassistant: {response}",
                    req.prompt_text.as_deref().unwrap_or_default()
                ),
            };
            let value = if response.trim().is_empty() {
                cfg.empty_value
            } else {
                model.score(text).await?.0
            };
            extra.insert(model.source.clone(), json!(value));
            model_values.push(value);
        }
        let (basis, score) = if let Some((source, v)) = ground_truth {
            (source, v)
        } else if !model_values.is_empty() {
            (
                "reward_models".to_string(),
                model_values.iter().sum::<f64>() / model_values.len() as f64,
            )
        } else if let Some((source, v)) = first_rule {
            (source, v)
        } else {
            ("none".to_string(), 0.0)
        };
        extra.insert("basis".into(), json!(basis));
        Ok(ComputeResponse {
            reward_score: score,
            reward_extra_info: extra,
        })
    }
}

/// Claw-R1's `/compute_reward` body, plus the texts the gateway decoded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComputeRequest {
    #[serde(default)]
    pub prompt_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub response_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub prompt_text: Option<String>,
    #[serde(default)]
    pub response_text: Option<String>,
    #[serde(default)]
    pub num_turns: Option<u32>,
    #[serde(default)]
    pub extra_fields: Option<Map<String, Value>>,
    #[serde(default)]
    pub dataset_fields: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeResponse {
    pub reward_score: f64,
    pub reward_extra_info: Map<String, Value>,
}

/// The answer as a reward model reads it: the text, then each tool call as `name(arguments)`.
pub fn response_text(step: &StepRecorded) -> String {
    let mut text = step.response_text.clone();
    for call in &step.response_tool_calls {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&call.name);
        text.push('(');
        text.push_str(&call.arguments);
        text.push(')');
    }
    text
}

/// The conversation as `role: content` lines, then the answer.
pub fn conversation_text(messages: &[Message], response: &str) -> String {
    let mut text = String::new();
    for m in messages {
        text.push_str(&m.role);
        text.push_str(": ");
        text.push_str(m.content.as_deref().unwrap_or_default());
        text.push('\n');
    }
    text.push_str("assistant: ");
    text.push_str(response);
    text
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
