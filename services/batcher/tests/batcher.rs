#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The batcher binary against a real nats-server: live batches, kill -9 and restart, statistics.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawline_nats::async_nats::jetstream;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::*;
use serde_json::Value;

const T0: i64 = 1_800_000_000_000;

fn batcher(nats: &NatsServer, config: Option<&std::path::Path>) -> Child {
    let port = clawline_nats::server::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clawline-batcher"));
    cmd.args([
        "--nats-url",
        &nats.url(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.spawn().unwrap()
}

/// One trajectory as the gateway and the reward scorer record it: a step, its reward, completion.
async fn trajectory(js: &jetstream::Context, i: u32) -> String {
    let uid = format!("t{i:03}");
    let step = StepRecorded {
        envelope: Envelope::new(StepRecorded::id_for("acme", &uid, 0, 0), "test")
            .at(T0 + i64::from(i)),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: uid.clone(),
        prompt_uid: "p".into(),
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2, 3],
        response_ids: vec![4, 5, i],
        response_logprobs: Some(vec![-0.5; 3]),
        ..Default::default()
    };
    publish_event(js, subjects::steps("train"), &step)
        .await
        .unwrap();
    let reward = RewardAssigned {
        envelope: Envelope {
            event_id: RewardAssigned::id_for(&step.envelope.event_id, "rm:x@1", "v"),
            ..Default::default()
        },
        tenant: "acme".into(),
        channel: Some("train".into()),
        trajectory_uid: uid.clone(),
        step_id: Some(step.envelope.event_id.clone()),
        source: "rm:x@1".into(),
        value: f64::from(i % 5) / 4.0,
        caused_by: step.envelope.event_id.clone(),
        ..Default::default()
    };
    publish_event(js, subjects::rewards("rm"), &reward)
        .await
        .unwrap();
    let done = TrajectoryCompleted {
        envelope: Envelope::new(TrajectoryCompleted::id_for("acme", &uid), "test")
            .at(T0 + i64::from(i)),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: uid,
        last_step_index: Some(0),
        ..Default::default()
    };
    publish_event(js, subjects::TRAJECTORY_COMPLETED.into(), &done)
        .await
        .unwrap();
    step.envelope.event_id
}

async fn batches(js: &jetstream::Context) -> Vec<BatchFormed> {
    let mut s = js.get_stream("BATCHES").await.unwrap();
    let info = s.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence.max(1)..=info.state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(decode(&m.payload).unwrap());
        }
    }
    out
}

async fn wait_batches(js: &jetstream::Context, n: usize) -> Vec<BatchFormed> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = batches(js).await;
        if b.len() >= n {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "BATCHES has {}, expected {n}",
            b.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
}

#[tokio::test]
async fn defaults_turn_completed_rewarded_trajectories_into_batches() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let child = batcher(&nats, None);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(trajectory(&js, i).await);
    }
    let b = wait_batches(&js, 1).await;
    assert_eq!(b[0].steps.len(), 8, "default window of 8");
    assert_eq!(
        b[0].envelope.event_id,
        BatchFormed::id_for(ids.iter().map(String::as_str))
    );
    assert_eq!(b[0].channel, "train");

    // get_statistics over NATS request/reply.
    let client = nats.client().await;
    let reply = client
        .request(subjects::DATAPOOL_STATS, "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&reply.payload).unwrap();
    let train = &stats["channels"]["train"];
    assert_eq!(train["consumed_steps"], 8, "{stats}");
    assert_eq!(train["batches"], 1);
    assert_eq!(train["steps"], 8);
    assert_eq!(stats["caught_up"], true);
    assert_eq!(stats["lag"]["STEPS"], 0);
    kill(child);
}

#[tokio::test]
async fn kill_9_mid_stream_and_restart_forms_the_same_batches_with_every_step_once() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("batcher.toml");
    std::fs::write(&config, "[defaults]\nbatch_size = 4\n").unwrap();

    let first = batcher(&nats, Some(&config));
    let mut ids = Vec::new();
    for i in 0..18 {
        ids.push(trajectory(&js, i).await);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    wait_batches(&js, 2).await;
    kill(first);
    // Traffic goes on while the batcher is down.
    for i in 18..40 {
        ids.push(trajectory(&js, i).await);
    }
    let second = batcher(&nats, Some(&config));
    let all = wait_batches(&js, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_now = batches(&js).await;
    assert_eq!(all_now.len(), 10, "no extra batch after the restart");

    // Exactly the batches an uninterrupted batcher forms: chunks of 4 in completion order.
    let expected: HashSet<String> = ids
        .chunks(4)
        .map(|c| BatchFormed::id_for(c.iter().map(String::as_str)))
        .collect();
    let got: HashSet<String> = all.iter().map(|b| b.envelope.event_id.clone()).collect();
    assert_eq!(got, expected);
    let mut steps: Vec<&str> = all
        .iter()
        .flat_map(|b| b.steps.iter().map(|s| s.step_id.as_str()))
        .collect();
    assert_eq!(steps.len(), 40, "no step missing");
    steps.sort_unstable();
    steps.dedup();
    assert_eq!(steps.len(), 40, "no step in two batches");
    kill(second);
}

#[tokio::test]
async fn a_bad_config_is_a_clear_startup_error() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("batcher.toml");
    std::fs::write(&config, "[defaults]\nbatch_sise = 4\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawline-batcher"))
        .args(["--nats-url", &nats.url(), "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("batcher.toml") && stderr.contains("batch_sise"),
        "{stderr}"
    );
}

/// SIGTERM with NATS gone: the batcher stops at once and cleanly (its statistics no longer wait
/// on stream heads NATS cannot give, nor does a stop wait for them).
#[tokio::test]
async fn stops_promptly_on_sigterm_while_nats_is_down() {
    let mut nats = NatsServer::start().await;
    let mut child = batcher(&nats, None);
    // Running: it answers get_statistics over NATS.
    let client = nats.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .request(subjects::DATAPOOL_STATS, "".into())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "batcher never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats.kill();
    // Long enough for a statistics refresh to start against the dead server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill(child);
            panic!("batcher still running 5 s after SIGTERM with NATS down");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "batcher exited with {status}");
}
