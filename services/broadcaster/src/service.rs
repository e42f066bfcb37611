//! The running broadcaster: follows `clawline.weights.published`, answers operator requests, and
//! promotes versions (download + integrity, canary, every engine, then KV).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, kv};
use clawline_nats::{DurableSpec, buckets, durable_consumer, publish_event, streams, subjects};
use clawline_runtime::{CancellationToken, Metrics, TaskSet, start_nats};
use clawline_schemas::{
    CanaryResult, Envelope, WeightsActivated, WeightsFormat, WeightsPublished, WeightsRejected,
    derived_id, new_event_id, now_ms,
};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;

use crate::Settings;
use crate::canary::{Canary, Candidate, Limits, regressions};
use crate::control::{EngineOutcome, History};
use crate::engine::{self, EngineSpec};
use crate::versions::{FetchError, Versions};

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    pub serving: u64,
    pub promoted: Vec<u64>,
    pub last_canary: Option<CanaryResult>,
    pub last_rejection: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Labels {
    engine: String,
    outcome: &'static str,
}

/// Why a version is being activated, and whether the canary gates it.
#[derive(Clone)]
pub(crate) enum Trigger {
    /// A new version: event ids derive from its event, so a redelivery publishes nothing twice.
    Published,
    Operator(&'static str),
}

/// Puts published versions into service until `shutdown`, serving `/status` on `listener`.
pub async fn run(
    config: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let versions = Versions::new(&config.work_dir, &config.base_model)?;
    let canary = if config.canary {
        let c = config.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Canary::load(
                &c.base_model,
                c.canary_prompts.as_deref(),
                c.canary_references.as_deref(),
                Limits {
                    samples: c.canary_samples,
                    max_tokens: c.canary_max_tokens,
                    tolerance: c.canary_tolerance,
                    max_nll_increase: c.canary_max_nll_increase,
                    max_kl: c.canary_max_kl,
                    max_degenerate_increase: c.canary_max_degenerate_increase,
                    max_fluency_increase: c.canary_max_fluency_increase,
                },
            )
        })
        .await??;
        Some(Arc::new(loaded))
    } else {
        None
    };
    let (client, js) = start_nats(&config.nats, "clawline-broadcaster").await?;
    let kv = js
        .get_key_value(buckets::STATE)
        .await
        .context("opening KV state")?;
    let serving = match kv.get(buckets::POLICY_VERSION_KEY).await? {
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        None => {
            // The starting weights serve until a version is promoted: say so, so that steps
            // captured before the first promotion are stamped with version 0, not left unknown.
            // (`create`: another broadcaster that got there first wins.)
            if let Err(err) = kv.create(buckets::POLICY_VERSION_KEY, "0".into()).await
                && err.kind() != async_nats::jetstream::kv::CreateErrorKind::AlreadyExists
            {
                return Err(err).context("setting policy.version to 0");
            }
            0
        }
    };
    let history = History::read(&js).await?;

    let registry = Metrics::new("clawline_broadcaster");
    let activations = Family::<Labels, Counter>::default();
    registry.register(
        "activations",
        "Version activations by engine and outcome",
        activations.clone(),
    );
    let mut tasks = TaskSet::new(shutdown.clone());
    let status = tasks.serve_status::<Status>(listener, registry);

    let mut b = Broadcaster {
        js: js.clone(),
        client: client.clone(),
        http: reqwest::Client::new(),
        engines: config.engines.clone(),
        versions,
        canary,
        kv,
        promoted: history.promoted(),
        published: history.published,
        serving,
        keep: config.keep_versions,
        activations,
        status,
        producer: format!("clawline-broadcaster/{}", env!("CARGO_PKG_VERSION")),
    };
    b.refresh_status(None, None);
    tracing::info!(
        serving,
        engines = b.engines.len(),
        canary = config.canary,
        "broadcaster ready"
    );

    let spec = DurableSpec {
        ack_wait: Duration::from_secs(900),
        max_deliver: -1,
        max_ack_pending: 1,
        ..DurableSpec::new(streams::WEIGHTS, config.durable.clone())
            .filter([subjects::WEIGHTS_PUBLISHED])
    };
    let consumer = durable_consumer(&js, &spec)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {} on WEIGHTS: {e}", config.durable))?;
    let mut messages = consumer.messages().await.context("reading WEIGHTS")?;
    let mut control = client
        .subscribe(subjects::WEIGHTS_CONTROL)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", subjects::WEIGHTS_CONTROL))?;
    let mut check = tokio::time::interval(Duration::from_secs(config.check_engines_secs.max(1)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let main = async {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = check.tick(), if config.check_engines_secs > 0 => b.restore_engines().await,
                m = messages.next() => match m {
                    Some(Ok(m)) => b.on_published(m).await,
                    Some(Err(e)) => tracing::warn!(error = %e, "WEIGHTS delivery"),
                    None => anyhow::bail!("the WEIGHTS consumer ended"),
                },
                r = control.next() => if let Some(r) = r {
                    b.on_control(r).await;
                },
            }
        }
    };
    let result = main.await;
    tasks.finish(result).await
}

