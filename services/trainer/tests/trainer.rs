#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The trainer in-process against a real nats-server and real libtorch: versions published with
//! their provenance and learning the reward, bad input counted, LoRA versions as PEFT adapters.

mod common;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use clawline_model::Loaded;
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::{TrainingMetrics, WeightsFormat};
use common::*;
use futures::StreamExt;
use tch::Device;

/// A trainer with a learning rate that moves the tiny model within a few batches.
fn start(nats: &NatsServer, model: &Path, ckpt: &Path, port: u16, extra: &[&str]) -> Running {
    let mut flags = vec!["--lr", "0.01"];
    flags.extend_from_slice(extra);
    start_trainer(nats, model, ckpt, port, &flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_carry_their_batches_and_learn_the_reward() {
    let (nats, js, model, base) = setup().await;
    let batches: Vec<_> = (0..6).map(|i| batch(&base.model, i)).collect();
    let mut reports = nats
        .client()
        .await
        .subscribe(subjects::TRAINING_METRICS)
        .await
        .unwrap();
    publish_batches(&js, &batches).await;

    let ckpt = tempfile::tempdir().unwrap();
    let port = free_port();
    let trainer = start(
        &nats,
        model.path(),
        ckpt.path(),
        port,
        &["--publish-every", "2"],
    );
    let events = wait_versions(&js, 3, 120).await;
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        events.iter().map(|e| e.parent).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let (trained, sent) = trained_and_sent(&events, &batches);
    assert_eq!(trained, sent, "every batch trained once, in order");
    assert_eq!(
        (events[2].first_batch_seq, events[2].last_batch_seq),
        (5, 6)
    );
    assert_eq!(events[0].metrics.updates, 2);
    assert_eq!(events[0].metrics.steps, 4);
    assert!(
        (events[0].metrics.ratio_mean - 1.0).abs() < 0.1,
        "first update is on-policy"
    );

    // The stored object is the file the event describes, and it prefers the rewarded answer.
    let last = &events[2];
    assert_eq!(last.format, WeightsFormat::Full);
    assert_eq!(last.object, "v3/model.safetensors");
    let bytes = object(&js, &last.object).await;
    assert_eq!(
        (sha256(&bytes), bytes.len() as u64),
        (last.sha256.clone(), last.size)
    );
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("model.safetensors"), &bytes);
    std::fs::copy(
        model.path().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let learned = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let (before, after) = (preference(&base.model), preference(&learned.model));
    assert!(
        after > before + 0.5,
        "log p(good) − log p(bad): {before} → {after}"
    );

    // One metrics message per update, on the dashboard subject.
    let mut updates = Vec::new();
    while updates.len() < 6 {
        let m = tokio::time::timeout(Duration::from_secs(10), reports.next())
            .await
            .unwrap()
            .unwrap();
        let m: TrainingMetrics = serde_json::from_slice(&m.payload).unwrap();
        updates.push(m.update);
    }
    assert_eq!(updates, [1, 2, 3, 4, 5, 6]);
    let status: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], 3);
    assert_eq!(status["last_batch_seq"], 6);
    trainer.stop().await.unwrap();

    // A restart resumes after the last batch: the next version holds only the new ones.
    let more: Vec<_> = (6..8).map(|i| batch(&base.model, i)).collect();
    publish_batches(&js, &more).await;
    let trainer = start(
        &nats,
        model.path(),
        ckpt.path(),
        free_port(),
        &["--publish-every", "2"],
    );
    let events = wait_versions(&js, 4, 120).await;
    assert_eq!((events[3].version, events[3].parent), (4, 3));
    assert_eq!(
        events[3].batch_ids,
        [
            more[0].envelope.event_id.clone(),
            more[1].envelope.event_id.clone()
        ]
    );
    trainer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_and_steps_are_counted_and_skipped() {
    let (nats, js, model, base) = setup().await;
    publish_garbage(&js).await;
    let mut b = batch(&base.model, 0);
    b.steps[1].old_logprobs = None; // recomputed: still learnable
    let mut out_of_vocab = step(&base.model, "oov".into(), &GOOD, 1.0);
    out_of_vocab.response_ids = vec![5, 999];
    let mut empty = step(&base.model, "empty".into(), &[], 1.0);
    empty.response_ids.clear();
    let mut too_long = step(&base.model, "long".into(), &GOOD, 1.0);
    too_long.prompt_ids = vec![1; 80];
    b.steps.extend([out_of_vocab, empty, too_long]);
    publish_event(&js, subjects::batches("train"), &b)
        .await
        .unwrap();
    // A batch on a channel the trainer does not train on.
    let mut val = batch(&base.model, 1);
    val.channel = "val".into();
    publish_event(&js, subjects::batches("val"), &val)
        .await
        .unwrap();

    let ckpt = tempfile::tempdir().unwrap();
    let port = free_port();
    let trainer = start(
        &nats,
        model.path(),
        ckpt.path(),
        port,
        &["--publish-every", "1"],
    );
    let events = wait_versions(&js, 1, 120).await;
    assert_eq!(events[0].metrics.steps, 2, "the two good steps");
    assert_eq!(events[0].batch_ids, [b.envelope.event_id.clone()]);
    let rejected = metric(port, "clawline_trainer_batches_total{outcome=\"rejected\"}").await;
    assert_eq!(rejected, Some(1.0));
    for reason in ["token_out_of_vocab", "empty_response", "too_long"] {
        let line = format!("clawline_trainer_skipped_steps_total{{reason=\"{reason}\"}}");
        let value = metric(port, &line).await;
        assert_eq!(value, Some(1.0), "{reason}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        published(&js).await.len(),
        1,
        "the val batch is not trained"
    );
    trainer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_versions_are_peft_adapters_and_a_resume_keeps_the_mode() {
    let (nats, js, model, base) = setup().await;
    let batches: Vec<_> = (0..2).map(|i| batch(&base.model, i)).collect();
    publish_batches(&js, &batches).await;
    let ckpt = tempfile::tempdir().unwrap();
    let lora = [
        "--publish-every",
        "2",
        "--lora-r",
        "4",
        "--lora-targets",
        "q_proj,v_proj",
    ];
    let trainer = start(&nats, model.path(), ckpt.path(), free_port(), &lora);
    let event = wait_versions(&js, 1, 120).await.remove(0);
    trainer.stop().await.unwrap();

    assert_eq!(event.format, WeightsFormat::Lora);
    assert_eq!(event.object, "v1/adapter_model.safetensors");
    let adapter = event.lora.clone().unwrap();
    assert_eq!((adapter.r, adapter.target_modules.len()), (4, 2));
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("adapter_model.safetensors"),
        &object(&js, &event.object).await,
    );
    let config = serde_json::json!({
        "r": adapter.r, "lora_alpha": adapter.alpha, "target_modules": adapter.target_modules,
    });
    write(
        &dir.path().join("adapter_config.json"),
        config.to_string().as_bytes(),
    );
    let adapted = Loaded::load_with_adapter(model.path(), dir.path(), Device::Cpu).unwrap();
    assert!(preference(&adapted.model) > preference(&base.model) + 0.1);

    // The same checkpoint directory with full-weight flags is refused, naming the flag.
    let trainer = start(&nats, model.path(), ckpt.path(), free_port(), &[]);
    let err = tokio::time::timeout(Duration::from_secs(60), trainer.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("--checkpoint-dir"), "{err:#}");
}

#[test]
fn flags_that_cannot_work_are_named() {
    for (flag, value) in [
        ("--publish-every", "0"),
        ("--checkpoint-every", "0"),
        ("--lr", "-1"),
        ("--micro-batch", "0"),
        ("--lora-r", "0"),
        ("--channel", "a.b"),
        ("--max-kl-serving", "-0.1"),
        ("--max-kl-base", "-1"),
        ("--max-kl-base", "NaN"),
    ] {
        let config = clawline_trainer::Args::try_parse_from([
            "clawline-trainer",
            "--model",
            "m",
            &format!("{flag}={value}"),
        ])
        .unwrap()
        .settings();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

/// A second trainer on the same checkpoint dir is refused before it touches anything (it would
/// overwrite the first one's checkpoints).
#[tokio::test]
async fn a_checkpoint_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = clawline_runtime::lock_dir(dir.path()).unwrap();
    let mut config = clawline_trainer::Settings::new("m");
    config.checkpoint_dir = dir.path().into();
    config.nats = clawline_runtime::NatsArgs::at("nats://127.0.0.1:1");
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let err = clawline_trainer::run(config, listener, clawline_runtime::CancellationToken::new())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--checkpoint-dir") && msg.contains("in use by another process"),
        "{msg}"
    );
}
