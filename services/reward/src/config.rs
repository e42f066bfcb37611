//! The reward service's TOML file: models, rules, feedback mapping, consumers. Every field has a
//! default, so an empty file (or none) gives the bundled model plus the ground-truth, tool-call,
//! repetition and degenerate-text rules. Unknown keys are errors, so a typo cannot silently turn a
//! rule off.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::model::{BUNDLED_MODEL, BUNDLED_NAME, BUNDLED_TOKENIZER, Origin};
use crate::rules::RuleConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub consumer: ConsumerConfig,
    /// Reward models; none configured means the bundled one.
    pub models: Vec<ModelConfig>,
    /// Set to false to run without any reward model (rules and feedback only).
    pub bundled_model: bool,
    /// Rule rewards; `None` (key absent) means the defaults (ground truth, tool-call validity,
    /// repetition, degenerate text).
    pub rules: Option<Vec<RuleConfig>>,
    pub feedback: FeedbackConfig,
    pub implicit: ImplicitConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerConfig::default(),
            models: Vec::new(),
            bundled_model: true,
            rules: None,
            feedback: FeedbackConfig::default(),
            implicit: ImplicitConfig::default(),
        }
    }
}

impl FileConfig {
    /// Reads a config file; errors name the file and, for TOML errors, the line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let mut config: Self = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        // Relative model paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for model in config
            .models
            .iter_mut()
            .chain(config.implicit.classifier.iter_mut().map(|c| &mut c.model))
        {
            for p in [&mut model.dir, &mut model.model, &mut model.tokenizer]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// The models to load: the configured ones, else the bundled one.
    pub fn effective_models(&self) -> Vec<ModelConfig> {
        if self.models.is_empty() && self.bundled_model {
            vec![ModelConfig::bundled()]
        } else {
            self.models.clone()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Prefix of the durable consumer names (`<durable>-steps`, `<durable>-trajectories`); reward
    /// workers sharing it share the work.
    pub durable: String,
    /// Deliveries before a message that keeps failing is terminated (logged and counted).
    pub max_deliver: i64,
    pub ack_wait_secs: u64,
    /// Messages scored at once (the model threads micro-batch across them).
    pub concurrency: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            durable: "reward".into(),
            max_deliver: 5,
            ack_wait_secs: 60,
            concurrency: 64,
        }
    }
}

/// Which text a reward model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// The answer only (text plus rendered tool calls).
    #[default]
    Response,
    /// The conversation (`role: content` lines) followed by the answer.
    Conversation,
}

/// The side a too-long text is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Keep the end (the answer, in conversation mode).
    #[default]
    Left,
    Right,
}

/// How logits become a reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mapping {
    /// Logit `k` as is.
    Raw(usize),
    /// `sigmoid(logit 0)`, for single-logit models.
    Sigmoid,
    /// Probability of class `k` under a softmax of all logits.
    Softmax(usize),
}

impl Mapping {
    /// Raw score for one logit, probability of the last class otherwise (`[negative, positive]`).
    pub fn default_for(num_logits: usize) -> Self {
        if num_logits <= 1 {
            Mapping::Raw(0)
        } else {
            Mapping::Softmax(num_logits - 1)
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let (head, index) = match text.split_once(':') {
            Some((h, i)) => (
                h,
                Some(
                    i.parse::<usize>()
                        .map_err(|_| format!("bad class index in mapping `{text}`"))?,
                ),
            ),
            None => (text, None),
        };
        match (head, index) {
            ("raw", i) => Ok(Mapping::Raw(i.unwrap_or(0))),
            ("sigmoid", None) => Ok(Mapping::Sigmoid),
            ("softmax", Some(i)) => Ok(Mapping::Softmax(i)),
            ("softmax", None) => Err("mapping `softmax` needs a class: `softmax:1`".into()),
            _ => Err(format!(
                "unknown mapping `{text}`; use raw, raw:K, sigmoid or softmax:K"
            )),
        }
    }

    /// Whether this mapping can read `num_logits` logits per text.
    pub fn check(&self, num_logits: usize) -> Result<(), String> {
        let ok = match *self {
            Mapping::Raw(k) => k < num_logits,
            Mapping::Sigmoid => num_logits == 1,
            Mapping::Softmax(k) => num_logits >= 2 && k < num_logits,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "mapping {self:?} cannot read {num_logits} logit(s) per text"
            ))
        }
    }

    pub fn apply(&self, logits: &[f32]) -> f64 {
        let at = |k: usize| f64::from(logits.get(k).copied().unwrap_or(0.0));
        match *self {
            Mapping::Raw(k) => at(k),
            Mapping::Sigmoid => 1.0 / (1.0 + (-at(0)).exp()),
            Mapping::Softmax(k) => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
                f64::from(logits.get(k).copied().unwrap_or(f32::NEG_INFINITY) - max).exp() / sum
            }
        }
    }
}