pub(crate) struct Broadcaster {
    pub(crate) js: jetstream::Context,
    pub(crate) client: async_nats::Client,
    pub(crate) http: reqwest::Client,
    pub(crate) engines: Vec<EngineSpec>,
    pub(crate) versions: Versions,
    pub(crate) canary: Option<Arc<Canary>>,
    pub(crate) kv: kv::Store,
    pub(crate) published: BTreeMap<u64, WeightsPublished>,
    pub(crate) promoted: Vec<u64>,
    pub(crate) serving: u64,
    pub(crate) keep: usize,
    pub(crate) activations: Family<Labels, Counter>,
    pub(crate) status: Arc<Mutex<Status>>,
    pub(crate) producer: String,
}

impl Broadcaster {
    async fn on_published(&mut self, message: jetstream::Message) {
        let event: WeightsPublished = match clawline_nats::decode_message(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "a WeightsPublished that does not decode; skipped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        self.published.insert(event.version, event.clone());
        if self.promoted.contains(&event.version) {
            let _ = message.ack().await; // Served already (a redelivery after a restart).
            return;
        }
        match self.promote(&event, Trigger::Published).await {
            Ok(_) => {
                let _ = message.ack().await;
            }
            Err(e) => {
                tracing::warn!(version = event.version, error = %format!("{e:#}"), "activation deferred; retrying");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
    }

    /// Puts `event`'s version into service. `Err`: nothing decided yet (try again later).
    pub(crate) async fn promote(
        &mut self,
        event: &WeightsPublished,
        trigger: Trigger,
    ) -> anyhow::Result<Vec<EngineOutcome>> {
        let dir = match self.versions.materialise(&self.js, event).await {
            Ok(dir) => dir,
            Err(FetchError::Integrity(why)) => {
                return self
                    .reject_all(event, &trigger, format!("integrity: {why}"), None)
                    .await;
            }
            Err(FetchError::Other(e)) => return Err(e),
        };
        let mut canary_result = None;
        if let (Some(canary), Trigger::Published) = (self.canary.clone(), &trigger) {
            let serving = self.candidate(self.serving).await?;
            let candidate = Candidate {
                version: event.version,
                dir: Some(dir.clone()),
                format: event.format,
            };
            let started = std::time::Instant::now();
            let result = canary.evaluate(&self.client, &candidate, &serving).await?;
            let q = result.quality.clone().unwrap_or_default();
            tracing::info!(
                version = event.version,
                serving = result.serving_version,
                reward = result.candidate_reward,
                serving_reward = result.serving_reward,
                nll = q.candidate_nll,
                serving_nll = q.serving_nll,
                kl = q.kl,
                fluency = q.candidate_fluency,
                base_fluency = q.base_fluency,
                repetition = q.candidate_degenerate.repetition,
                seconds = started.elapsed().as_secs_f64(),
                "canary"
            );
            let regressed = regressions(&result);
            if !regressed.is_empty() {
                let why = format!("canary: {}", regressed.join("; "));
                self.refresh_status(Some(result.clone()), Some(why.clone()));
                return self.reject_all(event, &trigger, why, Some(result)).await;
            }
            canary.promoted(event.version);
            canary_result = Some(result);
        }
        let mut outcomes = Vec::new();
        for engine in self.engines.clone() {
            let outcome = engine::activate(
                &self.http,
                &engine,
                event.version,
                event.format,
                &dir,
                &event.sha256,
            )
            .await;
            match outcome {
                Ok(()) => {
                    let activated = WeightsActivated {
                        envelope: Envelope::new(
                            self.event_id("wac", event, &trigger, &engine.name),
                            &self.producer,
                        ),
                        version: event.version,
                        engine: engine.name.clone(),
                        sha256: event.sha256.clone(),
                        reason: self.reason(&trigger).into(),
                        seconds: (now_ms() - event.envelope.event_time).max(0) as f64 / 1000.0,
                        canary: canary_result.clone(),
                    };
                    publish_event(&self.js, subjects::WEIGHTS_ACTIVATED.into(), &activated).await?;
                    self.count(&engine.name, "activated");
                    outcomes.push(EngineOutcome {
                        engine: engine.name.clone(),
                        activated: true,
                        reason: None,
                    });
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::warn!(engine = %engine.name, version = event.version, error = %why, "engine refused the version");
                    self.publish_rejected(
                        event,
                        &trigger,
                        &engine.name,
                        why.clone(),
                        canary_result.clone(),
                    )
                    .await?;
                    outcomes.push(EngineOutcome {
                        engine: engine.name.clone(),
                        activated: false,
                        reason: Some(why),
                    });
                }
            }
        }
        if outcomes.iter().all(|o| o.activated) {
            self.served(event).await?;
        }
        self.refresh_status(canary_result, None);
        Ok(outcomes)
    }

    /// Every engine serves `event`: record it and tell the gateway and batcher.
    async fn served(&mut self, event: &WeightsPublished) -> anyhow::Result<()> {
        let previous = self.serving;
        let model = self
            .engines
            .iter()
            .find_map(|e| engine::served_name(e.kind, event.format, event.version))
            .unwrap_or_default();
        self.kv
            .put(buckets::POLICY_MODEL_KEY, model.into())
            .await
            .context("setting KV policy.model")?;
        self.kv
            .put(
                buckets::POLICY_VERSION_KEY,
                event.version.to_string().into(),
            )
            .await
            .context("setting KV policy.version")?;
        self.serving = event.version;
        self.promoted.push(event.version);
        tracing::info!(
            version = event.version,
            previous,
            "version serving on every engine"
        );
        if let Some(old) = self.published.get(&previous) {
            for e in &self.engines {
                if let Some(name) = engine::served_name(e.kind, old.format, old.version) {
                    engine::retire(&self.http, e, &name).await;
                }
            }
        }
        let mut keep: Vec<u64> = self
            .promoted
            .iter()
            .rev()
            .take(self.keep + 1)
            .copied()
            .collect();
        keep.push(self.serving);
        self.versions.prune(&keep);
        Ok(())
    }

    /// The serving version as the canary loads it.
    async fn candidate(&self, version: u64) -> anyhow::Result<Candidate> {
        let Some(event) = self.published.get(&version).filter(|_| version > 0) else {
            return Ok(Candidate {
                version: 0,
                dir: None,
                format: WeightsFormat::Full,
            });
        };
        let dir = self
            .versions
            .materialise(&self.js, event)
            .await
            .map_err(|e| anyhow::anyhow!("the serving version v{version}: {e}"))?;
        Ok(Candidate {
            version,
            dir: Some(dir),
            format: event.format,
        })
    }

    async fn reject_all(
        &mut self,
        event: &WeightsPublished,
        trigger: &Trigger,
        why: String,
        canary: Option<CanaryResult>,
    ) -> anyhow::Result<Vec<EngineOutcome>> {
        tracing::warn!(version = event.version, reason = %why, "version rejected; the serving version stays");
        let mut outcomes = Vec::new();
        for engine in self.engines.clone() {
            self.publish_rejected(event, trigger, &engine.name, why.clone(), canary.clone())
                .await?;
            outcomes.push(EngineOutcome {
                engine: engine.name,
                activated: false,
                reason: Some(why.clone()),
            });
        }
        self.refresh_status(canary, Some(why));
        Ok(outcomes)
    }

    async fn publish_rejected(
        &self,
        event: &WeightsPublished,
        trigger: &Trigger,
        engine: &str,
        reason: String,
        canary: Option<CanaryResult>,
    ) -> anyhow::Result<()> {
        let rejected = WeightsRejected {
            envelope: Envelope::new(self.event_id("wrj", event, trigger, engine), &self.producer),
            version: event.version,
            engine: engine.to_string(),
            sha256: event.sha256.clone(),
            reason,
            canary,
        };
        publish_event(&self.js, subjects::WEIGHTS_REJECTED.into(), &rejected).await?;
        self.count(engine, "rejected");
        Ok(())
    }

    fn event_id(
        &self,
        prefix: &str,
        event: &WeightsPublished,
        trigger: &Trigger,
        engine: &str,
    ) -> String {
        match trigger {
            Trigger::Published => derived_id(prefix, &[&event.envelope.event_id, engine]),
            Trigger::Operator(_) => new_event_id(prefix),
        }
    }

    fn reason(&self, trigger: &Trigger) -> &'static str {
        match trigger {
            Trigger::Published => "published",
            Trigger::Operator(r) => r,
        }
    }

    pub(crate) fn count(&self, engine: &str, outcome: &'static str) {
        self.activations
            .get_or_create(&Labels {
                engine: engine.to_string(),
                outcome,
            })
            .inc();
    }

    fn refresh_status(&self, canary: Option<CanaryResult>, rejection: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            s.serving = self.serving;
            s.promoted = self.promoted.clone();
            if canary.is_some() {
                s.last_canary = canary;
            }
            if rejection.is_some() {
                s.last_rejection = rejection;
            }
        }
    }
}
