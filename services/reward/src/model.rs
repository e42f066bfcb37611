//! ONNX reward models through ONNX Runtime (`ort`), in the contract of a Hugging Face
//! sequence-classification export: inputs `input_ids`, `attention_mask` and, when the graph has it,
//! `token_type_ids` (int64, `[batch, sequence]`); output logits `[batch, 1]` or `[batch, K]`.
//!
//! Each model runs on its own thread that owns the session and the tokenizer and micro-batches:
//! it takes the first waiting text, then whatever else arrives within `max_wait`, up to `max_batch`,
//! tokenizes the batch (padded to its longest member, truncated to `max_length` from the configured
//! side) and runs it once.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{Tensor, ValueType};
use sha2::{Digest, Sha256};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::config::{Mapping, ModelConfig, Side};

/// The bundled reward model (see `scripts/make_reward_model.py lexicon`), compiled into the binary so
/// the service works with no files beside it.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../../../data/reward-model/model.onnx");
pub const BUNDLED_TOKENIZER: &[u8] = include_bytes!("../../../data/reward-model/tokenizer.json");
pub const BUNDLED_NAME: &str = "bundled";

/// Where a model's bytes come from, named in every error about them.
#[derive(Debug, Clone)]
pub enum Origin {
    File(PathBuf),
    Bundled(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Bundled(what) => write!(f, "<bundled {what}>"),
        }
    }
}

/// Why a model could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: Origin,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable ONNX model: {message}")]
    Onnx { path: Origin, message: String },
    #[error("{path}: not a usable tokenizer.json: {message}")]
    Tokenizer { path: Origin, message: String },
    #[error("{path}: wrong shape for a reward model: {message}")]
    Contract { path: Origin, message: String },
}

/// The ONNX Runtime library, loaded once per process from `path` (the versioned `.so` of the
/// `onnxruntime` wheel). A missing or too old library is an error naming the file, not a panic.
/// ONNX Runtime allows one environment per process, so it is kept for the life of the process and
/// shared by every service running in it.
pub fn init_runtime(path: &Path) -> Result<ort::environment::Environment, anyhow::Error> {
    static ENV: std::sync::Mutex<Option<ort::environment::Environment>> =
        std::sync::Mutex::new(None);
    let mut env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    let builder = ort::init_from(path).map_err(|e| {
        anyhow::anyhow!(
            "ONNX Runtime library {}: {e} (run ./scripts/setup.sh, or pass --ort-library / set ORT_DYLIB_PATH)",
            path.display()
        )
    })?;
    let built = builder
        .with_name("clawline-reward")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow::anyhow!("starting ONNX Runtime from {}: {e}", path.display()))?;
    *env = Some(built.clone());
    Ok(built)
}

/// The default place of the ONNX Runtime library: `ORT_DYLIB_PATH`, else where `scripts/setup.sh`
/// puts it.
pub fn default_runtime_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("CLAWLINE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clawline")))
        .unwrap_or_else(|| PathBuf::from(".cache/clawline"));
    cache.join("onnxruntime/onnxruntime/capi/libonnxruntime.so.1.32.0")
}

/// A loaded model: a cheap handle to its scoring thread.
#[derive(Clone)]
pub struct RewardModel {
    pub name: String,
    /// `rm:<name>@<first 8 hex of the model file's sha256>`.
    pub source: String,
    /// First 16 hex of the model file's sha256.
    pub version: String,
    pub mapping: Mapping,
    /// Logits per text (`K` of `[batch, K]`).
    pub num_logits: usize,
    jobs: mpsc::Sender<Job>,
}

struct Job {
    text: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, String>>,
}

/// What the scoring thread reports per batch, for metrics.
pub type BatchObserver = std::sync::Arc<dyn Fn(usize, Duration) + Send + Sync>;

