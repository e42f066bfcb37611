//! Trajectory lifecycle events. Produced by the gateway; consumed by the batcher (completion decides
//! readiness), the reward scorer (final rewards, ground truth in metadata) and the archiver.

use serde::{Deserialize, Serialize};

use crate::event;

event! {
    kind = "trajectory_registered";
    /// A trajectory was opened with its channel and metadata (`/init_trajectory`,
    /// `register_trajectory`).
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct TrajectoryRegistered {
        pub envelope: Envelope,

        pub tenant: String,
        pub channel: String,
        pub trajectory_uid: String,
        pub prompt_uid: String,
        /// Free-form metadata from the agent (e.g. `ground_truth`, `data_source`).
        #[serde(default)]
        pub metadata: Option<serde_json::Value>,
        #[serde(default)]
        pub policy_version: Option<u64>,
    }
}

/// Why a trajectory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompletionReason {
    /// The agent called `complete_trajectory`.
    #[default]
    Client,
    /// A white-box step arrived with `is_last`.
    LastStep,
    /// The gateway's session expired with no further call.
    IdleTimeout,
}

event! {
    kind = "trajectory_completed";
    /// A trajectory is finished; its last step is `last_step_index`.
    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct TrajectoryCompleted {
        /// Derived from (tenant, trajectory_uid): completing twice stores one event.
        pub envelope: Envelope,

        pub tenant: String,
        pub channel: String,
        pub trajectory_uid: String,
        #[serde(default)]
        pub prompt_uid: Option<String>,
        /// The final reward the agent attached, broadcast to the steps by the batcher.
        #[serde(default)]
        pub reward: Option<f64>,
        /// The index of the last step the gateway saw, when it saw any.
        #[serde(default)]
        pub last_step_index: Option<u32>,
        #[serde(default)]
        pub reason: CompletionReason,
    }
}

impl TrajectoryCompleted {
    pub fn id_for(tenant: &str, trajectory_uid: &str) -> String {
        crate::derived_id("tcm", &[tenant, trajectory_uid])
    }
}
