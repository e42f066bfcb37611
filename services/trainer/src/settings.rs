//! What the trainer runs with: plain settings (no flag parsing; `clawline up` and tests build
//! them directly), their defaults as named constants, and the `clawline-trainer` flags that fill
//! them. Every default not named here is 0 (off) or empty.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use clawline_model::loss::KlPenalty;
use clawline_model::weights::Precision;
use clawline_runtime::{LogArgs, NatsArgs};

use crate::Bounds;

/// `/healthz`, `/metrics` and `/status`.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8105);
pub const CHECKPOINT_DIR: &str = "./data/trainer";
/// The channel trained on when none is named.
pub const CHANNEL: &str = "train";
/// The durable consumer on BATCHES.
pub const DURABLE: &str = "trainer";
pub const PUBLISH_EVERY: u64 = 4;
/// AdamW's learning rate (for a real model; `clawline up` trains its tiny one at 1e-3).
pub const LR: f64 = 1e-5;
pub const CLIP_LOW: f64 = 0.2;
pub const CLIP_HIGH: f64 = 0.28;
pub const MICRO_BATCH: usize = 8;
pub const MAX_GRAD_NORM: f64 = 1.0;
pub const LORA_ALPHA: f64 = 16.0;
pub const LORA_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
pub const ACK_WAIT_SECS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: NatsArgs,
    /// The base model directory (HF layout: config.json, model.safetensors), as `clawline model
    /// init` writes it; version 0.
    pub model: PathBuf,
    /// Where checkpoints live; a trainer started on a directory with one resumes from it.
    pub checkpoint_dir: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
    pub device: String,
    /// Precision of the weights that do not train: the frozen base model (`--kl-coef`, the
    /// bounds to the base) and, with `--lora-r`, the base under the adapters. `auto` is bf16 on
    /// CUDA and f32 on the CPU. Trained weights, adapters, optimizer moments and every logprob
    /// are f32 whatever it is.
    pub dtype: Precision,
    /// Channels to train on (repeat or comma-separate).
    pub channels: Vec<String>,
    /// Durable consumer name on BATCHES.
    pub durable: String,
    /// Updates (batches) per published version.
    pub publish_every: u64,
    /// Versions the trainer may publish beyond the one the engines serve (KV `policy.version`)
    /// before it stops taking batches until they catch up: bounds how far behind the trainer's
    /// weights the policy that generated a batch can be. 0: no limit (no broadcaster needed).
    pub max_ahead: u64,
    /// Updates per checkpoint between versions (a version is always checkpointed). Batches are
    /// acked only once a checkpoint covers them; a quiet second also writes one.
    pub checkpoint_every: u64,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// PPO clip range: ratios are kept within [1 − clip_low, 1 + clip_high].
    pub clip_low: f64,
    pub clip_high: f64,
    /// Weight of the KL penalty to the base model (0 = off; on, the base is kept in memory).
    pub kl_coef: f64,
    /// How the KL penalty is computed: `exact` (KL(policy ‖ base) over the whole vocabulary at
    /// every response position) or `k3` (GRPO's sampled-token estimator). Measured with `clawline
    /// up`'s plain-client benchmark (3 runs each): `exact` halved the versions the canary turned
    /// down for drift from the base model (10 and 10 against 17–21).
    pub kl_penalty: KlPenalty,
    /// Trust region per update: an update whose KL from the serving policy (the batch's behaviour
    /// logprobs) to the updated weights exceeds this is undone and the learning rate halved
    /// (`clawline_trainer_backoffs_total`). 0 = off, the default: data older than the weights
    /// (no broadcaster, replayed logs) would be backed off; `clawline up` runs it with 0.25.
    pub max_kl_serving: f64,
    /// Trust region per version: a version whose KL to the base model (on the last batch's
    /// response positions) exceeds this is not published; the trainer returns to the serving
    /// version (`clawline_trainer_resets_total{reason="kl_base"}`). 0 = off; on, the base model
    /// is kept in memory (as with `--kl-coef`).
    pub max_kl_base: f64,
    /// Trust region per version, on the broadcaster canary's measure of broken language: a
    /// version whose drift from the base model (how much less likely to the base its next tokens
    /// are than the base's own: cross-entropy to the base minus the base's entropy, on the last
    /// batch's response positions) exceeds this is not published; the trainer returns to the
    /// serving version (`clawline_trainer_resets_total{reason="drift_base"}`). Unlike KL, a
    /// habit the base already found likely does not count. Give it the canary's
    /// `--canary-max-fluency-increase` and versions the canary would reject for drift are caught
    /// here, before a publish. 0 = off; on, the base model is kept in memory.
    pub max_drift_base: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Samples per forward/backward pass (gradients add up over the batch).
    pub micro_batch: usize,
    /// Global gradient-norm clipping (0 = off).
    pub max_grad_norm: f64,
    /// Train LoRA adapters of this rank instead of every weight; versions are PEFT adapters.
    pub lora_r: Option<usize>,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    /// Seed of fresh LoRA adapters.
    pub seed: i64,
    /// Seconds a delivered batch may stay unacked before redelivery (progress is signalled while
    /// training, so only a dead trainer lets it lapse).
    pub ack_wait_secs: u64,
}

