#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The reward service against a real nats-server and real ONNX Runtime.

mod common;

use std::time::Duration;

use clap::Parser;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, publish_raw, subjects};
use common::*;
use serde_json::{Value, json};

const NO_MODEL: &str = "bundled_model = false\n";

#[tokio::test]
async fn bundled_model_scores_every_step_and_acks_it() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "").await;
    let js = nats.jetstream().await;

    let good = step("t1", 0, "Sure, here is the answer: 42. Glad to help!");
    let bad = step("t2", 0, "Sorry, I cannot do that. Whatever.");
    let empty = step("t3", 0, "");
    for s in [&good, &bad, &empty] {
        publish_step(&js, s).await;
    }
    let all = rewards(&js, 3).await;
    let value = |s: &StepRecorded| {
        let r = of(&all, &s.event_id, "rm:bundled@");
        assert_eq!(r.len(), 1, "one bundled-model reward per step: {all:#?}");
        r[0].value
    };
    assert!(
        value(&good) > 0.6,
        "helpful answer scores high: {}",
        value(&good)
    );
    assert!(value(&bad) < 0.4, "refusal scores low: {}", value(&bad));
    assert_eq!(value(&empty), 0.0, "an empty answer gets empty_value");
    let r = &of(&all, &good.event_id, "rm:")[0];
    assert_eq!(r.caused_by, good.event_id);
    assert_eq!(r.channel.as_deref(), Some("train"));
    assert_eq!(r.scope, RewardScope::Step);
    assert_eq!(
        r.event_id,
        RewardAssigned::id_for(&good.event_id, &r.source, &r.source_version)
    );
    assert!(r.details.as_ref().unwrap()["logits"].is_array());

    // Acked only after the rewards: nothing pending, nothing in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(consumer_backlog(&js, "STEPS", "reward-steps").await, (0, 0));
    let m = svc.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"clawline_reward_messages_total{stream="steps",outcome="scored"}"#
        ),
        Some(3.0)
    );
    svc.stop().await;
}

#[tokio::test]
async fn concurrent_steps_are_micro_batched() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
bundled_model = false
rules = []
[[models]]
name = "lex"
dir = "MODEL_DIR"
max_batch = 16
max_wait_ms = 200
"#
    .replace(
        "MODEL_DIR",
        &repo_root().join("data/reward-model").display().to_string(),
    );
    let svc = start(&nats, dir.path(), &toml).await;
    let js = nats.jetstream().await;
    let steps: Vec<_> = (0..48)
        .map(|i| {
            step(
                &format!("b{i}"),
                0,
                &format!("Sure, step {i} then the result."),
            )
        })
        .collect();
    futures::future::join_all(steps.iter().map(|s| publish_step(&js, s))).await;
    let all = rewards(&js, 48).await;
    assert_eq!(all.len(), 48);
    // Same words, same score, whatever batch (and padding) each text landed in.
    let first = all[0].value;
    assert!(
        all.iter().all(|r| (r.value - first).abs() < 1e-6),
        "{all:#?}"
    );
    let m = svc.metrics().await;
    let runs = metric(&m, "clawline_reward_model_batch_size_count").unwrap();
    let texts = metric(&m, "clawline_reward_model_batch_size_sum").unwrap();
    // The startup probe is not observed; 48 texts in clearly fewer runs than texts.
    assert_eq!(texts, 48.0);
    assert!(runs <= 12.0, "48 texts took {runs} model runs");
    svc.stop().await;
}

