//! A batched step's way on: the trainer's update, the version that includes it, that version's
//! activation or rejection, and the first answer served with it.

use serde_json::{Value, json};

use super::facts::{self, WeightsEvent, n, rows, s, t};
use super::step::{Stage, Status, not_reached, stage};
use super::{ExplainError, rfc3339};
use crate::sql::SqlEngine;

/// Update, version, activation and first answer served, for a batched step.
pub(super) async fn after_batch(
    engine: &SqlEngine,
    ctx: &datafusion::prelude::SessionContext,
    batch: &Value,
    channel: &str,
    weights: &[WeightsEvent],
    consumers: &[facts::ConsumerState],
    tenant: Option<&str>,
) -> Result<Vec<Stage>, ExplainError> {
    let batch_id = s(batch, "batch_id");
    let published = weights
        .iter()
        .find(|w| w.event == "published" && w.batch_ids().contains(&batch_id));
    let Some(version) = published else {
        let update = trainer_progress(batch, channel, consumers);
        return Ok(vec![
            update,
            stage(
                "version",
                Status::Waiting,
                None,
                "no published version includes this batch yet (the trainer publishes every --publish-every updates)".into(),
                Value::Null,
            ),
            not_reached("activation", "no version yet"),
            not_reached("served", "no version yet"),
        ]);
    };
    let v = version.version;
    let ids = version.batch_ids();
    let position = ids.iter().position(|b| *b == batch_id).unwrap_or(0) + 1;
    let parent = version.parent().unwrap_or(0);
    let mut out = vec![
        stage(
            "update",
            Status::Done,
            None,
            format!(
                "trained: update {position} of {} since v{parent}",
                ids.len()
            ),
            json!({"version": v, "update": position, "updates": ids.len(), "parent": parent}),
        ),
        stage(
            "version",
            Status::Done,
            Some(version.time),
            format!(
                "v{v} published (parent v{parent}, sha256 {})",
                s(&version.json, "sha256")
                    .chars()
                    .take(12)
                    .collect::<String>()
            ),
            json!({"version": v, "parent": parent, "event_id": s(&version.json, "event_id"),
                   "sha256": s(&version.json, "sha256")}),
        ),
    ];
    // Its own decisions, or a descendant's (trained on from it) when it had none.
    let lineage = descendants(weights, v);
    let decided: Vec<&WeightsEvent> = weights
        .iter()
        .filter(|w| {
            (w.event == "activated" || w.event == "rejected") && lineage.contains(&w.version)
        })
        .collect();
    let engines: Vec<Value> = decided
        .iter()
        .map(|w| {
            json!({"version": w.version, "engine": w.engine(), "event": w.event,
                        "reason": w.reason_with_canary(), "time": rfc3339(w.time)})
        })
        .collect();
    let activated = decided
        .iter()
        .filter(|w| w.event == "activated")
        .min_by_key(|w| w.time);
    let Some(act) = activated else {
        if let Some(rej) = decided.iter().rev().find(|w| w.event == "rejected") {
            out.push(stage(
                "activation",
                Status::Failed,
                Some(rej.time),
                format!(
                    "v{} rejected on {}: {}",
                    rej.version,
                    rej.engine(),
                    rej.reason_with_canary()
                ),
                json!({"version": v, "engines": engines}),
            ));
            out.push(not_reached(
                "served",
                "never served: its version was rejected",
            ));
        } else {
            out.push(stage(
                "activation",
                Status::Waiting,
                None,
                format!("v{v} is neither activated nor rejected yet (the broadcaster runs the canary first)"),
                json!({"version": v, "engines": engines}),
            ));
            out.push(not_reached("served", "not activated yet"));
        }
        return Ok(out);
    };
    let via = if act.version == v {
        String::new()
    } else {
        format!(" (v{}, trained on from v{v})", act.version)
    };
    out.push(stage(
        "activation",
        Status::Done,
        Some(act.time),
        format!("v{} serves on {}{via}", act.version, act.engine()),
        json!({"version": act.version, "engines": engines}),
    ));
    let tenant_filter = if tenant.is_some() {
        " AND tenant = $1"
    } else {
        ""
    };
    let sql = format!(
        "SELECT step_id, policy_version, CAST(event_time AS BIGINT) AS t FROM steps \
         WHERE policy_version >= {} AND CAST(event_time AS BIGINT) >= {}{tenant_filter} \
         ORDER BY event_time, stream_seq LIMIT 1",
        act.version, act.time
    );
    let params: Vec<&str> = tenant.into_iter().collect();
    let first = rows(engine, ctx, &sql, &params).await?;
    out.push(match first.first() {
        Some(f) => stage(
            "served",
            Status::Done,
            Some(t(f)),
            format!(
                "first answer with v{}: step {}",
                n(f, "policy_version").unwrap_or(0),
                s(f, "step_id")
            ),
            json!({"step_id": s(f, "step_id"), "policy_version": n(f, "policy_version")}),
        ),
        None => stage(
            "served",
            Status::Waiting,
            None,
            format!("no answer served with v{} yet", act.version),
            Value::Null,
        ),
    });
    Ok(out)
}

/// `v` and every version trained on from it.
fn descendants(weights: &[WeightsEvent], v: u64) -> Vec<u64> {
    let mut out = vec![v];
    for w in weights.iter().filter(|w| w.event == "published") {
        if w.parent().is_some_and(|p| out.contains(&p)) && !out.contains(&w.version) {
            out.push(w.version);
        }
    }
    out
}

/// Where the trainer is relative to a batch no version includes yet, from its durable consumer.
fn trainer_progress(batch: &Value, channel: &str, consumers: &[facts::ConsumerState]) -> Stage {
    let seq = n(batch, "stream_seq").unwrap_or(0);
    let subject = clawline_nats::subjects::batches(channel);
    let readers: Vec<&facts::ConsumerState> =
        consumers.iter().filter(|c| c.reads(&subject)).collect();
    let detail = json!({"batch_seq": seq, "consumers": readers.iter().map(|c| json!({
        "name": c.name, "delivered": c.delivered, "ack_floor": c.ack_floor})).collect::<Vec<_>>()});
    if readers.is_empty() {
        return stage(
            "update",
            Status::Waiting,
            None,
            format!(
                "no trainer reads channel {channel} (no durable consumer of {subject}; is clawline-trainer running with --channel {channel}?)"
            ),
            detail,
        );
    }
    let best = readers.iter().max_by_key(|c| c.ack_floor).copied();
    let (status, text) = match best {
        Some(c) if c.ack_floor >= seq => (
            Status::Done,
            format!("trained by {} (acked); goes into its next version", c.name),
        ),
        Some(c) if c.delivered >= seq => {
            (Status::Waiting, format!("being trained by {} now", c.name))
        }
        Some(c) => (
            Status::Waiting,
            format!(
                "waits for the trainer: {} has read up to batch #{}, this is #{seq}",
                c.name, c.delivered
            ),
        ),
        None => (Status::Waiting, "waits for the trainer".into()),
    };
    stage("update", status, None, text, detail)
}
