//! The decoder: token embeddings, `num_hidden_layers` blocks of (RMSNorm → grouped-query
//! attention with rotary position embeddings → residual, RMSNorm → SwiGLU MLP → residual), a final
//! RMSNorm and the LM head (tied to the embeddings or not). Variable names are the Hugging Face
//! ones (`model.layers.0.self_attn.q_proj.weight`, …), so a VarStore reads and writes HF
//! checkpoints as they are.
//!
//! Batches are left-padded: each row has its own positions, and a key mask hides the padding, so
//! sequences of different lengths decode together and each gets exactly what it would alone.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::config::LlamaConfig;

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[dim], nn::Init::Const(1.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let var = x.pow_tensor_scalar(2.0).mean_dim(-1, true, Kind::Float);
        x * (var + self.eps).rsqrt() * &self.weight
    }
}

/// A projection, with its LoRA adapter when it has one: `x·Wᵀ (+ b) + scale · (x·Aᵀ)·Bᵀ`.
struct Proj {
    linear: nn::Linear,
    lora: Option<(Tensor, Tensor, f64)>,
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.linear.forward(x);
        match &self.lora {
            Some((a, b, scale)) => y + x.matmul(&a.tr()).matmul(&b.tr()) * *scale,
            None => y,
        }
    }

    /// Folds the adapter into the base weight (for engines that serve full weights).
    fn merge(&mut self) {
        if let Some((a, b, scale)) = self.lora.take() {
            tch::no_grad(|| {
                let delta = b.matmul(&a) * scale;
                let _ = self.linear.ws.g_add_(&delta);
            });
        }
    }
}

struct Attention {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

struct Mlp {
    gate: Proj,
    up: Proj,
    down: Proj,
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// Keys and values of the positions seen so far, per layer: `[batch, kv_heads, len, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> i64 {
        match self.layers.first() {
            Some(Some((k, _))) => k.size()[2],
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the rows in `rows` (finished sequences leave a batch).
    pub fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
    }
}

pub struct Llama {
    config: LlamaConfig,
    embed: nn::Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// Where LoRA adapters go: their own VarStore root, PEFT's names, rank, alpha and targets.
pub struct LoraSpec<'a> {
    pub root: nn::Path<'a>,
    pub config: &'a crate::lora::LoraConfig,
}

impl LoraSpec<'_> {
    /// The adapter of `module` (`q_proj`, …) in `layer` under `group` (`self_attn` / `mlp`), created
    /// with PEFT's names and init (A random, B zero: the adapted model starts as the base).
    fn adapter(
        &self,
        layer: usize,
        group: &str,
        module: &str,
        input: i64,
        output: i64,
    ) -> Option<(Tensor, Tensor, f64)> {
        let c = self.config;
        if !c.target_modules.iter().any(|t| t == module) {
            return None;
        }
        let r = c.r as i64;
        let p = &self.root / "base_model" / "model" / "model" / "layers" / layer / group / module;
        let bound = 1.0 / (input as f64).sqrt();
        let a = (&p / "lora_A").var(
            "weight",
            &[r, input],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let b = (&p / "lora_B").var("weight", &[output, r], nn::Init::Const(0.0));
        Some((a, b, c.alpha / c.r as f64))
    }
}

fn proj(
    p: nn::Path,
    lora: Option<&LoraSpec>,
    at: (usize, &str, &str),
    input: i64,
    output: i64,
    bias: bool,
) -> Proj {
    Proj {
        linear: linear(p, input, output, bias),
        lora: lora.and_then(|l| l.adapter(at.0, at.1, at.2, input, output)),
    }
}

fn linear(p: nn::Path, input: i64, output: i64, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        input,
        output,
        nn::LinearConfig {
            bias,
            ..Default::default()
        },
    )
}

impl Llama {
    /// Creates the variables under `root` (freshly initialised; load weights into the VarStore
    /// afterwards to use a checkpoint).
    pub fn new(root: &nn::Path, config: &LlamaConfig) -> Self {
        Self::with_lora(root, config, None)
    }