impl<'de> Deserialize<'de> for Mapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Mapping::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One reward model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Short name; the reward source is `rm:<name>@<sha8 of the model file>`.
    pub name: String,
    /// An export directory (`model.onnx`, `tokenizer.json`, optional `config.json`), as `optimum`
    /// writes it. `model` / `tokenizer` override single files.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub model: Option<PathBuf>,
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Default: `raw` for one logit, `softmax:<last class>` for more.
    #[serde(default)]
    pub mapping: Option<Mapping>,
    #[serde(default)]
    pub text: TextMode,
    #[serde(default)]
    pub truncation: Side,
    /// Default: `max_position_embeddings` from the export's `config.json`, else 512.
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    #[serde(default = "default_threads")]
    pub intra_threads: usize,
    /// The reward of a step with nothing to read (no text, no tool calls).
    #[serde(default)]
    pub empty_value: f64,
    #[serde(skip)]
    pub bundled: bool,
}

fn default_max_batch() -> usize {
    32
}
fn default_max_wait_ms() -> u64 {
    5
}
fn default_threads() -> usize {
    1
}

impl ModelConfig {
    /// The model compiled into the binary: a lexicon scorer that prefers helpful, confident
    /// answers (see `scripts/make_reward_model.py`).
    pub fn bundled() -> Self {
        Self {
            name: BUNDLED_NAME.into(),
            dir: None,
            model: None,
            tokenizer: None,
            mapping: Some(Mapping::Sigmoid),
            text: TextMode::Response,
            truncation: Side::Left,
            max_length: Some(512),
            max_batch: default_max_batch(),
            max_wait_ms: default_max_wait_ms(),
            intra_threads: default_threads(),
            empty_value: 0.0,
            bundled: true,
        }
    }

    /// A model from an export directory with defaults for everything else (`--model NAME=DIR`).
    pub fn from_dir(name: &str, dir: PathBuf) -> Self {
        Self {
            name: name.into(),
            dir: Some(dir),
            mapping: None,
            max_length: None,
            bundled: false,
            ..Self::bundled()
        }
    }

    pub fn model_source(&self) -> (Origin, Option<&'static [u8]>) {
        self.source(&self.model, "model.onnx", BUNDLED_MODEL)
    }

    pub fn tokenizer_source(&self) -> (Origin, Option<&'static [u8]>) {
        self.source(&self.tokenizer, "tokenizer.json", BUNDLED_TOKENIZER)
    }

    /// An explicit file, else `file` in the export dir; the compiled-in bytes for the bundled model.
    fn source(
        &self,
        explicit: &Option<PathBuf>,
        file: &'static str,
        bundled: &'static [u8],
    ) -> (Origin, Option<&'static [u8]>) {
        if self.bundled {
            return (Origin::Bundled(file), Some(bundled));
        }
        let path = explicit
            .clone()
            .unwrap_or_else(|| self.dir.clone().unwrap_or_default().join(file));
        (Origin::File(path), None)
    }

