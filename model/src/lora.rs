//! LoRA adapters in the PEFT layout (`adapter_config.json`, `adapter_model.safetensors` with
//! `base_model.model.…lora_A/B.weight` names), so vLLM and PEFT load what the trainer writes. The
//! base weights are frozen; only the adapters train; `merge_lora` folds them in for full-weight
//! engines.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use crate::config::LlamaConfig;
use crate::llama::{Llama, LoraSpec};
use crate::weights::{Loaded, load_weights, save_weights, seeded};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The projections an adapter can target.
pub const KNOWN_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    #[serde(rename = "lora_alpha")]
    pub alpha: f64,
    /// Module names (`q_proj`) or full module keys (`model.layers.0.self_attn.q_proj`, as PEFT
    /// writes `all-linear`): a module is adapted when its key is one or ends with `.name`.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `alpha / √r` instead of `alpha / r`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_rslora: bool,
    /// PEFT's per-module overrides: a regex key matching the end of a module key
    /// (`(.*\.)?(KEY)$`), with that module's rank or alpha.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }
}

impl LoraConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.r > 0, "LoRA rank r must be at least 1");
        anyhow::ensure!(
            !self.target_modules.is_empty(),
            "LoRA target_modules is empty"
        );
        // The module each target names is its last segment (`model.layers.0.mlp.up_proj`).
        if let Some(bad) = self
            .target_modules
            .iter()
            .find(|t| !KNOWN_MODULES.contains(&t.rsplit('.').next().unwrap_or(t)))
        {
            anyhow::bail!(
                "LoRA target module {bad:?} (known: {})",
                KNOWN_MODULES.join(", ")
            );
        }
        for (key, r) in &self.rank_pattern {
            anyhow::ensure!(*r > 0, "rank_pattern {key:?}: rank must be at least 1");
        }
        for key in self.rank_pattern.keys().chain(self.alpha_pattern.keys()) {
            regex::Regex::new(&format!("^(.*\\.)?({key})$"))
                .with_context(|| format!("pattern {key:?} is not a regex"))?;
        }
        Ok(())
    }

    /// Whether the module with key `key` (`model.layers.0.self_attn.q_proj`) is adapted.
    pub fn targets(&self, key: &str) -> bool {
        self.target_modules
            .iter()
            .any(|t| key == t || key.ends_with(&format!(".{t}")))
    }

    /// Rank, alpha and scale of the adapter on `key`: PEFT's `rank_pattern` / `alpha_pattern`
    /// when one matches (two that match with different values are an error: PEFT would take
    /// whichever came first in the file, an order JSON objects do not keep here).
    pub fn for_module(&self, key: &str) -> anyhow::Result<(usize, f64, f64)> {
        let r = pattern_value(&self.rank_pattern, key, "rank_pattern")?.unwrap_or(self.r);
        let alpha = pattern_value(&self.alpha_pattern, key, "alpha_pattern")?.unwrap_or(self.alpha);
        let scale = if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        Ok((r, alpha, scale))
    }

    /// Checks every module key of a model with `layers` layers against the patterns.
    pub fn check_modules(&self, layers: usize) -> anyhow::Result<()> {
        for key in module_keys(layers) {
            if self.targets(&key) {
                self.for_module(&key)?;
            }
        }
        Ok(())
    }
}

/// The keys of the modules an adapter can target, as PEFT names them.
fn module_keys(layers: usize) -> impl Iterator<Item = String> {
    (0..layers).flat_map(|l| {
        KNOWN_MODULES.map(move |m| {
            let group = if m.starts_with(['q', 'k', 'v', 'o']) {
                "self_attn"
            } else {
                "mlp"
            };
            format!("model.layers.{l}.{group}.{m}")
        })
    })
}

