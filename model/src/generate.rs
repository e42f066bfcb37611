//! Generation with a KV cache: several prompts decode together (left-padded, one forward per
//! token for the whole batch, finished rows leave the batch), each with its own sampling
//! parameters and seed. Returned logprobs are those of the model's own distribution (temperature
//! 1, no top-k/top-p), which is what a trainer's importance ratio compares against.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::llama::{KvCache, Llama};

#[derive(Debug, Clone)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus: the smallest set of tokens whose probability reaches this (1 = off).
    pub top_p: f64,
    /// Only the k likeliest tokens (0 = off).
    pub top_k: usize,
    pub max_tokens: usize,
    /// Token ids that end the sequence (included in the output, as vLLM does for EOS).
    pub stop_ids: Vec<u32>,
    pub seed: Option<u64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 16,
            stop_ids: Vec::new(),
            seed: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token was produced.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller stopped it (`on_token` returned false: a stop string, a client gone).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish: Finish,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: Sampling,
}

/// Generates a completion for every request, all decoding in one batch.
pub fn generate(model: &Llama, requests: &[Request]) -> anyhow::Result<Vec<Generated>> {
    generate_with(model, requests, |_, _, _| true)
}

/// `generate`, calling `on_token(request, token, logprob)` as each token is chosen (for
/// streaming); when it returns false, that request ends there (`Finish::Cancelled`) and leaves the
/// batch.
pub fn generate_with(
    model: &Llama,
    requests: &[Request],
    mut on_token: impl FnMut(usize, u32, f32) -> bool,
) -> anyhow::Result<Vec<Generated>> {
    let limit = model.config().max_position_embeddings;
    let vocab = model.config().vocab_size;
    for (i, r) in requests.iter().enumerate() {
        anyhow::ensure!(!r.prompt.is_empty(), "request {i}: empty prompt");
        anyhow::ensure!(
            r.prompt.len() + r.sampling.max_tokens <= limit,
            "request {i}: {} prompt tokens + {} max_tokens exceed the model's {limit} positions",
            r.prompt.len(),
            r.sampling.max_tokens
        );
        if let Some(bad) = r.prompt.iter().find(|t| **t as usize >= vocab) {
            anyhow::bail!("request {i}: token id {bad} is outside the vocabulary ({vocab})");
        }
    }
    let mut out: Vec<Generated> = requests
        .iter()
        .map(|_| Generated {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    if requests.is_empty() {
        return Ok(out);
    }
    let mut rngs: Vec<StdRng> = requests
        .iter()
        .map(|r| match r.sampling.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        })
        .collect();
    let device = model.device();
    tch::no_grad(|| {
        let b = requests.len() as i64;
        let longest = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0) as i64;
        let mut ids = vec![0i64; (b * longest) as usize];
        let mut mask = vec![false; (b * longest) as usize];
        let mut positions = vec![0i64; (b * longest) as usize];
        for (row, r) in requests.iter().enumerate() {
            let pad = longest as usize - r.prompt.len();
            for (j, tok) in r.prompt.iter().enumerate() {
                let at = row * longest as usize + pad + j;
                ids[at] = i64::from(*tok);
                mask[at] = true;
                positions[at] = j as i64;
            }
        }
        let shape = [b, longest];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
        let mut key_mask = Tensor::from_slice(&mask).view(shape).to_device(device);
        let positions = Tensor::from_slice(&positions).view(shape).to_device(device);
        let mut cache = KvCache::default();
        let logits = model.forward(&ids, &positions, Some(&key_mask), Some(&mut cache));
        let mut last = logits.select(1, longest - 1);
        // Batch row → request, and each active request's next position.
        let mut active: Vec<usize> = (0..requests.len()).collect();
        let mut next_pos: Vec<i64> = requests.iter().map(|r| r.prompt.len() as i64).collect();
        loop {
            let rows = last
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .contiguous();
            let flat = Vec::<f32>::try_from(rows.view([-1]))?;
            let mut fed = Vec::with_capacity(active.len());
            let mut keep = Vec::with_capacity(active.len());
            for (row, &req) in active.iter().enumerate() {
                let logits = &flat[row * vocab..(row + 1) * vocab];
                let s = &requests[req].sampling;
                let token = pick(logits, s, &mut rngs[req]);
                let g = &mut out[req];
                let lp = logprob(logits, token);
                g.tokens.push(token as u32);
                g.logprobs.push(lp);
                let go_on = on_token(req, token as u32, lp);
                if !go_on {
                    g.finish = Finish::Cancelled;
                } else if s.stop_ids.contains(&(token as u32)) {
                    g.finish = Finish::Stop;
                } else if g.tokens.len() >= s.max_tokens {
                    g.finish = Finish::Length;
                } else {
                    keep.push(row as i64);
                    fed.push(token as i64);
                }
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                let rows = Tensor::from_slice(&keep).to_device(device);
                cache.select_rows(&rows);
                key_mask = key_mask.index_select(0, &rows);
                active = keep.iter().map(|&r| active[r as usize]).collect();
            }
            let n = active.len() as i64;
            let pos: Vec<i64> = active.iter().map(|&r| next_pos[r]).collect();
            for &r in &active {
                next_pos[r] += 1;
            }
            key_mask = Tensor::cat(&[&key_mask, &Tensor::ones([n, 1], (Kind::Bool, device))], 1);
            let ids = Tensor::from_slice(&fed).view([n, 1]).to_device(device);
            let pos = Tensor::from_slice(&pos).view([n, 1]).to_device(device);
            last = model
                .forward(&ids, &pos, Some(&key_mask), Some(&mut cache))
                .select(1, 0);
        }
        anyhow::Ok(())
    })?;
    Ok(out)
}

