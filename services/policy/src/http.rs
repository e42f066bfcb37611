//! Routes: OpenAI-compatible generation, `/v1/models`, `/admin/weights`, `/healthz`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clawline_model::{LlamaConfig, Loaded, Request, Sampling};
use clawline_runtime::http::{self as edge, ApiError};
use clawline_runtime::keys::ApiKeys;
use clawline_runtime::tokenize::{ChatTokenizer, TemplateArgs};
use serde_json::{Value, json};

use crate::Settings;
use crate::engine::Engine;
use crate::reply::{self, Kind};

pub struct App {
    pub engine: Engine,
    /// The model dir served at start: the base a LoRA adapter applies to.
    pub model_dir: PathBuf,
    pub tokenizer: ChatTokenizer,
    pub config: LlamaConfig,
    pub model_name: String,
    pub keys: ApiKeys,
    pub device: tch::Device,
    /// The compute precision (`--dtype`): every version is loaded in it.
    pub kind: tch::Kind,
    pub version: Mutex<String>,
    /// The ids that end an answer (sorted; see [`crate::text`]).
    pub stop_ids: Vec<u32>,
    /// Added tokens marked special (sorted): never in an answer's text.
    pub special_ids: Vec<u32>,
}

/// What the engine reports when it fails a request (shown to the client, as vLLM does).
pub fn engine_failed(message: impl Into<String>) -> ApiError {
    ApiError::Status {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        message: message.into(),
    }
}

impl App {
    pub fn load(config: &Settings) -> anyhow::Result<Arc<Self>> {
        let device = clawline_model::device(&config.device)?;
        let model = Loaded::load_in(&config.model, device, config.dtype.kind(device))
            .map_err(|e| anyhow::anyhow!("--model {}: {e:#}", config.model.display()))?;
        let tokenizer = ChatTokenizer::load(&config.model)
            .map_err(|e| anyhow::anyhow!("--model {}: {e}", config.model.display()))?;
        let keys = match &config.api_keys {
            Some(path) => ApiKeys::load(path)?,
            None => ApiKeys::open(),
        };
        let model_config = model.model.config().clone();
        let stop_ids = crate::text::stop_ids(&config.model, &model_config, &tokenizer)
            .map_err(|e| anyhow::anyhow!("--model {}: {e:#}", config.model.display()))?;
        let special_ids: Vec<u32> = tokenizer
            .special_tokens()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let model_name = config.served_model_name.clone().unwrap_or_else(|| {
            config
                .model
                .file_name()
                .map_or("clawline-policy".into(), |n| {
                    n.to_string_lossy().into_owned()
                })
        });
        Ok(Arc::new(Self {
            engine: Engine::start(model, config.weights_version.clone(), config.max_batch),
            model_dir: config.model.clone(),
            tokenizer,
            config: model_config,
            model_name,
            keys,
            device,
            kind: config.dtype.kind(device),
            version: Mutex::new(config.weights_version.clone()),
            stop_ids,
            special_ids,
        }))
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/admin/weights", post(weights))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self)
    }

    pub fn current_version(&self) -> String {
        self.version.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Sampling parameters of an OpenAI request, checked against the model's limits.
    fn sampling(&self, body: &Value, prompt_len: usize) -> Result<Sampling, ApiError> {
        let bad = |param: &str, message: String| ApiError::bad_param(param, message);
        let room = self
            .config
            .max_position_embeddings
            .saturating_sub(prompt_len);
        if room == 0 {
            return Err(bad(
                "messages",
                format!(
                    "the prompt has {prompt_len} tokens; this model's context is {} tokens",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let max_tokens = match body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens"))
        {
            None | Some(Value::Null) => room.min(256),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n as usize <= room => n as usize,
                _ => {
                    return Err(bad(
                        "max_tokens",
                        format!("max_tokens must be between 1 and {room} for this prompt"),
                    ));
                }
            },
        };
        let number = |name: &str, default: f64, ok: fn(f64) -> bool| -> Result<f64, ApiError> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| ok(*x))
                    .ok_or_else(|| bad(name, format!("{name}: invalid value {v}"))),
            }
        };
        let temperature = number("temperature", 1.0, |t| (0.0..=2.0).contains(&t))?;
        let top_p = number("top_p", 1.0, |p| p > 0.0 && p <= 1.0)?;
        let top_k = number("top_k", -1.0, |k| k >= -1.0 && k.fract() == 0.0)?;
        if body
            .get("n")
            .and_then(Value::as_u64)
            .is_some_and(|n| n != 1)
        {
            return Err(bad("n", "n: only 1 choice per request is served".into()));
        }
        let seed = match body.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| bad("seed", "seed: expected an integer".into()))?,
            ),
        };
        // vLLM's `ignore_eos`: generate `max_tokens` whatever the model says (benchmarks).
        let ignore_eos = body
            .get("ignore_eos")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Sampling {
            temperature,
            top_p,
            top_k: if top_k > 0.0 { top_k as usize } else { 0 },
            max_tokens,
            stop_ids: if ignore_eos {
                Vec::new()
            } else {
                self.stop_ids.clone()
            },
            seed,
        })
    }
}

fn parse(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
}

async fn chat(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse(&body)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_param("messages", "messages: a non-empty array is required")
        })?;
    let template = body
        .as_object()
        .map(TemplateArgs::of_request)
        .transpose()
        .map_err(|e| ApiError::bad_param(e.field, e.to_string()))?
        .unwrap_or_default();
    let prompt = app
        .tokenizer
        .encode_chat_with(
            messages,
            body.get("tools").filter(|t| !t.is_null()),
            &template,
        )
        .map_err(|e| ApiError::bad_param("messages", format!("messages: {e}")))?;
    generate(app, body, prompt, Kind::Chat).await
}

