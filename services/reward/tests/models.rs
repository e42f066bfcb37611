#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Reward models with real ONNX Runtime: scoring, batching, several models, classifiers, broken files, regeneration.

mod common;

use std::time::Duration;

use clawline_nats::testing::NatsServer;
use clawline_runtime::sample as metric;
use common::*;

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
        let r = of(&all, &s.envelope.event_id, "rm:bundled@");
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
    let r = &of(&all, &good.envelope.event_id, "rm:")[0];
    assert_eq!(r.caused_by, good.envelope.event_id);
    assert_eq!(r.channel.as_deref(), Some("train"));
    assert_eq!(r.scope, RewardScope::Step);
    assert_eq!(
        r.envelope.event_id,
        RewardAssigned::id_for(&good.envelope.event_id, &r.source, &r.source_version)
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
    let r = &of(&all, &s.envelope.event_id, "rm:tiny@")[0];
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
    let lex = &of(&all, &s.envelope.event_id, "rm:lex@")[0];
    assert!(lex.value > 0.0 && lex.value < 1.0, "{}", lex.value);
    assert_ne!(lex.envelope.event_id, r.envelope.event_id);
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

#[test]
fn the_committed_models_regenerate_byte_for_byte() {
    let python = clawline_runtime::testing::python();
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
