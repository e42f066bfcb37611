//! `config.json` in the Hugging Face layout for Llama-family decoders (`llama`, `qwen2`,
//! `mistral`): the fields this implementation reads, with the defaults transformers uses.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: key/value heads (defaults to `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (Qwen2 has them; Llama has not).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<EosTokens>,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
}

/// `eos_token_id` is a number or a list of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EosTokens {
    One(u32),
    Many(Vec<u32>),
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_positions() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}
fn default_dtype() -> String {
    "float32".into()
}

impl LlamaConfig {
    /// A tiny model that trains and serves on two CPU cores (about 1.3 M parameters at
    /// `vocab_size` 2048).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            model_type: "llama".into(),
            architectures: default_architectures(),
            vocab_size,
            hidden_size: 128,
            intermediate_size: 344,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 1024,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            hidden_act: "silu".into(),
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: "float32".into(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a model config", path.display()))?;
        config
            .check()
            .with_context(|| format!("{}: unsupported model config", path.display()))?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral"),
            "model_type {:?} (llama, qwen2 and mistral are supported)",
            self.model_type
        );
        anyhow::ensure!(
            self.hidden_act == "silu",
            "hidden_act {:?} (silu only)",
            self.hidden_act
        );
        anyhow::ensure!(
            self.num_attention_heads > 0
                && self.num_attention_heads.is_multiple_of(self.kv_heads()),
            "num_attention_heads {} is not a multiple of num_key_value_heads {}",
            self.num_attention_heads,
            self.kv_heads()
        );
        anyhow::ensure!(
            self.head_size().is_multiple_of(2),
            "head_dim must be even (rotary embeddings)"
        );
        anyhow::ensure!(
            self.vocab_size > 0 && self.num_hidden_layers > 0,
            "empty model"
        );
        Ok(())
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// q/k/v biases: explicit, or Qwen2's default (on).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(EosTokens::One(id)) => vec![*id],
            Some(EosTokens::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }
}
