//! What the batcher service runs with: plain settings (`clawline up` and tests build them directly)
//! and the `clawline-batcher` flags that fill them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

/// What the batcher runs with (batching rules live in the TOML file `config`); `clawline up` and
/// tests build it directly.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub nats: NatsArgs,
    /// TOML file with channels, reward readiness, completion, staleness and queue settings.
    pub config: Option<PathBuf>,
}

/// `/stats` and `/healthz`.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8102);

/// `clawline-batcher` flags; batching rules live in the TOML file (`--config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-batcher",
    version,
    about = "Forms training batches from the clawline event log"
)]
pub struct Args {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// TOML file with channels, reward readiness, completion, staleness and queue settings.
    #[arg(long, env = "CLAWLINE_BATCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of `/stats` and `/healthz`.
    #[arg(long, env = "CLAWLINE_BATCHER_LISTEN", default_value_t = LISTEN)]
    pub listen: SocketAddr,
}

impl Args {
    pub fn settings(self) -> Settings {
        Settings {
            nats: self.nats,
            config: self.config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the settings' defaults (`clawline up` builds settings, the binary
    /// parses flags: the two must start the same service).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let parsed = Args::try_parse_from(["clawline-batcher"])
            .expect("flags")
            .settings();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::default()));
    }
}
