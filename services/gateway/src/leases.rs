//! Step-index leases for trajectories whose uid a client chose (the `x-clawline-trajectory`
//! header), kept in KV `trajectories`.
//!
//! A step's id is derived from (tenant, trajectory uid, step index), and JetStream drops a message
//! whose id it has seen. A uid the gateway makes is new, but one a client chose may already have
//! steps: from this gateway before it restarted, from before it forgot the idle trajectory, or from
//! another gateway. So such a trajectory takes its step indexes from blocks leased with
//! compare-and-set on one key per trajectory: blocks never overlap, and a restarted gateway
//! continues after the last one (the indexes left unused in a block are skipped).
//!
//! Without JetStream (an outage the spool rides out) a lease cannot be had; the call is still
//! served and its indexes continue from what this gateway knows, counted in
//! `clawline_gateway_trajectory_lease_fallbacks` and logged.

use std::ops::Range;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use clawline_nats::buckets;
use clawline_runtime::prometheus_client::metrics::counter::Counter;
use clawline_schemas::derived_id;
use tokio::sync::OnceCell;

/// Step indexes per lease: one KV round trip per this many steps of a trajectory.
pub const BLOCK: u32 = 64;

/// After a failed lease, calls for this long fall back at once instead of waiting again.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub struct Leases {
    client: async_nats::Client,
    kv: OnceCell<Store>,
    timeout: Duration,
    failed_at: std::sync::Mutex<Option<Instant>>,
    pub fallbacks: Counter,
}

impl Leases {
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        Self {
            client,
            kv: OnceCell::new(),
            timeout,
            failed_at: std::sync::Mutex::new(None),
            fallbacks: Counter::default(),
        }
    }

    /// Leases the next block of step indexes of `uid`, starting no lower than `from`.
    pub async fn lease(&self, tenant: &str, uid: &str, from: u32) -> anyhow::Result<Range<u32>> {
        let failed_at = || self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        if failed_at().is_some_and(|at| at.elapsed() < QUIET_AFTER_FAILURE) {
            anyhow::bail!("KV {} failed moments ago", buckets::TRAJECTORIES);
        }
        let result = tokio::time::timeout(self.timeout, self.try_lease(tenant, uid, from))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no answer from KV {} within {:?}",
                    buckets::TRAJECTORIES,
                    self.timeout
                ))
            });
        *failed_at() = result.is_err().then(Instant::now);
        result
    }

    async fn try_lease(&self, tenant: &str, uid: &str, from: u32) -> anyhow::Result<Range<u32>> {
        let kv = self
            .kv
            .get_or_try_init(|| async {
                async_nats::jetstream::new(self.client.clone())
                    .get_key_value(buckets::TRAJECTORIES)
                    .await
            })
            .await?;
        let key = derived_id("lse", &[tenant, uid]);
        // Each round loses only to a gateway that leased in between; a few suffice.
        for _ in 0..32 {
            let current = kv.entry(key.as_str()).await?;
            let end = match &current {
                Some(e) if e.operation == Operation::Put => std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("lease {key} holds {:?}, not a number", e.value)
                    })?,
                _ => 0,
            };
            let start = end.max(from);
            let new_end = start
                .checked_add(BLOCK)
                .ok_or_else(|| anyhow::anyhow!("trajectory {uid:?} has used every step index"))?;
            let value = new_end.to_string().into();
            match current {
                Some(e) if e.operation == Operation::Put => {
                    match kv.update(key.as_str(), value, e.revision).await {
                        Ok(_) => return Ok(start..new_end),
                        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
                _ => match kv.create(key.as_str(), value).await {
                    Ok(_) => return Ok(start..new_end),
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err.into()),
                },
            }
        }
        anyhow::bail!("lease {key} changed 32 times while leasing")
    }
}
