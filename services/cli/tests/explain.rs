//! "Why isn't it learning?" from end to end: a chat through the real gateway is captured, the
//! gateway's `/v1/explain/{step_id}` asks the real SQL service (`clawline_history::run`) over
//! NATS and shows where the step waits (only to its own tenant); then, with a batch, a version
//! listing it, its activation and a later answer on the stream, `clawline explain STEP_ID` prints
//! the whole timeline and `clawline explain` the diagnosis. The real batcher runs too (no reward
//! scorer does): what a step not yet batched waits for is its answer.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_runtime::{CancellationToken, NatsArgs};
use clawline_schemas::*;
use serde_json::{Value, json};

const KEYS: &str = "key-a alpha\nkey-b beta\nkey-admin ops admin\n";

fn clawline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_explained_through_the_gateway_and_by_the_cli() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, KEYS).unwrap();
    let archive = dir.path().join("archive");
    let shutdown = CancellationToken::new();

    let mut sql = clawline_history::Settings::new(
        NatsArgs::at(nats.url()),
        clawline_history::ArchiveRoot::local(&archive),
    );
    sql.archive.roll_every = Duration::from_secs(1);
    sql.api_keys = Some(keys.clone());
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    tokio::spawn(clawline_history::run(sql, listener, shutdown.clone()));
    let batcher = clawline_batcher::Settings {
        nats: clawline_runtime::NatsArgs::at(nats.url()),
        config: None,
    };
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    tokio::spawn(clawline_batcher::run(batcher, listener, shutdown.clone()));
    let mock = MockVllm::start(MockConfig::default()).await.unwrap();
    let mut gateway = clawline_gateway::Settings::new(vec![mock.url.clone()]);
    gateway.nats = clawline_runtime::NatsArgs::at(nats.url());
    gateway.api_keys = Some(keys.clone());
    gateway.spool_dir = dir.path().join("spool");
    gateway.no_dashboard = true;
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let listen = listener.local_addr().unwrap();
    tokio::spawn(clawline_gateway::run(gateway, listener, shutdown.clone()));
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::is_ready(&http, &base).await {
        assert!(Instant::now() < deadline, "the gateway did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("key-a")
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": "why is the sky blue?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let step_id = chat.headers()["x-clawline-step-id"]
        .to_str()
        .unwrap()
        .to_string();
    let explain = |key: &'static str, path: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            // The SQL service may still be subscribing: 503 until it answers.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = http
                    .get(format!("{base}{path}"))
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                if status != 503 || Instant::now() > deadline {
                    return (status, body);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (status, e) = explain("key-a", format!("/v1/explain/{step_id}")).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["stages"][0]["stage"], "captured");
    assert_eq!(e["state"], "waiting", "no reward scorer runs: {e}");
    // The real batcher says what it waits for (it may still be reading the log at first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        let (_, e) = explain("key-a", format!("/v1/explain/{step_id}")).await;
        if e["batcher"]["state"] == "waiting" || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(e["notes"], json!([]), "{e}");
    assert_eq!(e["stages"][2]["status"], "waiting", "{e}");
    let awaited = e["stages"][1]["detail"]["awaited"].to_string();
    assert!(awaited.contains("reward rm:*"), "{e}");
    eprintln!("{}", e["summary"]);
    let (status, e) = explain("key-b", format!("/v1/explain/{step_id}")).await;
    assert_eq!(status, 404, "another tenant's step: {e}");
    assert_eq!(e["error"]["code"], "unknown_step");
    let (status, e) = explain("key-a", "/v1/explain/stp_nothing".into()).await;
    assert_eq!(
        (status, &e["error"]["type"]),
        (404, &json!("not_found_error"))
    );
    let (status, d) = explain("key-admin", "/v1/diagnosis".into()).await;
    assert_eq!(status, 200, "{d}");
    assert!(
        d["lines"]
            .to_string()
            .contains("1 step waits for its required rewards"),
        "{d}"
    );

    // The rest of its way, as the batcher, trainer and broadcaster publish it.
    let t0 = now_ms();
    let batch = BatchFormed {
        envelope: Envelope::new(BatchFormed::id_for([step_id.as_str()]), "test").at(t0),
        channel: "train".into(),
        steps: vec![BatchStep {
            step_id: step_id.clone(),
            tenant: "alpha".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    publish_event(&js, subjects::batches("train"), &batch)
        .await
        .unwrap();
    let v1 = WeightsPublished {
        envelope: Envelope::new(WeightsPublished::id_for(1, "5e1f00d"), "test").at(t0 + 1),
        version: 1,
        sha256: "5e1f00d".into(),
        batch_ids: vec![batch.envelope.event_id.clone()],
        ..Default::default()
    };
    publish_event(&js, subjects::WEIGHTS_PUBLISHED.into(), &v1)
        .await
        .unwrap();
    let activated = WeightsActivated {
        envelope: Envelope::new("wa-1".into(), "test").at(t0 + 2),
        version: 1,
        engine: "policy".into(),
        reason: "published".into(),
        ..Default::default()
    };
    publish_event(&js, subjects::WEIGHTS_ACTIVATED.into(), &activated)
        .await
        .unwrap();
    let answer = StepRecorded {
        envelope: Envelope::new(StepRecorded::id_for("alpha", "later", 0, 0), "test").at(t0 + 3),
        tenant: "alpha".into(),
        channel: "train".into(),
        trajectory_uid: "later".into(),
        policy_version: Some(1),
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2],
        response_ids: vec![3],
        ..Default::default()
    };
    publish_event(&js, subjects::steps("train"), &answer)
        .await
        .unwrap();

    let at = [
        "--nats-url",
        &nats.url(),
        "--archive-dir",
        archive.to_str().unwrap(),
    ];
    let out = clawline(&[&["explain", &step_id][..], &at].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    for needle in [
        format!("step {step_id} (tenant alpha, channel train"),
        format!("in batch {}", batch.envelope.event_id),
        "trained: update 1 of 1 since v0".into(),
        "v1 published (parent v0, sha256 5e1f00d)".into(),
        "v1 serves on policy".into(),
        format!("first answer with v1: step {}", answer.envelope.event_id),
        "→ done: a version trained on this step serves since".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    let out = clawline(&[&["explain", &step_id, "--json"][..], &at].concat());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["stages"][4]["detail"]["version"], 1);
    assert_eq!(e["state"], "served");

    let out = clawline(&[&["explain", "stp_nothing"][..], &at].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown step \"stp_nothing\""));
    let out = clawline(&[&["explain", "a b"][..], &at].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("STEP_ID"));
    let out = clawline(&[
        "explain",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--archive-dir",
        "/nonexistent",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nats-url nats://127.0.0.1:1"));

    let out = clawline(&[&["explain"][..], &at].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    eprintln!("{text}");
    assert!(
        text.contains("1 step waits for its required rewards"),
        "{text}"
    );
    shutdown.cancel();
}
