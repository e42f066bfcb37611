//! Helpers the CLI's integration tests share.
#![allow(dead_code, reason = "each test binary uses its own part")]

/// A loopback port free right now, for a `clawline up` child to bind later. Taken below the
/// kernel's ephemeral range (32768 and up on Linux): a port from `bind(0)` is released before the
/// child binds it, and in between any test's `bind(0)` or outgoing connection could be handed the
/// same port (a CI run lost `clawline up` to that). Ports here are only ever chosen on purpose.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
        let port = 20_000 + (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u16 % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

/// `127.0.0.1:<free port>`.
pub fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Whether the service at `base` (`http://host:port`) answers `GET /ready` with success.
pub async fn is_ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
