//! The running batcher: rebuilds the pool from the streams, follows them, publishes batches, and
//! answers `get_statistics` on `clawline.datapool.stats`.
//!
//! Start-up is event sourcing: BATCHES is read first (which steps are consumed, how baselines
//! moved), then STEPS, REWARDS and TRAJECTORIES from their beginning with ordered consumers. No batch
//! is formed until every stream has been read up to where it stood at start, so a restarted batcher
//! decides on the same facts as the one before it, forms the same batches (same ids, which
//! JetStream drops as duplicates) and never puts a consumed step in a second batch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use axum::Router;
use axum::routing::get;
use clawline_nats::{streams, subjects};
use clawline_runtime::{CancellationToken, TaskSet, connect_nats};
use clawline_schemas::{BatchFormed, RewardAssigned, StepRecorded, TrajectoryCompleted, now_ms};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::Config;
use crate::config::FileConfig;
use crate::pool::{ChannelStats, Pool};

/// What the followers feed the pool, with the stream sequence it came from.
enum Input {
    Step(u64, Box<StepRecorded>),
    Reward(u64, RewardAssigned),
    Completed(u64, TrajectoryCompleted),
    PolicyVersion(u64),
    /// A message that could not be decoded: logged and counted, never a crash.
    Rejected(&'static str, u64, String),
}

/// `get_statistics`: Claw-R1's DataPool statistics per channel, plus lag to the log head.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stats {
    pub channels: BTreeMap<String, ChannelStats>,
    pub policy_version: Option<u64>,
    /// Messages each stream holds beyond what the batcher has read.
    pub lag: BTreeMap<String, u64>,
    pub held_steps: usize,
    pub rejected_events: u64,
    /// False while the batcher is still reading the log up to where it stood at start.
    pub caught_up: bool,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let file = match &config.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let client = connect_nats(&config.nats, "clawline-batcher", true).await?;
    let js = jetstream::new(client.clone());
    clawline_nats::ensure_topology(&js, &config.nats.topology()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;

    let producer = format!("clawline-batcher/{}", env!("CARGO_PKG_VERSION"));
    let mut pool = Pool::new(file, producer);
    let replayed = replay_batches(&js, &mut pool).await?;
    tracing::info!(batches = replayed, "consumed steps restored from BATCHES");

    let heads = [
        (streams::STEPS, head(&js, FOLLOWED[0]).await?),
        (streams::REWARDS, head(&js, FOLLOWED[1]).await?),
        (streams::TRAJECTORIES, head(&js, FOLLOWED[2]).await?),
    ];
    let (tx, rx) = mpsc::channel::<Input>(4096);
    let mut tasks = TaskSet::new(shutdown.clone());
    tasks.spawn(
        "steps",
        follow(
            js.clone(),
            streams::STEPS,
            Vec::new(),
            tx.clone(),
            shutdown.clone(),
            |seq, payload| {
                clawline_nats::decode_message::<StepRecorded>(payload)
                    .map(|s| Input::Step(seq, Box::new(s)))
            },
        ),
    );
    tasks.spawn(
        "rewards",
        follow(
            js.clone(),
            streams::REWARDS,
            Vec::new(),
            tx.clone(),
            shutdown.clone(),
            |seq, payload| {
                clawline_nats::decode_message::<RewardAssigned>(payload)
                    .map(|r| Input::Reward(seq, r))
            },
        ),
    );
    tasks.spawn(
        "trajectories",
        follow(
            js.clone(),
            streams::TRAJECTORIES,
            vec![subjects::TRAJECTORY_COMPLETED.to_string()],
            tx.clone(),
            shutdown.clone(),
            |seq, payload| {
                clawline_nats::decode_message::<TrajectoryCompleted>(payload)
                    .map(|c| Input::Completed(seq, c))
            },
        ),
    );
    tasks.spawn(
        "policy",
        watch_policy(js.clone(), tx.clone(), shutdown.clone()),
    );
    drop(tx);

    let stats = Arc::new(Mutex::new(Stats::default()));
    let app = {
        let stats = stats.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/stats",
                get(move || {
                    let s = stats.lock().map(|s| s.clone()).unwrap_or_default();
                    async move { axum::Json(s) }
                }),
            )
    };
    let stop = shutdown.clone();
    tasks.spawn("http", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(anyhow::Error::from)
    });
    let stats_requests = client
        .subscribe(subjects::DATAPOOL_STATS)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", subjects::DATAPOOL_STATS))?;
    let main = Main {
        pool,
        js,
        client,
        heads,
        read: BTreeMap::new(),
        rejected: 0,
        stats,
    };
    tasks.spawn("pool", main.run(rx, stats_requests, shutdown.clone()));
    tasks.join().await
}

/// The streams the pool follows, and the one subject read where only one is.
const FOLLOWED: [(&str, Option<&str>); 3] = [
    (streams::STEPS, None),
    (streams::REWARDS, None),
    (streams::TRAJECTORIES, Some(subjects::TRAJECTORY_COMPLETED)),
];

