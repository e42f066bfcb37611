//! What the broadcaster runs with: plain settings (no flag parsing; `clawline up` and tests build
//! them directly), their defaults as named constants, and the `clawline-broadcaster` flags that
//! fill them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use clawline_runtime::{LogArgs, NatsArgs};

use crate::EngineSpec;

/// `/healthz`, `/metrics` and `/status`.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8106);
pub const WORK_DIR: &str = "./data/weights";
pub const CANARY_TOLERANCE: f64 = 0.02;
pub const CANARY_MAX_NLL_INCREASE: f64 = 0.1;
pub const CANARY_MAX_KL: f64 = 0.5;
pub const CANARY_MAX_DEGENERATE_INCREASE: f64 = 0.1;
pub const CANARY_MAX_FLUENCY_INCREASE: f64 = 0.1;
pub const CANARY_MAX_TOKENS: usize = 24;
pub const CANARY_SAMPLES: usize = 4;
pub const KEEP_VERSIONS: usize = 4;
pub const CHECK_ENGINES_SECS: u64 = 5;
/// The durable consumer on WEIGHTS.
pub const DURABLE: &str = "broadcaster";

#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: NatsArgs,
    /// An engine to activate versions on: `NAME=KIND:URL[;model_dir=PATH][;api_key=KEY]` with KIND
    /// `clawline` (the built-in policy server), `vllm` or `sglang`. Repeat for several.
    pub engines: Vec<EngineSpec>,
    /// The base model the versions belong to (its config and tokenizer complete full versions;
    /// LoRA versions apply to it; the canary runs it).
    pub base_model: PathBuf,
    /// Where versions are downloaded (`v<N>/`); engines read them from here.
    pub work_dir: PathBuf,
    /// Gate every published version with a canary evaluation before promotion.
    pub canary: bool,
    /// The canary's prompts (JSONL: a string or `{"messages": [...]}` a line); default: bundled.
    pub canary_prompts: Option<PathBuf>,
    /// How much lower than the serving version's mean reward a candidate may score.
    pub canary_tolerance: f64,
    /// Reference answers whose likelihood the canary measures (JSONL: `{"messages": [...],
    /// "reference": "…"}` a line); default: bundled (`data/prompts/reference.jsonl`).
    pub canary_references: Option<PathBuf>,
    /// How much higher (nats per token) than the serving version's the candidate's mean NLL of
    /// the reference answers may be. A normal version of the tiny model moves it by hundredths;
    /// versions whose language broke measured +6 nats.
    pub canary_max_nll_increase: f64,
    /// The largest KL(serving ‖ candidate) per token, estimated on the serving version's sampled
    /// answers to the evaluation prompts. A version as `clawline up` trains the tiny model (2
    /// updates, lr 1e-3) measured 0.12; versions whose language broke measured above 6.
    pub canary_max_kl: f64,
    /// How much higher than the serving version's the share of the candidate's answers with any
    /// one defect (repetition, special-token markup, control characters, U+FFFD, cut off) may be.
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
    pub canary_max_fluency_increase: f64,
    /// Tokens each canary answer may have.
    pub canary_max_tokens: usize,
    /// Sampled answers per prompt (temperature 1, the same seeds for every version).
    pub canary_samples: usize,
    /// Version directories kept on disk besides the serving one.
    pub keep_versions: usize,
    /// Every this many seconds, check that each engine still serves the serving version and
    /// activate it again where one restarted from its base weights (0: never).
    pub check_engines_secs: u64,
    /// Durable consumer name on WEIGHTS.
    pub durable: String,
}

