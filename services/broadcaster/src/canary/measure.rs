//! What the canary computes with a version's weights (blocking, on the CPU): its sampled answers
//! to the evaluation prompts, the likelihood of the reference answers, and the logprobs it gives
//! another version's answers.

use std::path::Path;

use clawline_model::{Finish, Llama, Loaded, Request, Sampling, generate};
use clawline_schemas::WeightsFormat;
use tch::{Device, Kind, Tensor};

use super::Candidate;

/// Sequences per forward pass when scoring: bounds the `[batch, len, vocab]` logits of a large
/// vocabulary.
const SCORE_BATCH: usize = 8;

/// One sampled answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub prompt: Vec<u32>,
    /// As generated, the stop token included.
    pub tokens: Vec<u32>,
    /// The generating version's log-probabilities of `tokens` (temperature 1).
    pub logprobs: Vec<f32>,
    pub finish: Finish,
}

pub fn load(base: &Path, candidate: &Candidate) -> anyhow::Result<Loaded> {
    let device = Device::Cpu;
    Ok(match (&candidate.dir, candidate.format) {
        (None, _) => Loaded::load(base, device)?,
        (Some(dir), WeightsFormat::Full) => Loaded::load(dir, device)?,
        (Some(dir), WeightsFormat::Lora) => {
            let mut m = Loaded::load_with_adapter(base, dir, device)?;
            m.model.merge_lora();
            m
        }
    })
}

/// `samples` answers to each prompt, prompt-major, sampled as users are served (temperature 1)
/// with the same seeds for every version, so two versions are compared on common random numbers.
pub fn answers(
    model: &Llama,
    prompts: &[Vec<u32>],
    samples: usize,
    max_tokens: usize,
    stop_ids: &[u32],
) -> anyhow::Result<Vec<Answer>> {
    let mut requests = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        for s in 0..samples {
            requests.push(Request {
                prompt: prompt.clone(),
                sampling: Sampling {
                    temperature: 1.0,
                    max_tokens,
                    stop_ids: stop_ids.to_vec(),
                    seed: Some((i * 1000 + s) as u64),
                    ..Default::default()
                },
            });
        }
    }
    let out = generate(model, &requests)?;
    Ok(requests
        .into_iter()
        .zip(out)
        .map(|(r, g)| Answer {
            prompt: r.prompt,
            tokens: g.tokens,
            logprobs: g.logprobs,
            finish: g.finish,
        })
        .collect())
}

/// The log-probability of each completion token after its prompt, teacher-forced: right-padded
/// batches, one forward pass each, no gradients.
pub fn completion_logprobs(
    model: &Llama,
    pairs: &[(&[u32], &[u32])],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(SCORE_BATCH) {
        let t = chunk
            .iter()
            .map(|(p, c)| p.len() + c.len())
            .max()
            .unwrap_or(0);
        if t < 2 {
            out.extend(chunk.iter().map(|_| Vec::new()));
            continue;
        }
        let mut ids = vec![0i64; chunk.len() * t];
        let mut mask = vec![false; chunk.len() * t];
        for (row, (p, c)) in chunk.iter().enumerate() {
            for (j, &id) in p.iter().chain(c.iter()).enumerate() {
                ids[row * t + j] = i64::from(id);
                mask[row * t + j] = true;
            }
        }
        let shape = [chunk.len() as i64, t as i64];
        let ids = Tensor::from_slice(&ids)
            .view(shape)
            .to_device(model.device());
        let mask = Tensor::from_slice(&mask)
            .view(shape)
            .to_device(model.device());
        let lp = tch::no_grad(|| model.token_logprobs(&ids, &mask))
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]);
        let flat = Vec::<f32>::try_from(lp)?;
        for (row, (p, c)) in chunk.iter().enumerate() {
            // token_logprobs[j] is the logprob of token j + 1.
            let start = row * (t - 1) + p.len().saturating_sub(1);
            out.push(if p.is_empty() {
                Vec::new()
            } else {
                flat[start..start + c.len()].to_vec()
            });
        }
    }
    Ok(out)
}

/// How far `model` moved from `base` at the positions of `answers` (exact over the vocabulary).
pub fn divergence(
    model: &Llama,
    base: &Llama,
    answers: &[Answer],
) -> anyhow::Result<clawline_model::Divergence> {
    let samples: Vec<clawline_model::Sample> = answers
        .iter()
        .filter(|a| !a.prompt.is_empty() && !a.tokens.is_empty())
        .map(|a| clawline_model::Sample {
            prompt: a.prompt.clone(),
            response: a.tokens.clone(),
            old_logprobs: vec![0.0; a.tokens.len()],
            advantage: 0.0,
            importance_cap: None,
        })
        .collect();
    clawline_model::divergence_from_reference(model, base, &samples, SCORE_BATCH)
}

/// Mean negative log-likelihood per token of `completions` after their prompts, and the tokens.
pub fn mean_nll(model: &Llama, pairs: &[(&[u32], &[u32])]) -> anyhow::Result<(f64, usize)> {
    let lps = completion_logprobs(model, pairs)?;
    let n: usize = lps.iter().map(Vec::len).sum();
    let sum: f64 = lps.iter().flatten().map(|&x| -f64::from(x)).sum();
    Ok((if n == 0 { f64::NAN } else { sum / n as f64 }, n))
}