impl Settings {
    /// Training `model` with every default.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            nats: NatsArgs::default(),
            model: model.into(),
            checkpoint_dir: CHECKPOINT_DIR.into(),
            device: "auto".into(),
            dtype: Precision::Auto,
            channels: vec![CHANNEL.into()],
            durable: DURABLE.into(),
            publish_every: PUBLISH_EVERY,
            max_ahead: 0,
            checkpoint_every: 1,
            lr: LR,
            weight_decay: 0.0,
            clip_low: CLIP_LOW,
            clip_high: CLIP_HIGH,
            kl_coef: 0.0,
            kl_penalty: KlPenalty::Exact,
            max_kl_serving: 0.0,
            max_kl_base: 0.0,
            max_drift_base: 0.0,
            entropy_coef: 0.0,
            micro_batch: MICRO_BATCH,
            max_grad_norm: MAX_GRAD_NORM,
            lora_r: None,
            lora_alpha: LORA_ALPHA,
            lora_targets: LORA_TARGETS.map(String::from).to_vec(),
            seed: 0,
            ack_wait_secs: ACK_WAIT_SECS,
        }
    }

    /// Flag values that cannot work, named by flag.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.publish_every >= 1,
            "--publish-every must be at least 1"
        );
        anyhow::ensure!(
            self.checkpoint_every >= 1,
            "--checkpoint-every must be at least 1"
        );
        anyhow::ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "--lr must be a positive number"
        );
        anyhow::ensure!(self.micro_batch >= 1, "--micro-batch must be at least 1");
        anyhow::ensure!(
            self.clip_low >= 0.0 && self.clip_low < 1.0,
            "--clip-low must be in [0, 1)"
        );
        anyhow::ensure!(self.clip_high >= 0.0, "--clip-high must be at least 0");
        for (flag, value) in [
            ("--max-kl-serving", self.max_kl_serving),
            ("--max-kl-base", self.max_kl_base),
            ("--max-drift-base", self.max_drift_base),
            ("--kl-coef", self.kl_coef),
        ] {
            anyhow::ensure!(
                value >= 0.0 && value.is_finite(),
                "{flag} must be a number ≥ 0 (0 = off), not {value}"
            );
        }
        anyhow::ensure!(self.ack_wait_secs >= 5, "--ack-wait must be at least 5");
        for channel in &self.channels {
            anyhow::ensure!(
                clawline_nats::subjects::is_valid_token(channel),
                "--channel {channel:?}: 1-64 characters of [A-Za-z0-9_-]"
            );
        }
        if self.lora_r == Some(0) {
            anyhow::bail!("--lora-r must be at least 1");
        }
        Ok(())
    }

    /// The LoRA settings, when adapters are trained.
    pub fn lora(&self) -> Option<clawline_model::lora::LoraConfig> {
        self.lora_r.map(|r| clawline_model::lora::LoraConfig {
            r,
            alpha: self.lora_alpha,
            target_modules: self.lora_targets.clone(),
            ..Default::default()
        })
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_kl_serving: self.max_kl_serving,
            max_kl_base: self.max_kl_base,
            max_drift_base: self.max_drift_base,
        }
    }

    pub fn loss(&self) -> clawline_model::loss::LossConfig {
        clawline_model::loss::LossConfig {
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            kl_coef: self.kl_coef,
            kl_penalty: self.kl_penalty,
            entropy_coef: self.entropy_coef,
            micro_batch: self.micro_batch,
            max_grad_norm: self.max_grad_norm,
        }
    }
}

