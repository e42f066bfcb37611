#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The reward scorer behind the real gateway: an unmodified client's correction scores the answer
//! it reacts to, and Claw-R1's `/compute_reward` is answered by the scorer over NATS.

mod common;

use std::path::Path;
use std::time::Duration;

use clawline_nats::subjects;
use clawline_nats::testing::NatsServer;
use clawline_runtime::CancellationToken;
use clawline_schemas::{RewardAssigned, StepRecorded};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn implicit_feedback_scores_the_answer_the_user_reacts_to() {
    // Through the real gateway: an unmodified client continues its conversation; the gateway
    // links the new step to the previous one and the scorer reads the user's reaction.
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = reward(&nats, dir.path(), "bundled_model = false\nrules = []\n").await;
    let gw = gateway(&nats, dir.path(), None).await;
    let js = nats.jetstream().await;
    let http = reqwest::Client::new();
    let chat = |messages: Value| {
        http.post(format!("{}/v1/chat/completions", gw.url))
            .json(&json!({"model": "mock-model", "messages": messages}))
            .send()
    };
    let first: Value = chat(json!([{"role": "user", "content": "What is 6 x 7?"}]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let convo = |reaction: &str| {
        json!([
            {"role": "user", "content": "What is 6 x 7?"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": reaction},
        ])
    };
    let r = chat(convo("No, that's wrong.")).await.unwrap();
    assert_eq!(r.status(), 200);
    let all: Vec<RewardAssigned> = wait_for_events(&js, "REWARDS", 1).await;
    let steps: Vec<StepRecorded> = read_events(&js, "STEPS").await;
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[1].previous_step_id.as_deref(),
        Some(steps[0].envelope.event_id.as_str())
    );
    assert_eq!(all[0].source, "feedback:implicit");
    assert_eq!(
        all[0].step_id.as_deref(),
        Some(steps[0].envelope.event_id.as_str()),
        "on the answer reacted to"
    );
    assert_eq!(all[0].caused_by, steps[1].envelope.event_id);
    assert_eq!(all[0].value, -1.0);
    assert_eq!(all[0].details.as_ref().unwrap()["signal"], "correction");
    gw.stop().await;
    stop(svc).await;
}

#[tokio::test]
async fn compute_reward_answers_through_the_gateway() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&nats, dir.path(), Some(Duration::from_millis(500))).await;
    let http = reqwest::Client::new();
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(
        &clawline_mock_vllm::default_tokenizer_dir(),
    )
    .unwrap();
    let body = json!({
        "prompt_ids": tok.encode("What is 6 x 7?").unwrap(),
        "response_ids": tok.encode("6 x 7 = 42\n#### 42").unwrap(),
        "num_turns": 2,
        "extra_fields": {},
        "dataset_fields": {"ground_truth": "42", "data_source": "gsm8k"},
    });
    let post = |body: Value| {
        http.post(format!("{}/compute_reward", gw.url))
            .json(&body)
            .send()
    };

    // No reward service yet: a clear 503.
    let r = post(body.clone()).await.unwrap();
    assert_eq!(r.status(), 503);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no reward service"),
        "{err}"
    );

    let svc = reward(&nats, dir.path(), "").await;
    let r = post(body.clone()).await.unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reward_score"], 1.0, "{answer}");
    assert_eq!(answer["reward_extra_info"]["basis"], "rule:ground_truth");
    assert!(
        answer["reward_extra_info"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("rm:bundled@"))
    );
    // Ids as `/generate` returns them, ending with the end-of-turn token, and the ground truth
    // where verl's GSM8K rows keep it: still the correct answer.
    let mut with_eot = body.clone();
    with_eot["response_ids"] = json!(tok.encode("6 x 7 = 42\n#### 42<|im_end|>").unwrap());
    with_eot["dataset_fields"] = json!({"reward_model": {"ground_truth": "42", "style": "rule"}});
    let answer: Value = post(with_eot).await.unwrap().json().await.unwrap();
    assert_eq!(answer["reward_score"], 1.0, "{answer}");
    let mut wrong = body.clone();
    wrong["dataset_fields"]["ground_truth"] = json!("41");
    let answer: Value = post(wrong).await.unwrap().json().await.unwrap();
    assert_eq!(answer["reward_score"], 0.0);
    // Without a ground truth the reward models decide.
    let mut open = body.clone();
    open["dataset_fields"] = json!({});
    let answer: Value = post(open).await.unwrap().json().await.unwrap();
    assert_eq!(answer["reward_extra_info"]["basis"], "reward_models");
    // Bad input: a 400 naming the field.
    let r = post(json!({"prompt_ids": [1, 2]})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(json!({"response_ids": "nope"})).await.unwrap();
    assert_eq!(r.status(), 400);
    stop(svc).await;

    // The stopped scorer's subscription goes away asynchronously: wait for "no responders".
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while post(json!({"response_text": "x"})).await.unwrap().status() != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped scorer still answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A reward service that never answers: 504 after --reward-timeout.
    let client = nats.client().await;
    let _silent = client.subscribe(subjects::REWARD_COMPUTE).await.unwrap();
    client.flush().await.unwrap();
    // (Until the server routes to the new subscription the answer is still 503.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started = std::time::Instant::now();
        let status = post(body.clone()).await.unwrap().status();
        if status == 504 {
            assert!(started.elapsed() < Duration::from_secs(5));
            break;
        }
        assert_eq!(
            status, 503,
            "only no-responders before the silent subscriber is seen"
        );
        assert!(std::time::Instant::now() < deadline, "never timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

/// A reward service on `nats` with `toml` as its configuration.
async fn reward(
    nats: &NatsServer,
    dir: &Path,
    toml: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let path = dir.join("reward.toml");
    std::fs::write(&path, toml).unwrap();
    let settings = clawline_reward::Settings {
        nats: clawline_runtime::NatsArgs::at(nats.url()),
        config: Some(path),
        ..Default::default()
    };
    let service = tokio::task::spawn_blocking(move || clawline_reward::Service::load(settings))
        .await
        .unwrap()
        .expect("reward service loads");
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let metrics = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(service.run(listener, stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(&metrics).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "reward service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (stop, task)
}

async fn stop(
    service: (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ),
) {
    service.0.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), service.1).await;
}

struct Gateway {
    url: String,
    shutdown: clawline_runtime::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _mock: clawline_mock_vllm::MockVllm,
}

impl Gateway {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn gateway(
    nats: &NatsServer,
    dir: &std::path::Path,
    reward_timeout: Option<Duration>,
) -> Gateway {
    let mock = clawline_mock_vllm::MockVllm::start(Default::default())
        .await
        .unwrap();
    let mut config = clawline_gateway::Settings::new(vec![mock.url.clone()]);
    config.nats = clawline_runtime::NatsArgs::at(nats.url());
    config.spool_dir = dir.join("spool");
    config.tokenizer = Some(clawline_mock_vllm::default_tokenizer_dir());
    if let Some(timeout) = reward_timeout {
        config.reward_timeout = timeout;
    }
    let client = clawline_runtime::connect_nats(&config.nats, "test-gateway", false)
        .await
        .unwrap();
    let state = clawline_gateway::build(config, client).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = clawline_runtime::CancellationToken::new();
    let task = tokio::spawn(clawline_gateway::serve(state, listener, shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/ready")).await
            && r.status() == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Gateway {
        url,
        shutdown,
        task,
        _mock: mock,
    }
}