/// log softmax(logits)[token], computed stably.
pub fn logprob(logits: &[f32], token: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    (f64::from(logits[token] - max) - sum.ln()) as f32
}

/// Picks the next token under temperature, top-k and top-p: the draw walks the candidates from the
/// likeliest down. Only as much of the vocabulary is sorted as the draw needs: the top 256 first
/// (where a trained model's draws nearly always end), the rest only when it reaches past them;
/// top-k selects its k before sorting. (A full sort of a 152k vocabulary for every token of every
/// request was the policy server's bottleneck at real vocabulary sizes: 38 tokens/s on an H200.)
fn pick(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let max = f64::from(logits[argmax()]);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - max) / s.temperature).exp())
        .collect();
    let vocab = logits.len();
    let k = if s.top_k > 0 {
        s.top_k.min(vocab)
    } else {
        vocab
    };
    let descending = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]);
    let mut candidates: Vec<usize> = (0..vocab).collect();
    if k == vocab && s.top_p >= 1.0 {
        // Two versions given the same seed pick alike: the same draw, the same rank.
        let total: f64 = weights.iter().sum();
        let mut x = rng.random::<f64>() * total;
        let head = vocab.min(256);
        candidates.select_nth_unstable_by(head - 1, descending);
        candidates[..head].sort_unstable_by(descending);
        for at in 0..vocab {
            if at == head {
                candidates[head..].sort_unstable_by(descending);
            }
            let i = candidates[at];
            if x < weights[i] {
                return i;
            }
            x -= weights[i];
        }
        return candidates[vocab - 1];
    }
    if k < vocab {
        candidates.select_nth_unstable_by(k - 1, descending);
        candidates.truncate(k);
    }
    let total: f64 = candidates.iter().map(|&i| weights[i]).sum();
    // Sort the top 256 candidates; where the nucleus (the smallest top set holding top_p) is not
    // among them (a flat distribution), sort the rest too.
    let (mut sorted, mut kept, mut cumulative) = (0, 0, 0.0);
    while kept == 0 {
        let n = candidates.len();
        let upto = if sorted == 0 { n.min(256) } else { n };
        // The top `upto - sorted` of the rest, then in order.
        candidates[sorted..].select_nth_unstable_by(upto - sorted - 1, descending);
        candidates[sorted..upto].sort_unstable_by(descending);
        for (at, &i) in candidates.iter().enumerate().take(upto).skip(sorted) {
            cumulative += weights[i] / total;
            if cumulative >= s.top_p {
                kept = at + 1;
                break;
            }
        }
        sorted = upto;
        if sorted == n && kept == 0 {
            kept = n;
        }
    }
    let nucleus: Vec<f64> = candidates[..kept].iter().map(|&i| weights[i]).collect();
    candidates[draw(&nucleus, 0..kept, rng)]
}

/// Draws a position of `positions` with probability proportional to `weights` (one per position).
fn draw(weights: &[f64], positions: std::ops::Range<usize>, rng: &mut StdRng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (w, at) in weights.iter().zip(positions.clone()) {
        if x < *w {
            return at;
        }
        x -= w;
    }
    positions.end - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(logits: &[f32], s: &Sampling, draws: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[pick(logits, s, &mut rng)] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn samples_follow_temperature_top_k_and_top_p() {
        // Weights 1, 2, 3, 4 (and a tail of zeros in probability) under temperature 1.
        let mut logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|w| w.ln()).collect();
        logits.extend(std::iter::repeat_n(-1e9, 300));
        let plain = Sampling {
            temperature: 1.0,
            ..Default::default()
        };
        let f = frequencies(&logits, &plain, 40_000);
        for (i, want) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            assert!((f[i] - want).abs() < 0.01, "token {i}: {} vs {want}", f[i]);
        }
        assert!(f[4..].iter().all(|&x| x == 0.0));
        // Top-2: only the two likeliest, renormalized 3:4.
        let top2 = Sampling {
            top_k: 2,
            ..plain.clone()
        };
        let f = frequencies(&logits, &top2, 40_000);
        assert_eq!(f[0] + f[1], 0.0);
        assert!((f[3] - 4.0 / 7.0).abs() < 0.01, "{f:?}");
        // Top-p 0.65: the nucleus is {4, 3} (0.4 + 0.3 >= 0.65).
        let nucleus = Sampling {
            top_p: 0.65,
            ..plain.clone()
        };
        let f = frequencies(&logits, &nucleus, 40_000);
        assert_eq!(f[0] + f[1], 0.0);
        assert!((f[2] - 3.0 / 7.0).abs() < 0.01, "{f:?}");
        // A flat distribution over a large vocabulary: the nucleus grows past the first prefix.
        let flat = vec![0.0f32; 1000];
        let half = Sampling {
            top_p: 0.5,
            ..plain.clone()
        };
        let f = frequencies(&flat, &half, 20_000);
        let support = f.iter().filter(|&&x| x > 0.0).count();
        assert_eq!(support, 500, "half of a flat vocabulary");
    }
}
