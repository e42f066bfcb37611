//! The weight-update endpoints of the engines the broadcaster drives, as their documentation
//! describes them:
//! - vLLM (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`): `POST /v1/load_lora_adapter
//!   {"lora_name", "lora_path"}` → 200 text, 400 when the name is taken or the path holds no
//!   adapter; `POST /v1/unload_lora_adapter {"lora_name"}`; loaded adapters are listed by
//!   `/v1/models` and served under their name.
//! - vLLM dev mode (`VLLM_SERVER_DEV_MODE=1`): `POST /collective_rpc {"method": "reload_weights"}`
//!   re-reads the weights from the model directory.
//! - SGLang: `POST /update_weights_from_disk {"model_path"}` → `{"success", "message"}`;
//!   `GET /get_model_info` → `{"model_path", "tokenizer_path", "is_generation"}` names the weights
//!   it serves.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Shared, error};

/// What the engine was told to load.
#[derive(Debug, Clone, Default)]
pub struct EngineWeights {
    /// LoRA adapters by name → path.
    pub adapters: BTreeMap<String, String>,
    /// `reload_weights` calls (vLLM dev mode).
    pub reloads: u64,
    /// The last `update_weights_from_disk` path (SGLang).
    pub model_path: Option<String>,
}

/// An error status and message, made into vLLM's error body by `answer`.
type Refusal = (StatusCode, String);

fn answer<T: IntoResponse>(result: Result<T, Refusal>) -> Response {
    result.map_or_else(|(status, m)| error(status, &m), IntoResponse::into_response)
}

fn body(bytes: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}")))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    v[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("{name} is required")))
}

pub async fn load_lora(State(shared): State<Arc<Shared>>, bytes: axum::body::Bytes) -> Response {
    let result = (|| {
        let v = body(&bytes)?;
        let (name, path) = (field(&v, "lora_name")?, field(&v, "lora_path")?);
        let inplace = v["load_inplace"].as_bool().unwrap_or(false);
        let mut w = shared.weights.lock().unwrap_or_else(|p| p.into_inner());
        if w.adapters.contains_key(name) && !inplace {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("The lora adapter '{name}' has already been loaded."),
            ));
        }
        if !Path::new(path).join("adapter_config.json").is_file() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("No adapter found for {path}"),
            ));
        }
        w.adapters.insert(name.to_string(), path.to_string());
        Ok(format!(
            "Success: LoRA adapter '{name}' added successfully."
        ))
    })();
    answer(result)
}

pub async fn unload_lora(State(shared): State<Arc<Shared>>, bytes: axum::body::Bytes) -> Response {
    let result = (|| {
        let v = body(&bytes)?;
        let name = field(&v, "lora_name")?;
        let mut w = shared.weights.lock().unwrap_or_else(|p| p.into_inner());
        if w.adapters.remove(name).is_none() {
            return Err((
                StatusCode::NOT_FOUND,
                format!("The lora adapter '{name}' cannot be found."),
            ));
        }
        Ok(format!(
            "Success: LoRA adapter '{name}' removed successfully."
        ))
    })();
    answer(result)
}

pub async fn collective_rpc(
    State(shared): State<Arc<Shared>>,
    bytes: axum::body::Bytes,
) -> Response {
    let result = (|| {
        let v = body(&bytes)?;
        let method = field(&v, "method")?;
        if method != "reload_weights" {
            return Err((StatusCode::BAD_REQUEST, format!("unknown method {method}")));
        }
        shared
            .weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reloads += 1;
        Ok(axum::Json(json!({"results": [null]})))
    })();
    answer(result)
}

pub async fn update_from_disk(
    State(shared): State<Arc<Shared>>,
    bytes: axum::body::Bytes,
) -> Response {
    let v = match body(&bytes) {
        Ok(v) => v,
        Err(refusal) => return answer::<String>(Err(refusal)),
    };
    let Some(path) = v["model_path"].as_str() else {
        return axum::Json(json!({"success": false, "message": "model_path is required"}))
            .into_response();
    };
    let dir = Path::new(path);
    let has_weights = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        })
        .unwrap_or(false);
    if !dir.join("config.json").is_file() || !has_weights {
        return axum::Json(json!({"success": false,
            "message": format!("Failed to update weights: {path} is not a model directory")}))
        .into_response();
    }
    shared
        .weights
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .model_path = Some(path.to_string());
    axum::Json(json!({"success": true, "message": "Succeeded to update model weights."}))
        .into_response()
}

pub async fn model_info(State(shared): State<Arc<Shared>>) -> Response {
    let path = shared
        .weights
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .model_path
        .clone()
        .unwrap_or_else(|| shared.config().model);
    axum::Json(json!({"model_path": path, "tokenizer_path": path, "is_generation": true}))
        .into_response()
}
