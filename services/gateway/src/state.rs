//! The gateway's shared state and its background tasks.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clawline_runtime::prometheus_client::metrics::counter::Counter;
use clawline_runtime::prometheus_client::metrics::family::Family;
use clawline_runtime::prometheus_client::metrics::gauge::Gauge;
use clawline_runtime::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use clawline_runtime::tokenize::ChatTokenizer;
use clawline_runtime::{CancellationToken, Metrics, TaskSet};

use crate::auth::ApiKeys;
use crate::capture::{Capture, CaptureMetrics, Spool};
use crate::sessions::{Limits, Sessions};
use crate::settings::Settings;
use crate::upstream::Upstreams;

/// The policy version currently served (KV `policy.version`), if one was ever set.
#[derive(Default)]
pub struct PolicyVersion {
    value: AtomicU64,
    known: AtomicBool,
}

impl PolicyVersion {
    pub fn get(&self) -> Option<u64> {
        self.known
            .load(Ordering::Acquire)
            .then(|| self.value.load(Ordering::Acquire))
    }

    pub fn set(&self, version: u64) {
        self.value.store(version, Ordering::Release);
        self.known.store(true, Ordering::Release);
    }
}

type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct GatewayMetrics {
    pub requests: Family<Labels, Counter>,
    pub upstream_seconds: Histogram,
    pub capture_seconds: Histogram,
    pub steps: Family<Labels, Counter>,
    pub streams_abandoned: Counter,
    pub rate_limited: Counter,
    pub sessions: Gauge,
    /// Chat calls being answered; a stream counts until it ends.
    pub in_flight: Gauge,
    pub capture: CaptureMetrics,
}

impl GatewayMetrics {
    fn new(registry: &Metrics) -> Self {
        let this = Self {
            requests: Family::default(),
            upstream_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 20)),
            capture_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            steps: Family::default(),
            streams_abandoned: Counter::default(),
            rate_limited: Counter::default(),
            sessions: Gauge::default(),
            in_flight: Gauge::default(),
            capture: CaptureMetrics::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            this.requests.clone(),
        );
        registry.register(
            "upstream_request_seconds",
            "Time to the upstream's full answer",
            this.upstream_seconds.clone(),
        );
        registry.register(
            "capture_seconds",
            "Time from the engine's answer to the step being acked (or spooled)",
            this.capture_seconds.clone(),
        );
        registry.register(
            "steps_recorded",
            "Steps recorded by token source",
            this.steps.clone(),
        );
        registry.register(
            "streams_abandoned",
            "Streams the client left before the end (not recorded)",
            this.streams_abandoned.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused (429) because their key sent more than its rate",
            this.rate_limited.clone(),
        );
        registry.register(
            "trajectories_in_memory",
            "Trajectories the gateway keeps in memory",
            this.sessions.clone(),
        );
        registry.register(
            "in_flight_chats",
            "Chat calls being answered (a stream counts until it ends)",
            this.in_flight.clone(),
        );
        registry.register(
            "capture_events",
            "Events by capture outcome (acked, duplicate, spooled, drained, rejected, lost)",
            this.capture.events.clone(),
        );
        registry.register(
            "spool_depth",
            "Events in the spool waiting for JetStream",
            this.capture.spool_depth.clone(),
        );
        this
    }

    pub fn count_step(&self, token_source: &str) {
        self.steps
            .get_or_create(&vec![(
                "token_source".to_string(),
                token_source.to_string(),
            )])
            .inc();
    }
}

