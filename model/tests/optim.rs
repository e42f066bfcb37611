#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The checkpointable AdamW: the same trajectory as libtorch's AdamW, and a save/load in the
//! middle of training continues exactly where it stopped.

mod common;

use clawline_model::weights::Loaded;
use clawline_model::{AdamW, LlamaConfig, LossConfig, Optimizer, Sample, update};
use tch::Device;
use tch::nn::OptimizerConfig;

fn tiny() -> LlamaConfig {
    common::tiny(64, 32)
}

/// One on-policy update on a fixed pair of responses.
fn step(m: &Loaded, opt: &mut impl Optimizer) {
    let prompt = [1, 2, 3];
    let samples: Vec<Sample> = [([10, 11], 1.0), ([20, 21], -1.0)]
        .into_iter()
        .map(|(response, advantage)| Sample {
            old_logprobs: m.model.completion_logprobs(&prompt, &response),
            prompt: prompt.to_vec(),
            response: response.to_vec(),
            advantage,
            importance_cap: None,
        })
        .collect();
    let cfg = LossConfig {
        max_grad_norm: 0.5,
        ..Default::default()
    };
    update(m, None, opt, &samples, &cfg).unwrap();
}

fn max_param_diff(a: &Loaded, b: &Loaded) -> f64 {
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    va.iter()
        .map(|(n, t)| (t - &vb[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn it_follows_libtorchs_adamw() {
    let ours = Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap();
    let theirs = Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap();
    let mut a = AdamW::new(1e-2);
    let mut b = tch::nn::AdamW::default().build(&theirs.vs, 1e-2).unwrap();
    for _ in 0..5 {
        step(&ours, &mut a);
        step(&theirs, &mut b);
    }
    assert!(max_param_diff(&ours, &Loaded::fresh(&tiny(), Device::Cpu, 1).unwrap()) > 1e-3);
    let d = max_param_diff(&ours, &theirs);
    assert!(d < 1e-5, "max |Δparam| {d}");
    assert_eq!(a.steps(), 5);
}

#[test]
fn a_saved_and_reloaded_optimizer_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let straight = Loaded::fresh(&tiny(), Device::Cpu, 2).unwrap();
    let mut opt = AdamW::new(5e-3);
    for _ in 0..5 {
        step(&straight, &mut opt);
    }

    let first = Loaded::fresh(&tiny(), Device::Cpu, 2).unwrap();
    let mut opt = AdamW::new(5e-3);
    for _ in 0..3 {
        step(&first, &mut opt);
    }
    first.save(dir.path()).unwrap();
    opt.save(&dir.path().join("optimizer.safetensors")).unwrap();
    drop((first, opt));

    let resumed = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let mut opt = AdamW::new(5e-3);
    opt.load(&dir.path().join("optimizer.safetensors")).unwrap();
    assert_eq!(opt.steps(), 3);
    for _ in 0..2 {
        step(&resumed, &mut opt);
    }
    let d = max_param_diff(&straight, &resumed);
    assert!(d < 1e-6, "max |Δparam| {d}");
    // Without the moments, the same two steps land elsewhere.
    let fresh_state = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let mut cold = AdamW::new(5e-3);
    for _ in 0..2 {
        step(&fresh_state, &mut cold);
    }
    assert!(max_param_diff(&straight, &fresh_state) > 1e-4);
}
