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

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

pub use service::{Stats, run};

/// `clawline-batcher` flags; batching rules live in the TOML file (`--config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-batcher",
    version,
    about = "Forms training batches from the clawline event log"
)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// TOML file with channels, reward readiness, completion, staleness and queue settings.
    #[arg(long, env = "CLAWLINE_BATCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of `/stats` and `/healthz`.
    #[arg(
        long,
        env = "CLAWLINE_BATCHER_LISTEN",
        default_value = "127.0.0.1:8102"
    )]
    pub listen: SocketAddr,
}
