//! clawline-model — the policy: a Llama-family decoder in tch (RMSNorm, rotary embeddings,
//! grouped-query attention, SwiGLU) that reads and writes the Hugging Face layout, generation
//! with a KV cache, and per-token logprobs. Shared by the trainer and the policy server, so the
//! logprobs a response carries and the ones training recomputes come from the same code.
//!
//! Owns: the model's math, its weights format, sampling. Must not know about NATS or HTTP.

mod attention;
pub mod config;
pub mod generate;
pub mod init;
mod keys;
mod layers;
pub mod llama;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod rope;
pub mod weights;

pub use config::LlamaConfig;
pub use generate::{Finish, Generated, Request, Sampling, generate, generate_with};
pub use llama::{KvCache, Llama};
pub use lora::LoraConfig;
pub use loss::{
    Divergence, KlPenalty, LossConfig, Metrics, Sample, divergence_from_reference, kl_to_behaviour,
    update,
};
pub use optim::{AdamW, Optimizer, Undo};
pub use weights::Loaded;

/// `cpu`, `cuda` (the first GPU) or `auto` (CUDA when available).
pub fn device(name: &str) -> anyhow::Result<tch::Device> {
    match name {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => {
            anyhow::ensure!(
                tch::Cuda::is_available(),
                "--device cuda: no CUDA device (or a build without libtorch's CUDA library: build \
                 with CLAWLINE_TORCH_CUDA=1)"
            );
            Ok(tch::Device::Cuda(0))
        }
        "auto" => Ok(tch::Device::cuda_if_available()),
        other => anyhow::bail!("--device {other}: expected cpu, cuda or auto"),
    }
}
