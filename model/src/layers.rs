//! The pieces a decoder block is made of: RMSNorm, and projections with their optional bias and
//! LoRA adapter (PEFT's names and init).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[dim], nn::Init::Const(1.0)),
            eps,
        }
    }

    /// Normalised in f32 whatever `x`'s precision, then back to it before the weight, as
    /// transformers' `LlamaRMSNorm` does.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2.0).mean_dim(-1, true, Kind::Float);
        (xf * (var + self.eps).rsqrt()).to_kind(x.kind()) * &self.weight
    }
}

/// A projection, with its LoRA adapter when it has one: `x·Wᵀ (+ b) + scale · (x·Aᵀ)·Bᵀ`.
pub(crate) struct Proj {
    pub(crate) linear: nn::Linear,
    pub(crate) lora: Option<(Tensor, Tensor, f64)>,
}

impl Proj {
    /// With a bf16 base, the adapter computes in its own (f32) precision and the sum is cast back
    /// to the base's, as PEFT does.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.linear.forward(x);
        match &self.lora {
            Some((a, b, scale)) => {
                let k = a.kind();
                let delta = x.to_kind(k).matmul(&a.tr()).matmul(&b.tr()) * *scale;
                (y.to_kind(k) + delta).to_kind(y.kind())
            }
            None => y,
        }
    }

    /// Folds the adapter into the base weight (for engines that serve full weights).
    pub(crate) fn merge(&mut self) {
        if let Some((a, b, scale)) = self.lora.take() {
            tch::no_grad(|| {
                // In f32, rounded once to the weight's precision: the bf16 weight nearest to
                // base + adapter.
                let w = &mut self.linear.ws;
                let merged = (w.to_kind(Kind::Float) + b.matmul(&a) * scale).to_kind(w.kind());
                w.copy_(&merged);
            });
        }
    }
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
        let key = format!("model.layers.{layer}.{group}.{module}");
        if !c.targets(&key) {
            return None;
        }
        // `check_modules` ran before the model was built: the patterns resolve.
        let (r, _, scale) = c.for_module(&key).ok()?;
        let r = r as i64;
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
        Some((a, b, scale))
    }
}

pub(crate) fn proj(
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

pub(crate) fn linear(p: nn::Path, input: i64, output: i64, bias: bool) -> nn::Linear {
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
