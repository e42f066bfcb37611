//! Helpers the scenarios share.
#![allow(dead_code, reason = "each test binary uses its own part")]

/// Whether the service at `base` (`http://host:port`) answers `GET /ready` with success.
pub async fn is_ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Every event of `stream`.
pub async fn read_events<E: serde::de::DeserializeOwned>(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<E> {
    clawline_nats::testing::read_events(js, stream, "").await
}

/// Waits (30 s at most) until `stream` holds at least `n` events, then returns them all.
pub async fn wait_for_events<E: serde::de::DeserializeOwned>(
    js: &async_nats::jetstream::Context,
    stream: &str,
    n: u64,
) -> Vec<E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let count = clawline_nats::testing::stream_count(js, stream).await;
        if count >= n {
            return read_events(js, stream).await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stream} has {count} events, expected {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
