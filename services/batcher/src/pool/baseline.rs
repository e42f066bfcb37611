//! Window mode's running baselines, per tenant and channel.
//!
//! Each reward source has its own running mean, and a step's advantage is the weighted sum of its
//! sources' differences from their means: `A = Σ w_s · (r_s − b_s)` over the sources the step has.
//! A source only some steps get (explicit feedback from a few users) is compared with its own past
//! values, never with steps that did not have it: a step without feedback gets no feedback term,
//! where a single baseline of the combined reward would hand every step with a thumbs-up a large
//! advantage that has nothing to do with its text once most answers are liked. When every step
//! has every source this equals the combined reward minus a combined running baseline.
//!
//! `normalize` divides by the running spread of the advantages themselves, updated with the
//! current one first, so a normalised advantage never exceeds 1/√(1 − decay) in size (about 3.2 at
//! the default decay) and a spread of zero never divides.

use std::collections::BTreeMap;

use crate::config::RewardConfig;

/// An exponentially weighted running mean and variance.
#[derive(Debug, Default, Clone, Copy)]
struct Running {
    mean: f64,
    var: f64,
    seen: bool,
}

impl Running {
    fn update(&mut self, value: f64, decay: f64) {
        if !self.seen {
            *self = Running {
                mean: value,
                var: 0.0,
                seen: true,
            };
            return;
        }
        let diff = value - self.mean;
        self.mean += (1.0 - decay) * diff;
        self.var = decay * self.var + (1.0 - decay) * diff * diff;
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct WindowBaseline {
    sources: BTreeMap<String, Running>,
    /// Running mean square of the raw advantages (`var` around zero).
    spread: Running,
}

/// What one step's rewards gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Advantage {
    pub value: f64,
    /// The combined baseline the step was compared with: `Σ w_s · b_s`.
    pub baseline: f64,
}

impl WindowBaseline {
    /// The advantage of a step with these `(source, value)` rewards, weighted as configured;
    /// then the baselines move. A source seen for the first time is its own baseline (no
    /// advantage from it). The source `""` stands for a combined reward (weight 1).
    pub fn advantage<'a>(
        &mut self,
        rewards: impl IntoIterator<Item = (&'a str, f64)>,
        weights: &RewardConfig,
        decay: f64,
        normalize: bool,
    ) -> Advantage {
        let weight = |source: &str| {
            if source.is_empty() {
                1.0
            } else {
                weights.weight(source)
            }
        };
        let (mut raw, mut baseline) = (0.0, 0.0);
        for (source, value) in rewards {
            let w = weight(source);
            // Looked up before inserting: no allocation per step for a source already seen.
            let b = match self.sources.get_mut(source) {
                Some(b) => b,
                None => self.sources.entry(source.to_string()).or_default(),
            };
            let base = if b.seen { b.mean } else { value };
            raw += w * (value - base);
            baseline += w * base;
            b.update(value, decay);
        }
        let value = if normalize {
            let s = &mut self.spread;
            s.var = if s.seen {
                decay * s.var + (1.0 - decay) * raw * raw
            } else {
                raw * raw
            };
            s.seen = true;
            if s.var > 0.0 { raw / s.var.sqrt() } else { 0.0 }
        } else {
            raw
        };
        Advantage { value, baseline }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &mut WindowBaseline, rewards: &[(&str, f64)], normalize: bool) -> f64 {
        let weights = RewardConfig {
            weights: [("rm", 1.0), ("feedback", 2.0), ("all", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        };
        b.advantage(rewards.iter().copied(), &weights, 0.9, normalize)
            .value
    }

    #[test]
    fn a_sparse_source_is_compared_with_its_own_past() {
        let mut b = WindowBaseline::default();
        one(&mut b, &[("rm", 0.5), ("feedback", 1.0)], false);
        // Every liked answer got a thumbs-up so far: the next thumbs-up teaches nothing new, and a
        // step without feedback is not pushed down for lacking it.
        let with = one(&mut b, &[("rm", 0.5), ("feedback", 1.0)], false);
        let without = one(&mut b, &[("rm", 0.5)], false);
        assert_eq!((with, without), (0.0, 0.0));
        let down = one(&mut b, &[("rm", 0.5), ("feedback", -1.0)], false);
        assert!((down - 2.0 * -2.0).abs() < 1e-12, "{down}");
    }

    #[test]
    fn with_every_source_present_it_is_the_combined_baseline() {
        let mut per_source = WindowBaseline::default();
        let mut combined = WindowBaseline::default();
        for (i, (rm, fb)) in [(0.2, 1.0), (0.7, -1.0), (0.4, 1.0), (0.9, 1.0)]
            .into_iter()
            .enumerate()
        {
            let a = one(&mut per_source, &[("rm", rm), ("feedback", fb)], false);
            let c = one(&mut combined, &[("all", rm + 2.0 * fb)], false);
            assert!((a - c).abs() < 1e-12, "step {i}: {a} vs {c}");
        }
    }

    #[test]
    fn normalised_advantages_are_bounded_and_never_divide_by_zero() {
        let mut b = WindowBaseline::default();
        assert_eq!(one(&mut b, &[("rm", 0.5)], true), 0.0);
        assert_eq!(one(&mut b, &[("rm", 0.5)], true), 0.0, "no spread yet");
        let jump = one(&mut b, &[("rm", 0.9)], true);
        assert!(jump > 0.0 && jump <= 1.0 / (0.1f64).sqrt() + 1e-9, "{jump}");
        for i in 0..50 {
            let r = if i % 2 == 0 { 0.4 } else { 0.6 };
            assert!(one(&mut b, &[("rm", r)], true).abs() <= 1.0 / (0.1f64).sqrt() + 1e-9);
        }
    }
}
