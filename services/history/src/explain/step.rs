//! One step's timeline: captured → rewards → batch → update → version → activation → served.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::facts::{self, n, rows, s, t};
use super::{ExplainError, ask_batcher, rfc3339};
use crate::sql::{Scope, SqlEngine};

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    /// The step is here now, waiting for what `text` says.
    Waiting,
    /// The path ends here (dropped, rejected).
    Failed,
    /// Nobody could say (the batcher did not answer).
    Unknown,
    /// An earlier stage is not done yet.
    NotReached,
}

/// One stage of the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// `captured`, `rewards`, `batch`, `update`, `version`, `activation`, `served`.
    pub stage: String,
    pub status: Status,
    /// When it happened (RFC 3339, UTC), where known.
    pub time: Option<String>,
    /// One sentence for people.
    pub text: String,
    /// The stage's ids and values for machines (batch id, version, engines, rewards …).
    #[serde(default)]
    pub detail: Value,
}

/// Where a step is on its way into a served policy, and what it waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub step_id: String,
    pub tenant: String,
    pub channel: String,
    pub trajectory_uid: String,
    /// The policy version that answered it.
    pub policy_version: Option<u64>,
    /// When it was captured (RFC 3339).
    pub time: String,
    /// `served` (a version trained on it answers users), `waiting`, `dropped`, `rejected` or
    /// `unknown`.
    pub state: String,
    /// One sentence: where it is and what it waits for.
    pub summary: String,
    pub stages: Vec<Stage>,
    /// What the batcher said about it (`clawline.datapool.explain`); null once it is batched or
    /// when no batcher answered.
    pub batcher: Option<Value>,
    /// E.g. "batcher not answering".
    pub notes: Vec<String>,
}

pub(super) fn stage(
    name: &str,
    status: Status,
    time: Option<i64>,
    text: String,
    detail: Value,
) -> Stage {
    Stage {
        stage: name.into(),
        status,
        time: time.map(rfc3339),
        text,
        detail,
    }
}

pub(super) fn not_reached(name: &str, text: &str) -> Stage {
    stage(name, Status::NotReached, None, text.into(), Value::Null)
}

const STEP: &str = "SELECT step_id, tenant, channel, trajectory_uid, policy_version, token_source, \
    background, CAST(event_time AS BIGINT) AS t FROM steps WHERE step_id = $1 ORDER BY stream_seq LIMIT 1";
const REWARDS: &str = "SELECT source, value, scope, CAST(event_time AS BIGINT) AS t FROM rewards \
    WHERE tenant = $1 AND (step_id = $2 OR (scope = 'trajectory' AND trajectory_uid = $3)) \
    ORDER BY event_time, stream_seq";
const FEEDBACK: &str = "SELECT kind, thumbs, rating, implicit, CAST(event_time AS BIGINT) AS t \
    FROM feedback WHERE tenant = $1 AND (step_id = $2 OR (step_id IS NULL AND trajectory_uid = $3)) \
    ORDER BY event_time, stream_seq";
const BATCH: &str = "SELECT batch_id, steps, stream_seq, CAST(event_time AS BIGINT) AS t \
    FROM batches WHERE channel = $1 AND array_has(step_ids, $2) ORDER BY stream_seq LIMIT 20";

