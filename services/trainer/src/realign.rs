//! Staying on the serving lineage. When the broadcaster rejects a version this trainer published
//! (canary, integrity, an engine refusing it), the engines keep serving an older version S and the
//! steps that arrive next come from S. Training on from the rejected weights would compute PPO
//! ratios against a policy the data never came from (they clip, and learning stalls), so the
//! trainer returns to S: its weights from the object store (the base model when S = 0) and fresh
//! optimizer moments. Batches trained since S went into rejected versions; they are not trained
//! again.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::WeightsRejected;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

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
