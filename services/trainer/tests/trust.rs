#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The trust region against a real nats-server and real libtorch: an update too far from the
//! serving policy is undone bit for bit and the learning rate backs off (and stays backed off
//! across a restart); a version too far from the base model is not published and the trainer
//! returns to the serving version.

mod common;

use std::path::Path;
use std::time::Duration;

use clawline_model::Loaded;
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, subjects};
use clawline_schemas::TrainingMetrics;
use common::*;
use futures::StreamExt;
use tch::{Device, Tensor};

impl Running {
    async fn status(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && let Ok(v) = r.json().await
            {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "no /status");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/status` once the trainer has loaded its checkpoint (it answers before, with no
    /// learning-rate scale yet).
    async fn resumed(&self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.status().await;
            if s["lr_scale"].as_f64().is_some_and(|x| x > 0.0) {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "not resumed: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/status` until the batch at `seq` is done and checkpointed.
    async fn wait_batch(&self, seq: u64) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.status().await;
            if s["last_batch_seq"].as_u64() >= Some(seq) {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "batch {seq}: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn start(nats: &NatsServer, model: &Path, ckpt: &Path, flags: &[&str]) -> Running {
    start_trainer(nats, model, ckpt, free_port(), flags)
}

/// The tensors of a safetensors file, by name.
fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs");
    }
}

/// The weights file of the checkpoint `CURRENT` names.
fn checkpoint_weights(ckpt: &Path) -> std::path::PathBuf {
    let name = std::fs::read_to_string(ckpt.join("CURRENT")).unwrap();
    ckpt.join(name.trim()).join("weights.safetensors")
}