fn pattern_value<T: Copy + PartialEq + std::fmt::Debug>(
    patterns: &BTreeMap<String, T>,
    key: &str,
    what: &str,
) -> anyhow::Result<Option<T>> {
    let mut found: Option<(&String, T)> = None;
    for (pattern, value) in patterns {
        let re = regex::Regex::new(&format!("^(.*\\.)?({pattern})$"))
            .with_context(|| format!("{what} {pattern:?} is not a regex"))?;
        if re.is_match(key) {
            if let Some((first, v)) = found
                && v != *value
            {
                anyhow::bail!(
                    "{what}: {first:?} and {pattern:?} both match {key} with different values"
                );
            }
            found = Some((pattern, *value));
        }
    }
    Ok(found.map(|(_, v)| v))
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
        lora.check_modules(base.model.config().num_hidden_layers)?;
        let device = base.vs.device();
        // The base keeps its precision (bf16 or f32); the adapters are f32, as PEFT keeps them.
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(base.vs.kind());
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
        Self::load_with_adapter_in(base_dir, adapter_dir, device, tch::Kind::Float)
    }

    /// `load_with_adapter` with the base weights in `kind`; the adapters stay f32.
    pub fn load_with_adapter_in(
        base_dir: &Path,
        adapter_dir: &Path,
        device: Device,
        kind: tch::Kind,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(adapter_dir.join(ADAPTER_CONFIG))
            .with_context(|| format!("{}: no {ADAPTER_CONFIG}", adapter_dir.display()))?;
        let lora = parse_adapter_config(&text).with_context(|| {
            format!(
                "{}: {ADAPTER_CONFIG}: not an adapter this library computes",
                adapter_dir.display()
            )
        })?;
        let base = Loaded::load_in(base_dir, device, kind)?;
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
        "use_rslora": lora.use_rslora,
        "rank_pattern": lora.rank_pattern,
        "alpha_pattern": lora.alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "base_model_name_or_path": base_model,
    })
}

/// PEFT's `adapter_config.json`, every key accounted for: what changes the computation is read
/// (`r`, `lora_alpha`, `target_modules`, `use_rslora`, `rank_pattern`, `alpha_pattern`) or must be
/// off, with an error naming it otherwise (DoRA, adapter biases, `modules_to_save`, …); keys that
/// do not (bookkeeping, initialisation, dropout) are accepted; an unknown key is accepted only
/// when null or false (a feature switched off).
pub fn parse_adapter_config(text: &str) -> anyhow::Result<LoraConfig> {
    use serde_json::Value;
    let Value::Object(mut map) = serde_json::from_str::<Value>(text).context("not JSON")? else {
        anyhow::bail!("not a JSON object");
    };
    let peft_type = map.remove("peft_type");
    anyhow::ensure!(
        peft_type.as_ref().is_none_or(|t| t == "LORA"),
        "peft_type {} (LORA only)",
        peft_type.unwrap_or(Value::Null)
    );
    if map.get("use_dora") == Some(&Value::Bool(true)) {
        anyhow::bail!(
            "use_dora: DoRA adapters are not supported (their weight decomposition is not implemented)"
        );
    }
    for (key, off) in [
        ("bias", Value::from("none")),
        ("fan_in_fan_out", Value::Bool(false)),
        ("lora_bias", Value::Bool(false)),
        ("use_dora", Value::Bool(false)),
        ("use_qalora", Value::Bool(false)),
    ] {
        if let Some(v) = map.remove(key) {
            anyhow::ensure!(
                v.is_null() || v == off,
                "{key} = {v} is not supported (only {off})"
            );
        }
    }
    // Initialisation, dropout and bookkeeping: nothing a loaded adapter computes differs.
    for key in [
        "task_type",
        "base_model_name_or_path",
        "revision",
        "inference_mode",
        "init_lora_weights",
        "lora_dropout",
        "loftq_config",
        "eva_config",
        "corda_config",
        "lora_ga_config",
        "auto_mapping",
        "megatron_config",
        "megatron_core",
        "peft_version",
        "qalora_group_size",
        "runtime_config",
        "ensure_weight_tying",
    ] {
        map.remove(key);
    }
    if let Some(Value::String(t)) = map.get("target_modules") {
        anyhow::ensure!(
            t == "all-linear",
            "target_modules {t:?}: a regex is not supported (list the modules, or all-linear)"
        );
        map.insert("target_modules".into(), Value::from(KNOWN_MODULES.to_vec()));
    }
    const READ: [&str; 6] = [
        "r",
        "lora_alpha",
        "target_modules",
        "use_rslora",
        "rank_pattern",
        "alpha_pattern",
    ];
    let unknown: Vec<String> = map
        .iter()
        .filter(|(k, v)| {
            let off = v.is_null() || **v == Value::Bool(false);
            !(READ.contains(&k.as_str()) || off)
        })
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "not understood: {} (the adapter would be computed without it)",
        unknown.join(", ")
    );
    map.retain(|k, _| READ.contains(&k.as_str()));
    let config: LoraConfig = serde_json::from_value(Value::Object(map))?;
    config.check()?;
    Ok(config)
}
