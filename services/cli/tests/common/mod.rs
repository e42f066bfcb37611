//! Helpers the CLI's integration tests share.
#![allow(dead_code, reason = "each test binary uses its own part")]

pub use clawline_nats::server::free_port;

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