async fn next_report(sub: &mut async_nats::Subscriber) -> TrainingMetrics {
    let m = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&m.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_over_max_kl_serving_is_undone_and_the_lr_backs_off_across_restarts() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let mut reports = nats
        .client()
        .await
        .subscribe(subjects::TRAINING_METRICS)
        .await
        .unwrap();
    let model = model_dir();
    let base = Loaded::load(model.path(), Device::Cpu).unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    let keep = tempfile::tempdir().unwrap();
    let bound = ["--max-kl-serving", "0.05", "--publish-every", "100"];

    // An ordinary update stays in bound and is kept.
    publish_batches(&js, &[batch(&base.model, 0)]).await;
    let trainer = start(
        &nats,
        model.path(),
        ckpt.path(),
        &[&bound[..], &["--lr", "0.01"]].concat(),
    );
    let status = trainer.wait_batch(1).await;
    let ordinary = next_report(&mut reports).await;
    trainer.stop().await.unwrap();
    assert_eq!(
        (status["updates"].as_u64(), status["backoffs"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(!ordinary.backed_off);
    let kl = ordinary.kl_serving.unwrap();
    assert!(kl > 0.0 && kl < 0.05, "ordinary update: KL {kl}");
    let after_ordinary = keep.path().join("w.safetensors");
    std::fs::copy(checkpoint_weights(ckpt.path()), &after_ordinary).unwrap();
    let moved = tensors(&after_ordinary)
        .iter()
        .zip(tensors(&model.path().join("model.safetensors")))
        .any(|((_, a), (_, b))| !a.equal(&b));
    assert!(moved, "the ordinary update changed the weights");

    // A learning rate 100× as large leaves the bound: the update is undone, the batch acked.
    publish_batches(&js, &[batch(&base.model, 1)]).await;
    let huge = [&bound[..], &["--lr", "1"]].concat();
    let trainer = start(&nats, model.path(), ckpt.path(), &huge);
    let status = trainer.wait_batch(2).await;
    let report = next_report(&mut reports).await;
    assert!(report.backed_off, "{report:?}");
    assert!(report.kl_serving.unwrap() > 0.05, "{report:?}");
    assert_eq!((report.lr, report.backoffs), (Some(1.0), 1));
    assert_eq!(status["lr_scale"], 0.5, "{status}");
    assert_eq!(
        (status["updates"].as_u64(), status["backoffs"].as_u64()),
        (Some(1), Some(1))
    );
    let port = trainer.port;
    assert_eq!(
        metric(port, "clawline_trainer_backoffs_total").await,
        Some(1.0)
    );
    let backed = "clawline_trainer_batches_total{outcome=\"backed_off\"}";
    assert_eq!(metric(port, backed).await, Some(1.0));
    // Weights and AdamW state exactly as before the update.
    assert_same_weights(&checkpoint_weights(ckpt.path()), &after_ordinary);
    let opt = checkpoint_weights(ckpt.path()).with_file_name("optimizer.safetensors");
    let steps = tensors(&opt)
        .into_iter()
        .find(|(n, _)| n == "steps")
        .unwrap()
        .1;
    assert_eq!(steps.int64_value(&[]), 1, "the undone step is not counted");
    trainer.stop().await.unwrap();

    // A restart resumes at the lowered rate: the next update runs with lr 1 × 0.5.
    let trainer = start(&nats, model.path(), ckpt.path(), &huge);
    let status = trainer.resumed().await;
    assert_eq!(
        (status["lr_scale"].as_f64(), status["backoffs"].as_u64()),
        (Some(0.5), Some(1))
    );
    publish_batches(&js, &[batch(&base.model, 2)]).await;
    trainer.wait_batch(3).await;
    let report = next_report(&mut reports).await;
    assert_eq!(report.lr, Some(0.5), "{report:?}");
    trainer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_over_max_kl_base_is_not_published_and_the_trainer_returns_to_serving() {
    over_a_bound_to_the_base("--max-kl-base", "kl_base").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_over_max_drift_base_is_not_published_and_the_trainer_returns_to_serving() {
    over_a_bound_to_the_base("--max-drift-base", "drift_base").await;
}

/// A version past `flag` (a bound to the base model) is not published; the trainer returns to
/// the serving version's weights with the learning rate halved (`reason` counted).
async fn over_a_bound_to_the_base(flag: &str, reason: &str) {
    let (nats, js, model, base) = setup().await;
    let ckpt = tempfile::tempdir().unwrap();
    let batches: Vec<_> = (0..5).map(|i| batch(&base.model, i)).collect();
    let off = [
        "--max-kl-serving",
        "0",
        "--publish-every",
        "1",
        "--lr",
        "0.01",
    ];

    // v1, served (as the broadcaster would record it).
    publish_batches(&js, &batches[..1]).await;
    let trainer = start(&nats, model.path(), ckpt.path(), &off);
    let v1 = wait_versions(&js, 1, 120).await.remove(0);
    trainer.stop().await.unwrap();
    let kv = js.get_key_value(buckets::STATE).await.unwrap();
    kv.put(buckets::POLICY_VERSION_KEY, "1".into())
        .await
        .unwrap();

    // Two updates at a large rate, a tight bound on the distance to the base: no v2.
    publish_batches(&js, &batches[1..3]).await;
    let tight = [
        "--max-kl-serving",
        "0",
        "--publish-every",
        "2",
        "--lr",
        "0.1",
        flag,
        "0.001",
    ];
    let trainer = start(&nats, model.path(), ckpt.path(), &tight);
    let status = trainer.wait_batch(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        published(&js).await.len(),
        1,
        "the version over the bound is not published"
    );
    assert_eq!(status["version"], 1, "{status}");
    assert_eq!(status["updates_since_version"], 0, "{status}");
    assert_eq!(status["lr_scale"].as_f64(), Some(0.5), "{status}");
    let resets = format!("clawline_trainer_resets_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(trainer.port, &resets).await, Some(1.0));
    // Back on v1's weights exactly.
    let served = tempfile::tempdir().unwrap();
    let v1_file = served.path().join("v1.safetensors");
    write(&v1_file, &object(&js, &v1.object).await);
    assert_same_weights(&checkpoint_weights(ckpt.path()), &v1_file);
    trainer.stop().await.unwrap();

    // Within bound again, the next version descends from v1, not from the dropped updates.
    publish_batches(&js, &batches[3..5]).await;
    let loose = [
        "--max-kl-serving",
        "0",
        "--publish-every",
        "2",
        "--lr",
        "0.01",
        flag,
        "10",
    ];
    let trainer = start(&nats, model.path(), ckpt.path(), &loose);
    let events = wait_versions(&js, 2, 120).await;
    assert_eq!((events[1].version, events[1].parent), (2, 1));
    assert_eq!(
        events[1].batch_ids,
        [
            batches[3].envelope.event_id.clone(),
            batches[4].envelope.event_id.clone()
        ]
    );
    let m = &events[1].metrics;
    let (kl_base, drift_base) = (m.kl_base.unwrap(), m.drift_base.unwrap());
    assert!(kl_base > 0.0 && kl_base < 10.0, "{kl_base}");
    assert!(drift_base.abs() < 10.0, "{drift_base}");
    trainer.stop().await.unwrap();
}