#[tokio::test]
async fn several_models_score_side_by_side_including_a_transformer_export() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = repo_root().join("data/reward-model-tiny-transformer");
    let toml = format!(
        "[[models]]\nname = \"lex\"\ndir = \"{}\"\n[[models]]\nname = \"tiny\"\ndir = \"{}\"\ntext = \"conversation\"\nintra_threads = 2\n",
        repo_root().join("data/reward-model").display(),
        model_dir.display()
    );
    let svc = start(&nats, dir.path(), &toml).await;
    let js = nats.jetstream().await;
    let s = step("tt", 0, "Hello there, the answer is 7.");
    publish_step(&js, &s).await;
    let all = rewards(&js, 2).await;
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(model_dir.join("model.onnx")).unwrap(),
        ))
    };
    let r = &of(&all, &s.event_id, "rm:tiny@")[0];
    assert_eq!(r.source, format!("rm:tiny@{}", &sha[..8]));
    assert_eq!(r.source_version, sha[..16]);
    // softmax:1 from the export's config.json: a probability from two logits.
    assert_eq!(
        r.details.as_ref().unwrap()["logits"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(r.value > 0.0 && r.value < 1.0, "{}", r.value);
    // sigmoid from the lexicon export's config.json.
    let lex = &of(&all, &s.event_id, "rm:lex@")[0];
    assert!(lex.value > 0.0 && lex.value < 1.0, "{}", lex.value);
    assert_ne!(lex.event_id, r.event_id);
    svc.stop().await;
}

#[tokio::test]
async fn an_onnx_classifier_can_read_follow_ups_instead_of_patterns() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "bundled_model = false\nrules = []\n[implicit.classifier]\nlabels = [\"correction\", \"thanks\"]\n[implicit.classifier.model]\nname = \"fb\"\ndir = \"{}\"\n",
        repo_root()
            .join("data/reward-model-tiny-transformer")
            .display()
    );
    let svc = start(&nats, dir.path(), &toml).await;
    let js = nats.jetstream().await;
    let mut s = step("c1", 1, "Lyon is nice too.");
    s.previous_step_id = Some(StepRecorded::id_for("default", "c1", 0, 0));
    s.messages = vec![
        Message {
            role: "user".into(),
            content: Some("Where to go?".into()),
            ..Default::default()
        },
        Message {
            role: "assistant".into(),
            content: Some("Paris.".into()),
            ..Default::default()
        },
        Message {
            role: "user".into(),
            content: Some("What else?".into()),
            ..Default::default()
        },
    ];
    publish_step(&js, &s).await;
    let all = rewards(&js, 1).await;
    assert_eq!(all[0].source, "feedback:implicit");
    assert!(
        all[0].source_version.starts_with("rm:fb@"),
        "{}",
        all[0].source_version
    );
    assert_eq!(all[0].step_id, s.previous_step_id);
    let signal = all[0].details.as_ref().unwrap()["signal"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(signal == "correction" || signal == "thanks", "{signal}");
    svc.stop().await;

    // Labels must match the classifier's logits.
    let bad = toml.replace("[\"correction\", \"thanks\"]", "[\"thanks\"]");
    let err = clawline_reward::Service::load(config(&nats, dir.path(), &bad, &[]))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("1 labels for a model with 2 logits"),
        "{err}"
    );
}

#[tokio::test]
async fn broken_models_stop_startup_naming_the_file() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let lexicon = repo_root().join("data/reward-model");
    std::fs::copy(lexicon.join("tokenizer.json"), bad.join("tokenizer.json")).unwrap();
    let load = |toml: &str, args: &[&str]| {
        Service::load(config(&nats, dir.path(), toml, args))
            .err()
            .map(|e| e.to_string())
    };
    use clawline_reward::Service;
    let flag = format!("bad={}", bad.display());

    // Corrupt model file.
    std::fs::write(bad.join("model.onnx"), b"this is not a protobuf").unwrap();
    let err = load(NO_MODEL, &["--model", &flag]).expect("corrupt model refused");
    assert!(
        err.contains(&bad.join("model.onnx").display().to_string()),
        "{err}"
    );
    assert!(err.contains("not a usable ONNX model"), "{err}");

    // Missing model file.
    std::fs::remove_file(bad.join("model.onnx")).unwrap();
    let err = load(NO_MODEL, &["--model", &flag]).expect("missing model refused");
    assert!(
        err.contains("model.onnx") && err.contains("cannot read"),
        "{err}"
    );

    // Corrupt tokenizer.
    std::fs::copy(lexicon.join("model.onnx"), bad.join("model.onnx")).unwrap();
    std::fs::write(bad.join("tokenizer.json"), b"{\"not\": \"a tokenizer\"}").unwrap();
    let err = load(NO_MODEL, &["--model", &flag]).expect("bad tokenizer refused");
    assert!(
        err.contains("tokenizer.json") && err.contains("not a usable tokenizer"),
        "{err}"
    );

    // Wrong shape for the mapping: sigmoid wants one logit, the transformer has two.
    let toml = format!(
        "bundled_model = false\n[[models]]\nname = \"t\"\ndir = \"{}\"\nmapping = \"sigmoid\"\n",
        repo_root()
            .join("data/reward-model-tiny-transformer")
            .display()
    );
    let err = load(&toml, &[]).expect("wrong shape refused");
    assert!(err.contains("cannot read 2 logit(s)"), "{err}");

    // A typo in the TOML names the file and the key.
    let err = load("[[models]]\nname = \"x\"\ndri = \"/tmp\"\n", &[]).expect("typo refused");
    assert!(err.contains("reward.toml") && err.contains("dri"), "{err}");
}

