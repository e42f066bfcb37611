#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The model against real libtorch: the Hugging Face layout both ways, refusal of bad weights,
//! and generation whose logprobs equal a full recomputation (what PPO ratios depend on).

mod common;

use std::path::Path;

use clawline_model::weights::{self, Loaded};
use clawline_model::{Finish, LlamaConfig, Request, Sampling, generate};
use tch::{Device, Kind, Tensor};

fn tiny() -> LlamaConfig {
    common::tiny(96, 64)
}

fn logits(m: &Loaded, ids: &[i64]) -> Tensor {
    let t = ids.len() as i64;
    let ids = Tensor::from_slice(ids).view([1, t]);
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    tch::no_grad(|| m.model.forward(&ids, &pos, None, None))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn weights_round_trip_through_the_hugging_face_layout() {
    let dir = tempfile::tempdir().unwrap();
    let original = Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap();
    original.save(dir.path()).unwrap();
    // As `save_pretrained` writes it.
    assert_eq!(
        common::safetensors_format(&dir.path().join("model.safetensors")).as_deref(),
        Some("pt")
    );

    let names: Vec<String> = Tensor::read_safetensors(dir.path().join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for expected in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "lm_head.weight"),
        "tied embeddings: no separate head"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");

    let other = Loaded::fresh(&tiny(), Device::Cpu, 2).unwrap();
    let ids = [5, 17, 3, 80, 41];
    assert!(max_diff(&logits(&original, &ids), &logits(&other, &ids)) > 1e-3);
    let loaded = Loaded::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&logits(&original, &ids), &logits(&loaded, &ids)),
        0.0
    );
}

/// A safetensors file written without tch: bf16 tensors (as HF checkpoints usually are).
fn write_bf16_safetensors(path: &Path, tensors: &[(String, Vec<i64>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_sharded_bf16_qwen2_checkpoint_with_hf_names_loads() {
    let mut config = tiny();
    config.model_type = "qwen2".into();
    config.architectures = vec!["Qwen2ForCausalLM".into()];
    config.tie_word_embeddings = false;
    config.attention_bias = None; // Qwen2's default: q/k/v biases
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    // Every tensor the model has, with values from a simple formula, in two shards.
    let reference = Loaded::fresh(&config, Device::Cpu, 3).unwrap();
    let mut all: Vec<(String, Vec<i64>, Vec<f32>)> = reference
        .vs
        .variables()
        .into_iter()
        .enumerate()
        .map(|(k, (name, t))| {
            let n = t.numel();
            let values = (0..n)
                .map(|i| (((i * 7 + k * 13) % 17) as f32 - 8.0) / 64.0)
                .collect();
            (name, t.size(), values)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        all.iter()
            .any(|t| t.0 == "model.layers.0.self_attn.q_proj.bias")
    );
    assert!(all.iter().any(|t| t.0 == "lm_head.weight"));
    // HF checkpoints can carry tensors the model does not use.
    all.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        vec![4],
        vec![1.0; 4],
    ));
    let (a, b) = all.split_at(all.len() / 2);
    write_bf16_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), a);
    write_bf16_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), b);
    let map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|t| (t.0.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(
            b.iter()
                .map(|t| (t.0.clone(), "model-00002-of-00002.safetensors".into())),
        )
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();

    let loaded = Loaded::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(loaded.model.config().model_type, "qwen2");
    let vars = loaded.vs.variables();
    for (name, _, values) in &all[..all.len() - 1] {
        let got = Vec::<f32>::try_from(vars[name].view([-1])).unwrap();
        assert_eq!(&got, values, "{name}");
    }
}

#[test]
fn corrupt_or_mismatched_weights_are_refused_and_the_model_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Loaded::fresh(&tiny(), Device::Cpu, 4).unwrap();
    let ids = [1, 2, 3, 4];
    let before = logits(&model, &ids);

    let torn = dir.path().join("torn.safetensors");
    Loaded::fresh(&tiny(), Device::Cpu, 5)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
    let err = weights::load_weights(&mut model.vs, &[torn]).unwrap_err();
    assert!(format!("{err:#}").contains("torn.safetensors"), "{err:#}");

    let mut wider = tiny();
    wider.intermediate_size = 80;
    let other = tempfile::tempdir().unwrap();
    Loaded::fresh(&wider, Device::Cpu, 6)
        .unwrap()
        .save(other.path())
        .unwrap();
    let err = weights::load_weights(&mut model.vs, &[other.path().join("model.safetensors")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mlp") && err.contains("shape"),
        "names the tensor: {err}"
    );

    let mut fewer = tiny();
    fewer.num_hidden_layers = 1;
    let third = tempfile::tempdir().unwrap();
    Loaded::fresh(&fewer, Device::Cpu, 7)
        .unwrap()
        .save(third.path())
        .unwrap();
    let err = weights::load_weights(&mut model.vs, &[third.path().join("model.safetensors")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.1.") && err.contains("missing"),
        "{err}"
    );

    assert_eq!(max_diff(&before, &logits(&model, &ids)), 0.0);
}

fn request(prompt: &[u32], max_tokens: usize, temperature: f64, seed: u64) -> Request {
    Request {
        prompt: prompt.to_vec(),
        sampling: Sampling {
            temperature,
            max_tokens,
            seed: Some(seed),
            ..Default::default()
        },
    }
}

#[test]
fn generated_logprobs_equal_a_full_recomputation_alone_and_batched() {
    let model = Loaded::fresh(&tiny(), Device::Cpu, 8).unwrap();
    let prompts: [&[u32]; 3] = [&[3, 9, 27, 81], &[5], &[11, 12, 13, 14, 15, 16, 17]];
    let batch: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| request(p, 12, 1.0, 100 + i as u64))
        .collect();
    let together = generate(&model.model, &batch).unwrap();
    for (i, (prompt, got)) in prompts.iter().zip(&together).enumerate() {
        assert_eq!(got.tokens.len(), 12);
        assert_eq!(got.finish, Finish::Length);
        let full = model.model.completion_logprobs(prompt, &got.tokens);
        for (a, b) in got.logprobs.iter().zip(&full) {
            assert!((a - b).abs() < 1e-4, "request {i}: {a} vs {b}");
        }
        // Left padding changes nothing: alone, the same seed gives the same tokens.
        let alone = generate(&model.model, &[batch[i].clone()]).unwrap();
        assert_eq!(alone[0].tokens, got.tokens, "request {i}");
    }
}

