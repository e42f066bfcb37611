//! The engines a version is activated on, and how each takes new weights:
//! - `clawline` (the built-in policy server): `POST /admin/weights {"path", "version", "sha256"}`;
//!   it loads beside the serving weights and swaps between batches.
//! - `vllm`: a LoRA version through `POST /v1/load_lora_adapter` under the name `clawline-v<N>`
//!   (requests are then routed to that name); full weights are copied into the engine's model
//!   directory (`model_dir=`) and re-read with the dev-mode `POST /collective_rpc
//!   {"method": "reload_weights"}`.
//! - `sglang`: `POST /update_weights_from_disk {"model_path"}` (full), `POST /load_lora_adapter`
//!   (LoRA).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clawline_schemas::WeightsFormat;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Clawline,
    Vllm,
    Sglang,
}

/// One engine: `NAME=KIND:URL[;model_dir=PATH][;api_key=KEY]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    pub name: String,
    pub kind: Kind,
    /// Base URL without `/v1`.
    pub url: String,
    /// vLLM full weights: the directory the engine loaded its model from.
    pub model_dir: Option<PathBuf>,
    pub api_key: Option<String>,
}

impl std::str::FromStr for EngineSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "--engine {s:?}: {why} (expected NAME=KIND:URL[;model_dir=PATH][;api_key=KEY], KIND clawline|vllm|sglang)"
            )
        };
        let (name, rest) = s.split_once('=').ok_or_else(|| bad("no NAME="))?;
        if !clawline_nats::subjects::is_valid_token(name) {
            return Err(bad("NAME must be 1-64 characters of [A-Za-z0-9_-]"));
        }
        let mut parts = rest.split(';');
        let (kind, url) = parts
            .next()
            .and_then(|p| p.split_once(':'))
            .ok_or_else(|| bad("no KIND:URL"))?;
        let kind = match kind {
            "clawline" => Kind::Clawline,
            "vllm" => Kind::Vllm,
            "sglang" => Kind::Sglang,
            _ => return Err(bad("unknown KIND")),
        };
        let url = url
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("URL must start with http:// or https://"));
        }
        let mut spec = EngineSpec {
            name: name.to_string(),
            kind,
            url,
            model_dir: None,
            api_key: None,
        };
        for option in parts {
            match option.split_once('=') {
                Some(("model_dir", v)) => spec.model_dir = Some(PathBuf::from(v)),
                Some(("api_key", v)) => spec.api_key = Some(v.to_string()),
                _ => return Err(bad(&format!("unknown option {option:?}"))),
            }
        }
        Ok(spec)
    }
}

/// The model name requests must use after `version` is active on an engine of `kind` (a LoRA
/// adapter on vLLM / SGLang is served under its own name); `None`: unchanged.
pub fn served_name(kind: Kind, format: WeightsFormat, version: u64) -> Option<String> {
    match (kind, format) {
        (Kind::Vllm | Kind::Sglang, WeightsFormat::Lora) => Some(format!("clawline-v{version}")),
        _ => None,
    }
}