#[tokio::test]
async fn a_missing_runtime_library_is_a_clear_startup_error() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawline-reward"))
        .args([
            "--ort-library",
            "/nonexistent/libonnxruntime.so.1.32.0",
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so.1.32.0"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn each_rule_scores_what_it_checks() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
bundled_model = false
[[rules]]
name = "gsm8k"
kind = "ground_truth"
extract = "gsm8k"
[[rules]]
name = "boxed"
kind = "ground_truth"
extract = "boxed"
[[rules]]
name = "no_apology"
kind = "regex"
pattern = "(?i)\\bsorry\\b"
on_match = -1.0
[[rules]]
name = "short"
kind = "length"
target = 4
per_token = 0.1
max_penalty = 0.5
[[rules]]
name = "tools"
kind = "tool_call"
"#;
    let svc = start(&nats, dir.path(), toml).await;
    let js = nats.jetstream().await;
    let with_gt = |mut s: StepRecorded, gt: &str| {
        s.metadata = Some(json!({"ground_truth": gt}));
        s
    };
    let right = with_gt(step("r1", 0, "3 + 4 = 7\n#### 7"), "7");
    let wrong = with_gt(
        step("r2", 0, "Sorry, I think that 3 + 4 = 8 today\n#### 8"),
        "#### 7",
    );
    let boxed = with_gt(step("r3", 0, r"so \boxed{1,000}"), "1000");
    let mut tools = step("r4", 0, "");
    tools.tools_json = Some(
        json!([{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
        .to_string(),
    );
    let mut bad_tools = tools.clone();
    bad_tools.event_id = StepRecorded::id_for("default", "r5", 0, 0);
    bad_tools.trajectory_uid = "r5".into();
    tools.response_tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    }];
    bad_tools.response_tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "weather".into(),
        arguments: r#"{"town": 3}"#.into(),
    }];
    for s in [&right, &wrong, &boxed, &tools, &bad_tools] {
        publish_step(&js, s).await;
    }
    // right: gsm8k, boxed(no box → wrong), length; wrong: gsm8k, boxed, regex, length;
    // boxed: gsm8k, boxed, length; tools: length, tools; bad_tools: length, tools.
    let all = rewards(&js, 3 + 4 + 3 + 2 + 2).await;
    let v = |s: &StepRecorded, src: &str| {
        let r = of(&all, &s.event_id, src);
        assert_eq!(r.len(), 1, "{src} on {}: {all:#?}", s.trajectory_uid);
        r[0].value
    };
    assert_eq!(v(&right, "rule:gsm8k"), 1.0);
    assert_eq!(
        v(&wrong, "rule:gsm8k"),
        0.0,
        "ground truth given as a GSM8K solution"
    );
    assert_eq!(v(&boxed, "rule:boxed"), 1.0, "1,000 equals 1000");
    assert_eq!(v(&right, "rule:boxed"), 0.0);
    assert_eq!(v(&wrong, "rule:no_apology"), -1.0);
    assert!(
        of(&all, &right.event_id, "rule:no_apology").is_empty(),
        "no on_miss, no reward"
    );
    assert!(
        (v(&right, "rule:short") + 0.3).abs() < 1e-9,
        "7 words, target 4"
    );
    assert_eq!(v(&wrong, "rule:short"), -0.5, "capped at max_penalty");
    assert_eq!(v(&tools, "rule:tools"), 1.0);
    assert_eq!(v(&bad_tools, "rule:tools"), -1.0);
    let problems = of(&all, &bad_tools.event_id, "rule:tools")[0]
        .details
        .clone()
        .unwrap();
    assert!(
        problems.to_string().contains("missing required `city`"),
        "{problems}"
    );
    assert!(
        of(&all, &tools.event_id, "rule:gsm8k").is_empty(),
        "no ground truth, no reward"
    );
    svc.stop().await;
}