    /// `new`, with LoRA adapters on the spec's target modules (their variables under its root).
    pub fn with_lora(root: &nn::Path, config: &LlamaConfig, lora: Option<LoraSpec>) -> Self {
        let c = config;
        let lora = lora.as_ref();
        let hidden = c.hidden_size as i64;
        let head_dim = c.head_size() as i64;
        let heads = c.num_attention_heads as i64;
        let kv_heads = c.kv_heads() as i64;
        let model = root / "model";
        let embed = nn::embedding(
            &model / "embed_tokens",
            c.vocab_size as i64,
            hidden,
            nn::EmbeddingConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                ..Default::default()
            },
        );
        let layers = &model / "layers";
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let l = &layers / i;
                let a = &l / "self_attn";
                let m = &l / "mlp";
                let inter = c.intermediate_size as i64;
                Block {
                    input_norm: RmsNorm::new(&l / "input_layernorm", hidden, c.rms_norm_eps),
                    attn: Attention {
                        q: proj(
                            &a / "q_proj",
                            lora,
                            (i, "self_attn", "q_proj"),
                            hidden,
                            heads * head_dim,
                            c.qkv_bias(),
                        ),
                        k: proj(
                            &a / "k_proj",
                            lora,
                            (i, "self_attn", "k_proj"),
                            hidden,
                            kv_heads * head_dim,
                            c.qkv_bias(),
                        ),
                        v: proj(
                            &a / "v_proj",
                            lora,
                            (i, "self_attn", "v_proj"),
                            hidden,
                            kv_heads * head_dim,
                            c.qkv_bias(),
                        ),
                        o: proj(
                            &a / "o_proj",
                            lora,
                            (i, "self_attn", "o_proj"),
                            heads * head_dim,
                            hidden,
                            false,
                        ),
                        heads,
                        kv_heads,
                        head_dim,
                    },
                    post_norm: RmsNorm::new(
                        &l / "post_attention_layernorm",
                        hidden,
                        c.rms_norm_eps,
                    ),
                    mlp: Mlp {
                        gate: proj(
                            &m / "gate_proj",
                            lora,
                            (i, "mlp", "gate_proj"),
                            hidden,
                            inter,
                            false,
                        ),
                        up: proj(
                            &m / "up_proj",
                            lora,
                            (i, "mlp", "up_proj"),
                            hidden,
                            inter,
                            false,
                        ),
                        down: proj(
                            &m / "down_proj",
                            lora,
                            (i, "mlp", "down_proj"),
                            inter,
                            hidden,
                            false,
                        ),
                    },
                }
            })
            .collect();
        let norm = RmsNorm::new(&model / "norm", hidden, c.rms_norm_eps);
        let lm_head = (!c.tie_word_embeddings)
            .then(|| linear(root / "lm_head", hidden, c.vocab_size as i64, false));
        let device = root.device();
        let (cos, sin) = rotary_tables(
            head_dim,
            c.max_position_embeddings as i64,
            c.rope_theta,
            device,
        );
        Self {
            config: c.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
            device,
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Logits `[batch, len, vocab]` for `ids` `[batch, len]` at `positions` `[batch, len]`.
    /// `key_mask` `[batch, cached + len]` (true = a real token) hides left padding; with a
    /// cache, the new keys and values are appended to it.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        key_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let past = cache.as_ref().map_or(0, |c| c.len());
        let total = past + t;
        // [b, 1, t, total]: causal, and only real keys.
        let q_pos = Tensor::arange_start(past, total, (Kind::Int64, self.device)).view([t, 1]);
        let k_pos = Tensor::arange(total, (Kind::Int64, self.device)).view([1, total]);
        let mut allowed = k_pos.le_tensor(&q_pos).view([1, 1, t, total]);
        if let Some(mask) = key_mask {
            allowed = allowed.logical_and(&mask.to_kind(Kind::Bool).view([b, 1, 1, total]));
        }
        // A large negative rather than -inf: a padding query row with no visible key stays finite.
        let bias = Tensor::zeros([1], (Kind::Float, self.device))
            .masked_fill(&allowed.logical_not(), -1e30)
            .expand([b, 1, t, total], false);
        let flat = positions.reshape([-1]);
        let d = self.cos.size()[1];
        let cos = self.cos.index_select(0, &flat).view([b, 1, t, d]);
        let sin = self.sin.index_select(0, &flat).view([b, 1, t, d]);

        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() < self.blocks.len()
        {
            c.layers.resize_with(self.blocks.len(), || None);
        }
        let mut x = self.embed.forward(ids);
        for (i, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let h = block
                .attn
                .forward(&block.input_norm.forward(&x), &cos, &sin, &bias, slot);
            x = &x + h;
            let m = &block.mlp;
            let n = block.post_norm.forward(&x);
            x = &x
                + m.down
                    .forward(&(m.gate.forward(&n).silu() * m.up.forward(&n)));
        }
        let x = self.norm.forward(&x);
        match &self.lm_head {
            Some(head) => head.forward(&x),
            None => x.matmul(&self.embed.ws.tr()),
        }
    }

    /// Log-probability of each token after the first given the ones before it: `[batch, len-1]`,
    /// for right-padded `ids` (`mask` `[batch, len]`, true = real; padding gets 0).
    pub fn token_logprobs(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let positions = Tensor::arange(t, (Kind::Int64, self.device))
            .view([1, t])
            .expand([b, t], false)
            .contiguous();
        let logits = self.forward(ids, &positions, Some(mask), None);
        let logp = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float);
        let next = ids.narrow(1, 1, t - 1).unsqueeze(-1);
        let lp = logp.gather(-1, &next, false).squeeze_dim(-1);
        lp * mask.narrow(1, 1, t - 1).to_kind(Kind::Float)
    }
}

