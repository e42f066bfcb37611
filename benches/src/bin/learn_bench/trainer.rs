//! The trainer service end to end: batches published on BATCHES, `clawline-trainer` (in process,
//! real nats-server) publishing a version after every update. Measures the update inside the
//! service (to compare with the bare `update`) and the time from an update's end (its metrics
//! message) to its `WeightsPublished` being stored: checkpoint, sha256, object store put, event.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clawline_benches::median;
use clawline_model::Sample;
use clawline_nats::server::{LocalServer, LocalServerConfig};
use clawline_nats::{publish_event, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{BatchFormed, BatchStep, Envelope, TrainingMetrics, WeightsPublished};
use futures::StreamExt as _;

pub struct Measured {
    /// Seconds of the update inside the service, per batch.
    pub update_secs: f64,
    /// Update end → `WeightsPublished` stored, per version.
    pub publish_secs: f64,
    pub bytes: u64,
}

pub async fn measure(
    model_dir: &Path,
    device: &str,
    samples: &[Sample],
    rounds: usize,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let mut server_config = LocalServerConfig::new(dir.path().join("nats"));
    server_config.port = None;
    let server = LocalServer::start(server_config).context("nats-server")?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    clawline_nats::ensure_topology(&js, &Default::default()).await?;
    let mut metrics = client.subscribe(subjects::TRAINING_METRICS).await?;
    let mut weights = client.subscribe(subjects::WEIGHTS_PUBLISHED).await?;

    let mut config = clawline_trainer::Settings::new(model_dir);
    config.nats = clawline_runtime::NatsArgs::at(server.url());
    config.checkpoint_dir = dir.path().join("ckpt");
    config.device = device.into();
    config.publish_every = 1;
    let listener = clawline_runtime::bind_loopback().await?;
    let stop = CancellationToken::new();
    let trainer = tokio::spawn(clawline_trainer::run(config, listener, stop.clone()));

    let mut update_secs = Vec::new();
    let mut publish_secs = Vec::new();
    let mut bytes = 0;
    // Round 0 warms up; one batch at a time so the versions do not queue behind each other.
    for round in 0..=rounds {
        publish_event(&js, subjects::batches("train"), &batch(samples, round)).await?;
        let wait = Duration::from_secs(300);
        let m = tokio::time::timeout(wait, metrics.next())
            .await?
            .context("metrics subject closed")?;
        let updated = Instant::now();
        let m: TrainingMetrics = serde_json::from_slice(&m.payload)?;
        let w = tokio::time::timeout(wait, weights.next())
            .await?
            .context("weights subject closed")?;
        let published = updated.elapsed().as_secs_f64();
        let w: WeightsPublished = clawline_nats::decode_message(&w.payload)?;
        anyhow::ensure!(w.version == round as u64 + 1, "version {}", w.version);
        bytes = w.size;
        if round > 0 {
            update_secs.push(m.seconds);
            publish_secs.push(published);
        }
    }
    stop.cancel();
    trainer.await??;
    Ok(Measured {
        update_secs: median(update_secs),
        publish_secs: median(publish_secs),
        bytes,
    })
}

fn batch(samples: &[Sample], round: usize) -> BatchFormed {
    let steps: Vec<BatchStep> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| BatchStep {
            step_id: format!("r{round}-s{i}"),
            tenant: "bench".into(),
            trajectory_uid: format!("r{round}-t{i}"),
            prompt_uid: format!("p{i}"),
            prompt_ids: s.prompt.clone(),
            response_ids: s.response.clone(),
            old_logprobs: Some(s.old_logprobs.clone()),
            reward: s.advantage,
            advantage: s.advantage,
            ..Default::default()
        })
        .collect();
    BatchFormed {
        envelope: Envelope::new(
            BatchFormed::id_for(steps.iter().map(|s| s.step_id.as_str())),
            "learn-bench",
        ),
        channel: "train".into(),
        steps,
        ..Default::default()
    }
}
