//! Binding a service's listening socket before the service runs: `main` (or `clawline up`) binds,
//! so an address in use stops start-up with the flag named, and tests hand in a listener on port 0
//! instead of guessing a free port.

use std::future::Future;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::{LogArgs, Shutdown, init_tracing};

/// What every service binary's `main` does after parsing its flags: logging as `--log-*` says,
/// the `--listen` socket bound (an address in use names the flag), Ctrl-C and SIGTERM wired to the
/// shutdown token, then the service's `run(settings, listener, shutdown)`.
pub async fn serve_main<F, Fut>(log: LogArgs, listen: SocketAddr, run: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    init_tracing(&log);
    let listener = bind("--listen", listen).await?;
    run(listener, Shutdown::on_signals().token()).await
}

/// The whole `main` of a service binary whose crate exports `Args` (with `log`, `listen` and
/// `settings()`) and `run(settings, listener, shutdown)`: parse the flags, then [`serve_main`].
/// The crate needs `tokio` (with `macros`), `clap` and `anyhow`, as every service has.
#[macro_export]
macro_rules! service_main {
    ($service:ident) => {
        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            let args = <$service::Args as clap::Parser>::parse();
            $crate::serve_main(args.log.clone(), args.listen, |listener, shutdown| {
                $service::run(args.settings(), listener, shutdown)
            })
            .await
        }
    };
}

/// Binds `addr` for `flag` (named in the error, e.g. `--listen 127.0.0.1:8104: Address in use`).
pub async fn bind(flag: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} {addr}: {e}"))
}

/// A listener on a free loopback port (tests, and services started beside others in one process).
pub async fn bind_loopback() -> anyhow::Result<tokio::net::TcpListener> {
    bind("a loopback port", SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`bind`] for code that is not async but runs inside a Tokio runtime (a test's helper that
/// spawns a service).
pub fn bind_sync(flag: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("{flag} {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}