async fn completions(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse(&body)?;
    // As vLLM: a text prompt is tokenized with the tokenizer's special tokens (a BOS where the
    // model's tokenizer adds one) unless `add_special_tokens` is false.
    let special = body
        .get("add_special_tokens")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let encode = |text: &str| {
        if special {
            app.tokenizer.encode_prompt(text)
        } else {
            app.tokenizer.encode(text)
        }
    };
    let prompt = match body.get("prompt") {
        Some(Value::String(text)) if !text.is_empty() => {
            encode(text).map_err(|e| ApiError::bad_param("prompt", format!("prompt: {e}")))?
        }
        Some(Value::Array(ids)) if !ids.is_empty() => {
            let parsed: Option<Vec<u32>> = ids
                .iter()
                .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect();
            match parsed {
                Some(ids) if ids.iter().all(|&t| (t as usize) < app.config.vocab_size) => ids,
                _ => {
                    return Err(ApiError::bad_param(
                        "prompt",
                        format!(
                            "prompt: token ids must be integers below {}",
                            app.config.vocab_size
                        ),
                    ));
                }
            }
        }
        _ => {
            return Err(ApiError::bad_param(
                "prompt",
                "prompt: a string or an array of token ids is required",
            ));
        }
    };
    generate(app, body, prompt, Kind::Completion).await
}

async fn generate(
    app: Arc<App>,
    body: Value,
    prompt: Vec<u32>,
    kind: Kind,
) -> Result<Response, ApiError> {
    let sampling = app.sampling(&body, prompt.len())?;
    let stop_ids = sampling.stop_ids.clone();
    let events = app.engine.submit(Request {
        prompt: prompt.clone(),
        sampling,
    });
    reply::respond(app, body, prompt, kind, stop_ids, events).await
}

async fn models(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_name,
            "object": "model",
            "owned_by": "clawline",
            "max_model_len": app.config.max_position_embeddings,
            "version": app.current_version(),
        }],
    }))
    .into_response()
}

/// `{"path": DIR or FILE.safetensors, "version": "…", "sha256": optional}`: loads the weights
/// beside the serving ones, checks them, and swaps them in.
async fn weights(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    edge::require_admin(&edge::authenticate(&app.keys, &headers)?)?;
    let body = parse(&body)?;
    let (Some(path), Some(version)) = (
        body.get("path").and_then(Value::as_str).map(PathBuf::from),
        body.get("version")
            .and_then(Value::as_str)
            .map(str::to_string),
    ) else {
        return Err(ApiError::bad_request("path and version are required"));
    };
    let sha256 = body
        .get("sha256")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let (config, device, kind, base) = (
        app.config.clone(),
        app.device,
        app.kind,
        app.model_dir.clone(),
    );
    let loaded = tokio::task::spawn_blocking(move || {
        load_version(&path, &base, sha256.as_deref(), &config, device, kind)
    })
    .await;
    let model = loaded
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            ApiError::bad_param(
                "path",
                format!(
                    "weights refused, still serving {}: {e:#}",
                    app.current_version()
                ),
            )
        })?;
    let previous = app
        .engine
        .swap(model, version.clone())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if let Ok(mut v) = app.version.lock() {
        v.clone_from(&version);
    }
    Ok(axum::Json(json!({"version": version, "previous": previous})).into_response())
}

/// The weights at `path` for a model shaped like `config`: a model dir (its config must match), a
/// single safetensors file, or a PEFT LoRA adapter dir (applied to the `base` model dir and merged);
/// with `sha256`, the weights file must hash to it.
fn load_version(
    path: &std::path::Path,
    base: &std::path::Path,
    sha256: Option<&str>,
    config: &LlamaConfig,
    device: tch::Device,
    kind: tch::Kind,
) -> anyhow::Result<Loaded> {
    if path.join(clawline_model::lora::ADAPTER_CONFIG).is_file() {
        check_sha256(&path.join(clawline_model::lora::ADAPTER_WEIGHTS), sha256)?;
        let mut adapted = Loaded::load_with_adapter_in(base, path, device, kind)?;
        // Merged into bf16 weights an adapter is another model (each weight rounded after the
        // sum), so in bf16 it stays beside them, as PEFT and vLLM apply it.
        if kind == tch::Kind::Float {
            adapted.model.merge_lora();
        }
        return Ok(adapted);
    }
    let file = if path.is_dir() {
        let theirs = LlamaConfig::load(&path.join(clawline_model::weights::CONFIG_FILE))?;
        anyhow::ensure!(
            theirs.vocab_size == config.vocab_size
                && theirs.hidden_size == config.hidden_size
                && theirs.num_hidden_layers == config.num_hidden_layers
                && theirs.num_attention_heads == config.num_attention_heads
                && theirs.kv_heads() == config.kv_heads()
                && theirs.intermediate_size == config.intermediate_size,
            "{}: another architecture than the served model",
            path.display()
        );
        path.join(clawline_model::weights::WEIGHTS_FILE)
    } else {
        path.to_path_buf()
    };
    check_sha256(&file, sha256)?;
    let mut model = Loaded::fresh_in(config, device, 0, kind)?;
    clawline_model::weights::load_weights(&mut model.vs, &[file])?;
    Ok(model)
}

/// With `want`, the file must hash to it.
fn check_sha256(file: &std::path::Path, want: Option<&str>) -> anyhow::Result<()> {
    if let Some(want) = want {
        let (got, _) = clawline_model::weights::sha256_file(file)?;
        anyhow::ensure!(
            got == want,
            "{}: sha256 {got}, expected {want}",
            file.display()
        );
    }
    Ok(())
}
