//! Shutdown: one token cancelled by Ctrl-C / SIGTERM or by any task that dies, so a service is never
//! half alive.

use std::collections::HashMap;
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

/// How long the tasks of a service get to finish once shutdown began. A task still running after
/// it is named in the log and aborted, so a stop never hangs (on an unreachable NATS, say). Nothing
/// is lost by that: consumers ack only what their output stored, and the gateway's spool is on disk.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Background tasks of one service. A task that returns an error or panics cancels the token, so
/// the rest shut down instead of running on without it.
pub struct TaskSet {
    token: CancellationToken,
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl TaskSet {
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        let handle = self.set.spawn(async move {
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
        self.names.insert(handle.id(), name);
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

    /// Waits for every task; the first error (or panic) is returned. Once the token is cancelled
    /// the tasks get [`SHUTDOWN_GRACE`]; those still running then are logged by name and aborted.
    pub async fn join(self) -> anyhow::Result<()> {
        self.join_within(SHUTDOWN_GRACE).await
    }

    /// Ends a service whose own loop returned `result`: cancels the token so every task stops,
    /// waits for them as [`join`](Self::join) does, and returns the loop's error first, else the
    /// first task's.
    pub async fn finish(self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        self.token.cancel();
        let joined = self.join().await;
        result.and(joined)
    }

    async fn join_within(mut self, grace: std::time::Duration) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        let token = self.token.clone();
        let overdue = async move {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(overdue);
        let mut aborted = false;
        loop {
            let joined = tokio::select! {
                joined = self.set.join_next_with_id() => match joined {
                    Some(joined) => joined,
                    None => break,
                },
                () = &mut overdue, if !aborted => {
                    let mut running: Vec<&str> = self.names.values().copied().collect();
                    running.sort_unstable();
                    tracing::error!(tasks = ?running, grace = ?grace, "tasks still running after shutdown began; aborting them");
                    self.set.abort_all();
                    aborted = true;
                    first.get_or_insert_with(|| {
                        anyhow::anyhow!("stopped without finishing: {}", running.join(", "))
                    });
                    continue;
                }
            };
            let result = match joined {
                Ok((id, result)) => {
                    self.names.remove(&id);
                    result
                }
                Err(join_err) => {
                    self.names.remove(&join_err.id());
                    if join_err.is_cancelled() {
                        continue;
                    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_named_and_aborted_after_the_grace() {
        let token = CancellationToken::new();
        let mut tasks = TaskSet::new(token.clone());
        let stop = token.clone();
        tasks.spawn("polite", async move {
            stop.cancelled().await;
            Ok(())
        });
        tasks.spawn("stuck", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        token.cancel();
        let started = std::time::Instant::now();
        let err = tasks
            .join_within(Duration::from_millis(200))
            .await
            .expect_err("a task was aborted");
        assert!(started.elapsed() < Duration::from_secs(5), "join hung");
        assert_eq!(err.to_string(), "stopped without finishing: stuck");
    }

    #[tokio::test]
    async fn tasks_that_stop_in_time_join_cleanly() {
        let token = CancellationToken::new();
        let mut tasks = TaskSet::new(token.clone());
        for name in ["a", "b"] {
            let stop = token.clone();
            tasks.spawn(name, async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            });
        }
        token.cancel();
        tasks
            .join_within(Duration::from_secs(5))
            .await
            .expect("both stopped in time");
    }
}
