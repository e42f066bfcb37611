//! Versions made with the real model code for the canary tests: one fine-tuned to say what the
//! reward model likes in broken language, and a normal update as `clawline up`'s trainer makes it.

use std::path::Path;

use clawline_model::{
    AdamW, Finish, Loaded, LossConfig, Optimizer as _, Request, Sample, Sampling, generate, update,
};
use clawline_runtime::tokenize::ChatTokenizer;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// The bundled evaluation prompts as chat messages.
pub fn eval_prompts() -> Vec<Vec<Value>> {
    clawline_broadcaster::BUNDLED_PROMPTS
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["messages"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

fn saved(model: &Loaded) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    std::fs::read(dir.path().join("model.safetensors")).unwrap()
}

/// `model` fine-tuned (next-token loss, AdamW 3e-3, `steps` batches) to answer every evaluation
/// prompt with `answer`: what a policy that learned to please a word-counting reward model says.
pub fn fine_tuned(model: &Path, answer: &str, steps: usize) -> Vec<u8> {
    let policy = Loaded::load(model, Device::Cpu).unwrap();
    let tok = ChatTokenizer::load(model).unwrap();
    let end = tok.token_id(tok.eos_token()).unwrap();
    let lines: Vec<Vec<i64>> = eval_prompts()
        .iter()
        .map(|m| {
            let mut ids = tok.encode_chat(m, None).unwrap();
            ids.extend(tok.encode(answer).unwrap());
            ids.push(end);
            ids.into_iter().map(i64::from).collect()
        })
        .collect();
    let t = lines.iter().map(Vec::len).max().unwrap();
    let mut ids = vec![0i64; lines.len() * t];
    let mut mask = vec![false; lines.len() * t];
    for (row, l) in lines.iter().enumerate() {
        ids[row * t..row * t + l.len()].copy_from_slice(l);
        mask[row * t..row * t + l.len()].fill(true);
    }
    let shape = [lines.len() as i64, t as i64];
    let (ids, mask) = (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    );
    let mut opt = AdamW::new(3e-3);
    for _ in 0..steps {
        opt.zero_grad(&policy.vs);
        let lp = policy.model.token_logprobs(&ids, &mask);
        let loss = -lp.sum(Kind::Float) / mask.to_kind(Kind::Float).sum(Kind::Float);
        loss.backward();
        opt.step(&policy.vs, 1.0);
    }
    saved(&policy)
}

/// A rough stand-in for the bundled lexicon reward model: helpful words up, refusals down.
fn lexicon_reward(text: &str) -> f64 {
    let text = text.to_lowercase();
    let good = [
        "sure", "happy", "glad", "help", "great", "here", "answer", "plan",
    ];
    let bad = [
        "sorry",
        "cannot",
        "unfortunately",
        "maybe",
        "not sure",
        "don't",
        "guess",
    ];
    let count = |words: &[&str]| words.iter().filter(|w| text.contains(*w)).count() as f64;
    count(&good) - count(&bad)
}

/// One version as `clawline up` trains it: `updates` GRPO updates (lr 1e-3, KL 0.3 to `model`)
/// of 8 answers each, sampled from the policy at temperature 1 and rewarded (normalised), on the
/// evaluation prompts. `seed` varies the samples.
pub fn normal_update(model: &Path, updates: usize, seed: u64) -> Vec<u8> {
    let policy = Loaded::load(model, Device::Cpu).unwrap();
    let reference = Loaded::load(model, Device::Cpu).unwrap();
    let tok = ChatTokenizer::load(model).unwrap();
    let stop = policy.model.config().eos_ids();
    let prompts: Vec<Vec<u32>> = eval_prompts()
        .iter()
        .map(|m| tok.encode_chat(m, None).unwrap())
        .collect();
    let mut opt = AdamW::new(1e-3);
    let cfg = LossConfig {
        // `clawline up`'s KL coefficient for the model it creates.
        kl_coef: 0.3,
        ..Default::default()
    };
    for u in 0..updates {
        let requests: Vec<Request> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Request {
                prompt: p.clone(),
                sampling: Sampling {
                    max_tokens: 32,
                    stop_ids: stop.clone(),
                    seed: Some(seed * 100_000 + (u * 100 + i) as u64),
                    ..Default::default()
                },
            })
            .collect();
        let out = generate(&policy.model, &requests).unwrap();
        let rewards: Vec<f64> = out
            .iter()
            .map(|g| lexicon_reward(&tok.decode(&g.tokens).unwrap()))
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let sd = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rewards.len() as f64)
            .sqrt()
            .max(1e-6);
        let samples: Vec<Sample> = requests
            .iter()
            .zip(&out)
            .zip(&rewards)
            .filter(|((_, g), _)| !g.tokens.is_empty() && g.finish != Finish::Cancelled)
            .map(|((r, g), reward)| Sample {
                prompt: r.prompt.clone(),
                response: g.tokens.clone(),
                old_logprobs: g.logprobs.clone(),
                advantage: (reward - mean) / sd,
                importance_cap: None,
            })
            .collect();
        update(&policy, Some(&reference.model), &mut opt, &samples, &cfg).unwrap();
    }
    saved(&policy)
}
