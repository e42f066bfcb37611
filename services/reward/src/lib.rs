//! clawline-reward — turns steps and feedback into `RewardAssigned` events.
//!
//! Reads STEPS (durable consumer `<durable>-steps`) and the feedback and completion subjects of
//! TRAJECTORIES (`<durable>-trajectories`); publishes one `RewardAssigned` per (input, source) to
//! REWARDS with an id derived from (input event, source, source version), and acks the input only
//! after every reward it caused is acked. Answers Claw-R1's `/compute_reward` (forwarded by the
//! gateway) on the core-NATS subject `clawline.reward.compute`.
//!
//! Owns: loading and checking reward models (ONNX Runtime), rules, the feedback mapping. Must not
//! mutate or republish steps.

pub mod config;
pub mod feedback;
pub mod guards;
pub mod model;
pub mod rules;
pub mod schema;
pub mod scorer;
mod service;
pub mod settings;

use sha2::{Digest, Sha256};

pub use service::{Service, run};
pub use settings::{Args, Settings};

/// First 16 hex of a sha256: versions of rules and classifiers.
pub(crate) fn short_sha(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}
