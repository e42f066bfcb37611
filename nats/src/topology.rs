//! `ensure_topology`: create or update every stream and bucket, so any service can start first.

use std::time::Duration;

use async_nats::jetstream;

use crate::{buckets, streams};

/// Knobs of the topology that differ between one machine and a cluster.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Stream replicas: 1 on one machine, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s to drop duplicates. A spool drained after a longer
    /// outage relies on consumers' own id checks for the few events whose ack was lost.
    pub duplicate_window: Duration,
    /// Largest event accepted by the streams (the server's `max_payload` must allow it too).
    pub max_message_bytes: i32,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(10 * 60),
            max_message_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("creating or updating stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("creating or updating KV bucket {name}: {source}")]
    KeyValue {
        name: String,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
    #[error("creating object store {name}: {source}")]
    ObjectStore {
        name: String,
        #[source]
        source: jetstream::context::CreateObjectStoreError,
    },
}

/// Creates every stream, the `state` and `trajectories` KV buckets and the `weights` object store, or updates them to
/// the current definitions. Safe to call from every service at every start, concurrently.
pub async fn ensure_topology(
    js: &jetstream::Context,
    opts: &TopologyOptions,
) -> Result<(), TopologyError> {
    for config in streams::all(opts) {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|source| TopologyError::Stream { name, source })?;
    }
    for config in [
        buckets::state(opts),
        buckets::trajectories(opts),
        buckets::responses(opts),
    ] {
        let name = config.bucket.clone();
        js.create_or_update_key_value(config)
            .await
            .map_err(|source| TopologyError::KeyValue { name, source })?;
    }
    if js.get_object_store(buckets::WEIGHTS_OBJECTS).await.is_err() {
        js.create_object_store(buckets::weights(opts))
            .await
            .map_err(|source| TopologyError::ObjectStore {
                name: buckets::WEIGHTS_OBJECTS.to_string(),
                source,
            })?;
    }
    Ok(())
}
