//! Reading the log: BATCHES once at start, then STEPS, REWARDS and completions followed with
//! ordered consumers (handed to the pool in chunks), and the KV `policy.version`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use clawline_nats::{Follower, streams, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{BatchFormed, RewardAssigned, TrajectoryCompleted};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::pool::{Pool, StepIn};

/// What the followers feed the pool, with the stream sequence it came from.
pub(crate) enum Input {
    Step(u64, Box<StepIn>),
    Reward(u64, RewardAssigned),
    Completed(u64, TrajectoryCompleted),
    /// A message that could not be decoded: logged and counted, never a crash.
    Rejected(&'static str, u64, String),
}

/// The streams the pool follows, and the one subject read where only one is.
pub(crate) const FOLLOWED: [(&str, Option<&str>); 3] = [
    (streams::STEPS, None),
    (streams::REWARDS, None),
    (streams::TRAJECTORIES, Some(subjects::TRAJECTORY_COMPLETED)),
];

/// The sequence of the last message the batcher would read from `stream` (0 when none).
pub(crate) async fn head(
    js: &jetstream::Context,
    (stream, subject): (&str, Option<&str>),
) -> anyhow::Result<u64> {
    clawline_nats::last_sequence(js, stream, subject)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// Reads BATCHES from its start to where it stands now.
pub(crate) async fn replay_batches(
    js: &jetstream::Context,
    pool: &mut Pool,
) -> anyhow::Result<u64> {
    let mut batches = js.get_stream(streams::BATCHES).await?;
    let state = batches.info().await?.state.clone();
    if state.messages == 0 {
        return Ok(0);
    }
    let last = state.last_sequence;
    let consumer = batches
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await?;
    let mut count = 0;
    while let Some(message) = messages.next().await {
        let message = message?;
        let (seq, pending) = message
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .unwrap_or((last, 0));
        match clawline_nats::decode_message::<BatchFormed>(&message.payload) {
            Ok(batch) => {
                pool.replay_batch(&batch);
                count += 1;
            }
            Err(e) => tracing::error!(seq, error = %e, "undecodable batch in BATCHES; skipped"),
        }
        // The last message may have been deleted: stop when nothing is pending either.
        if seq >= last || pending == 0 {
            break;
        }
    }
    Ok(count)
}

/// Follows a stream from its start (see [`clawline_nats::Follower`]), handing what has arrived
/// to the pool in one chunk (fewer wake-ups when behind).
pub(crate) async fn follow(
    js: jetstream::Context,
    followed: (&'static str, Option<&'static str>),
    tx: mpsc::Sender<Vec<Input>>,
    shutdown: CancellationToken,
    decode: impl Fn(u64, &[u8]) -> Result<Input, clawline_schemas::CodecError> + Send + 'static,
) -> anyhow::Result<()> {
    let (stream, filter) = followed;
    let mut follower = Follower::new(js, stream, filter, 1);
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            chunk = follower.next_chunk(CHUNK, Duration::from_secs(3600)) => chunk?,
        };
        let inputs: Vec<Input> = chunk
            .into_iter()
            .map(|m| {
                decode(m.seq, &m.payload)
                    .unwrap_or_else(|e| Input::Rejected(stream, m.seq, e.to_string()))
            })
            .collect();
        if !inputs.is_empty() && tx.send(inputs).await.is_err() {
            return Ok(());
        }
    }
}

/// Most messages handed to the pool at once.
const CHUNK: usize = 256;

pub(crate) async fn watch_policy(
    js: jetstream::Context,
    tx: watch::Sender<Option<u64>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    clawline_runtime::watch_policy_version(js, shutdown, move |v| {
        tx.send_replace(Some(v));
    })
    .await
}
