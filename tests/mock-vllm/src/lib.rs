//! clawline-mock-vllm — a stand-in for vLLM's OpenAI-compatible server, for tests and benchmarks
//! only (the one part of the system tests may mock).
//!
//! It behaves like vLLM where clawline depends on it: `return_token_ids` gives `prompt_token_ids`
//! and per-choice `token_ids` (the end-of-sequence token included, as engines count it), `logprobs`
//! gives per-token logprobs, streams are SSE chunks with per-chunk ids and logprobs, tool calls
//! stream as vLLM's do, and `/v1/completions` takes token-id prompts. Prompt ids come from the
//! bundled tokenizer's chat template. Knobs: delays, failure status, a hang, no-token-ids mode
//! (rejects the extension like OpenAI's API), a policy-version header.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use clawline_runtime::tokenize::ChatTokenizer;
use serde_json::{Value, json};

mod completions;
mod messages;
mod reply;
mod responses;
mod weights;

pub use weights::EngineWeights;

/// The bundled tokenizer (`data/tokenizer`).
pub fn default_tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tokenizer")
}

/// Behaviour knobs; change them while the mock runs through [`MockVllm::configure`].
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub model: String,
    /// Wait before answering (before the first chunk when streaming).
    pub delay: Duration,
    /// Wait between streamed chunks.
    pub token_delay: Duration,
    /// Understand vLLM's `return_token_ids`; when false, reject it with 400 like OpenAI's API.
    pub token_ids: bool,
    /// Send `x-clawline-policy-version` with every answer.
    pub policy_version: Option<u64>,
    /// Answer every chat request with this status and an error body.
    pub fail_status: Option<u16>,
    /// A fixed reply instead of `echo: <last message>`.
    pub reply: Option<String>,
    /// Context length reported by `/v1/models` (vLLM's `max_model_len`).
    pub max_model_len: u64,
    /// Like `vllm serve --api-key`: every `/v1` request without `Authorization: Bearer <key>` is 401.
    pub api_key: Option<String>,
    /// Like `vllm serve --enable-auto-tool-choice --tool-call-parser hermes`: without it (the
    /// default, as vLLM's), a request with `tools` is answered 400.
    pub tool_parser: bool,
    /// A scripted agent task: the first time a conversation offers this tool (name, JSON
    /// arguments), the answer calls it; once a tool result is in the conversation, the answer is
    /// text again. Without it, any user turn with `tools` calls the first tool with `{"query": …}`.
    pub call_tool: Option<(String, String)>,
    /// Serve Anthropic Messages at `/v1/messages` too, as SGLang and Anthropic's API do; off by
    /// default (vLLM's OpenAI server answers 404 there).
    pub messages: bool,
    /// Serve OpenAI Responses at `/v1/responses` too, as vLLM's OpenAI server does (keeping no
    /// responses, its default); off by default so that a test opts in.
    pub responses: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            model: "mock-model".into(),
            delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            token_ids: true,
            policy_version: None,
            fail_status: None,
            reply: None,
            max_model_len: 4096,
            api_key: None,
            tool_parser: false,
            call_tool: None,
            messages: false,
            responses: false,
        }
    }
}

#[derive(Default)]
pub struct Stats {
    pub chat_requests: AtomicU64,
    pub completion_requests: AtomicU64,
    /// The last chat request body as received.
    pub last_request: Mutex<Option<Value>>,
    /// The headers of the last `/v1` request.
    pub last_headers: Mutex<axum::http::HeaderMap>,
}

pub(crate) struct Shared {
    pub config: RwLock<MockConfig>,
    pub tokenizer: ChatTokenizer,
    pub stats: Arc<Stats>,
    pub counter: AtomicU64,
    pub weights: Mutex<EngineWeights>,
    /// Each token's text, decoded once (a real engine's detokenizer is not the cost under test).
    token_texts: Vec<String>,
}

impl Shared {
    fn new(config: MockConfig, tokenizer: &std::path::Path) -> anyhow::Result<Arc<Self>> {
        let tokenizer = ChatTokenizer::load(tokenizer)?;
        let token_texts = (0..tokenizer.vocab_size() as u32)
            .map(|id| tokenizer.decode(&[id]).unwrap_or_default())
            .collect();
        Ok(Arc::new(Shared {
            config: RwLock::new(config),
            tokenizer,
            stats: Arc::new(Stats::default()),
            counter: AtomicU64::new(0),
            weights: Mutex::new(EngineWeights::default()),
            token_texts,
        }))
    }

    pub(crate) fn token_text(&self, id: u32) -> String {
        match self.token_texts.get(id as usize) {
            Some(text) => text.clone(),
            None => self.tokenizer.decode(&[id]).unwrap_or_default(),
        }
    }

    pub(crate) fn config(&self) -> MockConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running mock on a loopback port; stops when dropped.
pub struct MockVllm {
    /// Base URL including `/v1`, as given to `--upstream`.
    pub url: String,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockVllm {
    pub async fn start(config: MockConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, config, &default_tokenizer_dir()).await
    }

