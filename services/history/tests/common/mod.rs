//! Shared setup: steps, an archiver process, the SQL engine.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawline_history::{Scope, SqlConfig, SqlEngine};
use clawline_nats::async_nats::jetstream;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::*;
use serde_json::Value;

pub fn step(tenant: &str, i: u32, text: &str) -> StepRecorded {
    let traj = format!("t{i:05}");
    StepRecorded {
        envelope: Envelope::new(StepRecorded::id_for(tenant, &traj, 0, 0), "test"),
        tenant: tenant.into(),
        channel: "train".into(),
        trajectory_uid: traj,
        prompt_uid: "p".into(),
        messages: vec![Message {
            role: "user".into(),
            content: Some("hi".into()),
            ..Default::default()
        }],
        response_text: text.into(),
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2, 3],
        response_ids: vec![4, i],
        response_logprobs: Some(vec![-0.5, -0.25]),
        policy_version: Some(2),
        ..Default::default()
    }
}

pub async fn publish_steps(js: &jetstream::Context, tenant: &str, range: std::ops::Range<u32>) {
    for i in range {
        publish_event(js, subjects::steps("train"), &step(tenant, i, "an answer"))
            .await
            .unwrap();
    }
}

pub fn archiver(nats: &NatsServer, root: &Path, roll_rows: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_clawline-history"))
        .args(["archive", "--nats-url", &nats.url(), "--archive-dir"])
        .arg(root)
        .args(["--roll-rows", &roll_rows.to_string(), "--roll-secs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

pub fn checkpoint(root: &Path, stream: &str) -> u64 {
    match std::fs::read(clawline_history::archive::checkpoint_path(root, stream)) {
        Ok(bytes) => {
            serde_json::from_slice::<clawline_history::archive::Checkpoint>(&bytes)
                .unwrap()
                .last_seq
        }
        Err(_) => 0,
    }
}

pub async fn wait_checkpoint(root: &Path, stream: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(root, stream) < at_least {
        assert!(
            Instant::now() < deadline,
            "checkpoint {} < {at_least}",
            checkpoint(root, stream)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn engine(root: &Path, js: Option<jetstream::Context>) -> SqlEngine {
    SqlEngine::new(
        SqlConfig {
            root: clawline_history::ArchiveRoot::local(root),
            ..Default::default()
        },
        js,
    )
}

pub async fn query_json(engine: &SqlEngine, sql: &str, scope: &Scope) -> Vec<Value> {
    let answer = engine.query(sql, scope).await.unwrap();
    let bytes = clawline_history::sql::render(&answer, clawline_history::Format::Json).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