impl RewardModel {
    /// Loads and checks a model: the graph has the contract's inputs, the tokenizer loads, and a
    /// test batch gives one row of logits per text that the mapping can read.
    pub fn load(
        env: &ort::environment::Environment,
        config: &ModelConfig,
        observe: Option<BatchObserver>,
    ) -> Result<Self, LoadError> {
        let mut config = config.clone();
        config
            .resolve_from_export()
            .map_err(|message| LoadError::Contract {
                path: config.model_source().0,
                message,
            })?;
        let config = &config;
        let (model_origin, model_bytes) = read(config.model_source())?;
        let (tok_origin, tok_bytes) = read(config.tokenizer_source())?;
        let sha = hex::encode(Sha256::digest(&model_bytes));
        let onnx_err = |message: String| LoadError::Onnx {
            path: model_origin.clone(),
            message,
        };
        let text = |e: &dyn std::fmt::Display| onnx_err(e.to_string());
        // `All` is ONNX Runtime's own default (ORT_ENABLE_ALL); `ort`'s `Level3` is only up to
        // layout optimizations (ORT_ENABLE_LAYOUT).
        let session = Session::builder(env)
            .map_err(|e| text(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| text(&e))?
            .with_intra_threads(config.intra_threads.max(1))
            .map_err(|e| text(&e))?
            .with_inter_threads(1)
            .map_err(|e| text(&e))?
            .commit_from_memory(&model_bytes)
            .map_err(|e| text(&e))?;
        let contract = Contract::check(&session).map_err(|message| LoadError::Contract {
            path: model_origin.clone(),
            message,
        })?;
        let mut tokenizer =
            Tokenizer::from_bytes(&tok_bytes).map_err(|e| LoadError::Tokenizer {
                path: tok_origin.clone(),
                message: e.to_string(),
            })?;
        let max_length = config.max_length.unwrap_or(512);
        configure(&mut tokenizer, max_length, config.truncation).map_err(|message| {
            LoadError::Tokenizer {
                path: tok_origin.clone(),
                message,
            }
        })?;
        let mut worker = Worker {
            session,
            tokenizer,
            contract,
            max_batch: config.max_batch.max(1),
            max_wait: Duration::from_millis(config.max_wait_ms),
            observe,
        };
        // One real batch before serving: a wrong output shape fails here, at startup.
        let probe = worker
            .run(&[
                "probe text".to_string(),
                "a second, longer probe text".into(),
            ])
            .map_err(|message| LoadError::Contract {
                path: model_origin.clone(),
                message,
            })?;
        let num_logits = probe.first().map_or(0, Vec::len);
        let mapping = config
            .mapping
            .unwrap_or_else(|| Mapping::default_for(num_logits));
        mapping
            .check(num_logits)
            .map_err(|message| LoadError::Contract {
                path: model_origin.clone(),
                message,
            })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_name = format!("rm-{}", config.name);
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || worker.serve(rx))
            .map_err(|e| onnx_err(format!("starting its scoring thread: {e}")))?;
        Ok(Self {
            name: config.name.clone(),
            source: format!("rm:{}@{}", config.name, &sha[..8]),
            version: sha[..16].to_string(),
            mapping,
            num_logits,
            jobs: tx,
        })
    }

    /// The logits of one text, batched with whatever else is being scored.
    pub async fn logits(&self, text: String) -> Result<Vec<f32>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { text, reply })
            .map_err(|_| format!("model {} stopped", self.name))?;
        rx.await
            .map_err(|_| format!("model {} dropped a request", self.name))?
    }

    /// The reward of one text under the model's mapping.
    pub async fn score(&self, text: String) -> Result<(f64, Vec<f32>), String> {
        let logits = self.logits(text).await?;
        Ok((self.mapping.apply(&logits), logits))
    }
}

fn read(
    source: (Origin, Option<&'static [u8]>),
) -> Result<(Origin, Cow<'static, [u8]>), LoadError> {
    match source {
        (origin, Some(bytes)) => Ok((origin, Cow::Borrowed(bytes))),
        (Origin::File(path), None) => match std::fs::read(&path) {
            Ok(bytes) => Ok((Origin::File(path), Cow::Owned(bytes))),
            Err(source) => Err(LoadError::Read {
                path: Origin::File(path),
                source,
            }),
        },
        (origin @ Origin::Bundled(_), None) => Err(LoadError::Read {
            path: origin,
            source: std::io::Error::other("missing"),
        }),
    }
}

/// Overrides whatever padding and truncation the tokenizer.json carries (MiniLM's pads every text
/// to 128): pad to the longest text of a batch, cut at `max_length` from `side`.
fn configure(tokenizer: &mut Tokenizer, max_length: usize, side: Side) -> Result<(), String> {
    let (pad_id, pad_token) = ["[PAD]", "<pad>", "<|endoftext|>", "</s>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.to_string())))
        .or_else(|| {
            tokenizer
                .get_padding()
                .map(|p| (p.pad_id, p.pad_token.clone()))
        })
        .unwrap_or((0, "[PAD]".to_string()));
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        direction: PaddingDirection::Right,
        pad_to_multiple_of: None,
        pad_id,
        pad_type_id: 0,
        pad_token,
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: match side {
                Side::Left => TruncationDirection::Left,
                Side::Right => TruncationDirection::Right,
            },
        }))
        .map_err(|e| format!("truncation at {max_length}: {e}"))?;
    Ok(())
}

