//! The running gateway: its state built from settings, served until shutdown with its background
//! tasks.

use anyhow::Context as _;
use clawline_runtime::{CancellationToken, TaskSet};
use tokio::net::TcpListener;

use crate::http;
use crate::settings::Settings;
use crate::state::{self, AppState};

/// Builds the gateway's state from its settings and a NATS client (which may still be connecting).
pub fn build(config: Settings, client: async_nats::Client) -> anyhow::Result<AppState> {
    AppState::build(config, client)
}

/// Serves `state` on `listener` until `shutdown`, with the background tasks (topology, spool
/// drain, policy-version watch, upstream probe, session sweep). [`run`] builds the state itself;
/// tests that need the state's handles build it with [`build`] and serve it here.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let _ = state.local_addr.set(addr);
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

/// The whole gateway: connect to NATS (in the background: capture spools until it answers),
/// build, serve on `listener` until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = clawline_runtime::connect_nats(&settings.nats, "clawline-gateway", false).await?;
    let state = build(settings, client)?;
    serve(state, listener, shutdown).await
}
