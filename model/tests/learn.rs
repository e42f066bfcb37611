#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The policy-gradient update on real libtorch: on-policy ratios are 1, repeated updates on one
//! batch lower its loss and move probability toward rewarded tokens, stale ratios are capped, and
//! micro-batches add up to the whole batch.

mod common;

use clawline_model::weights::Loaded;
use clawline_model::{KlPenalty, LlamaConfig, LossConfig, Sample, update};
use tch::nn::OptimizerConfig;
use tch::{Device, nn};

fn tiny() -> LlamaConfig {
    common::tiny(64, 32)
}

/// log p(token | prompt) under the model.
fn logprob(m: &Loaded, prompt: &[u32], response: &[u32]) -> Vec<f32> {
    m.model.completion_logprobs(prompt, response)
}

fn sample(m: &Loaded, prompt: &[u32], response: &[u32], advantage: f64) -> Sample {
    Sample {
        prompt: prompt.to_vec(),
        response: response.to_vec(),
        old_logprobs: logprob(m, prompt, response),
        advantage,
        importance_cap: None,
    }
}

fn adamw(m: &Loaded, lr: f64) -> nn::Optimizer {
    nn::AdamW::default().build(&m.vs, lr).unwrap()
}

#[test]
fn updates_lower_the_loss_and_move_probability_toward_rewarded_tokens() {
    let m = Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap();
    let prompt = [1, 2, 3];
    let (good, bad) = ([10, 11], [20, 21]);
    let before = (logprob(&m, &prompt, &good), logprob(&m, &prompt, &bad));
    // One batch, collected once (fixed behaviour logprobs), learned from for several epochs.
    let batch = vec![
        sample(&m, &prompt, &good, 1.0),
        sample(&m, &prompt, &bad, -1.0),
    ];
    let mut opt = adamw(&m, 3e-3);
    let cfg = LossConfig {
        micro_batch: 2,
        ..Default::default()
    };
    let first = update(&m, None, &mut opt, &batch, &cfg).unwrap();
    assert!(
        (first.ratio_mean - 1.0).abs() < 1e-5,
        "on-policy: {first:?}"
    );
    assert_eq!(first.clip_fraction, 0.0);
    assert_eq!(first.tokens, 4);
    let mut last = first.clone();
    for _ in 0..6 {
        last = update(&m, None, &mut opt, &batch, &cfg).unwrap();
    }
    assert!(
        last.loss < first.loss - 0.1,
        "loss {} → {}",
        first.loss,
        last.loss
    );
    let after = (logprob(&m, &prompt, &good), logprob(&m, &prompt, &bad));
    let sum = |v: &[f32]| v.iter().sum::<f32>();
    assert!(
        sum(&after.0) > sum(&before.0) + 0.2,
        "good: {:?} → {:?}",
        before.0,
        after.0
    );
    assert!(
        sum(&after.1) < sum(&before.1) - 0.2,
        "bad: {:?} → {:?}",
        before.1,
        after.1
    );
}

#[test]
fn stale_steps_have_their_ratio_capped_and_clipping_is_reported() {
    let m = Loaded::fresh(&tiny(), Device::Cpu, 2).unwrap();
    let mut s = sample(&m, &[1, 2], &[5, 6, 7], 1.0);
    // The serving policy thought these tokens far less likely than the current one does.
    s.old_logprobs.iter_mut().for_each(|lp| *lp -= 2.0);
    let mut capped = s.clone();
    capped.importance_cap = Some(1.5);
    let mut opt = adamw(&m, 0.0);
    let cfg = LossConfig {
        max_grad_norm: 0.0,
        ..Default::default()
    };
    let free = update(&m, None, &mut opt, &[s], &cfg).unwrap();
    let cap = update(&m, None, &mut opt, &[capped], &cfg).unwrap();
    assert!(free.ratio_mean > 7.0, "{free:?}");
    assert!((cap.ratio_mean - 1.5).abs() < 1e-4, "{cap:?}");
    assert_eq!(free.clip_fraction, 1.0);
}

