//! Rotary position embeddings as transformers computes them (`modeling_rope_utils`): the
//! inverse frequencies of the default RoPE, or of a scaled one (`linear`, `llama3` as in every
//! Llama 3.1/3.2/3.3 checkpoint, `yarn`), and the attention factor YaRN multiplies cos and sin by.
//! Types whose frequencies depend on the sequence at hand (`dynamic`, `longrope`) are refused,
//! not approximated.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// `rope_scaling` (transformers 4.x) or the scaling part of `rope_parameters` (5.x).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `llama3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// `llama3` (required), `yarn` (default `max_position_embeddings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// `yarn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_fast: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_slow: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale_all_dim: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

impl RopeScaling {
    pub fn check(&self) -> anyhow::Result<()> {
        let need = |name: &str, v: Option<f64>| -> anyhow::Result<f64> {
            let v =
                v.ok_or_else(|| anyhow::anyhow!("rope_type {:?} needs {name}", self.rope_type))?;
            anyhow::ensure!(v.is_finite() && v > 0.0, "{name} must be a positive number");
            Ok(v)
        };
        match self.rope_type.as_str() {
            "linear" => {
                need("factor", self.factor)?;
            }
            "llama3" => {
                need("factor", self.factor)?;
                let low = need("low_freq_factor", self.low_freq_factor)?;
                let high = need("high_freq_factor", self.high_freq_factor)?;
                anyhow::ensure!(high > low, "high_freq_factor must exceed low_freq_factor");
                anyhow::ensure!(
                    self.original_max_position_embeddings.is_some_and(|n| n > 0),
                    "rope_type \"llama3\" needs original_max_position_embeddings"
                );
            }
            "yarn" => {
                if self.factor.is_some() {
                    need("factor", self.factor)?;
                }
            }
            "dynamic" | "longrope" => anyhow::bail!(
                "rope_type {:?} is not supported (its frequencies change with the sequence \
                 length; supported: default, linear, llama3, yarn)",
                self.rope_type
            ),
            other => {
                anyhow::bail!("rope_type {other:?} (supported: default, linear, llama3, yarn)")
            }
        }
        let used: &[&str] = match self.rope_type.as_str() {
            "linear" => &["factor"],
            "llama3" => &[
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            ],
            _ => &[
                "factor",
                "original_max_position_embeddings",
                "attention_factor",
                "beta_fast",
                "beta_slow",
                "mscale",
                "mscale_all_dim",
                "truncate",
            ],
        };
        for (name, set) in [
            ("low_freq_factor", self.low_freq_factor.is_some()),
            ("high_freq_factor", self.high_freq_factor.is_some()),
            (
                "original_max_position_embeddings",
                self.original_max_position_embeddings.is_some(),
            ),
            ("attention_factor", self.attention_factor.is_some()),
            ("beta_fast", self.beta_fast.is_some()),
            ("beta_slow", self.beta_slow.is_some()),
            ("mscale", self.mscale.is_some()),
            ("mscale_all_dim", self.mscale_all_dim.is_some()),
            ("truncate", self.truncate.is_some()),
        ] {
            anyhow::ensure!(
                !set || used.contains(&name),
                "{name} does not apply to rope_type {:?}",
                self.rope_type
            );
        }
        Ok(())
    }
}

/// The inverse frequencies (`head_dim / 2` of them) and the factor cos and sin are scaled by.
pub fn inv_freq(
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
    max_positions: usize,
) -> (Vec<f64>, f64) {
    let dim = head_dim as f64;
    // As transformers: base ** (arange(0, dim, 2) / dim), in float32.
    let pos_freqs: Vec<f64> = (0..head_dim)
        .step_by(2)
        .map(|i| f64::from((theta as f32).powf(i as f32 / head_dim as f32)))
        .collect();
    let default: Vec<f64> = pos_freqs.iter().map(|p| 1.0 / p).collect();
    let Some(s) = scaling else {
        return (default, 1.0);
    };
    let factor = s.factor.unwrap_or(1.0);
    match s.rope_type.as_str() {
        "linear" => (default.iter().map(|f| f / factor).collect(), 1.0),
        "llama3" => {
            let (low, high) = (
                s.low_freq_factor.unwrap_or(1.0),
                s.high_freq_factor.unwrap_or(4.0),
            );
            let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            let out = default
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (out, 1.0)
        }
        "yarn" => yarn(s, dim, theta, &pos_freqs, max_positions),
        _ => (default, 1.0),
    }
}

/// YaRN (NTK-by-parts interpolation with an attention temperature).
fn yarn(
    s: &RopeScaling,
    dim: f64,
    theta: f64,
    pos_freqs: &[f64],
    max_positions: usize,
) -> (Vec<f64>, f64) {
    let original = s.original_max_position_embeddings.unwrap_or(max_positions) as f64;
    let factor = s.factor.unwrap_or(max_positions as f64 / original);
    let get_mscale = |scale: f64, mscale: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * mscale * scale.ln() + 1.0
        }
    };
    let attention = s
        .attention_factor
        .unwrap_or_else(|| match (s.mscale, s.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                get_mscale(factor, m) / get_mscale(factor, all)
            }
            _ => get_mscale(factor, 1.0),
        });
    let beta_fast = s.beta_fast.unwrap_or(32.0);
    let beta_slow = s.beta_slow.unwrap_or(1.0);
    let correction_dim = |rotations: f64| {
        (dim * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if s.truncate.unwrap_or(true) {
        low = low.floor();
        high = high.ceil();
    }
    let (low, high) = (low.max(0.0), high.min(dim - 1.0));
    let high = if low == high { high + 0.001 } else { high };
    let out = pos_freqs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            let (inter, extra) = (1.0 / (factor * p), 1.0 / p);
            inter * (1.0 - extrapolation) + extra * extrapolation
        })
        .collect();
    (out, attention)
}

/// cos and sin tables `[positions, head_dim]`, scaled by the attention factor.
pub fn tables(
    inv_freq: &[f64],
    attention_factor: f64,
    positions: i64,
    device: Device,
) -> (Tensor, Tensor) {
    let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
    let inv = Tensor::from_slice(&inv).to_device(device);
    let t = Tensor::arange(positions, (Kind::Float, device));
    let freqs = t.outer(&inv);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos() * attention_factor, emb.sin() * attention_factor)
}
