//! Typed publish and decode. Every publish sets `Nats-Msg-Id` to the event's stable id and awaits the
//! JetStream ack, so "published" means "stored" and a republished event is dropped as a duplicate.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, publish::PublishAck};
use bytes::Bytes;
use clawline_schemas::{CodecError, Event};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Encode(#[from] CodecError),
    #[error("publishing to {subject}: {source}")]
    Publish {
        subject: String,
        #[source]
        source: jetstream::context::PublishError,
    },
}

/// Publishes already-encoded bytes with `msg_id` as `Nats-Msg-Id` and waits for the stream's ack.
pub async fn publish_raw(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Bytes,
) -> Result<PublishAck, PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let wrap = |source| PublishError::Publish {
        subject: subject.clone(),
        source,
    };
    js.publish_with_headers(subject.clone(), headers, payload)
        .await
        .map_err(wrap)?
        .await
        .map_err(wrap)
}

/// Encodes `event` and publishes it under its own id, waiting for the ack.
pub async fn publish_event<E: Event>(
    js: &jetstream::Context,
    subject: String,
    event: &E,
) -> Result<PublishAck, PublishError> {
    let payload = clawline_schemas::encode(event)?;
    publish_raw(js, subject, event.event_id(), payload.into()).await
}

/// Decodes a message payload into an event; a bad payload is an error for the caller to count.
pub fn decode_message<E: Event>(payload: &[u8]) -> Result<E, CodecError> {
    clawline_schemas::decode(payload)
}
