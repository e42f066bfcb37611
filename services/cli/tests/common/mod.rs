//! Helpers the CLI's integration tests share.
#![allow(dead_code, reason = "each test binary uses its own part")]

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
