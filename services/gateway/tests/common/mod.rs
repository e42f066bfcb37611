//! Shared test setup: a real nats-server, the mock engine, and the gateway run in-process.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use clawline_gateway::{AppState, Args, Settings};
use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::async_nats::jetstream;
use clawline_nats::testing::NatsServer;
use clawline_runtime::CancellationToken;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use clawline_schemas::*;

pub struct Options {
    pub mock: MockConfig,
    pub api_keys: Option<&'static str>,
    pub tokenizer: bool,
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mock: MockConfig::default(),
            api_keys: None,
            tokenizer: true,
            extra_args: Vec::new(),
        }
    }
}

pub struct Harness {
    pub nats: NatsServer,
    pub mock: MockVllm,
    pub url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub dir: tempfile::TempDir,
    pub config: Settings,
}

pub fn tokenizer_dir() -> PathBuf {
    clawline_mock_vllm::default_tokenizer_dir()
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let nats = NatsServer::start().await;
        let mock = MockVllm::start(options.mock).await.expect("mock engine");
        let dir = tempfile::tempdir().expect("tmp");
        let mut args: Vec<String> = vec![
            "clawline-gateway".into(),
            "--upstream".into(),
            mock.url.clone(),
            "--nats-url".into(),
            nats.url(),
            "--spool-dir".into(),
            dir.path().join("spool").display().to_string(),
            "--spool-fsync".into(),
            "false".into(),
            "--capture-timeout".into(),
            "1s".into(),
        ];
        if options.tokenizer {
            args.extend(["--tokenizer".into(), tokenizer_dir().display().to_string()]);
        }
        if let Some(keys) = options.api_keys {
            let path = dir.path().join("keys.txt");
            std::fs::write(&path, keys).expect("key file");
            args.extend(["--api-keys".into(), path.display().to_string()]);
        }
        args.extend(options.extra_args);
        let config = Args::try_parse_from(args).expect("config").settings();
        Self::launch(nats, mock, dir, config).await
    }

    async fn launch(
        nats: NatsServer,
        mock: MockVllm,
        dir: tempfile::TempDir,
        config: Settings,
    ) -> Self {
        let client = clawline_runtime::connect_nats(&config.nats, "test-gateway", false)
            .await
            .expect("nats client");
        let state = clawline_gateway::build(config.clone(), client).expect("gateway state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(clawline_gateway::serve(
            state.clone(),
            listener,
            shutdown.clone(),
        ));
        let harness = Self {
            nats,
            mock,
            url,
            state,
            http: reqwest::Client::new(),
            shutdown,
            task,
            dir,
            config,
        };
        harness.wait_ready().await;
        harness
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/ready", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 20 s\nnats log:\n{}",
                self.nats.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn js(&self) -> jetstream::Context {
        self.nats.jetstream().await
    }

    /// Every event of type `E` on `stream` whose subject starts with `prefix`, in stream order.
    pub async fn events<E: DeserializeOwned>(&self, stream: &str, prefix: &str) -> Vec<E> {
        read_events(&self.js().await, stream, prefix).await
    }

    pub async fn steps(&self) -> Vec<StepRecorded> {
        self.events("STEPS", "clawline.steps.").await
    }

    /// Waits until `stream` holds at least `n` messages (bounded).
    pub async fn wait_for_messages(&self, stream: &str, n: u64) {
        let js = self.js().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let count = stream_count(&js, stream).await;
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{stream} has {count} messages, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the gateway and starts a new one with the same config (same spool dir), as after a
    /// deploy or a crash-restart.
    pub async fn restart_gateway(self) -> Self {
        let Self {
            nats,
            mock,
            state,
            shutdown,
            task,
            dir,
            config,
            ..
        } = self;
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        // The old gateway lets go of its spool before the new one opens it.
        drop(state);
        Self::launch(nats, mock, dir, config).await
    }

    /// Starts a gateway whose NATS is not there (yet).
    pub async fn start_without_nats(
        dir: &tempfile::TempDir,
        nats_url: &str,
    ) -> (AppState, String, CancellationToken, MockVllm) {
        let mock = MockVllm::start(MockConfig::default()).await.expect("mock");
        let config = Args::try_parse_from([
            "clawline-gateway",
            "--upstream",
            &mock.url,
            "--nats-url",
            nats_url,
            "--spool-dir",
            &dir.path().join("spool").display().to_string(),
        ])
        .expect("config")
        .settings();
        let client = clawline_runtime::connect_nats(&config.nats, "test", false)
            .await
            .expect("client");
        let state = clawline_gateway::build(config, client).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        tokio::spawn(clawline_gateway::serve(
            state.clone(),
            listener,
            shutdown.clone(),
        ));
        (state, url, shutdown, mock)
    }
}

pub use clawline_nats::testing::{read_events, stream_count};

/// A chat call in the trajectory the client names; returns its step id.
pub async fn call_named(h: &Harness, trajectory: &str, text: &str) -> String {
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-clawline-trajectory", trajectory)
        .json(&chat_body(text))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{text}");
    r.headers()["x-clawline-step-id"]
        .to_str()
        .unwrap()
        .to_string()
}

pub fn chat_body(content: &str) -> Value {
    json!({"model": "mock-model", "messages": [{"role": "user", "content": content}]})
}

/// The ids the mock (like vLLM) reports for a reply text: the text's tokens plus the EOS token.
pub fn reply_ids(text: &str) -> Vec<u32> {
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(&tokenizer_dir()).expect("tokenizer");
    let mut ids = tok.encode(text).expect("encode");
    ids.push(tok.token_id(tok.eos_token()).expect("eos"));
    ids
}

/// Reads an SSE response to the end: the JSON chunks and whether `[DONE]` came.
pub async fn read_sse(response: reqwest::Response) -> (Vec<Value>, bool) {
    let text = response.text().await.expect("stream body");
    let mut chunks = Vec::new();
    let mut done = false;
    for event in text.split("\n\n") {
        let Some(data) = event.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data).expect("chunk JSON"));
        }
    }
    (chunks, done)
}