/// Activates the version materialised in `dir` on `engine`. `Err` carries the engine's reason.
pub async fn activate(
    http: &reqwest::Client,
    engine: &EngineSpec,
    version: u64,
    format: WeightsFormat,
    dir: &Path,
    sha256: &str,
) -> anyhow::Result<()> {
    let path = dir.display().to_string();
    match (engine.kind, format) {
        (Kind::Clawline, _) => {
            let body = json!({"path": path, "version": version.to_string(), "sha256": sha256});
            post(http, engine, "/admin/weights", body).await.map(drop)
        }
        (Kind::Vllm, WeightsFormat::Lora) => {
            let name = served_name(engine.kind, format, version).unwrap_or_default();
            let body = json!({"lora_name": name, "lora_path": path});
            post(http, engine, "/v1/load_lora_adapter", body)
                .await
                .map(drop)
        }
        (Kind::Vllm, WeightsFormat::Full) => {
            let model_dir = engine.model_dir.as_ref().with_context(|| {
                format!(
                    "engine {}: vLLM full weights need model_dir= (the directory vLLM loaded)",
                    engine.name
                )
            })?;
            copy_weights(dir, model_dir)?;
            let body = json!({"method": "reload_weights"});
            post(http, engine, "/collective_rpc", body).await.map(drop)
        }
        (Kind::Sglang, WeightsFormat::Full) => {
            let answer = post(
                http,
                engine,
                "/update_weights_from_disk",
                json!({"model_path": path}),
            )
            .await?;
            anyhow::ensure!(
                answer["success"].as_bool() == Some(true),
                "SGLang refused: {}",
                answer["message"].as_str().unwrap_or("no message")
            );
            Ok(())
        }
        (Kind::Sglang, WeightsFormat::Lora) => {
            let name = served_name(engine.kind, format, version).unwrap_or_default();
            let body = json!({"lora_name": name, "lora_path": path});
            post(http, engine, "/load_lora_adapter", body)
                .await
                .map(drop)
        }
    }
}

/// Whether `engine` still serves `version` (materialised in `dir`): `Some(false)` after it
/// restarted from its base weights, `None` where the engine cannot tell (vLLM full weights: its
/// model dir holds the version, so a restart loads it anyway). `Err`: unreachable.
pub async fn serves(
    http: &reqwest::Client,
    engine: &EngineSpec,
    version: u64,
    format: WeightsFormat,
    dir: &Path,
) -> anyhow::Result<Option<bool>> {
    match (engine.kind, format) {
        (Kind::Vllm, WeightsFormat::Full) => Ok(None),
        (Kind::Sglang, WeightsFormat::Full) => {
            let info = get(http, engine, "/get_model_info").await?;
            Ok(Some(
                info["model_path"].as_str() == Some(dir.display().to_string().as_str()),
            ))
        }
        (kind, _) => {
            let models = get(http, engine, "/v1/models").await?;
            let listed = models["data"].as_array().cloned().unwrap_or_default();
            Ok(Some(match served_name(kind, format, version) {
                Some(name) => listed
                    .iter()
                    .any(|m| m["id"].as_str() == Some(name.as_str())),
                None => listed
                    .iter()
                    .any(|m| m["version"].as_str() == Some(version.to_string().as_str())),
            }))
        }
    }
}

/// Unloads an adapter version that is no longer served (best effort: vLLM keeps a bounded set).
pub async fn retire(http: &reqwest::Client, engine: &EngineSpec, name: &str) {
    let path = match engine.kind {
        Kind::Vllm => "/v1/unload_lora_adapter",
        Kind::Sglang => "/unload_lora_adapter",
        Kind::Clawline => return,
    };
    if let Err(e) = post(http, engine, path, json!({"lora_name": name})).await {
        tracing::debug!(engine = %engine.name, adapter = name, error = %e, "unloading an old adapter");
    }
}

async fn post(
    http: &reqwest::Client,
    engine: &EngineSpec,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let request = http
        .post(format!("{}{path}", engine.url))
        .timeout(Duration::from_secs(600))
        .json(&body);
    send(engine, request).await
}

async fn get(http: &reqwest::Client, engine: &EngineSpec, path: &str) -> anyhow::Result<Value> {
    let request = http
        .get(format!("{}{path}", engine.url))
        .timeout(Duration::from_secs(10));
    send(engine, request).await
}

async fn send(engine: &EngineSpec, mut request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    if let Some(key) = &engine.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("engine {} unreachable", engine.name))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        anyhow::bail!("engine {} answered {status}: {message}", engine.name);
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Replaces the safetensors of `model_dir` with those of `version_dir` (each file renamed into
/// place, so the engine never reads half a file).
fn copy_weights(version_dir: &Path, model_dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(version_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let name = path.file_name().unwrap_or_default();
            let tmp = model_dir.join(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::copy(&path, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
            std::fs::rename(&tmp, model_dir.join(name))?;
        }
    }
    Ok(())
}
