//! clawline-gateway — the front door: OpenAI- and Claw-R1-compatible HTTP in front of the serving
//! engines. Publishes `StepRecorded` for every answered call and `TrajectoryRegistered`,
//! `TrajectoryCompleted` and `FeedbackReceived` for the trajectory endpoints (stream `STEPS`,
//! `TRAJECTORIES`); reads the KV `state` key `policy.version`.
//!
//! A step is acked by JetStream before its response completes; when NATS is down it is spooled and
//! drained later, so capture never fails a request and never loses a step. Must not score, batch or
//! train: that is what the consumers of its events do.

pub mod auth;
pub mod background;
pub mod capture;
pub mod chat;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod leases;
pub mod protocols;
pub mod sessions;
mod state;
pub mod token_in;
pub mod upstream;

use anyhow::Context as _;
use clawline_runtime::{CancellationToken, TaskSet};
use tokio::net::TcpListener;

pub use config::Config;
pub use state::{AppState, GatewayMetrics, PolicyVersion};

/// Builds the gateway's state from its config and a NATS client (which may still be connecting).
pub fn build(config: Config, client: async_nats::Client) -> anyhow::Result<AppState> {
    state::AppState::build(config, client)
}

/// Serves on `listener` until `shutdown`, with the background tasks (topology, spool drain,
/// policy-version watch, upstream probe, session sweep).
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let mut tasks = TaskSet::new(shutdown.clone());
    state::spawn_background(&state, &mut tasks, shutdown.clone());

    let app = http::app(state.clone());
    tracing::info!(addr = %addr, "listening");
    if state.keys.is_open() {
        tracing::warn!(
            "no --api-keys file: the gateway is open (single user, tenant `default`, every caller admin)"
        );
    }
    let serve_shutdown = shutdown.clone();
    tasks.spawn("http", async move {
        // TCP_NODELAY: small JSON answers and SSE chunks go out at once, not after Nagle's delay.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
            .await
            .context("serving HTTP")
    });
    let result = tasks.join().await;
    tracing::info!("gateway stopped");
    result
}

/// The whole gateway as `clawline-gateway` runs it: connect, build, bind, serve.
pub async fn run_from_config(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = clawline_runtime::connect_nats(&config.nats, "clawline-gateway", false).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    let state = build(config, client)?;
    run(state, listener, shutdown).await
}
