//! What the trainer counts (`clawline_trainer_*` on `/metrics`).

use clawline_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone)]
pub struct TrainerMetrics {
    /// Batches by outcome: `trained`, `empty` (no learnable step), `rejected` (undecodable),
    /// `failed` (the update failed), `backed_off` (undone: over `--max-kl-serving`),
    /// `already_trained` (covered by the checkpoint).
    batches: Family<OutcomeLabels, Counter>,
    skipped_steps: Family<ReasonLabels, Counter>,
    steps: Counter,
    tokens: Counter,
    update_seconds: Histogram,
    pub checkpoints: Counter,
    /// Returns to the serving version after one of this trainer's versions was rejected.
    pub realignments: Counter,
    /// Updates undone for leaving `--max-kl-serving`.
    pub backoffs: Counter,
    /// Versions not published for leaving a bound (`kl_base`), the trainer back on the serving one.
    resets: Family<ReasonLabels, Counter>,
    versions: Counter,
    pub version: Gauge,
}

impl TrainerMetrics {
    pub fn new(registry: &Metrics) -> Self {
        let m = Self {
            batches: Family::default(),
            skipped_steps: Family::default(),
            steps: Counter::default(),
            tokens: Counter::default(),
            update_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            checkpoints: Counter::default(),
            realignments: Counter::default(),
            backoffs: Counter::default(),
            resets: Family::default(),
            versions: Counter::default(),
            version: Gauge::default(),
        };
        registry.register("batches", "BATCHES messages by outcome", m.batches.clone());
        registry.register(
            "skipped_steps",
            "Steps left out of an update, by reason",
            m.skipped_steps.clone(),
        );
        registry.register("steps", "Steps trained on", m.steps.clone());
        registry.register("tokens", "Response tokens trained on", m.tokens.clone());
        registry.register(
            "update_seconds",
            "Time of one update (one batch)",
            m.update_seconds.clone(),
        );
        registry.register("checkpoints", "Checkpoints written", m.checkpoints.clone());
        registry.register(
            "realignments",
            "Returns to the serving version after a rejected version",
            m.realignments.clone(),
        );
        registry.register(
            "backoffs",
            "Updates undone for leaving --max-kl-serving (learning rate halved)",
            m.backoffs.clone(),
        );
        registry.register(
            "resets",
            "Versions not published for leaving a trust region bound, by reason",
            m.resets.clone(),
        );
        registry.register(
            "versions_published",
            "Weight versions published",
            m.versions.clone(),
        );
        registry.register("version", "The last version published", m.version.clone());
        m
    }

    pub fn batch(&self, outcome: &'static str) {
        self.batches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn skipped(&self, reason: &'static str, n: u64) {
        self.skipped_steps
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
    }

    pub fn trained(&self, steps: u64, tokens: u64, seconds: f64) {
        self.steps.inc_by(steps);
        self.tokens.inc_by(tokens);
        self.update_seconds.observe(seconds);
    }

    pub fn reset(&self, reason: &'static str) {
        self.resets.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn published(&self, version: u64) {
        self.versions.inc();
        self.version.set(version as i64);
    }
}