#[test]
fn micro_batches_add_up_to_the_whole_batch() {
    let prompt = [3, 4];
    let run = |micro: usize| {
        let m = Loaded::fresh(&tiny(), Device::Cpu, 3).unwrap();
        let batch = vec![
            sample(&m, &prompt, &[8, 9, 10], 0.5),
            sample(&m, &prompt, &[12], -1.0),
            sample(&m, &[1, 2, 3, 4, 5], &[6, 7], 1.5),
        ];
        let mut opt = nn::Sgd::default().build(&m.vs, 0.1).unwrap();
        let cfg = LossConfig {
            entropy_coef: 0.01,
            micro_batch: micro,
            max_grad_norm: 0.0,
            ..Default::default()
        };
        let metrics = update(&m, None, &mut opt, &batch, &cfg).unwrap();
        let w = m.vs.variables()["model.layers.0.mlp.up_proj.weight"].copy();
        (metrics, w)
    };
    let (whole, w1) = run(3);
    let (split, w2) = run(1);
    assert!(
        (whole.loss - split.loss).abs() < 1e-5,
        "{whole:?} vs {split:?}"
    );
    assert!(
        (whole.grad_norm - split.grad_norm).abs() < 1e-4 * whole.grad_norm.max(1.0),
        "{} vs {}",
        whole.grad_norm,
        split.grad_norm
    );
    assert!((&w1 - &w2).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn the_kl_term_is_zero_against_itself_and_grows_as_the_policy_moves() {
    let m = Loaded::fresh(&tiny(), Device::Cpu, 4).unwrap();
    let reference = Loaded::fresh(&tiny(), Device::Cpu, 4).unwrap();
    let batch = vec![sample(&m, &[1, 2, 3], &[9, 9, 9], 1.0)];
    let cfg = LossConfig {
        kl_coef: 0.1,
        micro_batch: 1,
        ..Default::default()
    };
    let mut opt = adamw(&m, 1e-2);
    let first = update(&m, Some(&reference.model), &mut opt, &batch, &cfg).unwrap();
    assert!(first.kl.abs() < 1e-6, "{first:?}");
    let mut later = first.clone();
    for _ in 0..3 {
        later = update(&m, Some(&reference.model), &mut opt, &batch, &cfg).unwrap();
    }
    assert!(later.kl > 1e-4, "{later:?}");
}

#[test]
fn the_exact_kl_penalty_is_the_divergence_over_the_vocabulary_and_k3_only_estimates_it() {
    let m = Loaded::fresh(&tiny(), Device::Cpu, 5).unwrap();
    let reference = Loaded::fresh(&tiny(), Device::Cpu, 5).unwrap();
    let batch = vec![
        sample(&m, &[1, 2, 3], &[9, 9, 9, 4], 1.0),
        sample(&m, &[5, 6], &[7, 8], -1.0),
    ];
    // Move the policy away from the reference first.
    let mut opt = adamw(&m, 3e-2);
    for _ in 0..3 {
        update(&m, None, &mut opt, &batch, &LossConfig::default()).unwrap();
    }
    let measured =
        clawline_model::divergence_from_reference(&m.model, &reference.model, &batch, 8).unwrap();
    assert!(measured.kl > 0.01, "{measured:?}");
    // The penalty's value is reported before the optimizer step: the same weights as measured.
    let penalty = |kl_penalty| {
        let cfg = LossConfig {
            kl_coef: 0.1,
            kl_penalty,
            ..Default::default()
        };
        let mut opt = adamw(&m, 0.0);
        update(&m, Some(&reference.model), &mut opt, &batch, &cfg)
            .unwrap()
            .kl
    };
    let exact = penalty(KlPenalty::Exact);
    assert!(
        (exact - measured.kl).abs() < 1e-5 * measured.kl.max(1.0),
        "penalty {exact} vs divergence {}",
        measured.kl
    );
    // k3 on the six sampled tokens is a different (noisy) number for the same weights.
    let k3 = penalty(KlPenalty::K3);
    assert!(
        k3 > 0.0 && (k3 - exact).abs() > 1e-3,
        "k3 {k3} vs exact {exact}"
    );
    assert_eq!("k3".parse::<KlPenalty>(), Ok(KlPenalty::K3));
    assert!(
        "sampled"
            .parse::<KlPenalty>()
            .unwrap_err()
            .contains("exact")
    );
}
