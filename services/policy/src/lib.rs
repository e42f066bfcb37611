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
mod service;
pub mod settings;
mod text;

pub use engine::{Engine, Event};
pub use service::run;
pub use settings::{Args, Settings};
