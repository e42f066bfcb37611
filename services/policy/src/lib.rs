//! clawline-policy — the built-in serving engine: a `clawline-model` policy behind the OpenAI
//! API the way vLLM serves it (`/v1/chat/completions`, `/v1/completions`, streaming or not,
//! `return_token_ids`, per-token logprobs), so the gateway's exact-token path works against it
//! unchanged. Each response names the weight version that produced it
//! (`x-clawline-policy-version`); `POST /admin/weights` loads a version beside the current one and
//! swaps it in between batches, so no request fails.
//!
//! Owns: serving and weight swaps. Must not train or publish events.

mod engine;
mod http;
mod reply;
mod text;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{CancellationToken, LogArgs};

pub use engine::{Engine, Event};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-policy",
    version,
    about = "Serves a clawline policy model over the OpenAI API"
)]
pub struct Config {
    #[command(flatten)]
    pub log: LogArgs,
    /// The model dir (Hugging Face layout: config.json, model.safetensors, tokenizer files).
    #[arg(long, env = "CLAWLINE_POLICY_MODEL")]
    pub model: PathBuf,
    #[arg(long, env = "CLAWLINE_POLICY_LISTEN", default_value = "127.0.0.1:8104")]
    pub listen: SocketAddr,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute precision: `auto` (bf16 on CUDA, f32 on the CPU), `float32` or `bfloat16`. In bf16
    /// the weights, activations and KV cache are bf16; RMSNorm, the attention softmax and the
    /// logits (every logprob, every sampling step) are f32, as in transformers.
    #[arg(long, env = "CLAWLINE_POLICY_DTYPE", default_value = "auto")]
    pub dtype: clawline_model::weights::Precision,
    /// Requests decoded together at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// The model name in responses and `/v1/models` (default: the model dir's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// The version label of the weights served at start.
    #[arg(long, default_value = "0")]
    pub weights_version: String,
    /// API key file (`KEY TENANT [admin]`); `/admin/weights` needs an admin key. Without it the
    /// server is open.
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    pub api_keys: Option<PathBuf>,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let app = http::App::load(&config)?;
    tracing::info!(
        listen = %config.listen,
        model = %config.model.display(),
        device = ?app.device,
        precision = ?app.kind,
        "policy server ready"
    );
    axum::serve(listener, app.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