pub struct Inner {
    pub config: Settings,
    /// The address the gateway serves on, once it does (a `base_url` for callers without Host).
    pub local_addr: std::sync::OnceLock<std::net::SocketAddr>,
    pub keys: ApiKeys,
    pub limiter: clawline_runtime::limits::RateLimiter,
    pub upstreams: Upstreams,
    pub capture: Capture,
    pub sessions: Sessions,
    pub leases: crate::leases::Leases,
    pub tokenizer: Option<ChatTokenizer>,
    pub policy: PolicyVersion,
    /// The model name requests must carry for the serving version (KV `policy.model`: a LoRA
    /// adapter an engine serves under its own name); `None` leaves the client's name.
    pub policy_model: std::sync::RwLock<Option<String>>,
    /// Set once the topology exists (and the tokenizer, if configured, is loaded).
    pub ready: AtomicBool,
    pub metrics: GatewayMetrics,
    pub registry: Metrics,
    pub producer: String,
    /// What `/v1/dashboard/data` shows (fed by `dashboard::follow` unless `--no-dashboard`).
    pub board: Arc<std::sync::Mutex<crate::dashboard::Board>>,
    /// Responses-API answers kept for `previous_response_id` and `GET /v1/responses/{id}`.
    pub responses: Arc<crate::protocols::responses::ResponseStore>,
    /// What marks a background turn (`--background-marker` and the built-in ones).
    pub background_markers: Vec<String>,
    client: async_nats::Client,
}

/// How many Responses-API answers the gateway also keeps in memory (all are in KV `responses`).
pub const RESPONSES_KEPT: usize = 10_000;

