#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! PEFT LoRA versions on the policy server: applied to the served base and swapped in, merged
//! into f32 weights and kept beside bf16 ones.

mod common;

use clawline_model::weights::Loaded;
use common::*;
use serde_json::json;
use tch::Device;

#[tokio::test]
async fn a_peft_lora_adapter_is_applied_to_the_served_base_and_swapped_in() {
    let dir = model_dir(6);
    let adapter_dir = tempfile::tempdir().unwrap();
    {
        let base = Loaded::load(dir.path(), Device::Cpu).unwrap();
        let adapted = Loaded::adapt(base, &clawline_model::LoraConfig::default(), 7).unwrap();
        // Give B values (a fresh adapter is a no-op), deterministically.
        tch::no_grad(|| {
            for (name, mut t) in adapted.trainable().variables() {
                if name.contains("lora_B") {
                    let n = t.numel() as i64;
                    let v =
                        (tch::Tensor::arange(n, (tch::Kind::Float, Device::Cpu)) * 0.7).sin() * 0.3;
                    t.copy_(&v.view_as(&t));
                }
            }
        });
        adapted.save_adapter(adapter_dir.path(), "tiny").unwrap();
    }
    let server = start(dir.path(), &[]).await;
    let url = format!("{}/v1/chat/completions", server.url);
    let mut greedy = chat(8, 1);
    greedy["temperature"] = json!(0.0);
    greedy["ignore_eos"] = json!(true);
    let (_, _, before) = post(&url, greedy.clone()).await;
    let (status, _, swapped) = post(
        &format!("{}/admin/weights", server.url),
        json!({"path": adapter_dir.path(), "version": "lora-1"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    let (_, version, after) = post(&url, greedy).await;
    assert_eq!(version.as_deref(), Some("lora-1"));
    let mut local = Loaded::load_with_adapter(dir.path(), adapter_dir.path(), Device::Cpu).unwrap();
    local.model.merge_lora();
    let served = &after["choices"][0];
    let prompt = ids(&after["prompt_token_ids"]);
    let tokens = ids(&served["token_ids"]);
    let expected = local.model.completion_logprobs(&prompt, &tokens);
    for (c, e) in served["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected)
    {
        assert!((c["logprob"].as_f64().unwrap() as f32 - e).abs() < 1e-4);
    }
    assert_ne!(
        before["choices"][0]["logprobs"], served["logprobs"],
        "the adapter changed the policy"
    );

    // In bf16 (`--dtype bfloat16`, the default on CUDA) the adapter stays beside the bf16 base,
    // as PEFT applies it, and the served logprobs are that model's.
    let server = start(dir.path(), &["--dtype", "bfloat16"]).await;
    let (status, _, swapped) = post(
        &format!("{}/admin/weights", server.url),
        json!({"path": adapter_dir.path(), "version": "lora-1"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    let mut greedy = chat(8, 1);
    greedy["temperature"] = json!(0.0);
    greedy["ignore_eos"] = json!(true);
    let (_, _, after) = post(&format!("{}/v1/chat/completions", server.url), greedy).await;
    let served = &after["choices"][0];
    let tokens = ids(&served["token_ids"]);
    let bf16 = Loaded::load_with_adapter_in(
        dir.path(),
        adapter_dir.path(),
        Device::Cpu,
        tch::Kind::BFloat16,
    )
    .unwrap();
    let (in_bf16, in_f32) = (
        bf16.model.completion_logprobs(&prompt, &tokens),
        local.model.completion_logprobs(&prompt, &tokens),
    );
    let gap = |want: &[f32]| -> f32 {
        served["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want)
            .map(|(c, e)| (c["logprob"].as_f64().unwrap() as f32 - e).abs())
            .fold(0.0, f32::max)
    };
    // Measured: 5e-7 from the bf16 recomputation, 0.01 from the f32 one.
    assert!(gap(&in_bf16) < 2e-3, "{} {after}", gap(&in_bf16));
    assert!(gap(&in_f32) > 2e-3, "the server computed in f32: {after}");
}
