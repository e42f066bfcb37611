//! `config.json` in the Hugging Face layout for Llama-family decoders (`llama`, `qwen2`, `qwen3`,
//! `mistral`): the fields this implementation reads, with the defaults transformers uses, as
//! transformers 4.x writes them (`rope_theta`, `rope_scaling`) and as 5.x does
//! (`rope_parameters`, `dtype`). A key this implementation does not know is an error naming it,
//! never dropped: a dropped key is a silently different model (`keys`).

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use crate::rope::RopeScaling;

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
    /// RoPE scaling (`linear`, `llama3`, `yarn`); `None` or `default`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections: q/k/v for Qwen2 (on by default), q/k/v/o for
    /// Llama and Qwen3 (off by default).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Biases on the MLP projections (Llama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// Keys a query sees at most, itself included (Mistral: every layer; Qwen2/3: the layers
    /// `layer_types` or `use_sliding_window` and `max_window_layers` say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
    /// `full_attention` / `sliding_attention` per layer (transformers ≥ 4.53 writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
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
            rope_scaling: None,
            max_position_embeddings: 1024,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            mlp_bias: None,
            sliding_window: None,
            use_sliding_window: None,
            max_window_layers: None,
            layer_types: None,
            hidden_act: "silu".into(),
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: "float32".into(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}: unsupported model config", path.display()))
    }

    /// A `config.json`'s text: every key checked (`keys`), transformers 5's layout read.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let raw: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        let serde_json::Value::Object(map) = raw else {
            anyhow::bail!("not a JSON object");
        };
        let map = crate::keys::normalize(map)?;
        let config: Self =
            serde_json::from_value(serde_json::Value::Object(map)).context("not a model config")?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(
                self.model_type.as_str(),
                "llama" | "qwen2" | "qwen3" | "mistral"
            ),
            "model_type {:?} (llama, qwen2, qwen3 and mistral are supported)",
            self.model_type
        );
        anyhow::ensure!(
            self.hidden_act == "silu",
            "hidden_act {:?} (silu only)",
            self.hidden_act
        );
        anyhow::ensure!(
            self.num_attention_heads > 0
                && self.kv_heads() > 0
                && self.num_attention_heads.is_multiple_of(self.kv_heads()),
            "num_attention_heads {} is not a multiple of num_key_value_heads {}",
            self.num_attention_heads,
            self.kv_heads()
        );
        anyhow::ensure!(
            self.head_size() > 0 && self.head_size().is_multiple_of(2),
            "head_dim must be even (rotary embeddings)"
        );
        anyhow::ensure!(
            self.vocab_size > 0 && self.num_hidden_layers > 0,
            "empty model"
        );
        if let Some(types) = &self.layer_types {
            anyhow::ensure!(
                types.len() == self.num_hidden_layers,
                "layer_types has {} entries for {} layers",
                types.len(),
                self.num_hidden_layers
            );
            if let Some(bad) = types
                .iter()
                .find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention"))
            {
                anyhow::bail!("layer_types: {bad:?} (full_attention and sliding_attention only)");
            }
        }
        anyhow::ensure!(
            self.sliding_window != Some(0),
            "sliding_window must be at least 1"
        );
        if let Some(s) = &self.rope_scaling {
            s.check().context("rope_scaling")?;
        }
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

    /// A bias on `o_proj`: Llama's and Qwen3's `attention_bias` (Qwen2 and Mistral have none).
    pub fn o_bias(&self) -> bool {
        matches!(self.model_type.as_str(), "llama" | "qwen3") && self.attention_bias == Some(true)
    }

    /// Biases on the MLP projections (Llama's `mlp_bias`).
    pub fn mlp_bias(&self) -> bool {
        self.mlp_bias == Some(true)
    }

    /// RMSNorm of each head's queries and keys before the rotary embedding (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// The sliding window of layer `layer`, if it has one.
    pub fn window_of(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window?;
        match self.model_type.as_str() {
            "mistral" => Some(window),
            // transformers drops the window unless `use_sliding_window`; then `layer_types`
            // names the sliding layers, or else those from `max_window_layers` (default 28) on.
            "qwen2" | "qwen3" if self.use_sliding_window == Some(true) => {
                let sliding = match &self.layer_types {
                    Some(types) => types[layer] == "sliding_attention",
                    None => layer >= self.max_window_layers.unwrap_or(28),
                };
                sliding.then_some(window)
            }
            _ => None,
        }
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(EosTokens::One(id)) => vec![*id],
            Some(EosTokens::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }
}
