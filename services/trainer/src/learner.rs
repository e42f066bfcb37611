//! The synchronous half of the trainer: the policy, its optimizer and the update. A batch's steps
//! become samples here; a step that cannot be learned from (no tokens, a token outside the
//! vocabulary, longer than the model's context, a non-finite advantage) is left out and counted by
//! reason, never passed to libtorch, so bad input cannot crash the trainer. An update that leaves
//! the trust region around the serving policy is undone here (see `trust`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use clawline_model::lora::LoraConfig;
use clawline_model::weights::{load_weights, save_weights};
use clawline_model::{AdamW, Loaded, LossConfig, Metrics, Sample, Undo};
use clawline_schemas::{BatchFormed, BatchStep, LoraAdapter, WeightsFormat};
use tch::{Device, Kind};

use crate::trust::{Backoff, Bounds, over};

/// The trainable weights in a checkpoint (and the file a version publishes).
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

pub struct Learner {
    model_dir: std::path::PathBuf,
    policy: Loaded,
    /// The base model, frozen: the KL penalty's reference and `--max-kl-base`'s measure. Loaded
    /// only when one of them is on (one more copy of the base weights in memory).
    reference: Option<Loaded>,
    optimizer: AdamW,
    loss: LossConfig,
    /// `--lr`: the learning rate before backoffs.
    lr: f64,
    bounds: Bounds,
}

/// What training one batch did.
#[derive(Debug, Clone, Default)]
pub struct Trained {
    /// The update's metrics; `None` when no step of the batch could be learned from.
    pub metrics: Option<Metrics>,
    pub steps: u64,
    /// Steps left out, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Steps whose behaviour logprobs were missing and were computed with the current weights.
    pub recomputed: u64,
    pub reward_mean: f64,
    pub staleness_mean: f64,
    pub seconds: f64,
    /// KL(serving ‖ updated) on the batch's response tokens (k3), measured after the update.
    pub kl_serving: Option<f64>,
    /// KL(updated ‖ base) on the batch's response positions, measured when a version is due.
    pub kl_base: Option<f64>,
    /// Drift from the base model, measured with `kl_base`.
    pub drift_base: Option<f64>,
    /// The update went over `--max-kl-serving` and was undone.
    pub backed_off: bool,
    /// The backoff state after this batch.
    pub backoff: Backoff,
    /// The learning rate the update ran with.
    pub lr: f64,
    /// Time spent measuring the KLs (included in `seconds`).
    pub measure_seconds: f64,
}

impl Trained {
    pub fn skipped_steps(&self) -> u64 {
        self.skipped.values().sum()
    }
}

impl Learner {
    /// The base model in `model_dir`, adapted with fresh LoRA adapters when `lora` is set.
    /// `at.1` is the precision of the weights that do not train (the frozen base model, and the
    /// base under LoRA adapters); trained weights and adapters are f32.
    pub fn new(
        model_dir: &Path,
        lora: Option<&LoraConfig>,
        seed: i64,
        at: (Device, Kind),
        optimizer: AdamW,
        loss: LossConfig,
        bounds: Bounds,
    ) -> anyhow::Result<Self> {
        let (device, frozen) = at;
        let load = |kind| {
            Loaded::load_in(model_dir, device, kind)
                .with_context(|| format!("--model {}", model_dir.display()))
        };
        let policy = match lora {
            Some(lora) => Loaded::adapt(load(frozen)?, lora, seed).context("--lora-r")?,
            None => load(Kind::Float)?,
        };
        let reference =
            if loss.kl_coef > 0.0 || bounds.max_kl_base > 0.0 || bounds.max_drift_base > 0.0 {
                let mut reference = load(frozen)?;
                reference.vs.freeze();
                Some(reference)
            } else {
                None
            };
        Ok(Self {
            model_dir: model_dir.to_path_buf(),
            policy,
            reference,
            lr: optimizer.lr,
            optimizer,
            loss,
            bounds,
        })
    }

    pub fn format(&self) -> WeightsFormat {
        match self.policy.lora {
            Some(_) => WeightsFormat::Lora,
            None => WeightsFormat::Full,
        }
    }

    pub fn lora(&self) -> Option<LoraAdapter> {
        self.policy.lora.as_ref().map(|(_, l)| LoraAdapter {
            r: l.r as u32,
            alpha: l.alpha,
            target_modules: l.target_modules.clone(),
        })
    }

    pub fn model(&self) -> &Loaded {
        &self.policy
    }

