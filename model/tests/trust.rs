#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The trainer's trust-region measures on real libtorch: KL to the behaviour logprobs is 0
//! on-policy and grows with the step size, KL to the reference is 0 against itself, and `Undo`
//! puts weights and AdamW state back bit for bit. The ignored `measure_…` test is the measurement
//! behind the trainer's defaults (`cargo test -p clawline-model --test trust -- --ignored
//! --nocapture`).

mod common;

use std::time::Instant;

use clawline_model::init::{IM_START, InitOptions, chat_examples, init};
use clawline_model::weights::Loaded;
use clawline_model::{
    AdamW, LossConfig, Optimizer as _, Request, Sample, Sampling, Undo, divergence_from_reference,
    generate, kl_to_behaviour, update,
};
use tch::Device;

fn batch(m: &Loaded) -> Vec<Sample> {
    let prompt = [1, 2, 3];
    [([10, 11], 1.0), ([20, 21], -1.0), ([30, 31], 0.5)]
        .into_iter()
        .map(|(response, advantage)| Sample {
            prompt: prompt.to_vec(),
            response: response.to_vec(),
            old_logprobs: m.model.completion_logprobs(&prompt, &response),
            advantage,
            importance_cap: None,
        })
        .collect()
}

fn weights(m: &Loaded) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn kl_to_behaviour_is_zero_on_policy_and_grows_with_the_learning_rate() {
    let cfg = LossConfig::default();
    let mut kls = Vec::new();
    for lr in [1e-3, 1e-2, 1e-1] {
        let m = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
        let samples = batch(&m);
        let before = kl_to_behaviour(&m.model, &samples, 2).unwrap();
        assert!(before.abs() < 1e-6, "on-policy: {before}");
        let mut opt = AdamW::new(lr);
        update(&m, None, &mut opt, &samples, &cfg).unwrap();
        kls.push(kl_to_behaviour(&m.model, &samples, 2).unwrap());
    }
    assert!(
        kls[0] > 0.0 && kls[0] < kls[1] && kls[1] < kls[2],
        "KL after one update at lr 1e-3, 1e-2, 1e-1: {kls:?}"
    );
}

#[test]
fn divergence_from_reference_is_zero_against_itself_and_positive_after_an_update() {
    let m = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
    let base = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
    let samples = batch(&m);
    let same = divergence_from_reference(&m.model, &base.model, &samples, 1).unwrap();
    assert!(
        same.kl.abs() < 1e-6 && same.drift().abs() < 1e-6,
        "{same:?}"
    );
    let mut opt = AdamW::new(1e-2);
    update(&m, None, &mut opt, &samples, &LossConfig::default()).unwrap();
    let moved = divergence_from_reference(&m.model, &base.model, &samples, 2).unwrap();
    assert!(moved.kl > 1e-5, "{moved:?}");
}

/// Drift tells broken language from a learned habit where KL cannot: reinforcing the token the
/// reference finds least likely moves the model to text the reference would not write (drift up),
/// reinforcing the one it finds most likely only makes the model surer (drift down), while both
/// move it away from the reference (KL up).
#[test]
fn drift_rises_for_unlikely_tokens_and_not_for_likely_ones() {
    let base = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
    let prompt = [1u32, 2, 3];
    // The reference's logprob of every next token after the prompt.
    let lps: Vec<f32> = (0..32u32)
        .map(|t| base.model.completion_logprobs(&prompt, &[t])[0])
        .collect();
    let by = |better: bool| {
        (0..32u32)
            .max_by(|&a, &b| {
                let o = lps[a as usize].total_cmp(&lps[b as usize]);
                if better { o } else { o.reverse() }
            })
            .unwrap()
    };
    let trained_on = |token: u32| {
        let m = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
        let sample = Sample {
            prompt: prompt.to_vec(),
            response: vec![token],
            old_logprobs: m.model.completion_logprobs(&prompt, &[token]),
            advantage: 1.0,
            importance_cap: None,
        };
        let mut opt = AdamW::new(1e-2);
        for _ in 0..3 {
            update(
                &m,
                None,
                &mut opt,
                std::slice::from_ref(&sample),
                &LossConfig::default(),
            )
            .unwrap();
        }
        divergence_from_reference(&m.model, &base.model, &[sample], 1).unwrap()
    };
    let (likely, unlikely) = (trained_on(by(true)), trained_on(by(false)));
    assert!(
        likely.kl > 1e-4 && unlikely.kl > 1e-4,
        "{likely:?} {unlikely:?}"
    );
    assert!(likely.drift() < 0.0, "{likely:?}");
    assert!(unlikely.drift() > 0.0, "{unlikely:?}");
}

