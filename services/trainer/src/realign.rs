//! Staying on the serving lineage. When the broadcaster rejects a version this trainer published
//! (canary, integrity, an engine refusing it), the engines keep serving an older version S and the
//! steps that arrive next come from S. Training on from the rejected weights would compute PPO
//! ratios against a policy the data never came from (they clip, and learning stalls), so the
//! trainer returns to S: its weights from the object store (the base model when S = 0) and fresh
//! optimizer moments. Batches trained since S went into rejected versions; they are not trained
//! again.
//!
//! The same return happens when a version about to be published is too far from the base model
//! (`--max-kl-base`): it is not published, and training goes on from S.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::WeightsRejected;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::learner::published_file_name;
use crate::service::Trainer;

/// The newest rejected version seen on `clawline.weights.rejected`, not yet acted on.
#[derive(Clone, Default)]
pub struct Rejections(Arc<Mutex<Option<u64>>>);

impl Rejections {
    pub fn take(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }

    /// Follows the rejections (core NATS) until `shutdown`.
    pub async fn follow(
        self,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut sub = client
            .subscribe(subjects::WEIGHTS_REJECTED)
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", subjects::WEIGHTS_REJECTED))?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = sub.next() => {
                    let Some(m) = m else { return Ok(()) };
                    if let Ok(r) = clawline_nats::decode_message::<WeightsRejected>(&m.payload)
                        && let Ok(mut newest) = self.0.lock()
                    {
                        *newest = Some(newest.map_or(r.version, |v| v.max(r.version)));
                    }
                }
            }
        }
    }
}

/// The version the engines serve (KV `policy.version`; 0 when none was ever set).
pub async fn serving_version(kv: &kv::Store) -> anyhow::Result<u64> {
    Ok(kv
        .get(buckets::POLICY_VERSION_KEY)
        .await
        .context("reading KV policy.version")?
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
        .unwrap_or(0))
}

/// Writes object `name` of the weights store to `path`.
pub async fn download(js: &jetstream::Context, name: &str, path: &Path) -> anyhow::Result<()> {
    let store = js.get_object_store(buckets::WEIGHTS_OBJECTS).await?;
    let mut object = store
        .get(name)
        .await
        .with_context(|| format!("reading {name}"))?;
    let mut file = tokio::fs::File::create(path).await?;
    tokio::io::copy(&mut object, &mut file).await?;
    file.flush().await?;
    Ok(())
}

impl Trainer {
    /// After `rejected` was refused: back to the serving version when it predates `rejected` and
    /// `rejected` is on this trainer's current lineage.
    pub(crate) async fn realign(&mut self, rejected: u64) -> anyhow::Result<()> {
        let serving = serving_version(&self.kv).await?;
        if !(serving < rejected && rejected <= self.state.version) {
            return Ok(());
        }
        let dropped = self.state.since.updates();
        self.return_to(serving).await?;
        tracing::warn!(
            rejected,
            serving,
            dropped_updates = dropped,
            "a version was rejected: training continues from the serving version"
        );
        self.metrics.realignments.inc();
        Ok(())
    }

    /// Instead of publishing a version that left the trust region (`reason`, at `kl`): back to
    /// the version the engines serve, or to this trainer's last published one if that is older
    /// than the serving one (the serving one is then not on this lineage), with the learning rate
    /// halved.
    pub(crate) async fn reset_to_serving(
        &mut self,
        reason: &'static str,
        kl: f64,
    ) -> anyhow::Result<()> {
        let serving = serving_version(&self.kv).await?;
        let target = if serving <= self.state.version {
            serving
        } else {
            self.state.version
        };
        let dropped = self.state.since.updates();
        self.return_to(target).await?;
        // The steps that led out were too long: the next ones are shorter.
        self.state.backoff.exceeded();
        tracing::warn!(
            reason,
            kl,
            version = target,
            dropped_updates = dropped,
            "a version left the trust region: not published, training continues from the serving version"
        );
        self.metrics.reset(reason);
        self.refresh_status();
        Ok(())
    }

    /// The weights of version `target` (the base model for 0), fresh optimizer moments, and the
    /// training since the last version forgotten. The next checkpoint is forced.
    async fn return_to(&mut self, target: u64) -> anyhow::Result<()> {
        let file = if target == 0 {
            None
        } else {
            let object = format!("v{target}/{}", published_file_name(self.state.format));
            let path = self.checkpoint_dir.join(".serving.safetensors");
            download(&self.js, &object, &path).await?;
            Some(path)
        };
        let reset = file.clone();
        self.blocking(None, move |learner| learner.reset(reset.as_deref()))
            .await??;
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        self.state.version = target;
        self.state.since = Default::default();
        self.force_checkpoint = true;
        Ok(())
    }
}
