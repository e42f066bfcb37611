//! The running service: durable consumers on STEPS and TRAJECTORIES, the `/compute_reward`
//! responder, and `/metrics` + `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use clawline_nats::{DurableSpec, durable_consumer, streams, subjects};
use clawline_runtime::{CancellationToken, Metrics, TaskSet, admin_routes, start_nats};
use clawline_schemas::{FeedbackReceived, RewardAssigned, StepRecorded, TrajectoryCompleted};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::Settings;
use crate::config::FileConfig;
use crate::feedback::ImplicitClassifier;
use crate::model::{BatchObserver, RewardModel, default_runtime_path, init_runtime};
use crate::rules::{Rule, default_rules};
use crate::scorer::{ComputeRequest, Scorer};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    stream: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// What the service counts (`clawline_reward_*` on `/metrics`).
#[derive(Clone)]
pub struct RewardMetrics {
    /// Input messages by outcome: `scored`, `retried`, `poison` (terminated), `skipped`.
    messages: Family<OutcomeLabels, Counter>,
    /// Reward events published (acked by JetStream) per source.
    rewards: Family<SourceLabels, Counter>,
    compute_requests: Family<OutcomeLabels, Counter>,
    batch_size: Histogram,
    batch_seconds: Histogram,
}

impl RewardMetrics {
    fn new(registry: &Metrics) -> Self {
        let m = Self {
            messages: Family::default(),
            rewards: Family::default(),
            compute_requests: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            batch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        registry.register(
            "messages",
            "Input events by stream and outcome",
            m.messages.clone(),
        );
        registry.register(
            "rewards_published",
            "Reward events acked, by source",
            m.rewards.clone(),
        );
        registry.register(
            "compute_requests",
            "compute_reward requests by outcome",
            m.compute_requests.clone(),
        );
        registry.register(
            "model_batch_size",
            "Texts per reward-model run",
            m.batch_size.clone(),
        );
        registry.register(
            "model_batch_seconds",
            "Tokenize + run time per reward-model batch",
            m.batch_seconds.clone(),
        );
        m
    }

    fn count(&self, stream: &'static str, outcome: &'static str) {
        self.messages
            .get_or_create(&OutcomeLabels { stream, outcome })
            .inc();
    }
}

/// A loaded reward service, not yet consuming (tests start it in-process).
pub struct Service {
    scorer: Arc<Scorer>,
    file: FileConfig,
    metrics: RewardMetrics,
    registry: Metrics,
    config: Settings,
}

/// How one input message went.
enum Outcome {
    Done,
    /// Cannot ever succeed (undecodable): terminate now.
    Poison(String),
    /// Might succeed later (a model error, NATS refused a publish): redeliver, up to `max_deliver`.
    Retry(String),
}

impl Service {
    /// Loads and checks everything that scores. Every error names the flag or file at fault.
    pub fn load(config: Settings) -> anyhow::Result<Self> {
        let mut file = match &config.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        for (name, dir) in &config.models {
            file.models
                .push(crate::config::ModelConfig::from_dir(name, dir.clone()));
        }
        let registry = Metrics::new("clawline_reward");
        let metrics = RewardMetrics::new(&registry);
        let observer: BatchObserver = {
            let m = metrics.clone();
            Arc::new(move |n, took| {
                m.batch_size.observe(n as f64);
                m.batch_seconds.observe(took.as_secs_f64());
            })
        };
        let model_configs = file.effective_models();
        let needs_runtime = !model_configs.is_empty() || file.implicit.classifier.is_some();
        let env = if needs_runtime {
            let path = config
                .ort_library
                .clone()
                .unwrap_or_else(default_runtime_path);
            Some(init_runtime(&path)?)
        } else {
            None
        };
        let mut models = Vec::new();
        for cfg in model_configs {
            if let Some(env) = &env {
                let model = RewardModel::load(env, &cfg, Some(observer.clone()))?;
                tracing::info!(source = %model.source, mapping = ?model.mapping, "reward model loaded");
                models.push((model, cfg));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (m, _) in &models {
            if !seen.insert(m.name.clone()) {
                anyhow::bail!("two reward models are named `{}`", m.name);
            }
        }
        let rules = file
            .rules
            .clone()
            .unwrap_or_else(default_rules)
            .iter()
            .map(Rule::compile)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let implicit = if file.implicit.enabled {
            let classifier = match (&file.implicit.classifier, &env) {
                (Some(c), Some(env)) => Some(RewardModel::load(env, &c.model, None)?),
                _ => None,
            };
            Some(ImplicitClassifier::new(&file.implicit, classifier)?)
        } else {
            None
        };
        let scorer = Scorer {
            models,
            rules,
            feedback: file.feedback.clone(),
            implicit_config: file.implicit.clone(),
            implicit,
            producer: format!("clawline-reward/{}", env!("CARGO_PKG_VERSION")),
        };
        Ok(Self {
            scorer: Arc::new(scorer),
            file,
            metrics,
            registry,
            config,
        })
    }

    pub fn scorer(&self) -> &Arc<Scorer> {
        &self.scorer
    }

    /// Consumes and answers until `shutdown`, serving `/metrics` on `listener`.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (client, js) = start_nats(&self.config.nats, "clawline-reward").await?;
        tracing::info!(
            listen = %listener.local_addr()?,
            models = ?self.scorer.models.iter().map(|(m, _)| &m.source).collect::<Vec<_>>(),
            rules = ?self.scorer.rules.iter().map(|r| &r.source).collect::<Vec<_>>(),
            "reward service ready"
        );
        let c = &self.file.consumer;
        let spec = |suffix: &str, stream| DurableSpec {
            ack_wait: Duration::from_secs(c.ack_wait_secs.max(1)),
            max_deliver: c.max_deliver.max(1),
            ..DurableSpec::new(stream, format!("{}-{suffix}", c.durable))
        };
        let steps = spec("steps", streams::STEPS);
        let trajectories = spec("trajectories", streams::TRAJECTORIES)
            .filter([subjects::FEEDBACK, subjects::TRAJECTORY_COMPLETED]);

        let mut tasks = TaskSet::new(shutdown.clone());
        let ctx = Arc::new(Ctx {
            scorer: self.scorer.clone(),
            js: js.clone(),
            metrics: self.metrics.clone(),
            max_deliver: c.max_deliver.max(1),
        });
        let concurrency = c.concurrency.max(1);
        tasks.spawn(
            "steps",
            consume(ctx.clone(), steps, concurrency, "steps", shutdown.clone()),
        );
        tasks.spawn(
            "trajectories",
            consume(
                ctx.clone(),
                trajectories,
                concurrency,
                "trajectories",
                shutdown.clone(),
            ),
        );
        // In force before the admin port answers: a caller that sees the service up is never
        // told "no reward service".
        let requests =
            clawline_nats::answer_on(&client, subjects::REWARD_COMPUTE, Some("reward")).await?;
        tasks.spawn(
            "compute",
            answer_compute(ctx.clone(), client.clone(), requests, shutdown.clone()),
        );
        tasks.serve(listener, admin_routes(Some(self.registry.clone())));
        tasks.join().await
    }
}

/// Loads the service and runs it until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let service = tokio::task::spawn_blocking(move || Service::load(settings)).await??;
    service.run(listener, shutdown).await
}

struct Ctx {
    scorer: Arc<Scorer>,
    js: jetstream::Context,
    metrics: RewardMetrics,
    max_deliver: i64,
}

/// Reads one durable consumer until shutdown, re-binding after errors (NATS restarts).
async fn consume(
    ctx: Arc<Ctx>,
    spec: DurableSpec,
    concurrency: usize,
    stream_name: &'static str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let messages = match durable_consumer(&ctx.js, &spec).await {
            Ok(consumer) => consumer.messages().await.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        let messages = match messages {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(consumer = %spec.durable, error = %err, "cannot read; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let work = messages.for_each_concurrent(concurrency, |message| {
            let ctx = ctx.clone();
            async move {
                match message {
                    Ok(message) => handle(&ctx, stream_name, message).await,
                    Err(err) => {
                        tracing::warn!(consumer = stream_name, error = %err, "message stream error")
                    }
                }
            }
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = work => tracing::warn!(consumer = %spec.durable, "message stream ended; re-binding"),
        }
    }
    Ok(())
}

async fn handle(ctx: &Ctx, stream_name: &'static str, message: Message) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    let outcome = process(ctx, &message).await;
    let result = match outcome {
        Outcome::Done => {
            ctx.metrics.count(stream_name, "scored");
            message.ack().await
        }
        Outcome::Poison(reason) => {
            ctx.metrics.count(stream_name, "poison");
            tracing::error!(stream = stream_name, seq, msg_id, subject = %message.subject, reason, "poison message terminated");
            message.ack_with(AckKind::Term).await
        }
        Outcome::Retry(reason) if delivered >= ctx.max_deliver => {
            ctx.metrics.count(stream_name, "poison");
            tracing::error!(
                stream = stream_name,
                seq,
                msg_id,
                delivered,
                reason,
                "giving up after max deliveries; terminated"
            );
            message.ack_with(AckKind::Term).await
        }
        Outcome::Retry(reason) => {
            ctx.metrics.count(stream_name, "retried");
            tracing::warn!(
                stream = stream_name,
                seq,
                msg_id,
                delivered,
                reason,
                "will retry"
            );
            let delay = Duration::from_millis(250 * (1 << delivered.clamp(0, 6)) as u64);
            message.ack_with(AckKind::Nak(Some(delay))).await
        }
    };
    if let Err(err) = result {
        // The message will be redelivered after ack_wait; its rewards dedupe by id.
        tracing::warn!(stream = stream_name, seq, error = %err, "ack failed");
    }
}

async fn process(ctx: &Ctx, message: &Message) -> Outcome {
    let subject = message.subject.as_str();
    let rewards = if subject.starts_with(subjects::STEPS_PREFIX) {
        let step: StepRecorded = match clawline_nats::decode_message(&message.payload) {
            Ok(s) => s,
            Err(e) => return Outcome::Poison(format!("not a StepRecorded: {e}")),
        };
        match ctx.scorer.score_step(&step).await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry(format!("scoring step {}: {e}", step.envelope.event_id));
            }
        }
    } else if subject == subjects::FEEDBACK {
        match clawline_nats::decode_message::<FeedbackReceived>(&message.payload) {
            Ok(fb) => ctx.scorer.score_feedback(&fb),
            Err(e) => return Outcome::Poison(format!("not a FeedbackReceived: {e}")),
        }
    } else if subject == subjects::TRAJECTORY_COMPLETED {
        match clawline_nats::decode_message::<TrajectoryCompleted>(&message.payload) {
            Ok(done) => ctx.scorer.score_completion(&done),
            Err(e) => return Outcome::Poison(format!("not a TrajectoryCompleted: {e}")),
        }
    } else {
        return Outcome::Poison(format!("unexpected subject {subject}"));
    };
    match publish(ctx, &rewards).await {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Retry(e),
    }
}

