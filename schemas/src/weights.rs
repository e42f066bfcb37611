//! `WeightsPublished`: a new policy version the trainer stored in the `weights` object store.
//! Produced by the trainer; consumed by the broadcaster (activation) and the archive. Its id derives
//! from the version and the file's sha256, so a trainer that re-publishes the same version after a
//! crash (same bytes, from its checkpoint) is dropped as a duplicate.
//!
//! `TrainingMetrics`: one optimizer update, on core NATS (`clawline.metrics.training`, JSON) for
//! the dashboard; not stored.

use serde::{Deserialize, Serialize};

use crate::event;

/// What the published file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFormat {
    /// Every weight of the model, HF tensor names (`model.safetensors`).
    #[default]
    Full,
    /// LoRA adapters in the PEFT layout (`adapter_model.safetensors`); `lora` says how to apply
    /// them.
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
    /// Mean over the updates of KL(serving ‖ updated) on each batch's response tokens (k3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_serving: Option<f64>,
    /// KL(these weights ‖ base model) on the last batch's response positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_base: Option<f64>,
    /// How much less likely to the base model these weights' next tokens are than the base's own
    /// (cross-entropy to the base minus its entropy), on the same positions as `kl_base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_base: Option<f64>,
    /// Updates undone since the parent for leaving `--max-kl-serving` (their batches are not in
    /// `batch_ids`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoffs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

event! {
    kind = "weights_published";
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct WeightsPublished {
        /// `WeightsPublished::id_for(version, sha256)`.
        pub envelope: Envelope,

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
        /// The batches trained since `parent`, in the order trained, and their BATCHES sequence
        /// range.
        #[serde(default)]
        pub batch_ids: Vec<String>,
        #[serde(default)]
        pub first_batch_seq: u64,
        #[serde(default)]
        pub last_batch_seq: u64,
        #[serde(default)]
        pub metrics: TrainingSummary,
    }
}

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
    /// KL(serving ‖ updated) on the batch's response tokens (k3), measured after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_serving: Option<f64>,
    /// KL(updated ‖ base model), measured when the update completes a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_base: Option<f64>,
    /// Drift from the base model (see `TrainingSummary::drift_base`), measured with `kl_base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_base: Option<f64>,
    /// The update left `--max-kl-serving` and was undone (the batch is acked, not learned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backed_off: bool,
    /// Updates undone since the trainer's first checkpoint.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoffs: u64,
    /// The learning rate this update ran with (`--lr` halved per backoff in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

/// The result of a canary evaluation: mean reward of each version's answers to the same prompts,
/// and (`quality`) how well the candidate still speaks.
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
    /// Language quality, measured without the reward models (absent in events of broadcasters
    /// from before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<CanaryQuality>,
}

/// How well a candidate still speaks, against the serving version: the likelihood of reference
/// answers, the divergence from the serving version on its own answers, and how often sampled
/// answers are degenerate. Each has a limit; exceeding any rejects the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CanaryQuality {
    /// Mean negative log-likelihood per token (nats) of the reference answers given their
    /// prompts (teacher-forced, chat template, end-of-turn token included).
    pub candidate_nll: f64,
    pub serving_nll: f64,
    /// Reference tokens the means are over.
    pub reference_tokens: u32,
    /// How much higher than the serving version's the candidate's NLL may be.
    pub max_nll_increase: f64,
    /// KL(serving ‖ candidate) per token, estimated (k3) on the serving version's sampled answers.
    pub kl: f64,
    /// Tokens the KL estimate is over.
    pub kl_tokens: u32,
    pub max_kl: f64,
    /// Shares of each version's sampled answers that are degenerate, by kind.
    pub candidate_degenerate: DegenerateShares,
    pub serving_degenerate: DegenerateShares,
    /// How much higher than the serving version's any of these shares may be.
    pub max_degenerate_increase: f64,
    /// How plausible the base (starting) model finds the candidate's language: the mean
    /// cross-entropy per token of the candidate's next-token distribution to the base model's,
    /// exactly over the vocabulary, at the positions of the base model's own sampled answers to
    /// the evaluation prompts (the same positions for every candidate: no sampling noise).
    /// Anchored to the base, so drift that each version's comparison with its parent lets
    /// through still adds up here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_fluency: Option<f64>,
    /// The base model's entropy at the same positions (its own cross-entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fluency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fluency_increase: Option<f64>,
}

/// Shares (0–1) of sampled answers with a sign of broken language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DegenerateShares {
    /// A word 3-gram repeated within a sentence, or a sentence repeated.
    pub repetition: f64,
    /// Chat markup (`<|…|>`) or an added special token's text.
    pub special_tokens: f64,
    /// A control character other than newline, tab and carriage return.
    pub control_chars: f64,
    /// U+FFFD: bytes that do not decode as UTF-8.
    pub replacement_chars: f64,
    /// Cut off at the token limit instead of ending.
    pub cut_off: f64,
}

event! {
    kind = "weights_activated";
    /// A version now serving on one engine. Produced by the broadcaster.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct WeightsActivated {
        pub envelope: Envelope,

        pub version: u64,
        /// The engine's name in the broadcaster's configuration.
        pub engine: String,
        pub sha256: String,
        /// Why it was activated: `published` (a new version), `activate` / `rollback` (an
        /// operator), `restore` (the engine restarted without it and got it back).
        pub reason: String,
        /// Seconds from the version's `WeightsPublished` to this engine serving it (`restore`: the
        /// re-activation's own duration).
        #[serde(default)]
        pub seconds: f64,
        #[serde(default)]
        pub canary: Option<CanaryResult>,
    }
}

event! {
    kind = "weights_rejected";
    /// A version an engine did not take (integrity, canary, the engine refused), the old one
    /// serving.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct WeightsRejected {
        pub envelope: Envelope,

        pub version: u64,
        pub engine: String,
        pub sha256: String,
        pub reason: String,
        #[serde(default)]
        pub canary: Option<CanaryResult>,
    }
}
