//! The serving engines behind the gateway: round-robin over the healthy ones, pooled connections
//! with TCP_NODELAY, failover on connection errors, and a health probe that brings an engine back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// Whether an engine understands vLLM's `return_token_ids` (learned from its first answer).
const TOKEN_IDS_UNKNOWN: u8 = 0;
const TOKEN_IDS_NO: u8 = 2;

pub struct Upstream {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000/v1`.
    pub base: String,
    /// The key this engine wants (`Authorization: Bearer …`).
    api_key: Option<String>,
    healthy: AtomicBool,
    token_ids: AtomicU8,
}

impl Upstream {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// False once the engine refused the extension; then the gateway stops asking.
    pub fn may_support_token_ids(&self) -> bool {
        self.token_ids.load(Ordering::Relaxed) != TOKEN_IDS_NO
    }

    pub fn mark_no_token_ids(&self) {
        if self.token_ids.swap(TOKEN_IDS_NO, Ordering::Relaxed) == TOKEN_IDS_UNKNOWN {
            tracing::info!(upstream = %self.base, "upstream rejects return_token_ids; using the tokenizer fallback");
        }
    }
}

/// What the engines serve, as their `/v1/models` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    /// Model ids; the engine's own model first, then its adapters.
    pub models: Vec<String>,
    /// The engine's context length (vLLM's `max_model_len`), when it tells.
    pub max_model_len: Option<u64>,
}

/// How long the engines' `/v1/models` answer (or its absence) is kept.
const SERVED_TTL: Duration = Duration::from_secs(30);

pub struct Upstreams {
    list: Vec<Upstream>,
    next: AtomicUsize,
    client: reqwest::Client,
    /// Client headers passed on to the engines.
    forward: Vec<reqwest::header::HeaderName>,
    served: Mutex<Option<(Instant, Option<Served>)>>,
}

/// Headers that describe the connection or the body: never copied from a client's request.
const NOT_FORWARDED: [&str; 12] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

impl Upstreams {
    pub fn new(bases: &[String], api_keys: &[String], forward: &[String]) -> anyhow::Result<Self> {
        let api_keys: Vec<&String> = api_keys.iter().filter(|k| !k.is_empty()).collect();
        anyhow::ensure!(
            api_keys.len() <= 1 || api_keys.len() == bases.len(),
            "--upstream-api-key: give one key for every engine, or one per --upstream in the same order ({} keys for {} upstreams)",
            api_keys.len(),
            bases.len()
        );
        let key_of = |i: usize| match api_keys.len() {
            0 => None,
            1 => Some(api_keys[0].clone()),
            _ => Some(api_keys[i].clone()),
        };
        let forward = forward
            .iter()
            .map(|name| {
                let parsed = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| anyhow::anyhow!("--forward-header {name:?} is not a header name"))?;
                anyhow::ensure!(
                    !NOT_FORWARDED.contains(&parsed.as_str()),
                    "--forward-header {name:?}: describes the client's connection or body, not its request"
                );
                anyhow::ensure!(
                    parsed != reqwest::header::AUTHORIZATION || api_keys.is_empty(),
                    "--forward-header authorization and --upstream-api-key both set the engine's key"
                );
                Ok(parsed)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!bases.is_empty(), "at least one --upstream is required");
        let mut list = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let parsed = reqwest::Url::parse(base)
                .map_err(|e| anyhow::anyhow!("--upstream {base:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "--upstream {base:?} must be http(s)"
            );
            list.push(Upstream {
                base: base.trim_end_matches('/').to_string(),
                api_key: key_of(i),
                healthy: AtomicBool::new(true),
                token_ids: AtomicU8::new(TOKEN_IDS_UNKNOWN),
            });
        }
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
            client,
            forward,
            served: Mutex::new(None),
        })
    }

    /// `GET {base}/models` on one engine, with its key, within 2 s.
    async fn list_models(&self, upstream: &Upstream) -> reqwest::Result<reqwest::Response> {
        self.get_from(upstream, "/models", Duration::from_secs(2))
            .await
    }

    /// `GET {base}{path}` on one engine, with its key, within `timeout`.
    async fn get_from(
        &self,
        upstream: &Upstream,
        path: &str,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::Response> {
        self.authorized(
            upstream,
            self.client.get(format!("{}{path}", upstream.base)),
        )
        .timeout(timeout)
        .send()
        .await
    }

    fn authorized(
        &self,
        upstream: &Upstream,
        request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        match &upstream.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// What the engines serve (their `/v1/models`, asked at most every 30 s; `None` when they do
    /// not say).
    pub async fn served(&self) -> Option<Served> {
        let cached = |s: &Self| {
            s.served
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(at, _)| at.elapsed() < SERVED_TTL)
                .map(|(_, served)| served.clone())
        };
        if let Some(served) = cached(self) {
            return served;
        }
        let upstream = self.order()[0];
        let answer = self
            .list_models(upstream)
            .await
            .ok()
            .filter(|r| r.status().is_success());
        let listed = match answer {
            Some(r) => r.json::<serde_json::Value>().await.ok(),
            None => None,
        };
        let served = listed.and_then(|v| {
            let data = v.get("data")?.as_array()?;
            let models: Vec<String> = data
                .iter()
                .filter_map(|m| m.get("id")?.as_str().map(str::to_string))
                .collect();
            let max_model_len = data.iter().find_map(|m| m.get("max_model_len")?.as_u64());
            (!models.is_empty()).then_some(Served {
                models,
                max_model_len,
            })
        });
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), served.clone()));
        served
    }

    pub fn all(&self) -> &[Upstream] {
        &self.list
    }

    /// Upstreams in the order to try: healthy ones round-robin first, then the rest.
    fn order(&self) -> Vec<&Upstream> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.list.len();
        let rotated = (0..n).map(|i| &self.list[(start + i) % n]);
        let (mut healthy, sick): (Vec<_>, Vec<_>) = rotated.partition(|u| u.is_healthy());
        healthy.extend(sick);
        healthy
    }

    /// POSTs a JSON body to `path` on the next upstream, failing over to the others when one cannot
    /// be connected to. `body_for` builds the body for the chosen upstream (engines differ in the
    /// extensions they accept). Any HTTP answer (also an error status) is returned as is.
    pub async fn post(
        &self,
        path: &str,
        body_for: impl Fn(&Upstream) -> Vec<u8>,
        timeout: Option<Duration>,
        client_headers: &axum::http::HeaderMap,
    ) -> Result<(reqwest::Response, &Upstream), ApiError> {
        let mut last_error = String::from("no upstream configured");
        for upstream in self.order() {
            let mut request = self
                .authorized(
                    upstream,
                    self.client.post(format!("{}{path}", upstream.base)),
                )
                .header("content-type", "application/json")
                .body(body_for(upstream));
            for name in &self.forward {
                for value in client_headers.get_all(name) {
                    request = request.header(name, value);
                }
            }
            if path.starts_with("/messages") {
                request = anthropic_headers(request, upstream, client_headers);
            }
            if let Some(t) = timeout {
                request = request.timeout(t);
            }
            match request.send().await {
                Ok(response) => {
                    upstream.healthy.store(true, Ordering::Relaxed);
                    return Ok((response, upstream));
                }
                Err(err) if err.is_timeout() => {
                    return Err(ApiError::GatewayTimeout(timeout.unwrap_or_default()));
                }
                Err(err) if err.is_connect() => {
                    tracing::warn!(upstream = %upstream.base, error = %err, "upstream unreachable; trying the next");
                    upstream.healthy.store(false, Ordering::Relaxed);
                    last_error = format!("{}: {err}", upstream.base);
                }
                Err(err) => return Err(ApiError::BadGateway(format!("{}: {err}", upstream.base))),
            }
        }
        Err(ApiError::BadGateway(last_error))
    }

    /// A whole (not streamed) call: POSTs `body` to `path` as [`Self::post`] does and returns the
    /// body of the engine's successful answer ([`answer_body`]).
    pub async fn call(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
        client_headers: &axum::http::HeaderMap,
    ) -> Result<axum::body::Bytes, ApiError> {
        let (response, _) = self
            .post(path, |_| body.to_vec(), Some(timeout), client_headers)
            .await?;
        answer_body(response).await
    }

    /// GETs `path` from the first healthy upstream.
    pub async fn get(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let upstream = self.order()[0];
        self.get_from(upstream, path, Duration::from_secs(10))
            .await
            .map_err(|e| ApiError::BadGateway(format!("{}: {e}", upstream.base)))
    }

    /// Probes unhealthy upstreams every `interval` and marks the reachable ones healthy again.
    pub async fn probe(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            for upstream in self.list.iter().filter(|u| !u.is_healthy()) {
                let reachable = self.list_models(upstream).await.is_ok();
                if reachable {
                    tracing::info!(upstream = %upstream.base, "upstream reachable again");
                    upstream.healthy.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The body of an engine's successful (2xx) answer; an error answer becomes [`ApiError::Upstream`]
/// (its status and body go back to the client as they were), a body that breaks off a 502.
pub async fn answer_body(response: reqwest::Response) -> Result<axum::body::Bytes, ApiError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ApiError::Upstream { status, body })
    }
}

/// An engine's error answer as the client gets it: its status and as much of its body as arrives.
pub async fn upstream_error(response: reqwest::Response) -> ApiError {
    ApiError::Upstream {
        status: response.status(),
        body: response.bytes().await.unwrap_or_default(),
    }
}

/// What an engine speaking Anthropic Messages needs besides the body: the protocol's own headers
/// from the client (`anthropic-version`, default 2023-06-01, and `anthropic-beta`) and the engine's
/// key also as Anthropic sends it (`x-api-key`).
fn anthropic_headers(
    mut request: reqwest::RequestBuilder,
    upstream: &Upstream,
    client_headers: &axum::http::HeaderMap,
) -> reqwest::RequestBuilder {
    match client_headers.get("anthropic-version") {
        Some(version) => request = request.header("anthropic-version", version),
        None => request = request.header("anthropic-version", "2023-06-01"),
    }
    for beta in client_headers.get_all("anthropic-beta") {
        request = request.header("anthropic-beta", beta);
    }
    if let Some(key) = &upstream.api_key {
        request = request.header("x-api-key", key);
    }
    request
}
