//! clawline-broadcaster — puts the versions the trainer publishes into service.
//!
//! Consumes `clawline.weights.published` (durable). For each version: download it from the
//! `weights` object store into `--work-dir/v<N>/` with its size and sha256 checked, optionally gate
//! it with a canary evaluation against the serving version, activate it on every `--engine`, and
//! report `WeightsActivated` / `WeightsRejected` per engine. Once every engine serves it, KV
//! `policy.version` (and `policy.model` for engines that serve adapters under their own name) is
//! set. Operators activate any earlier version or roll back over `clawline.control.weights`
//! (`clawline weights …`).
//!
//! Owns: activation order, integrity, the canary gate, KV `policy.version`. Must not train.

mod canary;
mod control;
pub mod engine;
mod restore;
mod service;
mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

pub use canary::{BUNDLED_PROMPTS, BUNDLED_REFERENCES, passes, regressions};
pub use control::{ControlReply, ControlRequest, EngineOutcome, History};
pub use engine::{EngineSpec, Kind};
pub use service::run;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-broadcaster",
    version,
    about = "Activates published weight versions on the serving engines"
)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// An engine to activate versions on: `NAME=KIND:URL[;model_dir=PATH][;api_key=KEY]` with KIND
    /// `clawline` (the built-in policy server), `vllm` or `sglang`. Repeat for several.
    #[arg(long = "engine", required = true)]
    pub engines: Vec<EngineSpec>,
    /// The base model the versions belong to (its config and tokenizer complete full versions;
    /// LoRA versions apply to it; the canary runs it).
    #[arg(long = "base-model", env = "CLAWLINE_MODEL")]
    pub base_model: PathBuf,
    /// Where versions are downloaded (`v<N>/`); engines read them from here.
    #[arg(long = "work-dir", default_value = "./data/weights")]
    pub work_dir: PathBuf,
    /// Gate every published version with a canary evaluation before promotion.
    #[arg(long)]
    pub canary: bool,
    /// The canary's prompts (JSONL: a string or `{"messages": [...]}` a line); default: bundled.
    #[arg(long = "canary-prompts", env = "CLAWLINE_CANARY_PROMPTS")]
    pub canary_prompts: Option<PathBuf>,
    /// How much lower than the serving version's mean reward a candidate may score.
    #[arg(
        long = "canary-tolerance",
        env = "CLAWLINE_CANARY_TOLERANCE",
        default_value_t = 0.02
    )]
    pub canary_tolerance: f64,
    /// Reference answers whose likelihood the canary measures (JSONL: `{"messages": [...],
    /// "reference": "…"}` a line); default: bundled (`data/prompts/reference.jsonl`).
    #[arg(long = "canary-references", env = "CLAWLINE_CANARY_REFERENCES")]
    pub canary_references: Option<PathBuf>,
    /// How much higher (nats per token) than the serving version's the candidate's mean NLL of
    /// the reference answers may be. A normal version of the tiny model moves it by hundredths;
    /// versions whose language broke measured +6 nats.
    #[arg(
        long = "canary-max-nll-increase",
        env = "CLAWLINE_CANARY_MAX_NLL_INCREASE",
        default_value_t = 0.1
    )]
    pub canary_max_nll_increase: f64,
    /// The largest KL(serving ‖ candidate) per token, estimated on the serving version's sampled
    /// answers to the evaluation prompts. A version as `clawline up` trains the tiny model (2
    /// updates, lr 1e-3) measured 0.12; versions whose language broke measured above 6.
    #[arg(
        long = "canary-max-kl",
        env = "CLAWLINE_CANARY_MAX_KL",
        default_value_t = 0.5
    )]
    pub canary_max_kl: f64,
    /// How much higher than the serving version's the share of the candidate's answers with any
    /// one defect (repetition, special-token markup, control characters, U+FFFD, cut off) may be.
    #[arg(
        long = "canary-max-degenerate-increase",
        env = "CLAWLINE_CANARY_MAX_DEGENERATE_INCREASE",
        default_value_t = 0.1
    )]
    pub canary_max_degenerate_increase: f64,
    /// How far the candidate's language may drift from the base (starting) model's: the mean
    /// cross-entropy of its next-token distribution to the base model's, minus the base model's
    /// entropy, exactly over the vocabulary at the positions of the base model's own sampled
    /// answers to the evaluation prompts (nats/token). The same positions for every candidate,
    /// so the number moves only with the weights (no sampling noise). Anchored to the start, it
    /// bounds the drift that comparisons with the serving version let through one small step at
    /// a time (broken words, garbled sentences); a habit the base already found likely lowers it.
    /// Loads the base model beside the candidate. Measured: 0 for the base weights; +0.01 after
    /// one `clawline up` update and 0.06–0.10 after 30–50 versions in the plain-client benchmark;
    /// +1.75 and +2.57 for versions that repeat the reward model's words or put control
    /// characters between them. An earlier form of this check (the NLL under the base of the
    /// candidate's own sampled answers) moved by ±0.1 between versions 0.001 apart in KL, and
    /// rejected most of them by chance.
    #[arg(
        long = "canary-max-fluency-increase",
        env = "CLAWLINE_CANARY_MAX_FLUENCY_INCREASE",
        default_value_t = 0.1
    )]
    pub canary_max_fluency_increase: f64,
    /// Tokens each canary answer may have.
    #[arg(
        long = "canary-max-tokens",
        env = "CLAWLINE_CANARY_MAX_TOKENS",
        default_value_t = 24
    )]
    pub canary_max_tokens: usize,
    /// Sampled answers per prompt (temperature 1, the same seeds for every version).
    #[arg(
        long = "canary-samples",
        env = "CLAWLINE_CANARY_SAMPLES",
        default_value_t = 4
    )]
    pub canary_samples: usize,
    /// Version directories kept on disk besides the serving one.
    #[arg(long = "keep-versions", default_value_t = 4)]
    pub keep_versions: usize,
    /// Every this many seconds, check that each engine still serves the serving version and
    /// activate it again where one restarted from its base weights (0: never).
    #[arg(long = "check-engines-secs", default_value_t = 5)]
    pub check_engines_secs: u64,
    /// Durable consumer name on WEIGHTS.
    #[arg(long, default_value = "broadcaster")]
    pub durable: String,
    /// Address of `/healthz`, `/metrics` and `/status`.
    #[arg(
        long,
        env = "CLAWLINE_BROADCASTER_LISTEN",
        default_value = "127.0.0.1:8106"
    )]
    pub listen: SocketAddr,
}

impl Config {
    pub fn check(&self) -> anyhow::Result<()> {
        let mut names: Vec<&str> = self.engines.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!("--engine {}: the name is used twice", w[0]);
        }
        anyhow::ensure!(
            self.canary_tolerance >= 0.0 && self.canary_tolerance.is_finite(),
            "--canary-tolerance must be at least 0"
        );
        for (flag, value) in [
            ("--canary-max-nll-increase", self.canary_max_nll_increase),
            ("--canary-max-kl", self.canary_max_kl),
            (
                "--canary-max-degenerate-increase",
                self.canary_max_degenerate_increase,
            ),
            (
                "--canary-max-fluency-increase",
                self.canary_max_fluency_increase,
            ),
        ] {
            // `inf` turns a check off.
            anyhow::ensure!(
                value >= 0.0,
                "{flag} must be at least 0 (inf: no limit), not {value}"
            );
        }
        anyhow::ensure!(
            self.canary_samples >= 1,
            "--canary-samples must be at least 1"
        );
        anyhow::ensure!(
            self.canary_max_tokens >= 1,
            "--canary-max-tokens must be at least 1"
        );
        Ok(())
    }
}