/// Cheap to clone; what every handler gets.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The NATS connection (for request/reply to other services).
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn build(config: Settings, client: async_nats::Client) -> anyhow::Result<Self> {
        let keys = match &config.api_keys {
            Some(path) => ApiKeys::load(path)?,
            None => ApiKeys::open(),
        };
        let tokenizer = match &config.tokenizer {
            Some(dir) => Some(
                ChatTokenizer::load(dir)
                    .with_context(|| format!("--tokenizer {}", dir.display()))?,
            ),
            None => None,
        };
        anyhow::ensure!(
            !config.token_in || tokenizer.is_some(),
            "--token-in renders the chat template here: it needs --tokenizer DIR"
        );
        anyhow::ensure!(
            !config.token_in || config.engine_speaks.is_empty(),
            "--token-in renders every call's prompt here; --engine-speaks forwards calls as they are: choose one"
        );
        if !config.engine_speaks.is_empty() && tokenizer.is_none() {
            tracing::warn!(
                protocols = ?config.engine_speaks,
                "--engine-speaks without --tokenizer: these protocols carry no token ids, so their \
                 steps keep text only (untokenized) and do not train; give the model's tokenizer"
            );
        }
        anyhow::ensure!(
            clawline_nats::subjects::is_valid_token(&config.default_channel),
            "--default-channel {:?} must be 1-64 of [A-Za-z0-9_-]",
            config.default_channel
        );
        let upstreams = Upstreams::new(
            &config.upstreams,
            &config.upstream_api_key,
            &config.forward_headers,
        )?;
        let spool = Spool::open(&config.spool_dir, config.spool_fsync)
            .with_context(|| format!("opening --spool-dir {}", config.spool_dir.display()))?;
        if spool.depth() > 0 {
            tracing::info!(
                depth = spool.depth(),
                "spool has events from an earlier run; draining"
            );
        }
        let registry = Metrics::new("clawline_gateway");
        let metrics = GatewayMetrics::new(&registry);
        let capture = Capture::new(
            client.clone(),
            spool,
            config.capture_timeout,
            metrics.capture.clone(),
        );
        let sessions = Sessions::new(
            Limits {
                session_idle: config.session_idle,
                trajectory_ttl: config.trajectory_ttl,
                max_trajectories: config.max_trajectories,
            },
            crate::background::markers(&config.background_markers),
        );
        let leases = crate::leases::Leases::new(client.clone(), config.capture_timeout);
        registry.register(
            "trajectory_lease_fallbacks",
            "Steps of client-named trajectories taken without a KV lease (JetStream unreachable)",
            leases.fallbacks.clone(),
        );
        Ok(Self(Arc::new(Inner {
            local_addr: std::sync::OnceLock::new(),
            limiter: clawline_runtime::limits::RateLimiter::new(Some(config.rate_limit)),
            board: Arc::default(),
            responses: Arc::new(crate::protocols::responses::ResponseStore::new(
                RESPONSES_KEPT,
                Some(client.clone()),
            )),
            background_markers: crate::background::markers(&config.background_markers),
            config,
            keys,
            upstreams,
            capture,
            sessions,
            leases,
            tokenizer,
            policy: PolicyVersion::default(),
            policy_model: std::sync::RwLock::new(None),
            ready: AtomicBool::new(false),
            metrics,
            registry,
            producer: format!("clawline-gateway/{}", env!("CARGO_PKG_VERSION")),
            client,
        })))
    }

    /// The model name to send the engine for a call that names `requested` (`--model-name`);
    /// `None` leaves the call's name as it is.
    pub async fn engine_model(&self, requested: Option<&str>) -> Option<String> {
        if let Some(model) = self.policy_model.read().ok().and_then(|m| m.clone()) {
            // The serving version is an adapter the engine serves under its own name.
            return Some(model);
        }
        match self.config.model_name.as_str() {
            "client" => None,
            "engine" => {
                let served = self.upstreams.served().await?;
                match requested {
                    Some(name) if served.models.iter().any(|m| m == name) => None,
                    _ => served.models.first().cloned(),
                }
            }
            fixed => Some(fixed.to_string()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

pub fn spawn_background(state: &AppState, tasks: &mut TaskSet, shutdown: CancellationToken) {
    let s = state.clone();
    let token = shutdown.clone();
    tasks.spawn("topology", async move {
        ensure_topology_until_done(s, token).await
    });

    let capture = state.capture.clone();
    let token = shutdown.clone();
    tasks.spawn("spool-drain", async move { capture.drain(token).await });

    if !state.config.no_dashboard {
        let (client, board) = (state.client.clone(), state.board.clone());
        let token = shutdown.clone();
        tasks.spawn("dashboard", crate::dashboard::follow(client, board, token));
    }

    let s = state.clone();
    let token = shutdown.clone();
    tasks.spawn("policy-version", async move {
        watch_policy_version(s, token).await
    });

    let s = state.clone();
    let token = shutdown.clone();
    tasks.spawn("policy-model", async move {
        let js = async_nats::jetstream::new(s.client.clone());
        let key = clawline_nats::buckets::POLICY_MODEL_KEY;
        clawline_runtime::watch_state_key(js, key, token, move |value| {
            let name = String::from_utf8_lossy(value).trim().to_string();
            tracing::info!(model = %name, "policy model");
            if let Ok(mut m) = s.policy_model.write() {
                *m = (!name.is_empty()).then_some(name);
            }
        })
        .await
    });

    let s = state.clone();
    let token = shutdown.clone();
    tasks.spawn("upstream-probe", async move {
        s.upstreams.probe(Duration::from_secs(2), token).await
    });

    let s = state.clone();
    tasks.spawn("session-sweep", async move {
        crate::http::sweep_sessions(s, shutdown).await
    });
}

/// Creates the topology, retrying while NATS is unreachable; `/ready` answers 200 afterwards.
async fn ensure_topology_until_done(
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = state.capture.jetstream().clone();
    let topology = state.config.nats.topology();
    loop {
        match clawline_nats::ensure_topology(&js, &topology).await {
            Ok(()) => {
                state.ready.store(true, Ordering::Release);
                tracing::info!("topology ready");
                return Ok(());
            }
            Err(err) => tracing::warn!(error = %err, "topology not ready; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Follows KV `state`/`policy.version`, reconnecting the watch when NATS goes away.
async fn watch_policy_version(state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(state.client.clone());
    let policy = state.clone();
    clawline_runtime::watch_policy_version(js, shutdown, move |version| {
        if policy.policy.get() != Some(version) {
            tracing::info!(version, "policy version");
        }
        policy.policy.set(version);
    })
    .await
}
