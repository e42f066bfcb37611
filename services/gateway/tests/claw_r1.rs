//! Claw-R1's agents work unchanged: black-box trajectories through a path-scoped base_url, and
//! white-box `/submit_steps` and `/generate`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use clawline_mock_vllm::MockConfig;
use clawline_runtime::testing::Answer as _;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_black_box_agent_runs_a_trajectory_through_its_base_url() {
    let h = Harness::start().await;
    // Claw-R1 posts no body at all.
    let init: Value = h
        .http
        .post(format!("{}/init_trajectory", h.url))
        .json_answer()
        .await;
    let uid = init["trajectory_uid"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 32);
    let base_url = init["base_url"].as_str().unwrap();
    assert_eq!(
        base_url,
        format!("{}/{uid}/1/v1", h.url),
        "base_url includes /v1, prompt uid 1"
    );

    // Claw-R1 agents rewrite the prompt segment with their dataset uid.
    let base = format!("{}/{uid}/gsm8k-7/v1", h.url);
    let r = h
        .http
        .post(format!("{base}/register_trajectory"))
        .json(&json!({"channel": "val", "metadata": {"ground_truth": "4", "data_source": "gsm8k"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let mut messages = vec![json!({"role": "user", "content": "2+2?"})];
    for turn in 0..2 {
        let r = h
            .http
            .post(format!("{base}/chat/completions"))
            .json(&json!({"model": "mock-model", "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        messages.push(answer["choices"][0]["message"].clone());
        messages.push(json!({"role": "user", "content": format!("and then? {turn}")}));
    }
    let r = h
        .http
        .post(format!("{base}/complete_trajectory"))
        .json(&json!({"reward": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let steps = h.steps().await;
    assert_eq!(
        steps.iter().map(|s| s.step_index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    for s in &steps {
        assert_eq!(s.trajectory_uid, uid);
        assert_eq!(s.prompt_uid, "gsm8k-7");
        assert_eq!(s.channel, "val");
        assert_eq!(s.metadata.as_ref().unwrap()["ground_truth"], "4");
    }
    let registered: Vec<TrajectoryRegistered> = h
        .events("TRAJECTORIES", "clawline.trajectories.registered")
        .await;
    assert_eq!(registered.last().unwrap().channel, "val");
    let completed: Vec<TrajectoryCompleted> = h
        .events("TRAJECTORIES", "clawline.trajectories.completed")
        .await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].reward, Some(1.0));
    assert_eq!(completed[0].last_step_index, Some(1));
    assert_eq!(completed[0].channel, "val");
}

#[tokio::test]
async fn completing_by_id_works_and_twice_stores_one_event() {
    let h = Harness::start().await;
    let init: Value = h
        .post(
            "/init_trajectory",
            json!({"channel": "train", "prompt_uid": "p1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let uid = init["trajectory_uid"].as_str().unwrap();
    assert!(
        init["base_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{uid}/p1/v1"))
    );
    for _ in 0..2 {
        let r = h
            .post(
                &format!("/complete_trajectory/{uid}"),
                json!({"reward": 0.5, "channel": "train"}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let completed: Vec<TrajectoryCompleted> = h
        .events("TRAJECTORIES", "clawline.trajectories.completed")
        .await;
    assert_eq!(
        completed.len(),
        1,
        "the completion id is derived from the trajectory"
    );
    assert_eq!(completed[0].last_step_index, None);
}

#[tokio::test]
async fn unknown_trajectories_get_404_and_change_nothing() {
    let h = Harness::start().await;
    let before = stream_count(&h.js().await, "TRAJECTORIES").await;
    for path in [
        "/complete_trajectory/nope",
        "/nope/1/v1/complete_trajectory",
        "/nope/1/v1/register_trajectory",
        "/nope/1/v1/chat/completions",
    ] {
        let r = h.post(path, chat_body("x")).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "not_found_error", "{path}: {body}");
    }
    assert_eq!(stream_count(&h.js().await, "TRAJECTORIES").await, before);
    assert_eq!(stream_count(&h.js().await, "STEPS").await, 0);
    assert_eq!(h.mock.chat_requests(), 0);
}

fn white_box_step(trajectory: &str, index: u32, is_last: bool) -> Value {
    json!({"prompt_ids": [1, 2, 3], "response_ids": [4, 5], "reward": 0.5, "rollout_log_probs": [-0.1, -0.2],
           "trajectory_uid": trajectory, "prompt_uid": "p", "step_index": index, "policy_version": 3,
           "is_last": is_last, "metadata": {"k": "v"}, "multi_modal_data": null, "routed_experts": null})
}

#[tokio::test]
async fn submitted_steps_are_stored_once_with_their_tokens() {
    let h = Harness::start().await;
    let body = json!({"steps": [white_box_step("t1", 0, false), white_box_step("t1", 1, true)]});
    let r = h.post("/submit_steps?channel=val", body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 2, "duplicates": 0})
    );
    // The same steps again: recognised, not stored twice.
    let again: Value = h
        .post("/submit_steps?channel=val", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, json!({"accepted": 0, "duplicates": 2}));

    let steps = h.steps().await;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].token_source, TokenSource::Client);
    assert_eq!(steps[0].source, StepSource::Submitted);
    assert_eq!(steps[0].prompt_ids, vec![1, 2, 3]);
    assert_eq!(steps[0].response_logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(steps[0].channel, "val");
    assert_eq!(steps[0].policy_version, Some(3));
    assert_eq!(steps[1].reward, Some(0.5));
    assert!(steps[1].is_last);
    // The reward models read the answer as text (decoded without special tokens), not as empty.
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(&tokenizer_dir()).unwrap();
    assert_eq!(steps[0].response_text, tok.decode_text(&[4, 5]).unwrap());
    assert!(!steps[0].response_text.is_empty());
    let completed: Vec<TrajectoryCompleted> = h
        .events("TRAJECTORIES", "clawline.trajectories.completed")
        .await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].reason, CompletionReason::LastStep);
    assert_eq!(completed[0].last_step_index, Some(1));
}

#[tokio::test]
async fn one_bad_submitted_step_rejects_the_request_and_stores_nothing() {
    let h = Harness::start().await;
    let mut bad = white_box_step("t1", 1, false);
    bad["rollout_log_probs"] = json!([-0.1]);
    let r = h
        .post(
            "/submit_steps",
            json!({"steps": [white_box_step("t1", 0, false), bad]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "steps[1].rollout_log_probs");
    let r = h
        .post(
            "/submit_steps",
            json!({"steps": [{"prompt_ids": "nope", "response_ids": [1]}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = h
        .post("/submit_steps?channel=a.b", json!({"steps": []}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(stream_count(&h.js().await, "STEPS").await, 0);
}

#[tokio::test]
async fn generate_returns_the_engines_own_token_ids_and_logprobs() {
    let h = Harness::start().await;
    let r = h
        .post("/generate", json!({"prompt_ids": [10, 11, 12], "sampling_params": {"max_tokens": 64, "temperature": 1.0, "logprobs": true}}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<u32> = serde_json::from_value(body["token_ids"].clone()).unwrap();
    assert_eq!(ids, reply_ids("echo completion"));
    assert_eq!(body["log_probs"].as_array().unwrap().len(), ids.len());
    assert_eq!(body["stop_reason"], "stop");
    let sent = h
        .mock
        .stats
        .completion_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 1);
    let r = h.post("/generate", json!({"prompt_ids": []})).await;
    assert_eq!(r.status(), 400);
}

/// Against an engine as strict as vLLM: Claw-R1's GSM8K agent hard-codes `model="default"`
/// (vLLM: 404) and `/generate` sends no `max_tokens` (vLLM's `/v1/completions`: 16 tokens). The
/// gateway sends the engine's own model name and a `max_tokens` the context leaves room for.
#[tokio::test]
async fn claw_r1_agents_work_against_an_engine_as_strict_as_vllm() {
    let long =
        "Natalia sold 48 clips in April and half as many in May, so 48 + 24 = 72 clips.\n#### 72";
    let h = Harness::with(Options {
        mock: MockConfig {
            reply: Some(long.into()),
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let mut body = chat_body("How many clips?");
    body["model"] = json!("default");
    let r = h.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status(), 200);
    let sent = h.mock.stats.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(sent["model"], "mock-model");
    // A name the engine serves goes through as it is.
    body["model"] = json!("mock-model");
    assert_eq!(h.post("/v1/chat/completions", body).await.status(), 200);

    let r = h
        .post("/generate", json!({"prompt_ids": [10, 11, 12], "sampling_params": {"temperature": 1.0, "model": "default"}}))
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let ids: Vec<u32> = serde_json::from_value(answer["token_ids"].clone()).unwrap();
    assert!(reply_ids(long).len() > 16);
    assert_eq!(
        ids,
        reply_ids(long),
        "the whole answer, not vLLM's 16 tokens"
    );
    assert_eq!(answer["stop_reason"], "stop");

    // `--model-name client` forwards the agent's name: the engine's 404 reaches the agent.
    let strict = Harness::with(Options {
        extra_args: vec!["--model-name".into(), "client".into()],
        ..Options::default()
    })
    .await;
    let mut body = chat_body("hi");
    body["model"] = json!("default");
    let r = strict.post("/v1/chat/completions", body).await;
    assert_eq!(r.status(), 404);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{err}"
    );
}

/// A `/generate` prompt near the end of the engine's context gets the room that is left.
#[tokio::test]
async fn generate_never_asks_for_more_than_the_context_leaves() {
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let h = Harness::with(Options {
        mock: MockConfig {
            reply: Some(long.into()),
            max_model_len: 8,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    let r = h
        .post("/generate", json!({"prompt_ids": [10, 11, 12]}))
        .await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["token_ids"].as_array().unwrap().len(), 5, "{answer}");
    assert_eq!(answer["stop_reason"], "length");
}

#[tokio::test]
async fn the_gateway_brings_its_own_key_to_an_engine_that_wants_one() {
    let mock = MockConfig {
        api_key: Some("engine-secret".into()),
        ..MockConfig::default()
    };
    let without = Harness::with(Options {
        mock: mock.clone(),
        ..Options::default()
    })
    .await;
    assert_eq!(
        without
            .post("/v1/chat/completions", chat_body("hi"))
            .await
            .status(),
        401
    );
    let with = Harness::with(Options {
        mock,
        extra_args: vec!["--upstream-api-key".into(), "engine-secret".into()],
        ..Options::default()
    })
    .await;
    let r = with.post("/v1/chat/completions", chat_body("hi")).await;
    assert_eq!(r.status(), 200);
    // The client's own key stays with the gateway.
    let sent = with.mock.stats.last_headers.lock().unwrap().clone();
    assert_eq!(sent["authorization"], "Bearer engine-secret");
    let models = with
        .http
        .get(format!("{}/v1/models", with.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    // Claw-R1's launcher waits for FastAPI's docs page.
    let docs = with
        .http
        .get(format!("{}/docs", with.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);

    // Two engines with keys of their own: one key per --upstream, in the same order.
    let other = clawline_mock_vllm::MockVllm::start(MockConfig {
        api_key: Some("other-secret".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let both = Harness::with(Options {
        mock: MockConfig {
            api_key: Some("engine-secret".into()),
            ..MockConfig::default()
        },
        extra_args: vec![
            "--upstream".into(),
            other.url.clone(),
            "--upstream-api-key".into(),
            "engine-secret".into(),
            "--upstream-api-key".into(),
            "other-secret".into(),
        ],
        ..Options::default()
    })
    .await;
    for i in 0..4 {
        let r = both
            .post("/v1/chat/completions", chat_body(&format!("call {i}")))
            .await;
        assert_eq!(r.status(), 200, "call {i}");
    }
    assert!(
        both.mock.chat_requests() >= 1 && other.chat_requests() >= 1,
        "round robin"
    );
}

/// Only the client headers the operator lists reach the engine; connection headers never do.
#[tokio::test]
async fn listed_client_headers_reach_the_engine_and_no_others() {
    let h = Harness::with(Options {
        extra_args: vec![
            "--forward-header".into(),
            "traceparent,x-priority".into(),
            "--default-param".into(),
            "temperature=0.7".into(),
        ],
        ..Options::default()
    })
    .await;
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-priority", "high")
        .header("x-secret-of-the-client", "s3cret")
        .header("authorization", "Bearer client-key")
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = h.mock.stats.last_headers.lock().unwrap().clone();
    assert_eq!(sent["x-priority"], "high");
    assert!(sent["traceparent"].to_str().unwrap().starts_with("00-0af7"));
    assert!(sent.get("x-secret-of-the-client").is_none());
    assert!(sent.get("authorization").is_none());
    // A sampling default fills what the call did not send, and the step records it.
    let body = h.mock.stats.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(body["temperature"], 0.7);
    let steps = h.steps().await;
    let params: Value =
        serde_json::from_str(steps[0].request_params_json.as_deref().unwrap()).unwrap();
    assert_eq!(params["temperature"], 0.7);

    let upstream = vec!["http://127.0.0.1:1/v1".to_string()];
    for (bad, key) in [
        ("content-length", None),
        ("bad name", None),
        ("authorization", Some("engine-secret".to_string())),
    ] {
        let keys: Vec<String> = key.into_iter().collect();
        let err = clawline_gateway::upstream::Upstreams::new(&upstream, &keys, &[bad.to_string()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--forward-header"), "{err}");
    }
}
