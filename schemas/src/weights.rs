//! `WeightsPublished`: a new policy version the trainer stored in the `weights` object store.
//! Produced by the trainer; consumed by the broadcaster (activation) and the archive. Its id derives
//! from the version and the file's sha256, so a trainer that re-publishes the same version after a
//! crash (same bytes, from its checkpoint) is dropped as a duplicate.
//!
//! `TrainingMetrics`: one optimizer update, on core NATS (`clawline.metrics.training`, JSON) for
//! the dashboard; not stored.

use serde::{Deserialize, Serialize};

use crate::impl_event;

/// What the published file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFormat {
    /// Every weight of the model, HF tensor names (`model.safetensors`).
    #[default]
    Full,
    /// LoRA adapters in the PEFT layout (`adapter_model.safetensors`); `lora` says how to apply them.
    Lora,
}

/// The adapter settings a LoRA version needs beside its file (PEFT's `adapter_config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoraAdapter {
    pub r: u32,
    pub alpha: f64,
    pub target_modules: Vec<String>,
}

/// Training since the parent version: totals, and means over its updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingSummary {
    pub updates: u64,
    pub steps: u64,
    pub tokens: u64,
    pub loss: f64,
    pub policy_loss: f64,
    pub ratio_mean: f64,
    pub clip_fraction: f64,
    pub kl: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub reward_mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WeightsPublished {
    /// `WeightsPublished::id_for(version, sha256)`.
    pub event_id: String,
    pub event_time: i64,
    pub producer: String,
    pub schema_version: u16,

    pub version: u64,
    /// The version these weights were trained from (0: the base model).
    pub parent: u64,
    pub format: WeightsFormat,
    /// Where the file is: object `object` in the JetStream object store `bucket`.
    pub bucket: String,
    pub object: String,
    /// Hex sha256 and byte size of the file.
    pub sha256: String,
    pub size: u64,
    /// The base model the weights belong to (its directory name or id).
    pub base_model: String,
    #[serde(default)]
    pub lora: Option<LoraAdapter>,
    /// The batches trained since `parent`, in the order trained, and their BATCHES sequence range.
    #[serde(default)]
    pub batch_ids: Vec<String>,
    #[serde(default)]
    pub first_batch_seq: u64,
    #[serde(default)]
    pub last_batch_seq: u64,
    #[serde(default)]
    pub metrics: TrainingSummary,
}

impl_event!(WeightsPublished, "weights_published");

impl WeightsPublished {
    pub fn id_for(version: u64, sha256: &str) -> String {
        crate::derived_id("wts", &[&version.to_string(), sha256])
    }
}

/// One optimizer update, as the dashboard sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingMetrics {
    pub event_time: i64,
    pub batch_id: String,
    pub batch_seq: u64,
    pub channel: String,
    /// The last published version; this update goes into the next one.
    pub version: u64,
    /// Updates since the trainer's first checkpoint.
    pub update: u64,
    pub steps: u64,
    /// Steps of the batch left out (empty response, token outside the vocabulary, too long, …).
    pub skipped_steps: u64,
    pub tokens: u64,
    pub loss: f64,
    pub policy_loss: f64,
    pub ratio_mean: f64,
    pub clip_fraction: f64,
    pub kl: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub reward_mean: f64,
    pub staleness_mean: f64,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// The result of a canary evaluation: mean reward of each version's answers to the same prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CanaryResult {
    /// Answers rated per version (prompts × samples).
    pub prompts: u32,
    pub candidate_reward: f64,
    pub serving_reward: f64,
    /// The serving version compared against.
    pub serving_version: u64,
    /// How much worse than the serving version the candidate may score and still be promoted.
    pub tolerance: f64,
}

/// A version now serving on one engine. Produced by the broadcaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WeightsActivated {
    pub event_id: String,
    pub event_time: i64,
    pub producer: String,
    pub schema_version: u16,

    pub version: u64,
    /// The engine's name in the broadcaster's configuration.
    pub engine: String,
    pub sha256: String,
    /// Why it was activated: `published` (a new version), `activate` / `rollback` (an operator),
    /// `restore` (the engine restarted without it and got it back).
    pub reason: String,
    /// Seconds from the version's `WeightsPublished` to this engine serving it (`restore`: the
    /// re-activation's own duration).
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub canary: Option<CanaryResult>,
}

impl_event!(WeightsActivated, "weights_activated");

/// A version an engine did not take (integrity, canary, the engine refused), the old one serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WeightsRejected {
    pub event_id: String,
    pub event_time: i64,
    pub producer: String,
    pub schema_version: u16,

    pub version: u64,
    pub engine: String,
    pub sha256: String,
    pub reason: String,
    #[serde(default)]
    pub canary: Option<CanaryResult>,
}

impl_event!(WeightsRejected, "weights_rejected");
