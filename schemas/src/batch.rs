//! `BatchFormed`: a training batch the batcher built from the event log. Produced by the batcher;
//! consumed by the trainer (and the archive). Its id derives from its member step ids, so a
//! restarted batcher that rebuilds the same batch publishes the same id and JetStream drops it.

use serde::{Deserialize, Serialize};

use crate::event;
use crate::step::TokenSource;

/// How the batch's groups were formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// GRPO: one group per prompt with n complete trajectories; advantages normalised in the group.
    Prompt,
    /// Live traffic: steps in readiness order; advantage against a running baseline.
    #[default]
    Window,
}

/// One group of the batch (a prompt's trajectories, or a window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BatchGroup {
    /// The prompt uid (prompt mode) or `window` (window mode).
    pub key: String,
    pub tenant: String,
    pub trajectories: u32,
    pub steps: u32,
    /// Mean and standard deviation of the rewards advantages were computed against.
    pub reward_mean: f64,
    pub reward_std: f64,
    /// The baseline subtracted (window mode), or the group mean (prompt mode).
    pub baseline: f64,
}

/// One step as the trainer needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BatchStep {
    pub step_id: String,
    pub tenant: String,
    pub trajectory_uid: String,
    pub prompt_uid: String,
    pub step_index: u32,
    /// Index into `BatchFormed::groups`.
    pub group: u32,
    pub token_source: TokenSource,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    /// The behaviour policy's logprob of each response token (absent when the engine gave none).
    #[serde(default)]
    pub old_logprobs: Option<Vec<f32>>,
    /// The combined reward (weighted sum of the sources).
    pub reward: f64,
    pub advantage: f64,
    /// Each source's value that went into `reward`, as `(source, value)`.
    #[serde(default)]
    pub rewards: Vec<(String, f64)>,
    /// The reward events used (provenance).
    #[serde(default)]
    pub reward_ids: Vec<String>,
    #[serde(default)]
    pub policy_version: Option<u64>,
    /// Policy versions between the one that produced the step and the one serving at batch time.
    #[serde(default)]
    pub staleness: u64,
    /// Upper bound on the importance ratio for a stale step kept under the `cap` policy.
    #[serde(default)]
    pub importance_cap: Option<f64>,
    /// The step's trajectory ended by timeout rather than by completion.
    #[serde(default)]
    pub truncated: bool,
    /// A second sample of an already trained step, carrying only feedback that arrived after the
    /// step's first batch (`reward_ids` name that feedback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

impl BatchStep {
    /// What identifies this sample in a batch: the step id, and for a late sample also the
    /// feedback it carries (a step trains once, and once more per late reaction).
    pub fn sample_key(&self) -> String {
        if self.late {
            format!("{}+{}", self.step_id, self.reward_ids.join("+"))
        } else {
            self.step_id.clone()
        }
    }
}

event! {
    kind = "batch_formed";
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct BatchFormed {
        /// `BatchFormed::id_for(step ids)`.
        pub envelope: Envelope,

        pub channel: String,
        #[serde(default)]
        pub mode: GroupMode,
        /// The policy version serving when the batch was formed (staleness is measured against it).
        #[serde(default)]
        pub policy_version: Option<u64>,
        pub groups: Vec<BatchGroup>,
        pub steps: Vec<BatchStep>,
    }
}

impl BatchFormed {
    /// The id of a batch from its member step ids, in any order.
    pub fn id_for<'a>(step_ids: impl IntoIterator<Item = &'a str>) -> String {
        let mut ids: Vec<&str> = step_ids.into_iter().collect();
        ids.sort_unstable();
        crate::derived_id("bat", &ids)
    }
}