    /// Writes the trainable weights and the optimizer state into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_weights(self.policy.trainable(), &dir.join(WEIGHTS_FILE))?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))
    }

    /// Reads what `save` wrote.
    pub fn restore(&mut self, dir: &Path) -> anyhow::Result<()> {
        let trainable = match self.policy.lora.as_mut() {
            Some((adapters, _)) => adapters,
            None => &mut self.policy.vs,
        };
        load_weights(trainable, &[dir.join(WEIGHTS_FILE)])
            .with_context(|| format!("checkpoint {}", dir.display()))?;
        self.optimizer.load(&dir.join(OPTIMIZER_FILE))
    }

    /// Starts over from other weights: the trainable weights in `file` (a published version), or
    /// with `None` the base model (LoRA: adapters that add nothing, B = 0 as PEFT initialises
    /// them); optimizer moments from scratch.
    pub fn reset(&mut self, file: Option<&Path>) -> anyhow::Result<()> {
        match (file, self.policy.lora.as_mut()) {
            (Some(file), Some((adapters, _))) => load_weights(adapters, &[file.to_path_buf()])?,
            (Some(file), None) => load_weights(&mut self.policy.vs, &[file.to_path_buf()])?,
            (None, Some((adapters, _))) => tch::no_grad(|| {
                for (name, mut t) in adapters.variables() {
                    if name.contains("lora_B") {
                        let _ = t.zero_();
                    }
                }
            }),
            (None, None) => {
                let files = clawline_model::weights::weight_files(&self.model_dir)?;
                load_weights(&mut self.policy.vs, &files)?;
            }
        }
        self.optimizer = self.optimizer.fresh();
        Ok(())
    }

    /// One update on the learnable steps of `batch` at the learning rate `backoff` leaves, undone
    /// when it leaves the trust region around the serving policy. With `version_due` (this update
    /// completes a version) the KL to the base model is measured too, when the base is loaded.
    pub fn train(
        &mut self,
        batch: &BatchFormed,
        backoff: Backoff,
        version_due: bool,
    ) -> anyhow::Result<Trained> {
        let started = Instant::now();
        let mut out = Trained {
            backoff,
            ..Default::default()
        };
        let mut samples = Vec::with_capacity(batch.steps.len());
        for step in &batch.steps {
            match self.sample(step) {
                Ok((sample, recomputed)) => {
                    out.recomputed += u64::from(recomputed);
                    out.reward_mean += step.reward;
                    out.staleness_mean += step.staleness as f64;
                    samples.push(sample);
                }
                Err(reason) => *out.skipped.entry(reason).or_default() += 1,
            }
        }
        out.steps = samples.len() as u64;
        if !samples.is_empty() {
            out.reward_mean /= samples.len() as f64;
            out.staleness_mean /= samples.len() as f64;
            out.lr = self.lr * backoff.lr_scale();
            self.optimizer.lr = out.lr;
            let bounded = self.bounds.max_kl_serving > 0.0;
            let undo = bounded.then(|| Undo::take(self.policy.trainable(), &self.optimizer));
            let reference = self.reference.as_ref().map(|r| &r.model);
            let metrics = clawline_model::update(
                &self.policy,
                reference,
                &mut self.optimizer,
                &samples,
                &self.loss,
            )?;
            out.metrics = Some(metrics);
            let measured = Instant::now();
            let micro = self.loss.micro_batch;
            let kl = clawline_model::kl_to_behaviour(&self.policy.model, &samples, micro)?;
            out.kl_serving = Some(kl);
            if over(kl, self.bounds.max_kl_serving) {
                if let Some(undo) = undo {
                    undo.restore(&mut self.optimizer);
                }
                out.backed_off = true;
                out.backoff.exceeded();
            } else {
                out.backoff.within();
                if version_due && let Some(base) = &self.reference {
                    let d = clawline_model::divergence_from_reference(
                        &self.policy.model,
                        &base.model,
                        &samples,
                        micro,
                    )?;
                    out.kl_base = Some(d.kl);
                    out.drift_base = Some(d.drift());
                }
            }
            out.measure_seconds = measured.elapsed().as_secs_f64();
        }
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// The sample of `step`, and whether its old logprobs had to be recomputed.
    fn sample(&self, step: &BatchStep) -> Result<(Sample, bool), &'static str> {
        let config = self.policy.model.config();
        if step.prompt_ids.is_empty() {
            return Err("empty_prompt");
        }
        if step.response_ids.is_empty() {
            return Err("empty_response");
        }
        if !step.advantage.is_finite() {
            return Err("bad_advantage");
        }
        let vocab = config.vocab_size;
        if step
            .prompt_ids
            .iter()
            .chain(&step.response_ids)
            .any(|&t| t as usize >= vocab)
        {
            return Err("token_out_of_vocab");
        }
        if step.prompt_ids.len() + step.response_ids.len() > config.max_position_embeddings {
            return Err("too_long");
        }
        let given = step.old_logprobs.as_ref().filter(|lp| {
            lp.len() == step.response_ids.len() && lp.iter().all(|x| x.is_finite() && *x <= 0.0)
        });
        let (old_logprobs, recomputed) = match given {
            Some(lp) => (lp.clone(), false),
            // No behaviour logprobs (an engine that gave none): the step counts as on-policy.
            None => (
                self.policy
                    .model
                    .completion_logprobs(&step.prompt_ids, &step.response_ids),
                true,
            ),
        };
        Ok((
            Sample {
                prompt: step.prompt_ids.clone(),
                response: step.response_ids.clone(),
                old_logprobs,
                advantage: step.advantage,
                importance_cap: step.importance_cap,
            },
            recomputed,
        ))
    }
}

/// The file name a version's weights have in the object store and in an engine's directory.
pub fn published_file_name(format: WeightsFormat) -> &'static str {
    match format {
        WeightsFormat::Full => clawline_model::weights::WEIGHTS_FILE,
        WeightsFormat::Lora => clawline_model::lora::ADAPTER_WEIGHTS,
    }
}