    pub async fn serve(
        listener: tokio::net::TcpListener,
        config: MockConfig,
        tokenizer: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Shared::new(config, tokenizer)?;
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(nodelay(listener), app).await;
        });
        Ok(Self {
            url: format!("http://{addr}/v1"),
            addr,
            stats: shared.stats.clone(),
            shared,
            task,
        })
    }

    /// Stops and starts again on the same address with the same config, as an engine process
    /// restarted: every loaded adapter and weight update is gone.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let (addr, config) = (self.addr, self.shared.config());
        self.task.abort();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        Self::serve(listener, config, &default_tokenizer_dir()).await
    }

    /// Changes the behaviour for the following requests.
    pub fn configure(&self, change: impl FnOnce(&mut MockConfig)) {
        change(
            &mut self
                .shared
                .config
                .write()
                .unwrap_or_else(|p| p.into_inner()),
        );
    }

    /// The ids vLLM would report for this chat prompt (for assertions).
    pub fn prompt_ids(&self, messages: &[Value], tools: Option<&Value>) -> Vec<u32> {
        self.shared
            .tokenizer
            .encode_chat(messages, tools)
            .unwrap_or_default()
    }

    /// What the engine was told to load through its weight-update endpoints.
    pub fn weights(&self) -> EngineWeights {
        self.shared
            .weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn chat_requests(&self) -> u64 {
        self.stats.chat_requests.load(Ordering::Relaxed)
    }
}

impl Drop for MockVllm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(reply::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/v1/load_lora_adapter", post(weights::load_lora))
        .route("/v1/unload_lora_adapter", post(weights::unload_lora))
        .route("/collective_rpc", post(weights::collective_rpc))
        .route("/update_weights_from_disk", post(weights::update_from_disk))
        .route("/get_model_info", get(weights::model_info))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_key,
        ))
        .with_state(shared)
}

async fn require_key(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path().starts_with("/v1") {
        *shared
            .stats
            .last_headers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = request.headers().clone();
    }
    if let Some(key) = shared.config().api_key
        && request.uri().path().starts_with("/v1")
    {
        let sent = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {key}").as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "Unauthorized"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Serves a mock on `listener` until the process ends (for the `clawline-mock-vllm` binary).
pub async fn serve_forever(
    listener: tokio::net::TcpListener,
    config: MockConfig,
    tokenizer: &std::path::Path,
) -> anyhow::Result<()> {
    axum::serve(nodelay(listener), router(Shared::new(config, tokenizer)?)).await?;
    Ok(())
}

/// Streams go out chunk by chunk, as vLLM's do, not held back by Nagle's algorithm until the
/// client's delayed ACK (which put ~40 ms into every streamed answer).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

async fn models(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let config = shared.config();
    let model = config.model;
    let mut data = vec![
        json!({"id": model, "object": "model", "owned_by": "clawline-mock", "max_model_len": config.max_model_len}),
    ];
    let weights = shared.weights.lock().map(|w| w.clone()).unwrap_or_default();
    for (name, path) in weights.adapters {
        data.push(json!({"id": name, "object": "model", "root": path, "parent": model}));
    }
    axum::Json(json!({"object": "list", "data": data}))
}

/// vLLM's answer to a `model` it does not serve (neither the model nor a loaded adapter): 404.
pub(crate) fn unknown_model(shared: &Shared, request: &Value) -> Option<Response> {
    let name = request.get("model").and_then(Value::as_str)?;
    let served = shared.config().model == name
        || shared
            .weights
            .lock()
            .is_ok_and(|w| w.adapters.contains_key(name));
    (!served).then(|| {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": format!("The model `{name}` does not exist."), "type": "NotFoundError", "param": null, "code": 404}})),
        )
            .into_response()
    })
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": "BadRequestError", "param": null, "code": status.as_u16()}})),
    )
        .into_response()
}

/// `ids` as a stream sends them, incrementally detokenized: (text, ids) per piece, a token that
/// ends inside a character waiting for the next; the ids left over at the end.
pub(crate) fn detokenized(shared: &Shared, ids: &[u32]) -> (Vec<(String, Vec<u32>)>, Vec<u32>) {
    let (mut pieces, mut sent, mut pending) = (Vec::new(), String::new(), Vec::new());
    for (k, &id) in ids.iter().enumerate() {
        pending.push(id);
        let text = shared.tokenizer.decode(&ids[..=k]).unwrap_or_default();
        if text.ends_with('\u{fffd}') {
            continue;
        }
        let delta = text.get(sent.len()..).unwrap_or("").to_string();
        sent = text;
        pieces.push((delta, std::mem::take(&mut pending)));
    }
    (pieces, pending)
}

/// A stream's end: the usage chunk when one is due, then `[DONE]`.
pub(crate) async fn end_stream(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
    usage: Option<Value>,
) {
    if let Some(usage) = usage {
        let _ = tx.send(Ok(sse(&usage))).await;
    }
    let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
}

/// An event-stream response fed by `rx`.
/// A stream of ready events, one each `delay`, as an engine generating them would send them.
pub(crate) fn paced_events(delay: Duration, events: Vec<Bytes>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        for e in events {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    });
    event_stream(rx)
}

pub(crate) fn event_stream(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::convert::Infallible>>,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "building the stream"))
}

pub(crate) fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}
