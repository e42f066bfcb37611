//! clawline-broadcaster — puts the versions the trainer publishes into service.
//!
//! Consumes `clawline.weights.published` (durable). For each version: download it from the
//! `weights` object store into `--work-dir/v<N>/` with its size and sha256 checked, optionally gate
//! it with a canary evaluation against the serving version, activate it on every `--engine`, and
//! report `WeightsActivated` / `WeightsRejected` per engine. Once every engine serves it, KV
//! `policy.version` (and `policy.model` for engines that serve adapters under their own name) is
//! set. Operators activate any earlier version or roll back over `clawline.control.weights`
//! (`clawline weights …`).
//!
//! Owns: activation order, integrity, the canary gate, KV `policy.version`. Must not train.

mod canary;
mod control;
pub mod engine;
mod restore;
mod service;
pub mod settings;
mod versions;

pub use canary::{BUNDLED_PROMPTS, BUNDLED_REFERENCES, passes, regressions};
pub use control::{ControlReply, ControlRequest, EngineOutcome, History};
pub use engine::{EngineSpec, Kind};
pub use service::run;
pub use settings::{Args, Settings};