pub async fn explain(
    engine: &SqlEngine,
    step_id: &str,
    scope: &Scope,
) -> Result<Explanation, ExplainError> {
    let ctx = engine.context(&Scope::All).await?;
    let found = rows(engine, &ctx, STEP, &[step_id]).await?;
    let step = match found.first() {
        Some(row) => match scope {
            Scope::Tenant(t) if s(row, "tenant") != t => None,
            _ => Some(row.clone()),
        },
        None => None,
    };
    let Some(step) = step else {
        return Err(ExplainError::UnknownStep(step_id.to_string()));
    };
    let (tenant, channel, traj) = (
        s(&step, "tenant"),
        s(&step, "channel"),
        s(&step, "trajectory_uid"),
    );
    let (by_step, by_batch) = ([tenant, step_id, traj], [channel, step_id]);
    let (rewards, feedback, batch, batcher) = tokio::join!(
        rows(engine, &ctx, REWARDS, &by_step),
        rows(engine, &ctx, FEEDBACK, &by_step),
        rows(engine, &ctx, BATCH, &by_batch),
        ask_batcher(engine, step_id),
    );
    // The first batch trained it; later ones carry only feedback that came after (late samples).
    let mut batches = batch?.into_iter();
    let (rewards, feedback, batch) = (rewards?, feedback?, batches.next());
    let late: Vec<Value> = batches.collect();
    let mut e = Explanation {
        step_id: step_id.to_string(),
        tenant: tenant.to_string(),
        channel: channel.to_string(),
        trajectory_uid: traj.to_string(),
        policy_version: n(&step, "policy_version"),
        time: rfc3339(t(&step)),
        state: String::new(),
        summary: String::new(),
        stages: Vec::new(),
        batcher: None,
        notes: Vec::new(),
    };
    e.stages.push(captured(&step));
    let batcher = match &batch {
        Some(_) => None,
        None => {
            if batcher.is_none() {
                e.notes.push("batcher not answering".into());
            }
            batcher
        }
    };
    e.stages.push(rewards_stage(
        &rewards,
        &feedback,
        batch.is_some(),
        batcher.as_ref(),
    ));
    e.stages
        .push(batch_stage(batch.as_ref(), &late, batcher.as_ref()));
    e.batcher = batcher;
    match batch {
        Some(batch) => {
            let weights = facts::weights(engine, &ctx).await?;
            let consumers = match engine.jetstream() {
                Some(js) => facts::consumers(js, &[clawline_nats::streams::BATCHES]).await,
                None => Vec::new(),
            };
            let served_scope = match scope {
                Scope::Tenant(t) => Some(t.as_str()),
                Scope::All => None,
            };
            let later = super::trained::after_batch(
                engine,
                &ctx,
                &batch,
                channel,
                &weights,
                &consumers,
                served_scope,
            )
            .await?;
            e.stages.extend(later);
        }
        None => {
            e.stages.push(not_reached("update", "not in a batch yet"));
            e.stages.push(not_reached("version", "not in a batch yet"));
            e.stages
                .push(not_reached("activation", "not in a batch yet"));
            e.stages.push(not_reached("served", "not in a batch yet"));
        }
    }
    summarize(&mut e);
    Ok(e)
}

fn captured(step: &Value) -> Stage {
    let version = match n(step, "policy_version") {
        Some(0) => "the base model (v0)".to_string(),
        Some(v) => format!("policy v{v}"),
        None => "an unknown policy version".to_string(),
    };
    let mut text = format!(
        "captured on channel {}, trajectory {}, answered by {version}",
        s(step, "channel"),
        s(step, "trajectory_uid")
    );
    if s(step, "token_source") == "untokenized" {
        text.push_str("; it has no token ids (the engine returned none and the gateway has no --tokenizer), so it cannot train");
    }
    if step.get("background").and_then(Value::as_bool) == Some(true) {
        text.push_str("; it is a background turn (no user asked for it: an agent's heartbeat or wake, or x-clawline-background), so it trains only where the channel sets train_background = true");
    }
    stage(
        "captured",
        Status::Done,
        Some(t(step)),
        text,
        json!({"trajectory_uid": s(step, "trajectory_uid"), "channel": s(step, "channel"),
               "policy_version": n(step, "policy_version"), "token_source": s(step, "token_source")}),
    )
}

