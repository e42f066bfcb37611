//! Binding a service's listening socket before the service runs: `main` (or `clawline up`) binds,
//! so an address in use stops start-up with the flag named, and tests hand in a listener on port 0
//! instead of guessing a free port.

use std::net::SocketAddr;

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
