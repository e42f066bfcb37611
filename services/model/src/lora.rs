//! LoRA adapters in the PEFT layout (`adapter_config.json`, `adapter_model.safetensors` with
//! `base_model.model.…lora_A/B.weight` names), so vLLM and PEFT load what the trainer writes. The
//! base weights are frozen; only the adapters train; `merge_lora` folds them in for full-weight
//! engines.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use crate::config::LlamaConfig;
use crate::llama::{Llama, LoraSpec};
use crate::weights::{Loaded, load_weights, save_weights, seeded};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    #[serde(rename = "lora_alpha")]
    pub alpha: f64,
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl LoraConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        const KNOWN: [&str; 7] = [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ];
        anyhow::ensure!(self.r > 0, "LoRA rank r must be at least 1");
        anyhow::ensure!(
            !self.target_modules.is_empty(),
            "LoRA target_modules is empty"
        );
        if let Some(bad) = self
            .target_modules
            .iter()
            .find(|t| !KNOWN.contains(&t.as_str()))
        {
            anyhow::bail!("LoRA target module {bad:?} (known: {})", KNOWN.join(", "));
        }
        Ok(())
    }
}

impl Loaded {
    /// A model whose base (the weights in `vs`, frozen) is adapted by fresh LoRA adapters.
    pub fn with_fresh_lora(
        config: &LlamaConfig,
        lora: &LoraConfig,
        device: Device,
        seed: i64,
    ) -> anyhow::Result<Self> {
        lora.check()?;
        let base = Loaded::fresh(config, device, seed)?;
        Self::adapt(base, lora, seed)
    }

    /// `base` with fresh adapters; its own weights frozen.
    pub fn adapt(base: Loaded, lora: &LoraConfig, seed: i64) -> anyhow::Result<Self> {
        lora.check()?;
        let device = base.vs.device();
        let mut vs = nn::VarStore::new(device);
        let adapters = nn::VarStore::new(device);
        let model = seeded(seed, || {
            Llama::with_lora(
                &vs.root(),
                base.model.config(),
                Some(LoraSpec {
                    root: adapters.root(),
                    config: lora,
                }),
            )
        });
        vs.copy(&base.vs)
            .map_err(|e| anyhow::anyhow!("copying the base weights: {e}"))?;
        vs.freeze();
        Ok(Self {
            vs,
            model,
            lora: Some((adapters, lora.clone())),
        })
    }

    /// The base model in `base_dir` with the PEFT adapter in `adapter_dir`.
    pub fn load_with_adapter(
        base_dir: &Path,
        adapter_dir: &Path,
        device: Device,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(adapter_dir.join(ADAPTER_CONFIG))
            .with_context(|| format!("{}: no {ADAPTER_CONFIG}", adapter_dir.display()))?;
        let lora: LoraConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a LoRA adapter config", adapter_dir.display()))?;
        let base = Loaded::load(base_dir, device)?;
        let mut adapted = Self::adapt(base, &lora, 0)?;
        if let Some((adapters, _)) = adapted.lora.as_mut() {
            load_weights(adapters, &[adapter_dir.join(ADAPTER_WEIGHTS)])?;
        }
        Ok(adapted)
    }

    /// Writes the adapters in the PEFT layout.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> anyhow::Result<()> {
        let (adapters, lora) = self
            .lora
            .as_ref()
            .context("this model has no LoRA adapters")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = adapter_config(lora, base_model);
        std::fs::write(
            dir.join(ADAPTER_CONFIG),
            serde_json::to_vec_pretty(&config)?,
        )?;
        save_weights(adapters, &dir.join(ADAPTER_WEIGHTS))
    }

    /// The variables an optimizer trains: the adapters when there are some, else every weight.
    pub fn trainable(&self) -> &nn::VarStore {
        self.lora.as_ref().map_or(&self.vs, |(a, _)| a)
    }
}

/// PEFT's `adapter_config.json` for `lora` on `base_model` (what vLLM and PEFT read).
pub fn adapter_config(lora: &LoraConfig, base_model: &str) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": lora.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "base_model_name_or_path": base_model,
    })
}