fn rewards_stage(
    rewards: &[Value],
    feedback: &[Value],
    batched: bool,
    batcher: Option<&Value>,
) -> Stage {
    let list: Vec<Value> = rewards
        .iter()
        .map(|r| json!({"source": s(r, "source"), "value": r.get("value"), "scope": s(r, "scope"), "time": rfc3339(t(r))}))
        .collect();
    let fb: Vec<Value> = feedback
        .iter()
        .map(|f| {
            json!({"kind": s(f, "kind"), "thumbs": f.get("thumbs"), "rating": f.get("rating"),
                        "implicit": f.get("implicit"), "time": rfc3339(t(f))})
        })
        .collect();
    let mut text = if rewards.is_empty() && batched {
        "no reward: batched without one (none required, or rewards.deadline_secs passed with \
         fallback = \"use_available\")"
            .to_string()
    } else if rewards.is_empty() {
        "no reward yet".to_string()
    } else {
        rewards
            .iter()
            .map(|r| {
                let v = r.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN);
                let whole = if s(r, "scope") == "trajectory" {
                    " (trajectory)"
                } else {
                    ""
                };
                format!("{} {v:.2}{whole}", s(r, "source"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !feedback.is_empty() {
        text.push_str(&format!("; {} feedback event(s)", feedback.len()));
    }
    // What the batcher still waits for that is a reward or a reaction.
    let awaited: Vec<String> = batcher
        .map(waits_for)
        .unwrap_or_default()
        .into_iter()
        .filter(|w| {
            let w = w.to_lowercase();
            w.contains("reward") || w.contains("reaction") || w.contains("feedback")
        })
        .collect();
    let status = if batched || (batcher.is_some() && awaited.is_empty() && !rewards.is_empty()) {
        Status::Done
    } else if !awaited.is_empty() {
        text.push_str(&format!("; still awaited: {}", awaited.join("; ")));
        Status::Waiting
    } else if batcher.is_some_and(|b| s(b, "state") == "done") {
        Status::Done
    } else if batcher.is_none() && !rewards.is_empty() {
        Status::Unknown
    } else {
        Status::Waiting
    };
    let last = rewards.iter().chain(feedback).map(t).max();
    stage(
        "rewards",
        status,
        last,
        text,
        json!({"rewards": list, "feedback": fb, "awaited": awaited}),
    )
}

/// The batcher's `waits_for` sentences.
fn waits_for(batcher: &Value) -> Vec<String> {
    batcher
        .get("waits_for")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn batch_stage(batch: Option<&Value>, late: &[Value], batcher: Option<&Value>) -> Stage {
    if let Some(b) = batch {
        let again = match late.len() {
            0 => String::new(),
            k => format!("; {k} later batch(es) train it again with feedback that came after"),
        };
        let late_ids: Vec<&str> = late.iter().map(|l| s(l, "batch_id")).collect();
        return stage(
            "batch",
            Status::Done,
            Some(t(b)),
            format!(
                "in batch {} ({}){again}",
                s(b, "batch_id"),
                match n(b, "steps").unwrap_or(0) {
                    1 => "1 step".to_string(),
                    k => format!("{k} steps"),
                }
            ),
            json!({"batch_id": s(b, "batch_id"), "steps": n(b, "steps"),
                   "stream_seq": n(b, "stream_seq"), "late_batches": late_ids}),
        );
    }
    let Some(answer) = batcher else {
        return stage(
            "batch",
            Status::Unknown,
            None,
            "in no batch yet; the batcher is not answering, so what it waits for is unknown".into(),
            Value::Null,
        );
    };
    let waits = waits_for(answer);
    let detail = json!({"state": s(answer, "state"), "waits_for": waits});
    let (status, text) = match s(answer, "state") {
        "done" => {
            let why = ["reason", "dropped", "drop_reason"]
                .iter()
                .map(|k| s(answer, k))
                .find(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_else(|| " (see the batcher's drops by reason)".into());
            (Status::Failed, format!("dropped by the batcher, in no batch{why}"))
        }
        "unknown" => (
            Status::Waiting,
            "the batcher has not seen this step (it is still reading the log, or does not read this channel)".into(),
        ),
        state => {
            let what = if waits.is_empty() {
                "nothing it names".to_string()
            } else {
                waits.join("; ")
            };
            let queued = if state == "queued" { "queued; " } else { "" };
            (Status::Waiting, format!("{queued}not batched yet: waits for {what}"))
        }
    };
    stage("batch", status, None, text, detail)
}

/// The state and one-sentence summary, from the first stage not done.
fn summarize(e: &mut Explanation) {
    let pending = e.stages.iter().find(|s| s.status != Status::Done);
    let (state, summary) = match pending {
        None => {
            let served = e.stages.iter().rev().find(|s| s.stage == "activation");
            let since = served.and_then(|s| s.time.clone()).unwrap_or_default();
            (
                "served",
                format!("done: a version trained on this step serves since {since}"),
            )
        }
        Some(p) => match (p.status, p.stage.as_str()) {
            (Status::Failed, "batch") => ("dropped", format!("dropped: {}", p.text)),
            (Status::Failed, _) => ("rejected", format!("stopped at {}: {}", p.stage, p.text)),
            (Status::Unknown, _) => ("unknown", format!("at {}: {}", p.stage, p.text)),
            _ => ("waiting", format!("waits at {}: {}", p.stage, p.text)),
        },
    };
    e.state = state.into();
    e.summary = summary;
}
