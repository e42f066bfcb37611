//! clawline-nats — where every event lives on JetStream, and how to put it there.
//!
//! The topology table (subject → stream → payload → who reads it):
//!
//! | subject | stream | payload | consumers |
//! | --- | --- | --- | --- |
//! | `clawline.steps.<channel>` | `STEPS` | `StepRecorded` | reward, batcher, archiver |
//! | `clawline.trajectories.registered` | `TRAJECTORIES` | `TrajectoryRegistered` | reward, batcher, archiver |
//! | `clawline.trajectories.completed` | `TRAJECTORIES` | `TrajectoryCompleted` | batcher, archiver |
//! | `clawline.trajectories.feedback` | `TRAJECTORIES` | `FeedbackReceived` | reward, archiver |
//! | `clawline.rewards.<source kind>` | `REWARDS` | `RewardAssigned` | batcher, archiver |
//! | `clawline.batches.<channel>` | `BATCHES` | `BatchFormed` | trainer, archiver |
//! | `clawline.weights.{published,activated,rejected}` | `WEIGHTS` | weights events | broadcaster, archiver |
//!
//! Plus the object store `weights` (safetensors) and the KV bucket `state` (`policy.version`).
//!
//! Owns the names and the stream definitions (topology is code; runtime knobs are config),
//! `ensure_topology`, and publish helpers that set `Nats-Msg-Id` and await the ack. Must not hold any
//! service logic. Feature `testing` adds the per-test `NatsServer` harness.

mod answer;
pub mod buckets;
mod consumer;
mod event;
mod follow;
pub mod server;
pub mod streams;
pub mod subjects;
mod topology;

#[cfg(feature = "testing")]
pub mod testing;

pub use answer::{answer_on, round_trip};
pub use consumer::{
    DurableSpec, STALL_CHECK, durable_consumer, durable_consumer_after, last_sequence,
};
pub use event::{PublishError, decode_message, publish_event, publish_raw};
pub use follow::{Delivered, Follower, Refused};
pub use topology::{TopologyError, TopologyOptions, ensure_topology};

pub use async_nats;