/// Publishes every reward and waits for all acks; the input is acked only after this succeeds.
async fn publish(ctx: &Ctx, rewards: &[RewardAssigned]) -> Result<(), String> {
    let results = futures::future::join_all(rewards.iter().map(|r| {
        let kind = r.source.split(':').next().unwrap_or("other");
        clawline_nats::publish_event(&ctx.js, subjects::rewards(kind), r)
    }))
    .await;
    for (reward, result) in rewards.iter().zip(results) {
        match result {
            Ok(_) => {
                ctx.metrics
                    .rewards
                    .get_or_create(&SourceLabels {
                        source: reward.source.clone(),
                    })
                    .inc();
            }
            Err(e) => return Err(format!("publishing {}: {e}", reward.envelope.event_id)),
        }
    }
    Ok(())
}

/// Answers `clawline.reward.compute` requests (queue group `reward`, so workers share them).
async fn answer_compute(
    ctx: Arc<Ctx>,
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = requests.next() => match r { Some(r) => r, None => return Ok(()) },
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let ctx = ctx.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<ComputeRequest>(&request.payload) {
                Ok(req) => match ctx.scorer.compute(req).await {
                    Ok(resp) => {
                        ctx.metrics
                            .compute_requests
                            .get_or_create(&OutcomeLabels {
                                stream: "compute",
                                outcome: "ok",
                            })
                            .inc();
                        serde_json::to_vec(&resp).unwrap_or_default()
                    }
                    Err(e) => error_body(&ctx, &e),
                },
                Err(e) => error_body(&ctx, &format!("bad request: {e}")),
            };
            if let Err(err) = client.publish(reply, answer.into()).await {
                tracing::warn!(error = %err, "compute_reward reply failed");
            }
        });
    }
}

fn error_body(ctx: &Ctx, message: &str) -> Vec<u8> {
    ctx.metrics
        .compute_requests
        .get_or_create(&OutcomeLabels {
            stream: "compute",
            outcome: "error",
        })
        .inc();
    serde_json::to_vec(&serde_json::json!({"error": {"message": message}})).unwrap_or_default()
}
