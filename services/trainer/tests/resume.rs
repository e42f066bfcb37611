#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! A trainer killed with SIGKILL again and again, mid-stream, ends with exactly the weights of one
//! that was never interrupted: every batch trained once, none skipped, in the same order, from the
//! same optimizer state. Compared bit for bit through the published versions' sha256.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawline_model::Loaded;
use clawline_nats::testing::NatsServer;
use common::*;
use tch::Device;

const BATCHES: usize = 16;
const PUBLISH_EVERY: &str = "4";

struct Trainer {
    child: Child,
    port: u16,
}

impl Trainer {
    fn spawn(nats: &NatsServer, model: &Path, ckpt: &Path, log: &Path) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_clawline-trainer"))
            .args(["--nats-url", &nats.url(), "--device", "cpu", "--lr", "0.01"])
            .args(["--publish-every", PUBLISH_EVERY])
            .arg("--model")
            .arg(model)
            .arg("--checkpoint-dir")
            .arg(ckpt)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, port }
    }

    /// `/status`, once the trainer answers.
    async fn status(&self) -> Option<serde_json::Value> {
        reqwest::get(format!("http://127.0.0.1:{}/status", self.port))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Polls until `updates` reaches `at_least`, then SIGKILLs (mid-way through later batches).
    async fn kill_after(mut self, at_least: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.status().await
                && s["updates"].as_u64().unwrap_or(0) >= at_least
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress to {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_trainer_trains_every_batch_exactly_once() {
    let model = model_dir();
    let base = Loaded::load(model.path(), Device::Cpu).unwrap();
    let batches: Vec<_> = (0..BATCHES).map(|i| batch(&base.model, i)).collect();
    let versions = BATCHES / 4;
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("trainer.log");

    // The reference: one run, never interrupted.
    let reference = {
        let nats = NatsServer::start().await;
        let js = nats.jetstream().await;
        publish_batches(&js, &batches).await;
        let _trainer = Trainer::spawn(&nats, model.path(), &work.path().join("ref"), &log);
        wait_versions(&js, versions, 120).await
    };

    // The same batches, the trainer SIGKILLed after various amounts of progress.
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    publish_batches(&js, &batches[..10]).await;
    let ckpt = work.path().join("killed");
    for at in [1, 3, 6] {
        Trainer::spawn(&nats, model.path(), &ckpt, &log)
            .kill_after(at)
            .await;
    }
    publish_batches(&js, &batches[10..]).await;
    let trainer = Trainer::spawn(&nats, model.path(), &ckpt, &log);
    trainer.kill_after(12).await;
    let trainer = Trainer::spawn(&nats, model.path(), &ckpt, &log);
    let events = wait_versions(&js, versions, 120).await;
    let status = trainer.status().await.unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();

    let (trained, sent) = trained_and_sent(&events, &batches);
    assert_eq!(
        trained, sent,
        "each batch in exactly one version, in order\n{log}"
    );
    assert_eq!(status["updates"], BATCHES as u64, "{status}");
    for (got, want) in events.iter().zip(&reference) {
        assert_eq!(got.version, want.version);
        assert_eq!(
            got.sha256, want.sha256,
            "v{}: weights differ from the uninterrupted run\n{log}",
            got.version
        );
    }
    assert_eq!(events.len(), versions, "no version published twice");
}
