//! Helpers the scenarios share.
#![allow(dead_code, reason = "each test binary uses its own part")]

/// Whether the service at `base` (`http://host:port`) answers `GET /ready` with success.
pub async fn is_ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
