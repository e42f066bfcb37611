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

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};
use sha2::{Digest, Sha256};

pub use service::{Service, run};

/// `clawline-reward` flags; the scoring itself is configured in the TOML file (`--config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-reward",
    version,
    about = "Scores clawline steps and feedback into reward events"
)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// TOML file with models, rules, feedback mapping and consumer settings (all optional).
    #[arg(long, env = "CLAWLINE_REWARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// A reward model export directory (model.onnx, tokenizer.json, config.json), as NAME=DIR.
    /// Repeatable; adds to the models of `--config` and replaces the bundled model.
    #[arg(long = "model", value_name = "NAME=DIR", value_parser = parse_model_flag)]
    pub models: Vec<(String, PathBuf)>,
    /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0 from the `onnxruntime` wheel).
    /// Default: `ORT_DYLIB_PATH`, else where scripts/setup.sh installs it.
    #[arg(long = "ort-library", value_name = "FILE")]
    pub ort_library: Option<PathBuf>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "CLAWLINE_REWARD_LISTEN", default_value = "127.0.0.1:8101")]
    pub listen: SocketAddr,
}

fn parse_model_flag(text: &str) -> Result<(String, PathBuf), String> {
    let (name, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=DIR"))?;
    if !clawline_nats::subjects::is_valid_token(name) {
        return Err(format!("model name `{name}`: use 1-64 of [A-Za-z0-9_-]"));
    }
    Ok((name.to_string(), PathBuf::from(dir)))
}

/// First 16 hex of a sha256: versions of rules and classifiers.
pub(crate) fn short_sha(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}
