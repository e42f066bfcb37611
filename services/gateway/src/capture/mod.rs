//! Capture: every event goes to JetStream and is acked before the user's response completes; when
//! JetStream cannot ack in time the event goes to the spool instead, and a drainer republishes the
//! spool in order (same `Nats-Msg-Id`, so an event whose ack was merely late is stored once).
//!
//! Once anything is spooled, later events queue behind it until the spool is empty, so order holds.

mod spool;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use clawline_runtime::prometheus_client::metrics::counter::Counter;
use clawline_runtime::prometheus_client::metrics::family::Family;
use clawline_runtime::prometheus_client::metrics::gauge::Gauge;
use clawline_schemas::Event;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use spool::{Spool, SpoolEntry};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored on JetStream (`duplicate`: it was already there).
    Acked { duplicate: bool },
    /// Written to the spool; the drainer will store it.
    Spooled,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("encoding event: {0}")]
    Encode(#[from] clawline_schemas::CodecError),
    #[error("JetStream unavailable and the spool failed: {0}")]
    Spool(#[from] std::io::Error),
}

/// Refusals of one spooled event by a connected JetStream before it is set aside.
const MAX_REFUSALS: u32 = 20;
/// Spooled events republished together while draining.
const DRAIN_BATCH: usize = 64;

#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    spool: Spool,
    timeout: Duration,
    wake: Notify,
    metrics: CaptureMetrics,
}

#[derive(Clone, Default)]
pub struct CaptureMetrics {
    /// Events by outcome: acked, duplicate, spooled, drained, lost.
    pub events: Family<Vec<(String, String)>, Counter>,
    pub spool_depth: Gauge,
}

impl CaptureMetrics {
    fn count(&self, outcome: &str) {
        self.events
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }
}

impl Capture {
    pub fn new(
        client: async_nats::Client,
        spool: Spool,
        timeout: Duration,
        metrics: CaptureMetrics,
    ) -> Self {
        metrics.spool_depth.set(spool.depth() as i64);
        let js = jetstream::new(client.clone());
        Self {
            inner: Arc::new(Inner {
                client,
                js,
                spool,
                timeout,
                wake: Notify::new(),
                metrics,
            }),
        }
    }