#[tokio::test]
async fn explicit_feedback_client_rewards_and_completions_become_rewards() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "bundled_model = false\nrules = []\n").await;
    let js = nats.jetstream().await;
    let step_id = StepRecorded::id_for("default", "f1", 0, 0);
    let fb = |id: &str, step: Option<&str>| FeedbackReceived {
        event_id: id.into(),
        event_time: now_ms(),
        producer: "test".into(),
        schema_version: SCHEMA_VERSION,
        tenant: "default".into(),
        trajectory_uid: "f1".into(),
        step_id: step.map(str::to_string),
        ..Default::default()
    };
    let thumbs = FeedbackReceived {
        thumbs: Some(Thumbs::Down),
        ..fb("fbk_1", Some(&step_id))
    };
    let rating = FeedbackReceived {
        rating: Some(0.75),
        ..fb("fbk_2", None)
    };
    let comment_only = FeedbackReceived {
        comment: Some("meh".into()),
        ..fb("fbk_3", Some(&step_id))
    };
    for f in [&thumbs, &rating, &comment_only] {
        publish_event(&js, subjects::FEEDBACK.into(), f)
            .await
            .unwrap();
    }
    let done = TrajectoryCompleted {
        event_id: TrajectoryCompleted::id_for("default", "f1"),
        event_time: now_ms(),
        producer: "test".into(),
        schema_version: SCHEMA_VERSION,
        tenant: "default".into(),
        channel: "train".into(),
        trajectory_uid: "f1".into(),
        reward: Some(0.5),
        ..Default::default()
    };
    publish_event(&js, subjects::TRAJECTORY_COMPLETED.into(), &done)
        .await
        .unwrap();
    let mut with_reward = step("f1", 1, "ok");
    with_reward.reward = Some(2.0);
    publish_step(&js, &with_reward).await;

    let all = rewards(&js, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_now = read_events::<RewardAssigned>(&js, "REWARDS").await;
    assert_eq!(
        all_now.len(),
        4,
        "a comment alone gives no reward: {all_now:#?}"
    );
    let find = |caused_by: &str| all.iter().find(|r| r.caused_by == caused_by).unwrap();
    let r = find("fbk_1");
    assert_eq!(
        (r.source.as_str(), r.value, r.scope),
        ("feedback:explicit", -1.0, RewardScope::Step)
    );
    assert_eq!(r.step_id.as_deref(), Some(step_id.as_str()));
    let r = find("fbk_2");
    assert_eq!(
        (r.value, r.scope),
        (0.5, RewardScope::Trajectory),
        "rating 0.75 → 0.5"
    );
    assert_eq!(r.step_id, None);
    let r = find(&done.event_id);
    assert_eq!(
        (r.source.as_str(), r.value, r.scope),
        ("client", 0.5, RewardScope::Trajectory)
    );
    let r = find(&with_reward.event_id);
    assert_eq!((r.source.as_str(), r.value), ("client", 2.0));
    svc.stop().await;
}

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
    assert_eq!(all[0].step_id.as_deref(), Some(good.event_id.as_str()));
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

