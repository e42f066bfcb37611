//! The running trainer: resume from the checkpoint, finish a version it had started publishing,
//! then follow BATCHES. Each batch is trained (on a blocking thread, with progress acks so the
//! delivery does not lapse), held unacked until a checkpoint covers it, and acked after.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, Message};
use clawline_nats::{DurableSpec, buckets, durable_consumer_after, streams, subjects};
use clawline_runtime::{CancellationToken, Metrics, TaskSet, start_nats};
use clawline_schemas::{BatchFormed, Envelope, TrainingMetrics, WeightsPublished, now_ms};
use futures::StreamExt;
use serde::Serialize;

use crate::Settings;
use crate::checkpoint::{Checkpoints, State, resume};
use crate::learner::{Learner, Trained, published_file_name};
use crate::metrics::TrainerMetrics;
use crate::publish::{last_published_version, publish};
use crate::realign::{Rejections, serving_version};

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    pub version: u64,
    pub updates: u64,
    pub last_batch_seq: u64,
    pub updates_since_version: u64,
    /// The learning rate's scale after backoffs (1: `--lr`).
    pub lr_scale: f64,
    /// Updates undone for leaving `--max-kl-serving`, since the first start.
    pub backoffs: u64,
    pub last: Option<TrainingMetrics>,
}

/// Trains until `shutdown`, serving `/status` and `/metrics` on `listener`.
pub async fn run(
    config: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let device = clawline_model::device(&config.device)?;
    let checkpoints = Checkpoints::open(&config.checkpoint_dir)?;
    let (client, js) = start_nats(&config.nats, "clawline-trainer").await?;

    let (learner, state, dir, checkpoints) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let (learner, state, dir) = resume(&config, device, &checkpoints)?;
            anyhow::Ok((learner, state, dir, checkpoints))
        })
        .await??
    };
    tracing::info!(
        version = state.version,
        last_batch_seq = state.last_batch_seq,
        updates = state.updates,
        resumed = dir.is_some(),
        "trainer ready"
    );

    let registry = Metrics::new("clawline_trainer");
    let metrics = TrainerMetrics::new(&registry);
    let mut tasks = TaskSet::new(shutdown.clone());
    let status = tasks.serve_status::<Status>(listener, registry);

    let rejections = Rejections::default();
    tasks.spawn(
        "rejections",
        rejections.clone().follow(client.clone(), shutdown.clone()),
    );
    let mut trainer = Trainer {
        js: js.clone(),
        kv: js
            .get_key_value(buckets::STATE)
            .await
            .context("opening KV state")?,
        rejections,
        checkpoint_dir: config.checkpoint_dir.clone(),
        client,
        ack_wait: Duration::from_secs(config.ack_wait_secs),
        publish_every: config.publish_every,
        max_ahead: config.max_ahead,
        bounds: config.bounds(),
        checkpoint_every: config.checkpoint_every as usize,
        checkpoints: Arc::new(checkpoints),
        learner: Some(learner),
        state,
        dir,
        held: Vec::new(),
        force_checkpoint: false,
        metrics,
        status,
        producer: format!("clawline-trainer/{}", env!("CARGO_PKG_VERSION")),
    };
    trainer.refresh_status();
    if trainer.state.pending.is_some() {
        trainer.finish_publish(&shutdown).await?;
    }
    let spec = DurableSpec {
        ack_wait: trainer.ack_wait,
        // Never give up on a batch: one skipped by JetStream would be a batch never trained.
        max_deliver: -1,
        max_ack_pending: config.checkpoint_every as i64,
        ..DurableSpec::new(streams::BATCHES, config.durable.clone())
            .filter(config.channels.iter().map(|c| subjects::batches(c)))
    };
    let consumer = durable_consumer_after(&js, &spec, trainer.state.last_batch_seq)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {} on BATCHES: {e}", config.durable))?;
    let mut messages = consumer.messages().await.context("reading BATCHES")?.fuse();
    let main = async {
        loop {
            let idle = if trainer.held.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = tokio::time::timeout(idle, messages.next()) => match next {
                    // A quiet second with batches held: checkpoint them.
                    Err(_) => trainer.checkpoint().await?,
                    Ok(Some(Ok(message))) => trainer.handle(message, &shutdown).await?,
                    Ok(Some(Err(e))) => tracing::warn!(error = %e, "BATCHES delivery"),
                    Ok(None) => anyhow::bail!("the BATCHES consumer ended"),
                },
            }
        }
        trainer.checkpoint().await
    };
    let result = main.await;
    tasks.finish(result).await
}

