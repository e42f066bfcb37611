//! clawline-trainer — learns from the batches the batcher forms and publishes weight versions.
//!
//! Reads BATCHES with a durable consumer (`clawline.batches.<channel>`), turns each batch's steps
//! into policy-gradient samples (GRPO / PPO-clip on the behaviour logprobs the steps carry), runs one
//! AdamW update per batch, and every `--publish-every` updates stores a version in the `weights`
//! object store with a `WeightsPublished` event. Training metrics go to
//! `clawline.metrics.training` (core NATS, JSON).
//!
//! Exactly once: a checkpoint (weights, optimizer state, the last trained batch's stream sequence,
//! the version being published) is written before any batch it covers is acked; at start the
//! durable consumer is recreated to begin right after the checkpoint's sequence, and a batch at or
//! below it is acked without training. A killed trainer resumes from its checkpoint and trains
//! every batch once.
//!
//! Owns: the update, checkpoints, version numbering. Must not serve requests or activate weights
//! (the broadcaster does).

mod checkpoint;
mod learner;
mod metrics;
mod publish;
mod realign;
mod service;
pub mod settings;
mod trust;

pub use checkpoint::{Checkpoints, State};
pub use learner::{Learner, Trained};
pub use service::run;
pub use settings::{Args, Settings};
pub use trust::{Backoff, Bounds};