#[tokio::test]
async fn implicit_feedback_scores_the_answer_the_user_reacts_to() {
    // Through the real gateway: an unmodified client continues its conversation; the gateway
    // links the new step to the previous one and the scorer reads the user's reaction.
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&nats, dir.path(), "bundled_model = false\nrules = []\n").await;
    let gw = gateway(&nats, dir.path(), &[]).await;
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
    let all = rewards(&js, 1).await;
    let steps: Vec<StepRecorded> = read_events(&js, "STEPS").await;
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[1].previous_step_id.as_deref(),
        Some(steps[0].event_id.as_str())
    );
    assert_eq!(all[0].source, "feedback:implicit");
    assert_eq!(
        all[0].step_id.as_deref(),
        Some(steps[0].event_id.as_str()),
        "on the answer reacted to"
    );
    assert_eq!(all[0].caused_by, steps[1].event_id);
    assert_eq!(all[0].value, -1.0);
    assert_eq!(all[0].details.as_ref().unwrap()["signal"], "correction");
    gw.stop().await;
    svc.stop().await;
}

#[tokio::test]
async fn compute_reward_answers_through_the_gateway() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&nats, dir.path(), &["--reward-timeout", "500ms"]).await;
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

    let svc = start(&nats, dir.path(), "").await;
    let r = post(body.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["reward_score"], 1.0, "{answer}");
    assert_eq!(answer["reward_extra_info"]["basis"], "rule:ground_truth");
    assert!(
        answer["reward_extra_info"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("rm:bundled@"))
    );
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
    svc.stop().await;

    // A reward service that never answers: 504 after --reward-timeout.
    let client = nats.client().await;
    let _silent = client.subscribe(subjects::REWARD_COMPUTE).await.unwrap();
    client.flush().await.unwrap();
    let started = std::time::Instant::now();
    let r = post(body).await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
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

async fn gateway(nats: &NatsServer, dir: &std::path::Path, extra: &[&str]) -> Gateway {
    let mock = clawline_mock_vllm::MockVllm::start(Default::default())
        .await
        .unwrap();
    let mut args = vec![
        "clawline-gateway".to_string(),
        "--upstream".into(),
        mock.url.clone(),
        "--nats-url".into(),
        nats.url(),
        "--spool-dir".into(),
        dir.join("spool").display().to_string(),
        "--tokenizer".into(),
        clawline_mock_vllm::default_tokenizer_dir()
            .display()
            .to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = clawline_gateway::Config::try_parse_from(args).unwrap();
    let client = clawline_runtime::connect_nats(&config.nats, "test-gateway", false)
        .await
        .unwrap();
    let state = clawline_gateway::build(config, client).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = clawline_runtime::CancellationToken::new();
    let task = tokio::spawn(clawline_gateway::run(state, listener, shutdown.clone()));
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

/// The committed models are exactly what `scripts/make_reward_model.py` writes: anyone can
/// regenerate them and get the same bytes.
#[test]
fn the_committed_models_regenerate_byte_for_byte() {
    let python = std::env::var_os("CLAWLINE_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/clawline/venv/bin/python"))
        })
        .unwrap();
    assert!(
        python.is_file(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let root = repo_root();
    let out = tempfile::tempdir().unwrap();
    let lexicon = out.path().join("lexicon");
    let tiny = out.path().join("tiny");
    let script = root.join("scripts/make_reward_model.py");
    let run = |args: Vec<String>| {
        let o = std::process::Command::new(&python)
            .arg(&script)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(vec![
        "lexicon".into(),
        "--out".into(),
        lexicon.display().to_string(),
    ]);
    run(vec![
        "transformer".into(),
        "--tokenizer".into(),
        lexicon.join("tokenizer.json").display().to_string(),
        "--out".into(),
        tiny.display().to_string(),
    ]);
    for (generated, committed) in [
        (&lexicon, "data/reward-model"),
        (&tiny, "data/reward-model-tiny-transformer"),
    ] {
        for file in ["model.onnx", "tokenizer.json", "config.json"] {
            assert!(
                std::fs::read(generated.join(file)).unwrap()
                    == std::fs::read(root.join(committed).join(file)).unwrap(),
                "{committed}/{file} differs from what the script generates"
            );
        }
    }
}
