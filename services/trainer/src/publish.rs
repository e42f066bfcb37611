//! Publishing a version: the checkpoint's weights file goes into the `weights` object store, then
//! the `WeightsPublished` event (id from version and sha256) onto the WEIGHTS stream. Both steps
//! are idempotent, so a trainer that died between them simply does them again.

use std::path::Path;

use anyhow::Context as _;
use async_nats::jetstream::{self, object_store::ObjectMetadata};
use clawline_nats::{buckets, publish_event, streams, subjects};
use clawline_schemas::WeightsPublished;

use crate::learner::WEIGHTS_FILE;

/// The highest version on the WEIGHTS stream (0 when none was ever published), so a trainer on a
/// fresh checkpoint directory never reuses a number.
pub async fn last_published_version(js: &jetstream::Context) -> anyhow::Result<u64> {
    let stream = js
        .get_stream(streams::WEIGHTS)
        .await
        .context("opening the WEIGHTS stream")?;
    match stream
        .get_last_raw_message_by_subject(subjects::WEIGHTS_PUBLISHED)
        .await
    {
        Ok(message) => {
            let event: WeightsPublished = clawline_nats::decode_message(&message.payload)
                .context("the last WeightsPublished event is unreadable")?;
            Ok(event.version)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e).context("reading the last WeightsPublished event"),
    }
}

/// Stores the weights of checkpoint `dir` under `event.object` and publishes `event`.
pub async fn publish(
    js: &jetstream::Context,
    dir: &Path,
    event: &WeightsPublished,
) -> anyhow::Result<()> {
    let store = js
        .get_object_store(buckets::WEIGHTS_OBJECTS)
        .await
        .context("opening the weights object store")?;
    let path = dir.join(WEIGHTS_FILE);
    let mut file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = ObjectMetadata {
        name: event.object.clone(),
        description: Some(format!(
            "clawline weights v{} ({:?}, parent v{}), sha256 {}",
            event.version, event.format, event.parent, event.sha256
        )),
        ..Default::default()
    };
    let info = store
        .put(meta, &mut file)
        .await
        .with_context(|| format!("storing {}", event.object))?;
    anyhow::ensure!(
        info.size as u64 == event.size,
        "{}: stored {} bytes, the checkpoint has {}",
        event.object,
        info.size,
        event.size
    );
    publish_event(js, subjects::WEIGHTS_PUBLISHED.to_string(), event).await?;
    Ok(())
}
