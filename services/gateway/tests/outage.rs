//! NATS goes away: the gateway keeps answering, spools, and drains in order once NATS is back.
//! Every step arrives exactly once, and no request fails.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clawline_runtime::testing::Answer as _;
use common::*;
use serde_json::{Value, json};

/// Sends one call (alternating plain and streamed) and returns its step id; panics on any failure.
async fn call(h: &Harness, i: usize) -> String {
    let mut body = chat_body(&format!("request number {i}"));
    body["stream"] = json!(i % 2 == 1);
    let r = h.post("/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200, "request {i} failed");
    let step_id = r.headers()["x-clawline-step-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = if i % 2 == 1 {
        let (chunks, done) = read_sse(r).await;
        assert!(done, "stream {i} did not finish");
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect::<String>()
    } else {
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(text, format!("echo: request number {i}"));
    step_id
}

async fn wait_spool_empty(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.state.capture.spool_depth() > 0 {
        assert!(
            Instant::now() < deadline,
            "spool not drained: {} left",
            h.state.capture.spool_depth()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_step_arrives_exactly_once_across_a_nats_outage() {
    let mut h = Harness::start().await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(call(&h, i).await);
    }
    h.nats.kill();
    for i in 10..40 {
        sent.push(call(&h, i).await);
    }
    assert!(
        h.state.capture.spool_depth() > 0,
        "steps were spooled while NATS was down"
    );
    let metrics = h.http.get(format!("{}/metrics", h.url)).text_answer().await;
    assert!(
        metrics.contains("clawline_gateway_spool_depth"),
        "{metrics}"
    );
    h.nats.restart();
    for i in 40..50 {
        sent.push(call(&h, i).await);
    }
    wait_spool_empty(&h).await;

    let steps = h.steps().await;
    let ids: Vec<String> = steps.iter().map(|s| s.envelope.event_id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a step was stored twice");
    assert_eq!(
        unique,
        sent.iter().collect::<HashSet<_>>(),
        "a step is missing"
    );
    // The spool drained in order: steps of the outage keep the order they were answered in.
    let order: Vec<usize> = sent[10..40]
        .iter()
        .map(|id| ids.iter().position(|x| x == id).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "spooled steps out of order: {order:?}"
    );
}

#[tokio::test]
async fn a_restarted_gateway_drains_the_spool_an_earlier_run_left() {
    let mut h = Harness::start().await;
    h.nats.kill();
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(call(&h, i).await);
    }
    let depth = h.state.capture.spool_depth();
    assert!(
        depth >= 6,
        "6 steps and their registrations spooled, got {depth}"
    );
    h.nats.restart();
    // Stop the gateway before it drains much, then start a new one on the same spool.
    let h = h.restart_gateway().await;
    wait_spool_empty(&h).await;
    assert_eq!(
        stored_ids(&h).await,
        sent.into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(stream_count(&h.js().await, "STEPS").await, 6);
}

/// A client-named trajectory's steps take leased indexes; while JetStream is away there is no
/// lease to take, and the call is served and captured all the same.
#[tokio::test]
async fn a_client_named_trajectory_is_served_and_kept_through_an_outage() {
    let mut h = Harness::start().await;
    let mut ids = HashSet::new();
    ids.insert(call_named(&h, "named-in-outage", "before").await);
    h.nats.kill();
    for i in 0..3 {
        let started = Instant::now();
        ids.insert(call_named(&h, "named-in-outage", &format!("during {i}")).await);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "call {i} waited"
        );
    }
    h.nats.restart();
    wait_spool_empty(&h).await;
    assert_eq!(ids.len(), 4);
    assert_eq!(stored_ids(&h).await, ids);
}

#[tokio::test]
async fn without_nats_the_gateway_is_not_ready_but_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = clawline_nats::server::free_port();
    let (state, url, shutdown, _mock) =
        Harness::start_without_nats(&dir, &format!("nats://127.0.0.1:{port}")).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        match http.get(format!("{url}/ready")).send().await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("gateway not listening: {e}"),
        }
    };
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("NATS"));
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body("still there?"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(state.capture.spool_depth() >= 1);
    shutdown.cancel();
}

/// The ids of the steps JetStream holds.
async fn stored_ids(h: &Harness) -> HashSet<String> {
    h.steps()
        .await
        .into_iter()
        .map(|s| s.envelope.event_id)
        .collect()
}
