//! What the reward service runs with: plain settings (`clawline up` and tests build them directly)
//! and the `clawline-reward` flags that fill them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

/// What the reward service runs with (the scoring itself is configured in the TOML file
/// `config`); `clawline up` and tests build it directly.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub nats: NatsArgs,
    /// TOML file with models, rules, feedback mapping and consumer settings (all optional).
    pub config: Option<PathBuf>,
    /// Reward model export directories by name; added to the models of `config`, and replace the
    /// bundled model.
    pub models: Vec<(String, PathBuf)>,
    /// The ONNX Runtime shared library; default: `ORT_DYLIB_PATH`, else where
    /// `scripts/setup.sh` installs it.
    pub ort_library: Option<PathBuf>,
}

/// `/metrics` and `/healthz`.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8101);

/// `clawline-reward` flags; the scoring itself is configured in the TOML file (`--config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-reward",
    version,
    about = "Scores clawline steps and feedback into reward events"
)]
pub struct Args {
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
    #[arg(long, env = "CLAWLINE_REWARD_LISTEN", default_value_t = LISTEN)]
    pub listen: SocketAddr,
}

impl Args {
    pub fn settings(self) -> Settings {
        Settings {
            nats: self.nats,
            config: self.config,
            models: self.models,
            ort_library: self.ort_library,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the settings' defaults (`clawline up` builds settings, the binary
    /// parses flags: the two must start the same service).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let parsed = Args::try_parse_from(["clawline-reward"])
            .expect("flags")
            .settings();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::default()));
    }
}
