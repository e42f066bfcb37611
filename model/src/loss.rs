//! The policy-gradient update: GRPO / PPO-clip on the behaviour logprobs the steps carry
//! (ratio = exp(new − old) per response token), asymmetric clip range, truncated importance
//! weights for stale steps, optional KL penalty to reference weights (`KlPenalty`), entropy bonus; AdamW
//! with gradient-norm clipping over micro-batches. Token-level mean over all response tokens of a
//! batch, so long responses are not down-weighted. `kl_to_behaviour` and `divergence_from_reference`
//! measure, without gradients, how far an update moved the policy (the trainer's trust region).

use tch::{Device, Kind, Tensor, nn};

use crate::llama::Llama;
use crate::optim::Optimizer;
use crate::weights::Loaded;

/// How the KL penalty to the reference weights is computed at each response position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlPenalty {
    /// KL(policy ‖ reference) exactly over the vocabulary, `Σ_v p(v) (log p(v) − log q(v))`:
    /// no sampling noise, and its gradient pulls back mass the policy puts on tokens the
    /// reference finds unlikely (broken words), which the canary's drift check measures.
    #[default]
    Exact,
    /// The k3 estimator on the sampled token, `exp(d) − d − 1` with `d = log q − log p` (GRPO's
    /// penalty). Its expected gradient is that of KL(reference ‖ policy): it resists the policy
    /// growing surer, and barely the mass it moves onto tokens the reference finds unlikely.
    K3,
}

impl std::str::FromStr for KlPenalty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(Self::Exact),
            "k3" => Ok(Self::K3),
            other => Err(format!("{other:?}: expected `exact` or `k3`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LossConfig {
    /// PPO clip: ratios are kept within [1 − clip_low, 1 + clip_high].
    pub clip_low: f64,
    pub clip_high: f64,
    /// Weight of the KL penalty to the reference policy (0 = off).
    pub kl_coef: f64,
    pub kl_penalty: KlPenalty,
    /// Weight of the entropy bonus (0 = off).
    pub entropy_coef: f64,
    /// Samples per forward/backward pass; gradients add up to the whole batch's.
    pub micro_batch: usize,
    /// Gradient-norm clipping (0 = off).
    pub max_grad_norm: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            clip_low: 0.2,
            clip_high: 0.28,
            kl_coef: 0.0,
            kl_penalty: KlPenalty::Exact,
            entropy_coef: 0.0,
            micro_batch: 8,
            max_grad_norm: 1.0,
        }
    }
}

/// One step to learn from: its tokens, the logprobs the serving policy gave the response
/// tokens, its advantage, and (for a stale step) a cap on its importance ratio.
#[derive(Debug, Clone)]
pub struct Sample {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub old_logprobs: Vec<f32>,
    pub advantage: f64,
    pub importance_cap: Option<f64>,
}

/// What one update did, for the metrics subject and the weights event.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub loss: f64,
    pub policy_loss: f64,
    /// Mean of exp(new − old) over response tokens (1 when the data is on-policy).
    pub ratio_mean: f64,
    /// Share of response tokens whose ratio was clipped.
    pub clip_fraction: f64,
    pub kl: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub tokens: u64,
}

/// Right-padded ids, the response mask over next-token positions, and aligned old logprobs,
/// advantages and caps: everything on `device`.
struct Packed {
    ids: Tensor,
    mask: Tensor,
    response: Tensor,
    old: Tensor,
    advantage: Tensor,
    cap: Tensor,
}

fn pack(samples: &[Sample], device: Device) -> anyhow::Result<Packed> {
    let t = samples
        .iter()
        .map(|s| s.prompt.len() + s.response.len())
        .max()
        .unwrap_or(0);
    anyhow::ensure!(t >= 2, "nothing to learn from");
    let b = samples.len();
    let mut ids = vec![0i64; b * t];
    let mut mask = vec![false; b * t];
    let mut response = vec![0f32; b * (t - 1)];
    let mut old = vec![0f32; b * (t - 1)];
    let mut advantage = vec![0f32; b * (t - 1)];
    let mut cap = vec![f32::INFINITY; b * (t - 1)];
    for (row, s) in samples.iter().enumerate() {
        anyhow::ensure!(
            !s.prompt.is_empty() && s.old_logprobs.len() == s.response.len(),
            "sample {row}: {} response tokens but {} logprobs (or an empty prompt)",
            s.response.len(),
            s.old_logprobs.len()
        );
        for (j, tok) in s.prompt.iter().chain(&s.response).enumerate() {
            ids[row * t + j] = i64::from(*tok);
            mask[row * t + j] = true;
        }
        // Position p predicts token p + 1: response token k sits at prompt_len − 1 + k.
        for (k, lp) in s.old_logprobs.iter().enumerate() {
            let at = row * (t - 1) + s.prompt.len() - 1 + k;
            response[at] = 1.0;
            old[at] = *lp;
            advantage[at] = s.advantage as f32;
            cap[at] = s.importance_cap.map_or(f32::INFINITY, |c| c as f32);
        }
    }
    let tt = t as i64;
    let bb = b as i64;
    let to = |v: &[f32]| Tensor::from_slice(v).view([bb, tt - 1]).to_device(device);
    Ok(Packed {
        ids: Tensor::from_slice(&ids).view([bb, tt]).to_device(device),
        mask: Tensor::from_slice(&mask).view([bb, tt]).to_device(device),
        response: to(&response),
        old: to(&old),
        advantage: to(&advantage),
        cap: to(&cap),
    })
}

