//! Shared setup: a real nats-server per test, the reward service in-process with real ONNX Runtime.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use clawline_nats::async_nats::jetstream;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_reward::{Args, Service, Settings};
use clawline_runtime::CancellationToken;
pub use clawline_schemas::*;
use serde::de::DeserializeOwned;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct Reward {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics_url: String,
}

impl Reward {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Settings for a reward service on `nats` (with `extra` flags), the TOML text written beside it.
pub fn config(nats: &NatsServer, dir: &Path, toml: &str, extra: &[&str]) -> Settings {
    let path = dir.join("reward.toml");
    std::fs::write(&path, toml).unwrap();
    let mut args = vec![
        "clawline-reward".to_string(),
        "--nats-url".into(),
        nats.url(),
        "--config".into(),
        path.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Args::try_parse_from(args).unwrap().settings()
}

pub async fn start(nats: &NatsServer, dir: &Path, toml: &str) -> Reward {
    start_with(config(nats, dir, toml, &[])).await
}

pub async fn start_with(config: Settings) -> Reward {
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let service = tokio::task::spawn_blocking(move || Service::load(config))
        .await
        .unwrap()
        .expect("reward service loads");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(service.run(listener, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(&metrics_url).await.is_err() {
        assert!(Instant::now() < deadline, "reward service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Reward {
        shutdown,
        task,
        metrics_url,
    }
}

/// A step as the gateway records it.
pub fn step(traj: &str, index: u32, response: &str) -> StepRecorded {
    StepRecorded {
        envelope: Envelope::new(StepRecorded::id_for("default", traj, index, 0), "test"),
        tenant: "default".into(),
        channel: "train".into(),
        trajectory_uid: traj.into(),
        prompt_uid: "p".into(),
        step_index: index,
        messages: vec![Message {
            role: "user".into(),
            content: Some("question".into()),
            ..Default::default()
        }],
        response_text: response.into(),
        ..Default::default()
    }
}

pub async fn publish_step(js: &jetstream::Context, step: &StepRecorded) {
    publish_event(js, subjects::steps(&step.channel), step)
        .await
        .unwrap();
}

pub use clawline_nats::testing::stream_count;

/// Every event of `stream`.
pub async fn read_events<E: DeserializeOwned>(js: &jetstream::Context, stream: &str) -> Vec<E> {
    clawline_nats::testing::read_events(js, stream, "").await
}

/// Waits until REWARDS holds at least `n` rewards, then returns them all.
pub async fn rewards(js: &jetstream::Context, n: u64) -> Vec<RewardAssigned> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = stream_count(js, "REWARDS").await;
        if count >= n {
            return read_events(js, "REWARDS").await;
        }
        assert!(
            Instant::now() < deadline,
            "REWARDS has {count}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rewards of one source for one step.
pub fn of<'a>(
    all: &'a [RewardAssigned],
    step_id: &str,
    source_prefix: &str,
) -> Vec<&'a RewardAssigned> {
    all.iter()
        .filter(|r| r.step_id.as_deref() == Some(step_id) && r.source.starts_with(source_prefix))
        .collect()
}

/// Messages the durable consumer has neither delivered nor had acked. A service serves its
/// `/metrics` before its consumers exist, so this waits (20 s at most) for the consumer.
pub async fn consumer_backlog(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> (u64, usize) {
    let s = js.get_stream(stream).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c: jetstream::consumer::PullConsumer = loop {
        match s.get_consumer(durable).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "no consumer {durable}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let info = c.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}
