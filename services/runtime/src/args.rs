//! Arg groups shared by every binary: flatten them into a service's `Config`.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL (JetStream enabled).
    #[arg(
        long = "nats-url",
        env = "CLAWLINE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// Stream replicas when this service creates the topology (1 on one machine, 3 on a cluster).
    #[arg(
        long = "nats-replicas",
        env = "CLAWLINE_NATS_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
}

impl NatsArgs {
    pub fn topology(&self) -> clawline_nats::TopologyOptions {
        clawline_nats::TopologyOptions {
            replicas: self.replicas,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object a line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long = "log-format", env = "CLAWLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is unset.
    #[arg(long = "log-level", env = "CLAWLINE_LOG_LEVEL", default_value = "info")]
    pub level: String,
}