/// The loss of `samples` (summed over response tokens, divided by `denominator` tokens) and its
/// parts; `reference` is the policy the KL term pulls toward.
fn loss(
    model: &Llama,
    reference: Option<&Llama>,
    p: &Packed,
    cfg: &LossConfig,
    denominator: f64,
) -> (Tensor, [f64; 5]) {
    let (b, t) = (p.ids.size()[0], p.ids.size()[1]);
    let positions = Tensor::arange(t, (Kind::Int64, model.device()))
        .view([1, t])
        .expand([b, t], false)
        .contiguous();
    let logits = model.forward(&p.ids, &positions, Some(&p.mask), None);
    let logp_all = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float);
    let next = p.ids.narrow(1, 1, t - 1).unsqueeze(-1);
    let new = logp_all.gather(-1, &next, false).squeeze_dim(-1);
    let m = &p.response;
    let ratio = (&new - &p.old).exp();
    // Stale steps: the ratio is truncated at their cap.
    let ratio = ratio.minimum(&p.cap);
    let clipped = ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let pg = -(&ratio * &p.advantage).minimum(&(&clipped * &p.advantage));
    let sum = |x: &Tensor| (x * m).sum(Kind::Float) / denominator;
    let policy_loss = sum(&pg);
    let mut total = policy_loss.shallow_clone();
    let mut kl_value = 0.0;
    if let Some(reference) = reference
        && cfg.kl_coef > 0.0
    {
        let ref_logits =
            tch::no_grad(|| reference.forward(&p.ids, &positions, Some(&p.mask), None));
        let ref_all = ref_logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float);
        let kl =
            match cfg.kl_penalty {
                KlPenalty::Exact => sum(&(logp_all.exp() * (&logp_all - &ref_all))
                    .sum_dim_intlist(-1, false, Kind::Float)),
                KlPenalty::K3 => {
                    let d = ref_all.gather(-1, &next, false).squeeze_dim(-1) - &new;
                    sum(&(d.exp() - &d - 1.0))
                }
            };
        kl_value = kl.double_value(&[]);
        total = &total + kl * cfg.kl_coef;
    }
    let entropy = sum(&-(logp_all.exp() * &logp_all).sum_dim_intlist(-1, false, Kind::Float));
    if cfg.entropy_coef > 0.0 {
        total = &total - &entropy * cfg.entropy_coef;
    }
    let changed = (&ratio - &clipped).abs().gt(1e-6).to_kind(Kind::Float);
    let stats = tch::no_grad(|| {
        [
            policy_loss.double_value(&[]),
            sum(&ratio).double_value(&[]),
            sum(&changed).double_value(&[]),
            kl_value,
            entropy.double_value(&[]),
        ]
    });
    (total, stats)
}

/// One optimizer step of `policy` on `samples`, in micro-batches of `cfg.micro_batch`.
pub fn update(
    policy: &Loaded,
    reference: Option<&Llama>,
    optimizer: &mut impl Optimizer,
    samples: &[Sample],
    cfg: &LossConfig,
) -> anyhow::Result<Metrics> {
    let model = &policy.model;
    let device = model.device();
    let tokens: f64 = samples.iter().map(|s| s.response.len() as f64).sum();
    anyhow::ensure!(tokens > 0.0, "no response tokens to learn from");
    optimizer.zero_grad(policy.trainable());
    let mut m = Metrics {
        tokens: tokens as u64,
        ..Default::default()
    };
    for chunk in samples.chunks(cfg.micro_batch.max(1)) {
        let packed = pack(chunk, device)?;
        let (total, [pl, ratio, clipped, kl, entropy]) =
            loss(model, reference, &packed, cfg, tokens);
        total.backward();
        m.loss += total.double_value(&[]);
        m.policy_loss += pl;
        m.ratio_mean += ratio;
        m.clip_fraction += clipped;
        m.kl += kl;
        m.entropy += entropy;
    }
    m.grad_norm = grad_norm(policy.trainable());
    optimizer.step(policy.trainable(), cfg.max_grad_norm);
    Ok(m)
}