impl Settings {
    /// Activating versions of `base_model` on `engines`, with every default (no canary).
    pub fn new(base_model: impl Into<PathBuf>, engines: Vec<EngineSpec>) -> Self {
        Self {
            nats: NatsArgs::default(),
            engines,
            base_model: base_model.into(),
            work_dir: WORK_DIR.into(),
            canary: false,
            canary_prompts: None,
            canary_tolerance: CANARY_TOLERANCE,
            canary_references: None,
            canary_max_nll_increase: CANARY_MAX_NLL_INCREASE,
            canary_max_kl: CANARY_MAX_KL,
            canary_max_degenerate_increase: CANARY_MAX_DEGENERATE_INCREASE,
            canary_max_fluency_increase: CANARY_MAX_FLUENCY_INCREASE,
            canary_max_tokens: CANARY_MAX_TOKENS,
            canary_samples: CANARY_SAMPLES,
            keep_versions: KEEP_VERSIONS,
            check_engines_secs: CHECK_ENGINES_SECS,
            durable: DURABLE.into(),
        }
    }

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

/// `clawline-broadcaster` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clawline-broadcaster",
    version,
    about = "Activates published weight versions on the serving engines"
)]
pub struct Args {
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
    #[arg(long = "work-dir", default_value = WORK_DIR)]
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
        default_value_t = CANARY_TOLERANCE
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
        default_value_t = CANARY_MAX_NLL_INCREASE
    )]
    pub canary_max_nll_increase: f64,
    /// The largest KL(serving ‖ candidate) per token, estimated on the serving version's sampled
    /// answers to the evaluation prompts. A version as `clawline up` trains the tiny model (2
    /// updates, lr 1e-3) measured 0.12; versions whose language broke measured above 6.
    #[arg(
        long = "canary-max-kl",
        env = "CLAWLINE_CANARY_MAX_KL",
        default_value_t = CANARY_MAX_KL
    )]
    pub canary_max_kl: f64,
    /// How much higher than the serving version's the share of the candidate's answers with any
    /// one defect (repetition, special-token markup, control characters, U+FFFD, cut off) may be.
    #[arg(
        long = "canary-max-degenerate-increase",
        env = "CLAWLINE_CANARY_MAX_DEGENERATE_INCREASE",
        default_value_t = CANARY_MAX_DEGENERATE_INCREASE
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
        default_value_t = CANARY_MAX_FLUENCY_INCREASE
    )]
    pub canary_max_fluency_increase: f64,
    /// Tokens each canary answer may have.
    #[arg(
        long = "canary-max-tokens",
        env = "CLAWLINE_CANARY_MAX_TOKENS",
        default_value_t = CANARY_MAX_TOKENS
    )]
    pub canary_max_tokens: usize,
    /// Sampled answers per prompt (temperature 1, the same seeds for every version).
    #[arg(
        long = "canary-samples",
        env = "CLAWLINE_CANARY_SAMPLES",
        default_value_t = CANARY_SAMPLES
    )]
    pub canary_samples: usize,
    /// Version directories kept on disk besides the serving one.
    #[arg(long = "keep-versions", default_value_t = KEEP_VERSIONS)]
    pub keep_versions: usize,
    /// Every this many seconds, check that each engine still serves the serving version and
    /// activate it again where one restarted from its base weights (0: never).
    #[arg(long = "check-engines-secs", default_value_t = CHECK_ENGINES_SECS)]
    pub check_engines_secs: u64,
    /// Durable consumer name on WEIGHTS.
    #[arg(long, default_value = DURABLE)]
    pub durable: String,
    /// Address of `/healthz`, `/metrics` and `/status`.
    #[arg(
        long,
        env = "CLAWLINE_BROADCASTER_LISTEN",
        default_value_t = LISTEN
    )]
    pub listen: SocketAddr,
}

impl Args {
    pub fn settings(self) -> Settings {
        Settings {
            nats: self.nats,
            engines: self.engines,
            base_model: self.base_model,
            work_dir: self.work_dir,
            canary: self.canary,
            canary_prompts: self.canary_prompts,
            canary_tolerance: self.canary_tolerance,
            canary_references: self.canary_references,
            canary_max_nll_increase: self.canary_max_nll_increase,
            canary_max_kl: self.canary_max_kl,
            canary_max_degenerate_increase: self.canary_max_degenerate_increase,
            canary_max_fluency_increase: self.canary_max_fluency_increase,
            canary_max_tokens: self.canary_max_tokens,
            canary_samples: self.canary_samples,
            keep_versions: self.keep_versions,
            check_engines_secs: self.check_engines_secs,
            durable: self.durable,
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
        let parsed = Args::try_parse_from([
            "clawline-broadcaster",
            "--base-model",
            "m",
            "--engine",
            "p=clawline:http://127.0.0.1:1",
        ])
        .expect("flags")
        .settings();
        assert_eq!(
            format!("{parsed:?}"),
            format!(
                "{:?}",
                Settings::new(
                    "m",
                    vec!["p=clawline:http://127.0.0.1:1".parse().expect("engine")]
                )
            )
        );
    }
}
