//! clawline-batcher — Claw-R1's DataPool rebuilt as a view over the event log.
//!
//! Reads STEPS, REWARDS, TRAJECTORIES (completions) and KV `policy.version`; publishes
//! `BatchFormed` to BATCHES (`clawline.batches.<channel>`) with ids derived from the member steps.
//! Its state is derived from the streams (BATCHES says what is consumed), so a crash loses nothing
//! and a restart forms no step into a second batch. Answers `get_statistics` on
//! `clawline.datapool.stats` and `GET /stats`.
//!
//! Owns: readiness (completion, required rewards, deadlines), grouping (prompt / window),
//! advantages, staleness, backpressure. Must not train or mutate events.

pub mod config;
mod follow;
pub mod pool;
mod service;
pub mod settings;

pub use service::{Stats, run};
pub use settings::{Args, Settings};