fn grad_norm(vs: &nn::VarStore) -> f64 {
    tch::no_grad(|| {
        vs.trainable_variables()
            .iter()
            .map(|v| {
                let g = v.grad();
                if g.defined() {
                    g.pow_tensor_scalar(2.0).sum(Kind::Float).double_value(&[])
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// How far `model` is from the policy that produced `samples` (their behaviour logprobs):
/// KL(behaviour ‖ model) by the k3 estimator on the sampled response tokens, the mean over
/// tokens of `exp(new − old) − 1 − (new − old)` (unbiased, never negative). One forward pass
/// without gradients, in micro-batches of `micro_batch`.
pub fn kl_to_behaviour(
    model: &Llama,
    samples: &[Sample],
    micro_batch: usize,
) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    let mut tokens = 0usize;
    for chunk in samples.chunks(micro_batch.max(1)) {
        let p = pack(chunk, model.device())?;
        sum += tch::no_grad(|| {
            let new = model.token_logprobs(&p.ids, &p.mask);
            let d = new - &p.old;
            ((d.exp() - &d - 1.0) * &p.response)
                .sum(Kind::Double)
                .double_value(&[])
        });
        tokens += chunk.iter().map(|s| s.response.len()).sum::<usize>();
    }
    anyhow::ensure!(tokens > 0, "no response tokens to measure");
    Ok(sum / tokens as f64)
}

/// How far a model moved from reference weights, at given positions, exactly over the vocabulary
/// (no sampling noise): both are means over the positions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Divergence {
    /// KL(model ‖ reference): `Σ_v p(v) (log p(v) − log q(v))`.
    pub kl: f64,
    /// The cross-entropy of the model's next token to the reference, `Σ_v p(v) (−log q(v))`:
    /// how unlikely, to the reference, what the model would say is.
    pub cross_entropy: f64,
    /// The reference's entropy `Σ_v q(v) (−log q(v))`: the same for the reference itself.
    pub reference_entropy: f64,
}

impl Divergence {
    /// How much less likely to the reference the model's next tokens are than the reference's
    /// own (`cross_entropy − reference_entropy`). It rises when the model puts mass on tokens
    /// the reference finds unlikely (broken words, garbled sentences); it does not when the
    /// model only grows surer of what the reference already found likely (a learned habit).
    /// 0 for the reference itself.
    pub fn drift(&self) -> f64 {
        self.cross_entropy - self.reference_entropy
    }
}

/// `Divergence` of `model` from `reference` at each response position of `samples`. Two forward
/// passes without gradients; memory of two `[micro_batch, len, vocab]` logits.
pub fn divergence_from_reference(
    model: &Llama,
    reference: &Llama,
    samples: &[Sample],
    micro_batch: usize,
) -> anyhow::Result<Divergence> {
    let (mut kl, mut cross, mut entropy) = (0.0, 0.0, 0.0);
    let mut tokens = 0usize;
    for chunk in samples.chunks(micro_batch.max(1)) {
        let p = pack(chunk, model.device())?;
        let (k, c, h) = tch::no_grad(|| {
            let (b, t) = (p.ids.size()[0], p.ids.size()[1]);
            let positions = Tensor::arange(t, (Kind::Int64, model.device()))
                .view([1, t])
                .expand([b, t], false)
                .contiguous();
            let logp = |m: &Llama| {
                m.forward(&p.ids, &positions, Some(&p.mask), None)
                    .narrow(1, 0, t - 1)
                    .log_softmax(-1, Kind::Float)
            };
            let (lp, lq) = (logp(model), logp(reference));
            let (pp, pq) = (lp.exp(), lq.exp());
            let sum = |x: Tensor| {
                (x.sum_dim_intlist(-1, false, Kind::Float) * &p.response)
                    .sum(Kind::Double)
                    .double_value(&[])
            };
            (
                sum(&pp * (&lp - &lq)),
                sum(pp * lq.neg()),
                sum(pq * lq.neg()),
            )
        });
        kl += k;
        cross += c;
        entropy += h;
        tokens += chunk.iter().map(|s| s.response.len()).sum::<usize>();
    }
    anyhow::ensure!(tokens > 0, "no response tokens to measure");
    let n = tokens as f64;
    Ok(Divergence {
        kl: kl / n,
        cross_entropy: cross / n,
        reference_entropy: entropy / n,
    })
}