pub(crate) struct Trainer {
    pub(crate) js: jetstream::Context,
    pub(crate) kv: async_nats::jetstream::kv::Store,
    pub(crate) rejections: Rejections,
    pub(crate) checkpoint_dir: PathBuf,
    client: async_nats::Client,
    ack_wait: Duration,
    publish_every: u64,
    /// Versions this trainer may run ahead of the serving one before it waits (0: no limit).
    max_ahead: u64,
    /// `--max-kl-base` and `--max-drift-base` (0: off).
    bounds: crate::trust::Bounds,
    checkpoint_every: usize,
    checkpoints: Arc<Checkpoints>,
    /// Taken while a blocking task uses it.
    learner: Option<Learner>,
    pub(crate) state: State,
    /// The current checkpoint.
    dir: Option<PathBuf>,
    /// Batches done but not yet covered by a checkpoint: acked after the next one.
    held: Vec<Message>,
    /// The weights changed without a batch (a realignment): the next checkpoint must be written.
    pub(crate) force_checkpoint: bool,
    pub(crate) metrics: TrainerMetrics,
    status: Arc<Mutex<Status>>,
    producer: String,
}

impl Trainer {
    async fn handle(
        &mut self,
        message: Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let seq = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                tracing::warn!(error = %e, "a BATCHES message without delivery info; ignored");
                return Ok(());
            }
        };
        if seq <= self.state.last_batch_seq {
            // Covered by the checkpoint: trained before a restart whose ack was lost.
            self.metrics.batch("already_trained");
            let _ = message.ack().await;
            return Ok(());
        }
        self.wait_for_serving(&message, shutdown).await?;
        match clawline_nats::decode_message::<BatchFormed>(&message.payload) {
            Err(e) => {
                tracing::warn!(seq, error = %e, "a BATCHES message is not a BatchFormed; skipped");
                self.metrics.batch("rejected");
            }
            Ok(batch) => {
                let (id, channel) = (batch.envelope.event_id.clone(), batch.channel.clone());
                let backoff = self.state.backoff;
                let version_due = self.state.since.updates() + 1 >= self.publish_every;
                let result = self
                    .blocking(Some(&message), move |learner| {
                        learner.train(&batch, backoff, version_due)
                    })
                    .await
                    .and_then(|r| r);
                match result {
                    Ok(trained) => self.record(seq, &id, &channel, &trained).await,
                    Err(e) => {
                        tracing::error!(seq, batch = %id, error = %format!("{e:#}"), "training failed; batch skipped");
                        self.metrics.batch("failed");
                    }
                }
            }
        }
        self.state.last_batch_seq = seq;
        self.held.push(message);
        if self.state.since.updates() >= self.publish_every {
            let sums = &self.state.since.sums;
            let over = [
                ("kl_base", sums.kl_base, self.bounds.max_kl_base),
                ("drift_base", sums.drift_base, self.bounds.max_drift_base),
            ]
            .into_iter()
            .find_map(|(reason, value, bound)| {
                value
                    .filter(|&v| crate::trust::over(v, bound))
                    .map(|v| (reason, v))
            });
            match over {
                Some((reason, value)) => {
                    self.reset_to_serving(reason, value).await?;
                    self.checkpoint().await?;
                }
                None => self.publish_version(shutdown).await?,
            }
        } else if self.held.len() >= self.checkpoint_every {
            self.checkpoint().await?;
        }
        self.refresh_status();
        Ok(())
    }

    /// Counts a trained batch and sends its metrics to the dashboard subject.
    async fn record(&mut self, seq: u64, batch_id: &str, channel: &str, trained: &Trained) {
        for (reason, n) in &trained.skipped {
            self.metrics.skipped(reason, *n);
        }
        let Some(m) = &trained.metrics else {
            tracing::warn!(seq, batch = %batch_id, skipped = ?trained.skipped, "no learnable step in the batch");
            self.metrics.batch("empty");
            return;
        };
        self.state.backoff = trained.backoff;
        if trained.backed_off {
            tracing::warn!(
                seq,
                batch = %batch_id,
                kl_serving = trained.kl_serving,
                lr = trained.lr,
                lr_scale = trained.backoff.lr_scale(),
                "the update left --max-kl-serving: undone, learning rate halved"
            );
            self.metrics.batch("backed_off");
            self.metrics.backoffs.inc();
            self.state.since.backed_off();
        } else {
            self.metrics.batch("trained");
            self.metrics
                .trained(trained.steps, m.tokens, trained.seconds);
            self.state.updates += 1;
            self.state.since.add(seq, batch_id, trained);
        }
        let report = TrainingMetrics {
            event_time: now_ms(),
            batch_id: batch_id.to_string(),
            batch_seq: seq,
            channel: channel.to_string(),
            version: self.state.version,
            update: self.state.updates,
            steps: trained.steps,
            skipped_steps: trained.skipped_steps(),
            tokens: m.tokens,
            loss: m.loss,
            policy_loss: m.policy_loss,
            ratio_mean: m.ratio_mean,
            clip_fraction: m.clip_fraction,
            kl: m.kl,
            entropy: m.entropy,
            grad_norm: m.grad_norm,
            reward_mean: trained.reward_mean,
            staleness_mean: trained.staleness_mean,
            seconds: trained.seconds,
            tokens_per_second: m.tokens as f64 / trained.seconds.max(1e-9),
            kl_serving: trained.kl_serving,
            kl_base: trained.kl_base,
            drift_base: trained.drift_base,
            backed_off: trained.backed_off,
            backoffs: trained.backoff.total,
            lr: Some(trained.lr),
        };
        tracing::info!(
            seq,
            update = report.update,
            steps = report.steps,
            loss = report.loss,
            ratio = report.ratio_mean,
            reward = report.reward_mean,
            kl_serving = report.kl_serving,
            kl_base = report.kl_base,
            drift_base = report.drift_base,
            measure_seconds = trained.measure_seconds,
            "trained"
        );
        if let Ok(json) = serde_json::to_vec(&report) {
            // Core NATS, best effort: the dashboard's view, not a record.
            let _ = self
                .client
                .publish(subjects::TRAINING_METRICS, json.into())
                .await;
        }
        if let Ok(mut s) = self.status.lock() {
            s.last = Some(report);
        }
    }

    /// Realigns after a rejection, then, with `--max-ahead`, waits until the engines serve a
    /// version close enough to this trainer's newest that the steps arriving are near-on-policy.
    async fn wait_for_serving(
        &mut self,
        current: &Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut progress = tokio::time::Instant::now();
        loop {
            if let Some(rejected) = self.rejections.take() {
                self.realign(rejected).await?;
            }
            if self.max_ahead == 0
                || self.state.version <= serving_version(&self.kv).await? + self.max_ahead
            {
                return Ok(());
            }
            if progress.elapsed() > self.ack_wait / 3 {
                for message in self.held.iter().chain([current]) {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                progress = tokio::time::Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Writes a checkpoint covering every held batch, then acks them.
    async fn checkpoint(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() && self.state.pending.is_none() && !self.force_checkpoint {
            return Ok(());
        }
        self.force_checkpoint = false;
        let checkpoints = self.checkpoints.clone();
        let mut state = self.state.clone();
        let (state, dir) = self
            .blocking(None, move |learner| {
                let dir = checkpoints.write(&mut state, |d| learner.save(d));
                (state, dir)
            })
            .await?;
        self.dir = Some(dir?);
        self.state = state;
        self.metrics.checkpoints.inc();
        for message in self.held.drain(..) {
            if let Err(e) = message.ack().await {
                // Harmless: a redelivered batch at or below the checkpoint is skipped.
                tracing::debug!(error = %e, "ack failed");
            }
        }
        Ok(())
    }

    /// Numbers a version, checkpoints it (its weights file is the version's), publishes it.
    async fn publish_version(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let on_stream = last_published_version(&self.js).await?;
        let version = self.state.version.max(on_stream) + 1;
        let since = &self.state.since;
        self.state.pending = Some(WeightsPublished {
            envelope: Envelope::new(String::new(), &self.producer),
            version,
            parent: self.state.version,
            format: self.state.format,
            bucket: buckets::WEIGHTS_OBJECTS.to_string(),
            object: format!("v{version}/{}", published_file_name(self.state.format)),
            // Filled by the checkpoint from the file it writes.
            sha256: String::new(),
            size: 0,
            base_model: self.state.base_model.clone(),
            lora: self.state.lora.clone(),
            batch_ids: since.batch_ids.clone(),
            first_batch_seq: since.first_batch_seq,
            last_batch_seq: since.last_batch_seq,
            metrics: since.summary(),
        });
        self.checkpoint().await?;
        self.finish_publish(shutdown).await
    }

    /// Publishes the checkpoint's pending version (retrying while NATS is away), then records it.
    async fn finish_publish(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (Some(event), Some(dir)) = (self.state.pending.clone(), self.dir.clone()) else {
            return Ok(());
        };
        let mut delay = Duration::from_millis(200);
        while let Err(e) = publish(&self.js, &dir, &event).await {
            tracing::warn!(version = event.version, error = %format!("{e:#}"), "publishing weights; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        tracing::info!(
            version = event.version,
            parent = event.parent,
            sha256 = %event.sha256,
            size = event.size,
            batches = event.batch_ids.len(),
            "weights published"
        );
        self.metrics.published(event.version);
        self.state.version = event.version;
        self.state.since = Default::default();
        self.state.pending = None;
        self.checkpoints.rewrite_state(&dir, &self.state)?;
        self.refresh_status();
        Ok(())
    }

    /// Runs `f` on the learner on a blocking thread, keeping `current` and the held batches'
    /// deliveries alive meanwhile. A panic inside libtorch becomes an error, the learner kept.
    pub(crate) async fn blocking<T: Send + 'static>(
        &mut self,
        current: Option<&Message>,
        f: impl FnOnce(&mut Learner) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let mut learner = self.learner.take().context("the learner is busy")?;
        let mut task = tokio::task::spawn_blocking(move || {
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut learner)));
            (learner, out)
        });
        let mut tick = tokio::time::interval(self.ack_wait / 3);
        tick.tick().await;
        let (learner, out) = loop {
            tokio::select! {
                joined = &mut task => break joined.context("the training thread died")?,
                _ = tick.tick() => {
                    for message in self.held.iter().chain(current) {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        self.learner = Some(learner);
        out.map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            anyhow::anyhow!("libtorch failed: {what}")
        })
    }

    pub(crate) fn refresh_status(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.version = self.state.version;
            s.updates = self.state.updates;
            s.last_batch_seq = self.state.last_batch_seq;
            s.updates_since_version = self.state.since.updates();
            s.lr_scale = self.state.backoff.lr_scale();
            s.backoffs = self.state.backoff.total;
        }
        self.metrics.version.set(self.state.version as i64);
    }
}