impl Llama {
    /// Folds every LoRA adapter into its base weight; the model then needs no adapter.
    pub fn merge_lora(&mut self) {
        for b in &mut self.blocks {
            for p in [
                &mut b.attn.q,
                &mut b.attn.k,
                &mut b.attn.v,
                &mut b.attn.o,
                &mut b.mlp.gate,
                &mut b.mlp.up,
                &mut b.mlp.down,
            ] {
                p.merge();
            }
        }
    }

    /// The log-probabilities of `completion`'s tokens after `prompt`, from one forward pass
    /// without gradients: what a response's logprobs must equal for the same weights.
    pub fn completion_logprobs(&self, prompt: &[u32], completion: &[u32]) -> Vec<f32> {
        if prompt.is_empty() || completion.is_empty() {
            return Vec::new();
        }
        let all: Vec<i64> = prompt
            .iter()
            .chain(completion)
            .map(|&t| i64::from(t))
            .collect();
        let t = all.len() as i64;
        let ids = Tensor::from_slice(&all).view([1, t]).to_device(self.device);
        let mask = Tensor::ones([1, t], (Kind::Bool, self.device));
        let lp = tch::no_grad(|| self.token_logprobs(&ids, &mask))
            .to_device(Device::Cpu)
            .view([-1]);
        Vec::<f32>::try_from(lp)
            .map(|v| v[prompt.len() - 1..].to_vec())
            .unwrap_or_default()
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let split = |y: Tensor, heads: i64| y.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let q = rotate(&split(self.q.forward(x), self.heads), cos, sin);
        let mut k = rotate(&split(self.k.forward(x), self.kv_heads), cos, sin);
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
        let y = scores.softmax(-1, Kind::Float).matmul(&v);
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

/// cos and sin tables `[positions, head_dim]` of the rotary embedding.
fn rotary_tables(head_dim: i64, positions: i64, theta: f64, device: Device) -> (Tensor, Tensor) {
    let exponents =
        Tensor::arange_start_step(0, head_dim, 2, (Kind::Float, device)) / head_dim as f64;
    let inv_freq = (exponents * theta.ln()).exp().reciprocal();
    let t = Tensor::arange(positions, (Kind::Float, device));
    let freqs = t.outer(&inv_freq);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
}