/// The graph's inputs and output, checked against the sequence-classification contract.
struct Contract {
    token_type_ids: bool,
    output: String,
}

impl Contract {
    fn check(session: &Session) -> Result<Self, String> {
        let mut names = Vec::new();
        for input in session.inputs() {
            let name = input.name();
            match input.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    if !matches!(name, "input_ids" | "attention_mask" | "token_type_ids") {
                        return Err(format!(
                            "unexpected input `{name}`; a sequence-classification model takes input_ids, attention_mask and optionally token_type_ids"
                        ));
                    }
                    if *ty != ort::value::TensorElementType::Int64 || shape.len() != 2 {
                        return Err(format!(
                            "input `{name}` must be int64 [batch, sequence], found {ty:?} {shape:?}"
                        ));
                    }
                }
                other => return Err(format!("input `{name}` is not a tensor: {other:?}")),
            }
            names.push(name.to_string());
        }
        for required in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == required) {
                return Err(format!("missing input `{required}` (found {names:?})"));
            }
        }
        let output = session
            .outputs()
            .iter()
            .find(|o| o.name() == "logits")
            .or_else(|| session.outputs().first())
            .ok_or("the graph has no outputs")?;
        Ok(Self {
            token_type_ids: names.iter().any(|n| n == "token_type_ids"),
            output: output.name().to_string(),
        })
    }
}

struct Worker {
    session: Session,
    tokenizer: Tokenizer,
    contract: Contract,
    max_batch: usize,
    max_wait: Duration,
    observe: Option<BatchObserver>,
}

impl Worker {
    fn serve(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            let deadline = Instant::now() + self.max_wait;
            while jobs.len() < self.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let texts: Vec<String> = jobs
                .iter_mut()
                .map(|j| std::mem::take(&mut j.text))
                .collect();
            match self.run(&texts) {
                Ok(rows) => {
                    for (job, row) in jobs.into_iter().zip(rows) {
                        let _ = job.reply.send(Ok(row));
                    }
                }
                Err(err) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                }
            }
            if let Some(observe) = &self.observe {
                observe(texts.len(), started.elapsed());
            }
        }
    }

    /// Tokenizes and runs one batch; one row of logits per text.
    fn run(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect(), true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        let batch = encodings.len();
        let seq = encodings.first().map_or(0, |e| e.len()).max(1);
        let mut ids = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let mut types = Vec::with_capacity(batch * seq);
        for e in &encodings {
            let pad = seq - e.len();
            ids.extend(e.get_ids().iter().map(|&i| i64::from(i)));
            mask.extend(e.get_attention_mask().iter().map(|&m| i64::from(m)));
            types.extend(e.get_type_ids().iter().map(|&t| i64::from(t)));
            // Only an empty text can be shorter than the batch's longest after padding.
            ids.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(0, pad));
            types.extend(std::iter::repeat_n(0, pad));
        }
        let tensor = |data: Vec<i64>| {
            Tensor::from_array(([batch, seq], data))
                .map(SessionInputValue::from)
                .map_err(|e| e.to_string())
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), tensor(ids)?),
            ("attention_mask".into(), tensor(mask)?),
        ];
        if self.contract.token_type_ids {
            inputs.push(("token_type_ids".into(), tensor(types)?));
        }
        let outputs = self.session.run(inputs).map_err(|e| e.to_string())?;
        let (shape, data) = outputs[self.contract.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output `{}`: {e}", self.contract.output))?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        let per_row = match dims.as_slice() {
            [b, k] if *b as usize == batch && *k >= 1 => *k as usize,
            [b] if *b as usize == batch => 1,
            _ => {
                return Err(format!(
                    "output `{}` has shape {dims:?}; expected [batch, K] with batch {batch}",
                    self.contract.output
                ));
            }
        };
        Ok(data.chunks(per_row).map(<[f32]>::to_vec).collect())
    }
}
