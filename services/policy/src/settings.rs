//! What the policy server runs with: plain settings (no flag parsing; `clawline up` and tests
//! build them directly), their defaults as named constants, and the `clawline-policy` flags that
//! fill them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use clawline_model::weights::Precision;
use clawline_runtime::LogArgs;

/// Where the policy server listens by default.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8104);
/// Requests decoded together at most, by default.
pub const MAX_BATCH: usize = 16;
/// The version label of the weights a server starts with, by default.
pub const WEIGHTS_VERSION: &str = "0";

#[derive(Debug, Clone)]
pub struct Settings {
    /// The model dir (Hugging Face layout: config.json, model.safetensors, tokenizer files).
    pub model: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// Compute precision (see the `--dtype` flag).
    pub dtype: Precision,
    /// Requests decoded together at most.
    pub max_batch: usize,
    /// The model name in responses and `/v1/models` (default: the model dir's name).
    pub served_model_name: Option<String>,
    /// The version label of the weights served at start.
    pub weights_version: String,
    /// API key file (`KEY TENANT [admin]`); without it the server is open.
    pub api_keys: Option<PathBuf>,
}

impl Settings {
    /// Serving `model` with every default.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            device: "auto".into(),
            dtype: Precision::Auto,
            max_batch: MAX_BATCH,
            served_model_name: None,
            weights_version: WEIGHTS_VERSION.into(),
            api_keys: None,
        }
    }
}

/// `clawline-policy` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-policy",
    version,
    about = "Serves a clawline policy model over the OpenAI API"
)]
pub struct Args {
    #[command(flatten)]
    pub log: LogArgs,
    /// The model dir (Hugging Face layout: config.json, model.safetensors, tokenizer files).
    #[arg(long, env = "CLAWLINE_POLICY_MODEL")]
    pub model: PathBuf,
    #[arg(long, env = "CLAWLINE_POLICY_LISTEN", default_value_t = LISTEN)]
    pub listen: SocketAddr,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute precision: `auto` (bf16 on CUDA, f32 on the CPU), `float32` or `bfloat16`. In bf16
    /// the weights, activations and KV cache are bf16; RMSNorm, the attention softmax and the
    /// logits (every logprob, every sampling step) are f32, as in transformers.
    #[arg(long, env = "CLAWLINE_POLICY_DTYPE", default_value = "auto")]
    pub dtype: Precision,
    /// Requests decoded together at most.
    #[arg(long, default_value_t = MAX_BATCH)]
    pub max_batch: usize,
    /// The model name in responses and `/v1/models` (default: the model dir's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// The version label of the weights served at start.
    #[arg(long, default_value = WEIGHTS_VERSION)]
    pub weights_version: String,
    /// API key file (`KEY TENANT [admin]`); `/admin/weights` needs an admin key. Without it the
    /// server is open.
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    pub api_keys: Option<PathBuf>,
}

impl Args {
    pub fn settings(self) -> Settings {
        Settings {
            model: self.model,
            device: self.device,
            dtype: self.dtype,
            max_batch: self.max_batch,
            served_model_name: self.served_model_name,
            weights_version: self.weights_version,
            api_keys: self.api_keys,
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
        let parsed = Args::try_parse_from(["clawline-policy", "--model", "m"])
            .expect("flags")
            .settings();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::new("m")));
    }
}
