//! `FeedbackReceived`: what a user said about an answer, explicitly (thumbs, rating, correction) or
//! implicitly (their next message). Produced by the gateway, possibly long after the step; consumed
//! by the reward scorer, which turns it into `feedback:*` rewards.

use serde::{Deserialize, Serialize};

use crate::event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thumbs {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// The user or the app said it (`POST /v1/feedback`).
    #[default]
    Explicit,
    /// Inferred from how the conversation went on.
    Implicit,
}

/// The class of a follow-up message about the previous answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImplicitSignal {
    Correction,
    Thanks,
    FollowUp,
}

event! {
    kind = "feedback_received";
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct FeedbackReceived {
        pub envelope: Envelope,

        pub tenant: String,
        pub trajectory_uid: String,
        /// The step the feedback is about; `None` means the whole trajectory.
        #[serde(default)]
        pub step_id: Option<String>,
        #[serde(default)]
        pub step_index: Option<u32>,
        #[serde(default)]
        pub kind: FeedbackKind,
        #[serde(default)]
        pub thumbs: Option<Thumbs>,
        /// A rating in [0, 1] after normalisation (the gateway maps `rating` / `scale`).
        #[serde(default)]
        pub rating: Option<f64>,
        /// A better answer the user wrote.
        #[serde(default)]
        pub correction: Option<String>,
        #[serde(default)]
        pub comment: Option<String>,
        #[serde(default)]
        pub implicit: Option<ImplicitSignal>,
        #[serde(default)]
        pub metadata: Option<serde_json::Value>,
    }
}
