#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The scorer as a service: poison messages and restarts (through the gateway: `tests/e2e`).

mod common;

use std::time::Duration;

use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_raw, subjects};
use clawline_runtime::sample as metric;
use common::*;

#[tokio::test]
async fn a_poison_message_is_terminated_counted_and_does_not_block() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "").await;
    let js = nats.jetstream().await;
    publish_raw(
        &js,
        subjects::steps("train"),
        "garbage-1",
        b"\xc1\xc1 not msgpack"[..].into(),
    )
    .await
    .unwrap();
    let good = step("after", 0, "Sure, here it is.");
    publish_step(&js, &good).await;
    let all = rewards(&js, 1).await;
    assert_eq!(
        all[0].step_id.as_deref(),
        Some(good.envelope.event_id.as_str())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = svc.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"clawline_reward_messages_total{stream="steps",outcome="poison"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        consumer_backlog(&js, "STEPS", "reward-steps").await,
        (0, 0),
        "poison not redelivered"
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_restarted_scorer_resumes_and_a_replayed_one_adds_no_duplicates() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = "rules = []\n[consumer]\nack_wait_secs = 2\n";
    let js = nats.jetstream().await;
    let svc = start(&nats, dir.path(), toml).await;
    for i in 0..5 {
        publish_step(&js, &step(&format!("r{i}"), 0, "Sure, the answer.")).await;
    }
    rewards(&js, 5).await;
    svc.stop().await;

    // Published while the scorer is down: scored once it is back, nothing before redone.
    for i in 5..10 {
        publish_step(&js, &step(&format!("r{i}"), 0, "Sure, the answer.")).await;
    }
    let svc = start(&nats, dir.path(), toml).await;
    let all = rewards(&js, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_count(&js, "REWARDS").await, 10);
    let mut steps: Vec<_> = all.iter().map(|r| r.step_id.clone().unwrap()).collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps.len(), 10, "each step scored exactly once");
    svc.stop().await;

    // Replay everything from the start with a fresh consumer: same ids, JetStream drops them all.
    let stream = js.get_stream("STEPS").await.unwrap();
    stream.delete_consumer("reward-steps").await.unwrap();
    let svc = start(&nats, dir.path(), toml).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while consumer_backlog(&js, "STEPS", "reward-steps").await != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "replay did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stream_count(&js, "REWARDS").await,
        10,
        "replayed rewards were duplicates"
    );
    svc.stop().await;
}