    pub fn spool_depth(&self) -> u64 {
        self.inner.spool.depth()
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Encodes and records one event.
    pub async fn record_event<E: Event>(
        &self,
        subject: String,
        event: &E,
    ) -> Result<Outcome, CaptureError> {
        let payload = clawline_schemas::encode(event)?;
        self.record(SpoolEntry {
            subject,
            msg_id: event.event_id().to_string(),
            payload: payload.into(),
        })
        .await
    }

    /// Stores one event: acked by JetStream, or spooled when JetStream cannot ack in time.
    pub async fn record(&self, entry: SpoolEntry) -> Result<Outcome, CaptureError> {
        Ok(self
            .record_many(vec![entry])
            .await?
            .pop()
            .unwrap_or(Outcome::Spooled))
    }

    /// Stores several events, publishing them together and awaiting all acks (one round trip, not
    /// one per event). Outcomes are in input order.
    pub async fn record_many(
        &self,
        entries: Vec<SpoolEntry>,
    ) -> Result<Vec<Outcome>, CaptureError> {
        let inner = &self.inner;
        let direct = inner.spool.depth() == 0
            && inner.client.connection_state() == async_nats::connection::State::Connected;
        let mut outcomes = vec![Outcome::Spooled; entries.len()];
        let mut to_spool: Vec<usize> = Vec::new();
        if direct {
            let results = self.publish_all(entries.iter()).await;
            for (i, result) in results.into_iter().enumerate() {
                match result {
                    Ok(Ok(ack)) => {
                        inner
                            .metrics
                            .count(if ack.duplicate { "duplicate" } else { "acked" });
                        outcomes[i] = Outcome::Acked {
                            duplicate: ack.duplicate,
                        };
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(msg_id = %entries[i].msg_id, error = %err, "publish failed; spooling");
                        to_spool.push(i);
                    }
                    Err(_) => {
                        tracing::warn!(msg_id = %entries[i].msg_id, timeout = ?inner.timeout, "no ack in time; spooling");
                        to_spool.push(i);
                    }
                }
            }
        } else {
            to_spool = (0..entries.len()).collect();
        }
        if !to_spool.is_empty() {
            let spooled: Vec<SpoolEntry> = to_spool.iter().map(|&i| entries[i].clone()).collect();
            let this = self.clone();
            let n = spooled.len();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                for entry in &spooled {
                    this.inner.spool.append(entry)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .inspect_err(|_| {
                for _ in 0..n {
                    inner.metrics.count("lost");
                }
            })?;
            for _ in 0..n {
                inner.metrics.count("spooled");
            }
            inner.metrics.spool_depth.set(inner.spool.depth() as i64);
            inner.wake.notify_one();
        }
        Ok(outcomes)
    }

    /// Publishes events together (in order on the one connection) and awaits every ack, each
    /// bounded by the capture timeout.
    async fn publish_all<'a>(
        &self,
        entries: impl Iterator<Item = &'a SpoolEntry>,
    ) -> Vec<
        Result<
            Result<async_nats::jetstream::publish::PublishAck, clawline_nats::PublishError>,
            tokio::time::error::Elapsed,
        >,
    > {
        let inner = &self.inner;
        let publishes = entries.map(|e| {
            tokio::time::timeout(
                inner.timeout,
                clawline_nats::publish_raw(
                    &inner.js,
                    e.subject.clone(),
                    &e.msg_id,
                    e.payload.clone(),
                ),
            )
        });
        futures::future::join_all(publishes).await
    }

    /// Republishes the spool in order until `shutdown`; whatever is left stays on disk for the next
    /// start.
    pub async fn drain(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(100);
        // Failed attempts at the current head while connected; a head JetStream keeps refusing is
        // set aside so it cannot block everything behind it.
        let mut refusals = 0u32;
        loop {
            if inner.spool.depth() == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = inner.wake.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            if inner.client.connection_state() != async_nats::connection::State::Connected {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
            let this = self.clone();
            let batch =
                tokio::task::spawn_blocking(move || this.inner.spool.peek_batch(DRAIN_BATCH))
                    .await??;
            if batch.is_empty() {
                // Counted but unreadable yet (a concurrent append in progress): look again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            // Publish the batch together and await every ack: one round trip, not one per event.
            let results = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.publish_all(batch.iter().map(|(e, _)| e)) => r,
            };
            // Commit the acked prefix; whatever follows is republished (duplicates are dropped by id).
            let acked = results
                .iter()
                .take_while(|r| matches!(r, Ok(Ok(_))))
                .count();
            if acked > 0 {
                let next_offset = batch[acked - 1].1;
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    this.inner.spool.commit_many(next_offset, acked as u64)
                })
                .await??;
                for _ in 0..acked {
                    inner.metrics.count("drained");
                }
                inner.metrics.spool_depth.set(inner.spool.depth() as i64);
                backoff = Duration::from_millis(100);
                refusals = 0;
                if inner.spool.depth() == 0 {
                    tracing::info!("spool drained");
                }
            }
            let Some(failed) = results.into_iter().nth(acked) else {
                continue;
            };
            let (entry, next_offset) = batch[acked].clone();
            match failed {
                Ok(Err(err)) => {
                    refusals += 1;
                    if refusals >= MAX_REFUSALS {
                        tracing::error!(msg_id = %entry.msg_id, subject = %entry.subject, error = %err, "JetStream keeps refusing a spooled event; moved to rejected.log");
                        let this = self.clone();
                        tokio::task::spawn_blocking(move || {
                            this.inner.spool.dead_letter(&entry)?;
                            this.inner.spool.commit(next_offset)
                        })
                        .await??;
                        inner.metrics.count("rejected");
                        inner.metrics.spool_depth.set(inner.spool.depth() as i64);
                        refusals = 0;
                        continue;
                    }
                    tracing::warn!(msg_id = %entry.msg_id, error = %err, "spool drain publish failed; retrying");
                }
                _ => {
                    tracing::debug!(msg_id = %entry.msg_id, "no ack in time while draining; retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