/// The sequence of the last message the batcher would read from `stream` (0 when none).
async fn head(
    js: &jetstream::Context,
    (stream, subject): (&str, Option<&str>),
) -> anyhow::Result<u64> {
    let mut s = js.get_stream(stream).await?;
    match subject {
        None => Ok(s.info().await?.state.last_sequence),
        Some(subject) => match s.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(0)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Reads BATCHES from its start to where it stands now.
async fn replay_batches(js: &jetstream::Context, pool: &mut Pool) -> anyhow::Result<u64> {
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

/// Follows a stream from its start with an ordered consumer, re-creating it after errors from
/// the last sequence seen.
async fn follow(
    js: jetstream::Context,
    stream: &'static str,
    filters: Vec<String>,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    decode: impl Fn(u64, &[u8]) -> Result<Input, clawline_schemas::CodecError> + Send + 'static,
) -> anyhow::Result<()> {
    let mut next = 1u64;
    while !shutdown.is_cancelled() {
        let attempt = async {
            let s = js.get_stream(stream).await?;
            let consumer = s
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    filter_subjects: filters.clone(),
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(message) = messages.next().await {
                let message = message?;
                let seq = message.info().map(|i| i.stream_sequence).unwrap_or(next);
                let input = decode(seq, &message.payload)
                    .unwrap_or_else(|e| Input::Rejected(stream, seq, e.to_string()));
                if tx.send(input).await.is_err() {
                    return Ok(());
                }
                next = seq + 1;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            result = attempt => if let Err(err) = result {
                tracing::warn!(stream, error = %err, "following stream; retrying");
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    Ok(())
}

async fn watch_policy(
    js: jetstream::Context,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    clawline_runtime::watch_policy_version(js, shutdown, move |v| {
        let _ = tx.try_send(Input::PolicyVersion(v));
    })
    .await
}

struct Main {
    pool: Pool,
    js: jetstream::Context,
    client: async_nats::Client,
    heads: [(&'static str, u64); 3],
    read: BTreeMap<&'static str, u64>,
    rejected: u64,
    stats: Arc<Mutex<Stats>>,
}

impl Main {
    fn caught_up(&self) -> bool {
        self.heads
            .iter()
            .all(|(s, h)| *h == 0 || self.read.get(s).copied().unwrap_or(0) >= *h)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut stats_requests: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut was_caught_up = false;
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                input = rx.recv() => match input {
                    Some(input) => self.apply(input),
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    let caught_up = self.caught_up();
                    if caught_up && !was_caught_up {
                        tracing::info!(held_steps = self.pool.held_steps(), "caught up with the log; forming batches");
                    }
                    was_caught_up = caught_up;
                    if caught_up {
                        self.form_batches().await;
                    }
                    // The HTTP snapshot once a second (it asks NATS for the stream heads).
                    ticks += 1;
                    if ticks % 10 == 1 {
                        self.publish_stats().await;
                    }
                }
                Some(request) = stats_requests.next() => {
                    if let Some(reply) = request.reply {
                        let stats = self.publish_stats().await;
                        let body = serde_json::to_vec(&stats).unwrap_or_default();
                        if let Err(e) = self.client.publish(reply, body.into()).await {
                            tracing::warn!(error = %e, "stats reply failed");
                        }
                    }
                }
            }
        }
    }

    fn apply(&mut self, input: Input) {
        let mut mark = |stream: &'static str, seq: u64| {
            let e = self.read.entry(stream).or_default();
            *e = (*e).max(seq);
        };
        match input {
            Input::Step(seq, step) => {
                mark(streams::STEPS, seq);
                self.pool.add_step(*step);
            }
            Input::Reward(seq, reward) => {
                mark(streams::REWARDS, seq);
                self.pool.add_reward(&reward);
            }
            Input::Completed(seq, done) => {
                mark(streams::TRAJECTORIES, seq);
                self.pool.add_completion(&done);
            }
            Input::PolicyVersion(v) => self.pool.set_policy_version(v),
            Input::Rejected(stream, seq, reason) => {
                mark(stream, seq);
                self.rejected += 1;
                tracing::error!(stream, seq, reason, "undecodable event skipped");
            }
        }
    }

    async fn form_batches(&mut self) {
        let now = now_ms();
        self.pool.tick(now);
        for channel in self.pool.channels_with_work() {
            while let Some(proposed) = self.pool.next_batch(&channel, now) {
                match clawline_nats::publish_event(
                    &self.js,
                    subjects::batches(&channel),
                    &proposed.batch,
                )
                .await
                {
                    Ok(ack) => {
                        tracing::info!(
                            batch = %proposed.batch.event_id,
                            channel,
                            steps = proposed.batch.steps.len(),
                            duplicate = ack.duplicate,
                            "batch formed"
                        );
                        self.pool.commit(&proposed);
                    }
                    Err(err) => {
                        tracing::warn!(channel, error = %err, "publishing batch failed; will retry");
                        break;
                    }
                }
            }
        }
    }

    async fn publish_stats(&mut self) -> Stats {
        let mut lag = BTreeMap::new();
        for followed in FOLLOWED {
            let stream = followed.0;
            if let Ok(last) = head(&self.js, followed).await {
                lag.insert(
                    stream.to_string(),
                    last.saturating_sub(self.read.get(stream).copied().unwrap_or(0)),
                );
            }
        }
        let stats = Stats {
            channels: self.pool.stats(),
            policy_version: self.pool.policy_version(),
            lag,
            held_steps: self.pool.held_steps(),
            rejected_events: self.rejected,
            caught_up: self.caught_up(),
        };
        if let Ok(mut s) = self.stats.lock() {
            *s = stats.clone();
        }
        stats
    }
}
