//! Grouped-query self-attention with rotary position embeddings (the Hugging Face, non-interleaved
//! convention), optional RMSNorm of each head's queries and keys (Qwen3), an optional sliding
//! window (the mask the caller passes), and a KV cache.

use tch::{Kind, Tensor};

use crate::layers::{Proj, RmsNorm};

pub(crate) struct Attention {
    pub(crate) q: Proj,
    pub(crate) k: Proj,
    pub(crate) v: Proj,
    pub(crate) o: Proj,
    /// Qwen3: RMSNorm over `head_dim` of each head's queries and keys, before the rotation.
    pub(crate) qk_norm: Option<(RmsNorm, RmsNorm)>,
    pub(crate) heads: i64,
    pub(crate) kv_heads: i64,
    pub(crate) head_dim: i64,
    /// Keys a query sees at most, itself included (`None`: every earlier one).
    pub(crate) window: Option<i64>,
}

impl Attention {
    /// `bias` `[b, 1, t, total]`: 0 where a query may see a key, a large negative elsewhere.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let split = |y: Tensor, heads: i64| y.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let mut q = split(self.q.forward(x), self.heads);
        let mut k = split(self.k.forward(x), self.kv_heads);
        if let Some((qn, kn)) = &self.qk_norm {
            q = qn.forward(&q);
            k = kn.forward(&k);
        }
        let q = rotate(&q, cos, sin);
        let mut k = rotate(&k, cos, sin);
        let mut v = split(self.v.forward(x), self.kv_heads);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        let rep = self.heads / self.kv_heads;
        if rep > 1 {
            k = k.repeat_interleave_self_int(rep, 1, None);
            v = v.repeat_interleave_self_int(rep, 1, None);
        }
        let scores = q.matmul(&k.transpose(-2, -1)) / (self.head_dim as f64).sqrt() + bias;
        // Softmax in f32 whatever the precision, as transformers' eager attention.
        let y = scores.softmax(-1, Kind::Float).to_kind(v.kind()).matmul(&v);
        self.o.forward(
            &y.transpose(1, 2)
                .contiguous()
                .view([b, t, self.heads * self.head_dim]),
        )
    }
}

/// `x·cos + rotate_half(x)·sin`, the Hugging Face (non-interleaved) rotary convention.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
    x * cos + rotated * sin
}

/// The attention bias `[b, 1, t, total]` for queries at cache indices `past..past + t` over
/// keys `0..total`: causal, only real keys (`key_mask` `[b, total]`, true = a real token), and
/// with a `window`, only the last `window` keys up to the query itself. Padding is on the left,
/// so index distances are position distances.
pub(crate) fn mask_bias(
    b: i64,
    past: i64,
    t: i64,
    key_mask: Option<&Tensor>,
    window: Option<i64>,
    device: tch::Device,
) -> Tensor {
    let total = past + t;
    let q_pos = Tensor::arange_start(past, total, (Kind::Int64, device)).view([t, 1]);
    let k_pos = Tensor::arange(total, (Kind::Int64, device)).view([1, total]);
    let mut allowed = k_pos.le_tensor(&q_pos);
    if let Some(w) = window {
        allowed = allowed.logical_and(&(&q_pos - &k_pos).lt(w));
    }
    let mut allowed = allowed.view([1, 1, t, total]);
    if let Some(mask) = key_mask {
        allowed = allowed.logical_and(&mask.to_kind(Kind::Bool).view([b, 1, 1, total]));
    }
    // A large negative rather than -inf: a padding query row with no visible key stays finite.
    Tensor::zeros([1], (Kind::Float, device))
        .masked_fill(&allowed.logical_not(), -1e30)
        .expand([b, 1, t, total], false)
}
