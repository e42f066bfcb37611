//! Shutdown: one token cancelled by Ctrl-C / SIGTERM or by any task that dies, so a service is never
//! half alive.

use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The process-wide shutdown token.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token cancelled on Ctrl-C or SIGTERM.
    pub fn on_signals() -> Self {
        let this = Self::new();
        let token = this.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            token.cancel();
        });
        this
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Background tasks of one service. A task that returns an error or panics cancels the token, so
/// the rest shut down instead of running on without it.
pub struct TaskSet {
    token: CancellationToken,
    set: JoinSet<anyhow::Result<()>>,
}

impl TaskSet {
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            set: JoinSet::new(),
        }
    }

    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        self.set.spawn(async move {
            let result = task.await;
            if let Err(err) = &result {
                tracing::error!(
                    task = name,
                    error = format!("{err:#}"),
                    "task failed; stopping service"
                );
                token.cancel();
            }
            result
        });
    }

    /// Serves `app` on `listener` until the token is cancelled.
    pub fn serve(&mut self, listener: tokio::net::TcpListener, app: axum::Router) {
        let stop = self.token.clone();
        self.spawn("http", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .map_err(anyhow::Error::from)
        });
    }

    /// Waits for every task; the first error (or panic) is returned.
    pub async fn join(mut self) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        while let Some(joined) = self.set.join_next().await {
            let result = match joined {
                Ok(result) => result,
                Err(join_err) => {
                    self.token.cancel();
                    Err(anyhow::anyhow!("task panicked: {join_err}"))
                }
            };
            if let Err(err) = result
                && first.is_none()
            {
                first = Some(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
