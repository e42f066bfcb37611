#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! LoRA adapters: a fresh adapter changes nothing, only adapters train, the PEFT layout round
//! trips, and merging gives the same model as base + adapter.

mod common;

use clawline_model::weights::Loaded;
use clawline_model::{LlamaConfig, LoraConfig, LossConfig, Sample, update};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

fn tiny() -> LlamaConfig {
    common::tiny(64, 32)
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    }
}

fn logits(m: &Loaded) -> Tensor {
    let ids = Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9, 2, 6]).view([1, 8]);
    let pos = Tensor::arange(8, (Kind::Int64, Device::Cpu)).view([1, 8]);
    tch::no_grad(|| m.model.forward(&ids, &pos, None, None))
}

fn diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A few updates that reward one response.
fn train(m: &Loaded) {
    let mut opt = nn::AdamW::default().build(m.trainable(), 1e-2).unwrap();
    let prompt = [1, 2, 3];
    let response = [10, 11];
    for _ in 0..3 {
        let s = Sample {
            old_logprobs: m.model.completion_logprobs(&prompt, &response),
            prompt: prompt.to_vec(),
            response: response.to_vec(),
            advantage: 1.0,
            importance_cap: None,
        };
        update(m, None, &mut opt, &[s], &LossConfig::default()).unwrap();
    }
}

#[test]
fn a_fresh_adapter_changes_nothing_and_only_adapters_train() {
    let base = Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap();
    let adapted = Loaded::with_fresh_lora(&tiny(), &lora(), Device::Cpu, 1).unwrap();
    assert!(
        diff(&logits(&base), &logits(&adapted)) < 1e-6,
        "B starts at zero"
    );
    train(&adapted);
    assert!(
        diff(&logits(&base), &logits(&adapted)) > 1e-4,
        "the adapters learned"
    );
    let (base_vars, adapted_vars) = (base.vs.variables(), adapted.vs.variables());
    for (name, t) in &base_vars {
        assert_eq!(diff(t, &adapted_vars[name]), 0.0, "{name} is frozen");
    }
    let adapters = adapted.trainable().variables();
    assert_eq!(
        adapters.len(),
        2 * 2 * 3,
        "A and B for 3 modules in 2 layers"
    );
    assert!(adapters.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(
        adapters["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].size(),
        vec![4, 32]
    );
}

#[test]
fn adapters_train_in_f32_on_a_frozen_bf16_base() {
    // The trainer's `--dtype bfloat16 --lora-r N`: the base in bf16, the adapters f32.
    let base = Loaded::fresh_in(&tiny(), Device::Cpu, 3, Kind::BFloat16).unwrap();
    let before = logits(&base);
    let adapted = Loaded::adapt(base, &lora(), 3).unwrap();
    for (name, t) in adapted.vs.variables() {
        assert_eq!(t.kind(), Kind::BFloat16, "{name}");
    }
    for (name, t) in adapted.trainable().variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
    }
    let frozen = adapted.vs.variables();
    let frozen: Vec<(String, Tensor)> = frozen.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    assert!(diff(&before, &logits(&adapted)) < 1e-6, "B starts at zero");
    train(&adapted);
    let after = logits(&adapted);
    assert_eq!(after.kind(), Kind::Float);
    assert!(diff(&before, &after) > 1e-3, "the adapters learned");
    let now = adapted.vs.variables();
    for (name, t) in &frozen {
        assert_eq!(
            diff(&t.to_kind(Kind::Float), &now[name].to_kind(Kind::Float)),
            0.0,
            "{name} is frozen"
        );
    }
}

#[test]
fn adapters_round_trip_in_the_peft_layout_and_merge_into_full_weights() {
    let adapted = Loaded::with_fresh_lora(&tiny(), &lora(), Device::Cpu, 2).unwrap();
    train(&adapted);
    let (base_dir, adapter_dir, merged_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    adapted.save(base_dir.path()).unwrap();
    adapted
        .save_adapter(adapter_dir.path(), "clawline-tiny")
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(adapter_dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(
        common::safetensors_format(&adapter_dir.path().join("adapter_model.safetensors"))
            .as_deref(),
        Some("pt")
    );
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let names: Vec<String> =
        Tensor::read_safetensors(adapter_dir.path().join("adapter_model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.model.layers.")),
        "{names:?}"
    );

    let mut reloaded =
        Loaded::load_with_adapter(base_dir.path(), adapter_dir.path(), Device::Cpu).unwrap();
    let expected = logits(&adapted);
    assert!(diff(&expected, &logits(&reloaded)) < 1e-6);
    reloaded.model.merge_lora();
    assert!(
        diff(&expected, &logits(&reloaded)) < 1e-5,
        "merged = base + adapter"
    );
    reloaded.save(merged_dir.path()).unwrap();
    let full = Loaded::load(merged_dir.path(), Device::Cpu).unwrap();
    assert!(
        diff(&expected, &logits(&full)) < 1e-5,
        "a full checkpoint, no adapter needed"
    );

    let mut bad = lora();
    bad.target_modules = vec!["qkv".into()];
    let err = Loaded::with_fresh_lora(&tiny(), &bad, Device::Cpu, 1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("qkv"), "{err}");
}