    /// Fills what the export's `config.json` says when the TOML did not: the max length
    /// (`max_position_embeddings`) and, for models made by `make_reward_model.py`, the mapping
    /// (`clawline.reward`).
    pub fn resolve_from_export(&mut self) -> Result<(), String> {
        let export = self
            .dir
            .as_ref()
            .map(|d| d.join("config.json"))
            .filter(|p| p.exists());
        let json = match export {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Some(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| format!("{}: not JSON: {e}", path.display()))?,
                )
            }
            None => None,
        };
        if self.max_length.is_none() {
            let from_config = json
                .as_ref()
                .and_then(|v| v.get("max_position_embeddings")?.as_u64());
            self.max_length = Some(from_config.map_or(512, |n| n as usize));
        }
        if self.mapping.is_none()
            && let Some(text) = json
                .as_ref()
                .and_then(|v| v.pointer("/clawline/reward")?.as_str())
        {
            self.mapping = Some(Mapping::parse(text)?);
        }
        Ok(())
    }
}

/// Explicit feedback → reward. Documented in the README.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    pub thumbs_up: f64,
    pub thumbs_down: f64,
    /// A correction without thumbs or rating: the answer was wrong.
    pub correction: f64,
    /// A rating `r` in [0, 1] becomes `rating_low + r * (rating_high - rating_low)`.
    pub rating_low: f64,
    pub rating_high: f64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            thumbs_up: 1.0,
            thumbs_down: -1.0,
            correction: -1.0,
            rating_low: -1.0,
            rating_high: 1.0,
        }
    }
}

/// Implicit feedback: how the user's next message reads the previous answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitConfig {
    pub enabled: bool,
    pub correction: f64,
    pub thanks: f64,
    pub follow_up: f64,
    /// Regexes (checked first) for a message that says the answer was wrong.
    pub correction_patterns: Vec<String>,
    /// Regexes for thanks or praise.
    pub thanks_patterns: Vec<String>,
    /// An ONNX classifier through the same contract, used instead of the patterns.
    pub classifier: Option<ClassifierConfig>,
}

impl Default for ImplicitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            correction: -1.0,
            thanks: 1.0,
            follow_up: 0.2,
            correction_patterns: vec![
                r"(?i)^\W*(no|nope|wrong|incorrect)\b".into(),
                r"(?i)\b(that'?s|that is|this is|it'?s|you'?re|you are) (not right|wrong|incorrect|not correct|not what i)".into(),
                r"(?i)\b(doesn'?t|does not|didn'?t|did not) work\b".into(),
                r"(?i)^\W*(actually|try again|not quite)\b".into(),
            ],
            thanks_patterns: vec![
                r"(?i)\b(thanks|thank you|thx|ty)\b".into(),
                r"(?i)\b(perfect|great|awesome|excellent|exactly|that works|works now|helpful|well done)\b".into(),
            ],
            classifier: None,
        }
    }
}

/// A classifier of follow-up messages: `labels[k]` names the class of logit `k`, each one of
/// `correction`, `thanks`, `follow_up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub model: ModelConfig,
    pub labels: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str::<FileConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn guard_rules_parse_and_a_misspelt_option_is_an_error_naming_it() {
        let ok = parse(
            "[[rules]]\nname = \"rep\"\nkind = \"repetition\"\nngram = 4\npenalty = 0.5\n\
             [[rules]]\nname = \"junk\"\nkind = \"degenerate\"\non_match = -2.0\n",
        )
        .unwrap();
        assert_eq!(ok.rules.unwrap().len(), 2);
        let err =
            parse("[[rules]]\nname = \"rep\"\nkind = \"repetition\"\nn_gram = 4\n").unwrap_err();
        assert!(err.contains("unknown field `n_gram`"), "{err}");
        let rules = parse("[[rules]]\nname = \"rep\"\nkind = \"repetition\"\nngram = 0\n")
            .unwrap()
            .rules
            .unwrap();
        let err = crate::rules::Rule::compile(&rules[0]).err().unwrap();
        assert!(
            err.to_string().contains("ngram must be at least 1"),
            "{err}"
        );
    }
}
