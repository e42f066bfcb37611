//! Stream definitions. Every stream is file-backed, so an acknowledged event survives a restart of
//! nats-server; replicas and the dedup window come from [`TopologyOptions`].

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::TopologyOptions;
use crate::subjects;

pub const STEPS: &str = "STEPS";
pub const TRAJECTORIES: &str = "TRAJECTORIES";
pub const REWARDS: &str = "REWARDS";
pub const BATCHES: &str = "BATCHES";
pub const WEIGHTS: &str = "WEIGHTS";

fn base(name: &str, subjects: Vec<String>, description: &str, opts: &TopologyOptions) -> Config {
    Config {
        name: name.to_string(),
        description: Some(description.to_string()),
        subjects,
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        // Never drop an event silently: a full stream refuses new ones, and the producer spools.
        discard: DiscardPolicy::New,
        num_replicas: opts.replicas,
        duplicate_window: opts.duplicate_window,
        max_message_size: opts.max_message_bytes,
        ..Default::default()
    }
}

/// Every captured LLM call: `clawline.steps.<channel>`.
pub fn steps(opts: &TopologyOptions) -> Config {
    base(
        STEPS,
        vec![format!("{}.>", subjects::STEPS_PREFIX)],
        "clawline: every captured LLM call (StepRecorded)",
        opts,
    )
}

/// Trajectory lifecycle and feedback.
pub fn trajectories(opts: &TopologyOptions) -> Config {
    base(
        TRAJECTORIES,
        vec!["clawline.trajectories.>".to_string()],
        "clawline: trajectory registered / completed, feedback",
        opts,
    )
}

/// One reward per (step, source).
pub fn rewards(opts: &TopologyOptions) -> Config {
    base(
        REWARDS,
        vec![format!("{}.>", subjects::REWARDS_PREFIX)],
        "clawline: RewardAssigned, one per step and source",
        opts,
    )
}

/// Training batches for the trainer.
pub fn batches(opts: &TopologyOptions) -> Config {
    base(
        BATCHES,
        vec![format!("{}.>", subjects::BATCHES_PREFIX)],
        "clawline: BatchFormed for the trainer",
        opts,
    )
}

/// Weight versions and their activation per engine.
pub fn weights(opts: &TopologyOptions) -> Config {
    let mut config = base(
        WEIGHTS,
        vec!["clawline.weights.>".to_string()],
        "clawline: weights published / activated / rejected",
        opts,
    );
    // Weight events are few and small; keep them forever regardless of the global window.
    config.duplicate_window = Duration::from_secs(24 * 3600);
    config
}

/// Every stream of the pipeline.
pub fn all(opts: &TopologyOptions) -> Vec<Config> {
    vec![
        steps(opts),
        trajectories(opts),
        rewards(opts),
        batches(opts),
        weights(opts),
    ]
}
