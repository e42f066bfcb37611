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

use crate::attention::{Attention, mask_bias};
use crate::config::LlamaConfig;
pub use crate::layers::LoraSpec;
use crate::layers::{Proj, RmsNorm, linear, proj};

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
                            c.o_bias(),
                        ),
                        qk_norm: c.qk_norm().then(|| {
                            (
                                RmsNorm::new(&a / "q_norm", head_dim, c.rms_norm_eps),
                                RmsNorm::new(&a / "k_norm", head_dim, c.rms_norm_eps),
                            )
                        }),
                        heads,
                        kv_heads,
                        head_dim,
                        window: c.window_of(i).map(|w| w as i64),
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
                            c.mlp_bias(),
                        ),
                        up: proj(
                            &m / "up_proj",
                            lora,
                            (i, "mlp", "up_proj"),
                            hidden,
                            inter,
                            c.mlp_bias(),
                        ),
                        down: proj(
                            &m / "down_proj",
                            lora,
                            (i, "mlp", "down_proj"),
                            inter,
                            hidden,
                            c.mlp_bias(),
                        ),
                    },
                }
            })
            .collect();
        let norm = RmsNorm::new(&model / "norm", hidden, c.rms_norm_eps);
        let lm_head = (!c.tie_word_embeddings)
            .then(|| linear(root / "lm_head", hidden, c.vocab_size as i64, false));
        let device = root.device();
        let (inv_freq, scale) = crate::rope::inv_freq(
            head_dim as usize,
            c.rope_theta,
            c.rope_scaling.as_ref(),
            c.max_position_embeddings,
        );
        let (cos, sin) =
            crate::rope::tables(&inv_freq, scale, c.max_position_embeddings as i64, device);
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
        // [b, 1, t, past + t] per distinct window: causal, only real keys, within the window.
        // The weights' precision is the compute precision (f32 or bf16); the rotary tables are
        // made in f32 and cast, the logits returned in f32.
        let kind = self.embed.ws.kind();
        let mut biases: Vec<(Option<i64>, Tensor)> = Vec::new();
        for block in &self.blocks {
            let w = block.attn.window;
            if !biases.iter().any(|(x, _)| *x == w) {
                let bias = mask_bias(b, past, t, key_mask, w, self.device).to_kind(kind);
                biases.push((w, bias));
            }
        }
        let flat = positions.reshape([-1]);
        let d = self.cos.size()[1];
        let cos = self
            .cos
            .index_select(0, &flat)
            .view([b, 1, t, d])
            .to_kind(kind);
        let sin = self
            .sin
            .index_select(0, &flat)
            .view([b, 1, t, d])
            .to_kind(kind);

        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() < self.blocks.len()
        {
            c.layers.resize_with(self.blocks.len(), || None);
        }
        let mut x = self.embed.forward(ids);
        for (i, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            // Every block's window has its bias (built above).
            let at = biases
                .iter()
                .position(|(w, _)| *w == block.attn.window)
                .unwrap_or(0);
            let bias = &biases[at].1;
            let h = block
                .attn
                .forward(&block.input_norm.forward(&x), &cos, &sin, bias, slot);
            x = &x + h;
            let m = &block.mlp;
            let n = block.post_norm.forward(&x);
            x = &x
                + m.down
                    .forward(&(m.gate.forward(&n).silu() * m.up.forward(&n)));
        }
        let x = self.norm.forward(&x);
        let logits = match &self.lm_head {
            Some(head) => head.forward(&x),
            None => x.matmul(&self.embed.ws.tr()),
        };
        logits.to_kind(Kind::Float)
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