#[test]
fn sampling_follows_seed_temperature_top_k_and_stop_ids() {
    let model = Loaded::fresh(&tiny(), Device::Cpu, 9).unwrap();
    let prompt = [7, 8, 9];
    let a = generate(&model.model, &[request(&prompt, 10, 1.0, 1)]).unwrap();
    let b = generate(&model.model, &[request(&prompt, 10, 1.0, 1)]).unwrap();
    let c = generate(&model.model, &[request(&prompt, 10, 1.0, 2)]).unwrap();
    assert_eq!(a[0].tokens, b[0].tokens);
    assert_ne!(a[0].tokens, c[0].tokens, "another seed, another sample");

    let greedy = generate(&model.model, &[request(&prompt, 10, 0.0, 1)]).unwrap();
    let mut top1 = request(&prompt, 10, 1.5, 3);
    top1.sampling.top_k = 1;
    assert_eq!(
        generate(&model.model, &[top1]).unwrap()[0].tokens,
        greedy[0].tokens
    );

    let mut stop = request(&prompt, 10, 0.0, 1);
    stop.sampling.stop_ids = vec![greedy[0].tokens[2]];
    let stopped = generate(&model.model, &[stop]).unwrap();
    assert_eq!(stopped[0].finish, Finish::Stop);
    assert_eq!(stopped[0].tokens, greedy[0].tokens[..=2].to_vec());

    let err = generate(&model.model, &[request(&[500], 4, 1.0, 1)]).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = generate(&model.model, &[request(&prompt, 100, 1.0, 1)]).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
}

/// Logits from `scripts/llama_reference.py`, an independent numpy forward pass.
fn reference_logits(dir: &Path, ids: &[i64]) -> Tensor {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/llama_reference.py");
    let out = std::process::Command::new(clawline_runtime::testing::python())
        .arg(&script)
        .arg(dir)
        .args(ids.iter().map(i64::to_string))
        .output()
        .unwrap();
    let rows: Vec<Vec<f32>> =
        serde_json::from_value(clawline_runtime::testing::json_of(script.display(), out)).unwrap();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([1, rows.len() as i64, -1])
}

#[test]
fn logits_match_an_independent_reference_of_the_hf_architecture() {
    let mut qwen = tiny();
    qwen.model_type = "qwen2".into();
    qwen.tie_word_embeddings = false;
    qwen.rope_theta = 1_000_000.0;
    qwen.attention_bias = None; // Qwen2: q/k/v biases by default
    for (name, config) in [
        ("llama, tied, GQA", tiny()),
        ("qwen2, untied, q/k/v bias", qwen),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = Loaded::fresh(&config, Device::Cpu, 10).unwrap();
        // Biases start at zero; give them values so they are checked too.
        tch::no_grad(|| {
            for (n, mut t) in model.vs.variables() {
                if n.ends_with(".bias") {
                    let n = t.numel() as i64;
                    let values = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37).sin() * 0.1;
                    t.copy_(&values.view_as(&t));
                }
            }
        });
        model.save(dir.path()).unwrap();
        let biases = model
            .vs
            .variables()
            .keys()
            .filter(|n| n.ends_with(".bias"))
            .count();
        assert_eq!(biases > 0, config.model_type == "qwen2", "{name}");
        let ids = [4, 8, 15, 16, 23, 42, 7, 1];
        let ours = logits(&model, &ids);
        let theirs = reference_logits(dir.path(), &ids);
        let diff = max_diff(&ours, &theirs);
        assert!(diff < 1e-4, "{name}: max |Δlogit| {diff}");
    }
}

#[test]
fn a_cancelled_request_leaves_the_batch_and_the_others_go_on() {
    let model = Loaded::fresh(&tiny(), Device::Cpu, 12).unwrap();
    let batch = [
        request(&[3, 4, 5], 10, 1.0, 1),
        request(&[6, 7], 10, 1.0, 2),
    ];
    let mut seen = [0usize; 2];
    let out = clawline_model::generate_with(&model.model, &batch, |i, _, _| {
        seen[i] += 1;
        !(i == 0 && seen[0] == 3)
    })
    .unwrap();
    assert_eq!((out[0].tokens.len(), out[0].finish), (3, Finish::Cancelled));
    assert_eq!(out[1].tokens.len(), 10);
    let alone = generate(&model.model, &[batch[1].clone()]).unwrap();
    assert_eq!(out[1].tokens, alone[0].tokens);
}