#[test]
fn undo_restores_weights_and_optimizer_bit_for_bit() {
    let cfg = LossConfig::default();
    let a = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
    let b = Loaded::fresh(&common::tiny(64, 32), Device::Cpu, 1).unwrap();
    let samples = batch(&a);
    let (mut opt_a, mut opt_b) = (AdamW::new(1e-2), AdamW::new(1e-2));
    update(&a, None, &mut opt_a, &samples, &cfg).unwrap();
    update(&b, None, &mut opt_b, &samples, &cfg).unwrap();
    // `a` takes a huge step and undoes it; `b` never took it.
    let undo = Undo::take(&a.vs, &opt_a);
    let before = weights(&a);
    opt_a.lr = 10.0;
    update(&a, None, &mut opt_a, &samples, &cfg).unwrap();
    assert_ne!(weights(&a), before);
    undo.restore(&mut opt_a);
    assert_eq!(weights(&a), before, "weights back bit for bit");
    assert_eq!(
        (opt_a.steps(), opt_a.lr),
        (1, 10.0),
        "step count back, lr kept"
    );
    // The next step is the one `b` takes: same moments, same step count.
    opt_a.lr = 1e-2;
    update(&a, None, &mut opt_a, &samples, &cfg).unwrap();
    update(&b, None, &mut opt_b, &samples, &cfg).unwrap();
    assert_eq!(weights(&a), weights(&b));
}

/// Prints the KLs of GRPO updates on the warm-started tiny model (`clawline up`'s), on batches it
/// samples itself: 16 corpus questions, rewarded for "Sure" and punished for "Sorry".
#[test]
#[ignore = "a measurement (minutes): run with --ignored --nocapture"]
fn measure_kl_of_ordinary_and_runaway_updates_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    init(
        dir.path(),
        &InitOptions {
            warm_start_steps: 200,
            ..Default::default()
        },
    )
    .unwrap();
    println!(
        "init + warm start: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let tokenizer = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let prompts: Vec<Vec<u32>> = chat_examples()
        .iter()
        .filter_map(|c| {
            c.split_once(&format!("{IM_START}assistant\n"))
                .map(|(q, _)| q)
        })
        .take(16)
        .map(|q| {
            let text = format!("{q}{IM_START}assistant\n");
            tokenizer.encode(text, false).unwrap().get_ids().to_vec()
        })
        .collect();
    // (label, lr, kl_coef, updates per generation: 1 = on-policy, 4 = `clawline up`'s lag)
    for (label, lr, kl_coef, lag) in [
        ("ordinary on-policy", 1e-3, 0.1, 1),
        ("ordinary lagged", 1e-3, 0.1, 4),
        ("runaway lr 1e-2", 1e-2, 0.0, 4),
        ("runaway lr 3e-2", 3e-2, 0.0, 4),
    ] {
        let policy = Loaded::load(dir.path(), Device::Cpu).unwrap();
        let base = Loaded::load(dir.path(), Device::Cpu).unwrap();
        let eos = policy.model.config().eos_ids();
        let mut opt = AdamW::new(lr);
        let cfg = LossConfig {
            kl_coef,
            ..Default::default()
        };
        let mut queue: Vec<(Vec<Sample>, f64)> = Vec::new();
        let (mut serving, mut measure_s, mut update_s) = (Vec::new(), 0.0, 0.0);
        let mut line = String::new();
        for u in 0..24 {
            if queue.is_empty() {
                for k in 0..lag {
                    let requests: Vec<Request> = prompts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Request {
                            prompt: p.clone(),
                            sampling: Sampling {
                                max_tokens: 24,
                                stop_ids: eos.clone(),
                                seed: Some((u * 100 + k * 17 + i) as u64),
                                ..Default::default()
                            },
                        })
                        .collect();
                    let out = generate(&policy.model, &requests).unwrap();
                    let rewards: Vec<f64> = out
                        .iter()
                        .map(|g| {
                            let text = tokenizer.decode(&g.tokens, true).unwrap();
                            if text.contains("Sure") {
                                1.0
                            } else if text.contains("Sorry") {
                                -1.0
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
                    queue.push((
                        prompts
                            .iter()
                            .zip(out)
                            .zip(&rewards)
                            .filter(|((_, g), _)| !g.tokens.is_empty())
                            .map(|((p, g), r)| Sample {
                                prompt: p.clone(),
                                response: g.tokens,
                                old_logprobs: g.logprobs,
                                advantage: r - mean,
                                importance_cap: None,
                            })
                            .collect(),
                        mean,
                    ));
                }
                queue.reverse();
            }
            let (samples, reward) = queue.pop().unwrap();
            let t = Instant::now();
            let m = update(&policy, Some(&base.model), &mut opt, &samples, &cfg).unwrap();
            update_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let kl = kl_to_behaviour(&policy.model, &samples, 8).unwrap();
            measure_s += t.elapsed().as_secs_f64();
            let kl_base = divergence_from_reference(&policy.model, &base.model, &samples, 8)
                .unwrap()
                .kl;
            serving.push(kl);
            line += &format!(
                "  u{u:02} serving {kl:.4} base {kl_base:.4} (k3 {:.4}) reward {:+.2}\n",
                m.kl, reward
            );
            opt.zero_grad(&policy.vs);
        }
        let mut sorted = serving.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{label}: KL to serving per update median {:.4} p90 {:.4} max {:.4}; \
             measure {:.1} ms vs update {:.1} ms per batch\n{line}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() * 9 / 10],
            sorted[sorted.len() - 1],
            measure_s * 1000.0 / 24.0,
            update_s * 1000.0 / 24.0,
        );
    }
}
