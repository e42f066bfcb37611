//! Feeds the [`Board`]: core-NATS subscriptions to the events (no consumer state, nothing to
//! ack: the dashboard only watches), and every 5 s the batcher's statistics and the consumers'
//! lag. A message that does not decode is skipped and counted in the log at debug level.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawline_nats::{decode_message, streams, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{
    FeedbackKind, FeedbackReceived, RewardAssigned, Thumbs, TrainingMetrics, WeightsActivated,
    WeightsRejected, now_ms,
};
use futures::StreamExt as _;

use super::{Board, Lag, Recent, TimelineEntry, cut};

/// Follows the streams into `board` until `shutdown`.
pub async fn follow(
    client: async_nats::Client,
    board: Arc<Mutex<Board>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sub = |s: String| {
        let client = client.clone();
        async move { client.subscribe(s).await }
    };
    let mut events = futures::stream::select_all([
        sub(format!("{}.>", subjects::STEPS_PREFIX)).await?,
        sub(format!("{}.>", subjects::REWARDS_PREFIX)).await?,
        sub(subjects::FEEDBACK.into()).await?,
        sub(subjects::WEIGHTS_ACTIVATED.into()).await?,
        sub(subjects::WEIGHTS_REJECTED.into()).await?,
        sub(subjects::TRAINING_METRICS.into()).await?,
    ]);
    let poller = poll(client.clone(), board.clone(), shutdown.clone());
    tokio::pin!(poller);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            () = &mut poller => return Ok(()),
            m = events.next() => match m {
                Some(m) => {
                    if let Ok(mut b) = board.lock() {
                        take(&mut b, &m);
                    }
                }
                None => return Ok(()),
            },
        }
    }
}

/// Every 5 s: the batcher's statistics and the consumers' lag (apart from the events, so a slow
/// answer never holds them up).
async fn poll(client: async_nats::Client, board: Arc<Mutex<Board>>, shutdown: CancellationToken) {
    let js = async_nats::jetstream::new(client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stats = ask_datapool(&client).await;
        let lag = tokio::time::timeout(Duration::from_secs(4), lag(&js))
            .await
            .unwrap_or_default();
        if let Ok(mut b) = board.lock() {
            if let Some(s) = stats {
                b.datapool(s);
            }
            b.lag(lag);
            b.prune(now_ms());
        }
    }
}

/// The fields of a [`StepRecorded`](clawline_schemas::StepRecorded) the board shows. Decoding only these skips the token ids and
/// logprobs without building them: the gateway sees every step go by, so this is per-request work.
#[derive(serde::Deserialize)]
struct StepGlance {
    event_time: i64,
    tenant: String,
    channel: String,
    #[serde(default)]
    policy_version: Option<u64>,
    #[serde(default)]
    messages: Vec<MessageGlance>,
    #[serde(default)]
    response_text: String,
}

#[derive(serde::Deserialize)]
struct MessageGlance {
    role: String,
    #[serde(default)]
    content: Option<String>,
}

fn take(b: &mut Board, m: &async_nats::Message) {
    let subject = m.subject.as_str();
    let ok: Result<(), String> = if subject.starts_with(subjects::STEPS_PREFIX) {
        clawline_schemas::decode::<StepGlance>(&m.payload)
            .map(|s| {
                let prompt = s
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .and_then(|m| m.content.as_deref())
                    .unwrap_or_default();
                b.step(Recent {
                    t: s.event_time,
                    prompt: cut(prompt),
                    answer: cut(&s.response_text),
                    version: s.policy_version,
                    tenant: s.tenant,
                    channel: s.channel,
                });
            })
            .map_err(|e| e.to_string())
    } else if subject.starts_with(subjects::REWARDS_PREFIX) {
        decode_message::<RewardAssigned>(&m.payload)
            .map(|r| b.reward(&r.tenant, &r.source, r.envelope.event_time, r.value))
            .map_err(|e| e.to_string())
    } else if subject == subjects::FEEDBACK {
        decode_message::<FeedbackReceived>(&m.payload)
            .map(|f| {
                let label = match (f.kind, f.thumbs) {
                    (FeedbackKind::Implicit, _) => "implicit",
                    (_, Some(Thumbs::Up)) => "thumbs up",
                    (_, Some(Thumbs::Down)) => "thumbs down",
                    _ => "explicit (rating / correction)",
                };
                b.feedback(&f.tenant, label, f.envelope.event_time);
            })
            .map_err(|e| e.to_string())
    } else if subject == subjects::WEIGHTS_ACTIVATED {
        decode_message::<WeightsActivated>(&m.payload)
            .map(|a| {
                b.weights(TimelineEntry {
                    t: a.envelope.event_time,
                    version: a.version,
                    engine: a.engine,
                    event: "activated",
                    reason: a.reason,
                })
            })
            .map_err(|e| e.to_string())
    } else if subject == subjects::WEIGHTS_REJECTED {
        decode_message::<WeightsRejected>(&m.payload)
            .map(|r| {
                b.weights(TimelineEntry {
                    t: r.envelope.event_time,
                    version: r.version,
                    engine: r.engine,
                    event: "rejected",
                    reason: r.reason,
                })
            })
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<TrainingMetrics>(&m.payload)
            .map(|t| b.training(t.event_time, t.loss, t.kl, t.entropy))
            .map_err(|e| e.to_string())
    };
    if let Err(e) = ok {
        tracing::debug!(subject, error = %e, "dashboard: an event that does not decode");
    }
}

/// The batcher's statistics (the request `GET /v1/datapool/stats` makes); `None` when no batcher
/// answers.
async fn ask_datapool(client: &async_nats::Client) -> Option<serde_json::Value> {
    let who = ("batcher", "clawline-batcher");
    let reply = crate::http::ask(
        client,
        subjects::DATAPOOL_STATS,
        Vec::new(),
        Duration::from_secs(2),
        who,
    )
    .await
    .ok()?;
    serde_json::from_slice(&reply).ok()
}

/// Every durable consumer's pending (not yet delivered) and unacked messages.
async fn lag(js: &async_nats::jetstream::Context) -> Vec<Lag> {
    let mut out = Vec::new();
    for name in [
        streams::STEPS,
        streams::TRAJECTORIES,
        streams::REWARDS,
        streams::BATCHES,
        streams::WEIGHTS,
    ] {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            out.push(Lag {
                stream: name.to_string(),
                consumer: info.name.clone(),
                pending: info.num_pending,
                unacked: info.num_ack_pending as u64,
            });
        }
    }
    out
}
