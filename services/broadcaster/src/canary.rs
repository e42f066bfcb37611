//! The canary gate: before a version is promoted, it answers an evaluation set (several sampled
//! answers a prompt, with seeds shared by every version) and the reward scorer rates them over NATS
//! (`clawline.reward.compute`, the same models that score live traffic). The serving version's
//! answers to the same prompts are rated the same way (cached per version). The candidate is
//! promoted unless its mean reward is lower than the serving version's by more than the tolerance.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use clawline_model::{Loaded, Request, Sampling, generate};
use clawline_runtime::tokenize::ChatTokenizer;
use clawline_schemas::{CanaryResult, WeightsFormat};
use serde_json::{Value, json};

/// The prompts a canary answers when no `--canary-prompts` file is given.
pub const BUNDLED_PROMPTS: &str = include_str!("../../../data/prompts/eval.jsonl");

/// A version as the canary loads it: `None` is the base model.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub version: u64,
    pub dir: Option<PathBuf>,
    pub format: WeightsFormat,
}

pub struct Canary {
    base: PathBuf,
    tokenizer: ChatTokenizer,
    prompts: Vec<Vec<Value>>,
    max_tokens: usize,
    /// Answers per prompt.
    samples: usize,
    pub tolerance: f64,
    /// The serving version's mean reward, once computed.
    serving: Mutex<Option<(u64, f64)>>,
}

impl Canary {
    /// `prompts`: JSONL, each line `{"messages": [...]}` or a plain string (one user turn).
    pub fn load(
        base: &Path,
        prompts: Option<&Path>,
        max_tokens: usize,
        samples: usize,
        tolerance: f64,
    ) -> anyhow::Result<Self> {
        let text = match prompts {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--canary-prompts {}", path.display()))?,
            None => BUNDLED_PROMPTS.to_string(),
        };
        let prompts = parse_prompts(&text).with_context(|| match prompts {
            Some(p) => format!("--canary-prompts {}", p.display()),
            None => "the bundled prompts".into(),
        })?;
        let tokenizer = ChatTokenizer::load(base)
            .with_context(|| format!("--base-model {}: tokenizer", base.display()))?;
        Ok(Self {
            base: base.to_path_buf(),
            tokenizer,
            prompts,
            max_tokens,
            samples: samples.max(1),
            tolerance,
            serving: Mutex::new(None),
        })
    }

    /// `samples` answers of `candidate` to every prompt, prompt-major (blocking: loads the model).
    /// Sampled as users are served (temperature 1), with the same seeds for every version, so two
    /// versions are compared on common random numbers.
    fn answers(&self, candidate: &Candidate) -> anyhow::Result<Vec<String>> {
        let device = tch::Device::Cpu;
        let model = match (&candidate.dir, candidate.format) {
            (None, _) => Loaded::load(&self.base, device)?,
            (Some(dir), WeightsFormat::Full) => Loaded::load(dir, device)?,
            (Some(dir), WeightsFormat::Lora) => {
                let mut m = Loaded::load_with_adapter(&self.base, dir, device)?;
                m.model.merge_lora();
                m
            }
        };
        let mut stop_ids = model.model.config().eos_ids();
        stop_ids.extend(self.tokenizer.token_id(self.tokenizer.eos_token()));
        let mut requests = Vec::new();
        for (i, messages) in self.prompts.iter().enumerate() {
            let prompt = self.tokenizer.encode_chat(messages, None)?;
            for s in 0..self.samples {
                requests.push(Request {
                    prompt: prompt.clone(),
                    sampling: Sampling {
                        temperature: 1.0,
                        max_tokens: self.max_tokens,
                        stop_ids: stop_ids.clone(),
                        seed: Some((i * 1000 + s) as u64),
                        ..Default::default()
                    },
                });
            }
        }
        let out = generate(&model.model, &requests)?;
        out.iter()
            .map(|g| {
                let ids: Vec<u32> = g
                    .tokens
                    .iter()
                    .copied()
                    .filter(|t| !stop_ids.contains(t))
                    .collect();
                Ok(self.tokenizer.decode(&ids)?)
            })
            .collect()
    }

    /// The mean reward of `candidate`'s answers, rated by the reward scorer.
    async fn score(
        self: &std::sync::Arc<Self>,
        client: &async_nats::Client,
        candidate: &Candidate,
    ) -> anyhow::Result<f64> {
        let this = self.clone();
        let c = candidate.clone();
        let answers = tokio::task::spawn_blocking(move || this.answers(&c)).await??;
        let per_prompt = self
            .prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, self.samples));
        // All answers are rated at once: the scorer batches what arrives together.
        let ratings = per_prompt
            .zip(&answers)
            .map(|(messages, answer)| async move {
                let prompt = messages
                    .iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default();
                let body = json!({"prompt_text": prompt, "response_text": answer});
                let reply = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.request(
                        clawline_nats::subjects::REWARD_COMPUTE,
                        body.to_string().into(),
                    ),
                )
                .await
                .context("the reward scorer did not answer in 30 s")?
                .context("no reward scorer answers clawline.reward.compute")?;
                let v: Value = serde_json::from_slice(&reply.payload)?;
                v["reward_score"]
                    .as_f64()
                    .with_context(|| format!("the reward scorer answered {v}"))
            });
        let total: f64 = futures::future::try_join_all(ratings).await?.iter().sum();
        Ok(total / answers.len().max(1) as f64)
    }

    /// Compares `candidate` with `serving`.
    pub async fn evaluate(
        self: &std::sync::Arc<Self>,
        client: &async_nats::Client,
        candidate: &Candidate,
        serving: &Candidate,
    ) -> anyhow::Result<CanaryResult> {
        let cached = *self.serving.lock().unwrap_or_else(|p| p.into_inner());
        let serving_reward = match cached {
            Some((v, r)) if v == serving.version => r,
            _ => self.score(client, serving).await?,
        };
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((serving.version, serving_reward));
        let candidate_reward = self.score(client, candidate).await?;
        Ok(CanaryResult {
            prompts: (self.prompts.len() * self.samples) as u32,
            candidate_reward,
            serving_reward,
            serving_version: serving.version,
            tolerance: self.tolerance,
        })
    }

    /// Remembers a promoted version's score, so the next comparison need not recompute it.
    pub fn promoted(&self, result: &CanaryResult, version: u64) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((version, result.candidate_reward));
    }
}

/// Whether `result` lets the candidate be promoted.
pub fn passes(result: &CanaryResult) -> bool {
    result.candidate_reward >= result.serving_reward - result.tolerance
}

fn parse_prompts(text: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", i + 1))?;
        let messages = match &v {
            Value::String(s) => vec![json!({"role": "user", "content": s})],
            Value::Object(o) => o
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .with_context(|| format!("line {}: no \"messages\" array", i + 1))?,
            _ => anyhow::bail!(
                "line {}: expected a string or {{\"messages\": [...]}}",
                i + 1
            ),
        };
        prompts.push(messages);
    }
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    Ok(prompts)
}
