//! The policy server's run: load the model, serve until shutdown.

use clawline_runtime::CancellationToken;

use crate::{Settings, http};

/// Serves `settings.model` on `listener` until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = http::App::load(&settings)?;
    tracing::info!(
        listen = %listener.local_addr()?,
        model = %settings.model.display(),
        device = ?app.device,
        precision = ?app.kind,
        "policy server ready"
    );
    axum::serve(listener, app.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
