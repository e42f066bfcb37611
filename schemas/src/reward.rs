//! `RewardAssigned`: one score for one step (or a whole trajectory) from one source. Produced by the
//! reward scorer; consumed by the batcher, which decides how sources combine. A step is never
//! mutated: a new opinion about it is a new event.

use serde::{Deserialize, Serialize};

use crate::event;

/// What a reward is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RewardScope {
    /// One step: `step_id` is set.
    #[default]
    Step,
    /// Every step of `trajectory_uid` (the batcher broadcasts it to the steps it knows).
    Trajectory,
}

event! {
    kind = "reward_assigned";
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct RewardAssigned {
        /// `RewardAssigned::id_for(cause, source, source_version)`, so a re-scored step stores
        /// once.
        pub envelope: Envelope,

        pub tenant: String,
        /// The channel of the scored step, when the scorer knows it (feedback events do not carry
        /// one).
        #[serde(default)]
        pub channel: Option<String>,
        pub trajectory_uid: String,
        #[serde(default)]
        pub scope: RewardScope,
        /// The scored step (scope `step`).
        #[serde(default)]
        pub step_id: Option<String>,
        /// Who scored: `rm:<name>@<sha8>`, `rule:<name>`, `feedback:explicit`, `feedback:implicit`,
        /// `client` (a reward the client sent with a step or a completion).
        pub source: String,
        /// The version of the source: the model file's sha256 (first 16 hex), a hash of a rule's
        /// configuration, or the mapping version for feedback.
        #[serde(default)]
        pub source_version: String,
        pub value: f64,
        /// The event that caused this reward (a step, a feedback or a completion event id).
        pub caused_by: String,
        /// Source-specific details as JSON (raw logits, the extracted answer, the matched pattern,
        /// …).
        #[serde(default)]
        pub details: Option<serde_json::Value>,
    }
}

impl RewardAssigned {
    /// The id of a reward from what identifies it: the causing event, the source and its version.
    /// A restarted scorer derives the same ids and JetStream drops the duplicates.
    pub fn id_for(caused_by: &str, source: &str, source_version: &str) -> String {
        crate::derived_id("rwd", &[caused_by, source, source_version])
    }
}
