//! The pipeline on a 3-node NATS cluster (R3 streams): two gateways and two reward workers side
//! by side on shared durable consumers, a batcher, and the node leading STEPS killed under load.
//! No request fails, every step is stored exactly once, every step gets exactly one reward-model
//! reward, and every step lands in exactly one training batch.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;
use common::*;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::testing::NatsCluster;
use clawline_runtime::CancellationToken;
use clawline_schemas::{BatchFormed, RewardAssigned, StepRecorded};
use serde_json::json;

const REQUESTS: usize = 400;

/// Every message of `stream` whose subject starts with `subject`, decoded (`Err` while the cluster elects leaders).
async fn read_all<E: clawline_schemas::Event>(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> anyhow::Result<Vec<E>> {
    let mut stream = js.get_stream(stream).await?;
    let state = stream.info().await?.state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await?;
        if m.subject.as_str().starts_with(subject) {
            out.push(clawline_nats::decode_message(&m.payload)?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_under_load_loses_and_doubles_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let url = cluster.url();
    let mock = MockVllm::start(MockConfig::default()).await.unwrap();
    let stop = CancellationToken::new();
    let spool = tempfile::tempdir().unwrap();

    let mut gateways = Vec::new();
    // Every service of the cluster: 3 replicas of each stream.
    let nats = clawline_runtime::NatsArgs {
        replicas: 3,
        ..clawline_runtime::NatsArgs::at(url.clone())
    };
    for i in 0..2 {
        let mut config = clawline_gateway::Settings::new(vec![mock.url.clone()]);
        config.nats = nats.clone();
        config.spool_dir = spool.path().join(format!("g{i}"));
        // Each request is its own conversation: it completes after 2 s idle, then batches.
        config.session_idle = Duration::from_secs(2);
        let listener = clawline_runtime::bind_loopback().await.unwrap();
        gateways.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(clawline_gateway::run(config, listener, stop.clone()));
    }
    for _ in 0..2 {
        let config = clawline_reward::Settings {
            nats: nats.clone(),
            ..Default::default()
        };
        let listener = clawline_runtime::bind_loopback().await.unwrap();
        tokio::spawn(clawline_reward::run(config, listener, stop.clone()));
    }
    let batcher_toml = spool.path().join("batcher.toml");
    std::fs::write(&batcher_toml, "[defaults]\nflush_after_secs = 2\n").unwrap();
    let config = clawline_batcher::Settings {
        nats: nats.clone(),
        config: Some(batcher_toml),
    };
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    tokio::spawn(clawline_batcher::run(config, listener, stop.clone()));
    let http = reqwest::Client::new();
    for g in &gateways {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_ready(&http, g).await {
            assert!(Instant::now() < deadline, "gateway {g} not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Load: 8 clients alternating between the gateways; the STEPS leader dies a third of the way.
    let js = cluster.jetstream().await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, gateways, next) = (http.clone(), gateways.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    return answered;
                }
                let body = json!({"model": "m", "max_tokens": 8,
                    "messages": [{"role": "user", "content": format!("question {i}")}]});
                let r = http
                    .post(format!("{}/v1/chat/completions", gateways[(i + c) % 2]))
                    .json(&body)
                    .send()
                    .await;
                answered.push(match r {
                    Ok(r) if r.status().is_success() => Ok(r.headers()["x-clawline-step-id"]
                        .to_str()
                        .unwrap()
                        .to_string()),
                    Ok(r) => Err(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                });
            }
        }));
    }
    while next.load(Ordering::Relaxed) < REQUESTS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut steps = js.get_stream("STEPS").await.unwrap();
    let leader = steps
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .unwrap()
        .leader
        .unwrap();
    let victim: usize = leader.trim_start_matches('n').parse().unwrap();
    cluster.kill(victim);

    let mut ids = HashSet::new();
    let mut failures = Vec::new();
    for c in clients {
        for r in c.await.unwrap() {
            match r {
                Ok(id) => assert!(ids.insert(id), "one step id per request"),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(ids.len(), REQUESTS);

    // Every answered step is stored once, and scored once by the reward model.
    let js = cluster.jetstream().await;
    // A reward whose ack was lost in the failover is redelivered after ack_wait (60 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let read = async {
            let stored: Vec<StepRecorded> = read_all(&js, "STEPS", "clawline.steps.").await?;
            let rewards: Vec<RewardAssigned> =
                read_all(&js, "REWARDS", "clawline.rewards.rm").await?;
            let batches: Vec<BatchFormed> = read_all(&js, "BATCHES", "clawline.batches.").await?;
            anyhow::Ok((stored, rewards, batches))
        };
        let (stored, rewards, batches) = match read.await {
            Ok(r) => r,
            Err(e) => {
                assert!(Instant::now() < deadline, "reading the streams: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let stored_ids: HashSet<&str> = stored
            .iter()
            .map(|s| s.envelope.event_id.as_str())
            .collect();
        let rewarded: HashSet<&str> = rewards
            .iter()
            .filter_map(|r| r.step_id.as_deref())
            .collect();
        let batched: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.steps.iter().map(|s| s.step_id.as_str()))
            .collect();
        if stored.len() >= REQUESTS && rewards.len() >= REQUESTS && batched.len() >= REQUESTS
            || Instant::now() > deadline
        {
            assert_eq!(
                stored.len(),
                REQUESTS,
                "steps stored (duplicates or losses)"
            );
            assert_eq!(stored_ids.len(), REQUESTS);
            assert!(
                ids.iter().all(|id| stored_ids.contains(id.as_str())),
                "every answered step stored"
            );
            assert_eq!(rewards.len(), REQUESTS, "one model reward per step");
            assert_eq!(rewarded.len(), REQUESTS);
            let once: HashSet<&str> = batched.iter().copied().collect();
            assert_eq!(
                batched.len(),
                REQUESTS,
                "steps in batches (some twice, or missing)"
            );
            assert_eq!(once, stored_ids, "every stored step in exactly one batch");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The killed node comes back and catches up.
    cluster.restart(victim);
    stop.cancel();
}