/// `clawline-trainer` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-trainer",
    version,
    about = "Trains the policy on clawline's batches and publishes weight versions"
)]
pub struct Args {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// The base model directory (HF layout: config.json, model.safetensors), as `clawline model
    /// init` writes it; version 0.
    #[arg(long, env = "CLAWLINE_MODEL")]
    pub model: PathBuf,
    /// Where checkpoints live; a trainer started on a directory with one resumes from it.
    #[arg(
        long = "checkpoint-dir",
        env = "CLAWLINE_TRAINER_CHECKPOINTS",
        default_value = CHECKPOINT_DIR
    )]
    pub checkpoint_dir: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
    #[arg(long, env = "CLAWLINE_TRAINER_DEVICE", default_value = "auto")]
    pub device: String,
    /// Precision of the weights that do not train: the frozen base model (`--kl-coef`, the
    /// bounds to the base) and, with `--lora-r`, the base under the adapters. `auto` is bf16 on
    /// CUDA and f32 on the CPU. Trained weights, adapters, optimizer moments and every logprob
    /// are f32 whatever it is.
    #[arg(long, env = "CLAWLINE_TRAINER_DTYPE", default_value = "auto")]
    pub dtype: Precision,
    /// Channels to train on (repeat or comma-separate).
    #[arg(long = "channel", value_delimiter = ',', default_value = CHANNEL)]
    pub channels: Vec<String>,
    /// Durable consumer name on BATCHES.
    #[arg(long, default_value = DURABLE)]
    pub durable: String,
    /// Updates (batches) per published version.
    #[arg(long = "publish-every", default_value_t = PUBLISH_EVERY)]
    pub publish_every: u64,
    /// Versions the trainer may publish beyond the one the engines serve (KV `policy.version`)
    /// before it stops taking batches until they catch up: bounds how far behind the trainer's
    /// weights the policy that generated a batch can be. 0: no limit (no broadcaster needed).
    #[arg(long = "max-ahead", default_value_t = 0)]
    pub max_ahead: u64,
    /// Updates per checkpoint between versions (a version is always checkpointed). Batches are
    /// acked only once a checkpoint covers them; a quiet second also writes one.
    #[arg(long = "checkpoint-every", default_value_t = 1)]
    pub checkpoint_every: u64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = LR)]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long = "weight-decay", default_value_t = 0.0)]
    pub weight_decay: f64,
    /// PPO clip range: ratios are kept within [1 − clip_low, 1 + clip_high].
    #[arg(long = "clip-low", default_value_t = CLIP_LOW)]
    pub clip_low: f64,
    #[arg(long = "clip-high", default_value_t = CLIP_HIGH)]
    pub clip_high: f64,
    /// Weight of the KL penalty to the base model (0 = off; on, the base is kept in memory).
    #[arg(long = "kl-coef", default_value_t = 0.0)]
    pub kl_coef: f64,
    /// How the KL penalty is computed: `exact` (KL(policy ‖ base) over the whole vocabulary at
    /// every response position) or `k3` (GRPO's sampled-token estimator). Measured with `clawline
    /// up`'s plain-client benchmark (3 runs each): `exact` halved the versions the canary turned
    /// down for drift from the base model (10 and 10 against 17–21).
    #[arg(long = "kl-penalty", default_value = "exact")]
    pub kl_penalty: KlPenalty,
    /// Trust region per update: an update whose KL from the serving policy (the batch's behaviour
    /// logprobs) to the updated weights exceeds this is undone and the learning rate halved
    /// (`clawline_trainer_backoffs_total`). 0 = off, the default: data older than the weights
    /// (no broadcaster, replayed logs) would be backed off; `clawline up` runs it with 0.25.
    #[arg(long = "max-kl-serving", default_value_t = 0.0)]
    pub max_kl_serving: f64,
    /// Trust region per version: a version whose KL to the base model (on the last batch's
    /// response positions) exceeds this is not published; the trainer returns to the serving
    /// version (`clawline_trainer_resets_total{reason="kl_base"}`). 0 = off; on, the base model
    /// is kept in memory (as with `--kl-coef`).
    #[arg(long = "max-kl-base", default_value_t = 0.0)]
    pub max_kl_base: f64,
    /// Trust region per version, on the broadcaster canary's measure of broken language: a
    /// version whose drift from the base model (how much less likely to the base its next tokens
    /// are than the base's own: cross-entropy to the base minus the base's entropy, on the last
    /// batch's response positions) exceeds this is not published; the trainer returns to the
    /// serving version (`clawline_trainer_resets_total{reason="drift_base"}`). Unlike KL, a
    /// habit the base already found likely does not count. Give it the canary's
    /// `--canary-max-fluency-increase` and versions the canary would reject for drift are caught
    /// here, before a publish. 0 = off; on, the base model is kept in memory.
    #[arg(long = "max-drift-base", default_value_t = 0.0)]
    pub max_drift_base: f64,
    /// Weight of the entropy bonus.
    #[arg(long = "entropy-coef", default_value_t = 0.0)]
    pub entropy_coef: f64,
    /// Samples per forward/backward pass (gradients add up over the batch).
    #[arg(long = "micro-batch", default_value_t = MICRO_BATCH)]
    pub micro_batch: usize,
    /// Global gradient-norm clipping (0 = off).
    #[arg(long = "max-grad-norm", default_value_t = MAX_GRAD_NORM)]
    pub max_grad_norm: f64,
    /// Train LoRA adapters of this rank instead of every weight; versions are PEFT adapters.
    #[arg(long = "lora-r")]
    pub lora_r: Option<usize>,
    #[arg(long = "lora-alpha", default_value_t = LORA_ALPHA)]
    pub lora_alpha: f64,
    #[arg(
        long = "lora-targets",
        value_delimiter = ',',
        default_values_t = LORA_TARGETS.map(String::from)
    )]
    pub lora_targets: Vec<String>,
    /// Seed of fresh LoRA adapters.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Seconds a delivered batch may stay unacked before redelivery (progress is signalled while
    /// training, so only a dead trainer lets it lapse).
    #[arg(long = "ack-wait", default_value_t = ACK_WAIT_SECS)]
    pub ack_wait_secs: u64,
    /// Address of `/healthz`, `/metrics` and `/status`.
    #[arg(
        long,
        env = "CLAWLINE_TRAINER_LISTEN",
        default_value_t = LISTEN
    )]
    pub listen: SocketAddr,
}

impl Args {
    pub fn settings(self) -> Settings {
        Settings {
            nats: self.nats,
            model: self.model,
            checkpoint_dir: self.checkpoint_dir,
            device: self.device,
            dtype: self.dtype,
            channels: self.channels,
            durable: self.durable,
            publish_every: self.publish_every,
            max_ahead: self.max_ahead,
            checkpoint_every: self.checkpoint_every,
            lr: self.lr,
            weight_decay: self.weight_decay,
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            kl_coef: self.kl_coef,
            kl_penalty: self.kl_penalty,
            max_kl_serving: self.max_kl_serving,
            max_kl_base: self.max_kl_base,
            max_drift_base: self.max_drift_base,
            entropy_coef: self.entropy_coef,
            micro_batch: self.micro_batch,
            max_grad_norm: self.max_grad_norm,
            lora_r: self.lora_r,
            lora_alpha: self.lora_alpha,
            lora_targets: self.lora_targets,
            seed: self.seed,
            ack_wait_secs: self.ack_wait_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the settings' defaults (`clawline up` builds settings, the binary
    /// parses flags: the two must start the same service).
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let parsed = Args::try_parse_from(["clawline-trainer", "--model", "m"])
            .expect("flags")
            .settings();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::new("m")));
    }
}
