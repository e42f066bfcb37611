//! The running batcher: rebuilds the pool from the streams, follows them, publishes batches, and
//! answers `get_statistics` on `clawline.datapool.stats`.
//!
//! Start-up is event sourcing: BATCHES is read first (which steps are consumed, how baselines
//! moved), then STEPS, REWARDS and TRAJECTORIES from their beginning with ordered consumers. No batch
//! is formed until every stream has been read up to where it stood at start, so a restarted batcher
//! decides on the same facts as the one before it, forms the same batches (same ids, which
//! JetStream drops as duplicates) and never puts a consumed step in a second batch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use clawline_nats::{streams, subjects};
use clawline_runtime::{CancellationToken, TaskSet, admin_routes, json_snapshot, start_nats};
use clawline_schemas::{RewardAssigned, TrajectoryCompleted, now_ms};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::Settings;
use crate::config::FileConfig;
use crate::follow::{FOLLOWED, Input, follow, head, replay_batches, watch_policy};
use crate::pool::{ChannelStats, Pool, StepIn};

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

/// Forms batches until `shutdown`, serving `/stats` on `listener`.
pub async fn run(
    config: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let file = match &config.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let (client, js) = start_nats(&config.nats, "clawline-batcher").await?;

    let producer = format!("clawline-batcher/{}", env!("CARGO_PKG_VERSION"));
    let mut pool = Pool::new(file, producer);
    let replayed = replay_batches(&js, &mut pool).await?;
    tracing::info!(batches = replayed, "consumed steps restored from BATCHES");

    let heads = [
        (streams::STEPS, head(&js, FOLLOWED[0]).await?),
        (streams::REWARDS, head(&js, FOLLOWED[1]).await?),
        (streams::TRAJECTORIES, head(&js, FOLLOWED[2]).await?),
    ];
    let (tx, rx) = mpsc::channel::<Vec<Input>>(64);
    let (policy_tx, policy_rx) = watch::channel(None::<u64>);
    let mut tasks = TaskSet::new(shutdown.clone());
    tasks.spawn(
        "steps",
        follow(
            js.clone(),
            FOLLOWED[0],
            tx.clone(),
            shutdown.clone(),
            |seq, payload| {
                // Only the fields the pool uses are decoded.
                clawline_schemas::decode::<StepIn>(payload).map(|s| Input::Step(seq, Box::new(s)))
            },
        ),
    );
    tasks.spawn(
        "rewards",
        follow(
            js.clone(),
            FOLLOWED[1],
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
            FOLLOWED[2],
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
        watch_policy(js.clone(), policy_tx, shutdown.clone()),
    );
    drop(tx);

    let stats = Arc::new(Mutex::new(Stats::default()));
    let app = admin_routes(None).route("/stats", json_snapshot(stats.clone()));
    // In force before the admin port answers (a caller that sees the batcher up gets answers).
    let stats_requests = clawline_nats::answer_on(&client, subjects::DATAPOOL_STATS, None).await?;
    let explain_requests =
        clawline_nats::answer_on(&client, subjects::DATAPOOL_EXPLAIN, None).await?;
    tasks.serve(listener, app);
    let main = Main {
        pool,
        js,
        client,
        heads,
        read: BTreeMap::new(),
        rejected: 0,
        stats,
    };
    tasks.spawn(
        "pool",
        main.run(
            rx,
            policy_rx,
            (stats_requests, explain_requests),
            shutdown.clone(),
        ),
    );
    tasks.join().await
}

/// How long `get_statistics` waits for a stream's head before it leaves that stream's lag out.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// A batch sent to BATCHES, kept until its ack.
struct Sent {
    subject: String,
    id: String,
    steps: usize,
    payload: bytes::Bytes,
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
        mut rx: mpsc::Receiver<Vec<Input>>,
        mut policy: watch::Receiver<Option<u64>>,
        (mut stats_requests, mut explain_requests): (
            async_nats::Subscriber,
            async_nats::Subscriber,
        ),
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
                    Some(inputs) => inputs.into_iter().for_each(|i| self.apply(i)),
                    None => return Ok(()),
                },
                Ok(()) = policy.changed() => {
                    if let Some(v) = *policy.borrow_and_update() {
                        self.pool.set_policy_version(v);
                    }
                },
                _ = tick.tick() => {
                    let caught_up = self.caught_up();
                    if caught_up && !was_caught_up {
                        tracing::info!(held_steps = self.pool.held_steps(), "caught up with the log; forming batches");
                    }
                    was_caught_up = caught_up;
                    ticks += 1;
                    // Both may wait on NATS; a stop does not wait for them (a batch sent but not
                    // acked is formed again by the next start, from the same events).
                    let work = async {
                        if caught_up {
                            self.form_batches(&shutdown).await;
                        }
                        // The HTTP snapshot once a second (it asks NATS for the stream heads).
                        if ticks % 10 == 1 {
                            self.publish_stats().await;
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        () = work => {}
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
                Some(request) = explain_requests.next() => {
                    if let Some(reply) = request.reply {
                        let body = self.explain(&request.payload);
                        if let Err(e) = self.client.publish(reply, body.into()).await {
                            tracing::warn!(error = %e, "explain reply failed");
                        }
                    }
                }
            }
        }
    }

    /// `{"step_id": "…"}` → the pool's explanation as JSON (`{"error": …}` for a bad request).
    fn explain(&self, request: &[u8]) -> Vec<u8> {
        #[derive(serde::Deserialize)]
        struct Ask {
            step_id: String,
        }
        let answer = match serde_json::from_slice::<Ask>(request) {
            Ok(ask) => serde_json::to_value(self.pool.explain(&ask.step_id, now_ms())),
            Err(e) => {
                Ok(serde_json::json!({ "error": format!("expected {{\"step_id\": \"…\"}}: {e}") }))
            }
        };
        answer
            .and_then(|v| serde_json::to_vec(&v))
            .unwrap_or_default()
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
            Input::Rejected(stream, seq, reason) => {
                mark(stream, seq);
                self.rejected += 1;
                tracing::error!(stream, seq, reason, "undecodable event skipped");
            }
        }
    }

    /// Moves what is ready into batches and publishes them, up to `IN_FLIGHT` at a time. A batch
    /// leaves the pool when it is sent; one whose ack fails is sent again (same bytes, same id)
    /// until JetStream has it, so none is lost; after a crash the restarted batcher forms it again.
    async fn form_batches(&mut self, shutdown: &CancellationToken) {
        const IN_FLIGHT: usize = 256;
        let now = now_ms();
        self.pool.tick(now);
        let mut in_flight = VecDeque::new();
        for channel in self.pool.channels_with_work() {
            while let Some(proposed) = self.pool.next_batch(&channel, now) {
                self.pool.commit(&proposed);
                let sent = Sent {
                    subject: subjects::batches(&channel),
                    id: proposed.batch.envelope.event_id,
                    steps: proposed.batch.steps.len(),
                    payload: proposed.payload,
                };
                let ack = self.send(&sent).await;
                in_flight.push_back((sent, ack));
                if in_flight.len() >= IN_FLIGHT
                    && let Some((sent, ack)) = in_flight.pop_front()
                {
                    self.settle(sent, ack, shutdown).await;
                }
            }
        }
        while let Some((sent, ack)) = in_flight.pop_front() {
            self.settle(sent, ack, shutdown).await;
        }
    }

    async fn send(&self, sent: &Sent) -> Option<PublishAckFuture> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", sent.id.as_str());
        self.js
            .publish_with_headers(sent.subject.clone(), headers, sent.payload.clone())
            .await
            .inspect_err(|e| tracing::warn!(batch = %sent.id, error = %e, "sending batch failed; will retry"))
            .ok()
    }

    /// Waits for a batch's ack, re-sending it until JetStream stores it (or the batcher stops).
    async fn settle(
        &self,
        sent: Sent,
        ack: Option<PublishAckFuture>,
        shutdown: &CancellationToken,
    ) {
        let mut result = match ack {
            Some(ack) => ack.await.map_err(|e| e.to_string()),
            None => Err("not sent".to_string()),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match result {
                Ok(ack) => {
                    tracing::info!(batch = %sent.id, subject = %sent.subject, steps = sent.steps, duplicate = ack.duplicate, "batch formed");
                    return;
                }
                Err(err) => {
                    tracing::warn!(batch = %sent.id, error = %err, "publishing batch failed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            result = clawline_nats::publish_raw(
                &self.js,
                sent.subject.clone(),
                &sent.id,
                sent.payload.clone(),
            )
            .await
            .map_err(|e| e.to_string());
        }
    }

    async fn publish_stats(&mut self) -> Stats {
        let mut lag = BTreeMap::new();
        for followed in FOLLOWED {
            let stream = followed.0;
            // Unknown while NATS does not answer (the lag is left out rather than the pool stalled).
            if let Ok(Ok(last)) = tokio::time::timeout(STATS_WAIT, head(&self.js, followed)).await {
                lag.insert(
                    stream.to_string(),
                    last.saturating_sub(self.read.get(stream).copied().unwrap_or(0)),
                );
            }
        }
        let stats = Stats {
            channels: self.pool.stats(now_ms()),
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
