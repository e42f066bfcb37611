//! The system diagnosis: what keeps the policy from learning, as plain sentences — from the
//! captured steps (SQL), the batcher's statistics, the WEIGHTS events and the consumers' lag.

use clawline_nats::streams;
use clawline_schemas::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::facts::{self, WeightsEvent, n, rows};
use super::{ExplainError, batcher_stats, human_duration, rfc3339};
use crate::sql::{Scope, SqlEngine};

/// How far back "recent" reaches.
const RECENT_MS: i64 = 10 * 60_000;
/// A published version undecided for longer than this is reported.
const UNDECIDED_MS: i64 = 2 * 60_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// When it was made (RFC 3339).
    pub time: String,
    /// False when any line names a problem.
    pub ok: bool,
    /// Plain sentences, the data's way first (capture, batcher, trainer, broadcaster, lag); one
    /// "no problem found" line when all is well.
    pub lines: Vec<String>,
    /// The version of the latest activation.
    pub serving_version: Option<u64>,
    /// Steps captured in the last 10 minutes (the caller's own, for a tenant).
    pub recent_steps: u64,
}

pub async fn diagnose(engine: &SqlEngine, scope: &Scope) -> Result<Diagnosis, ExplainError> {
    let now = now_ms();
    let ctx = engine.context(&Scope::All).await?;
    let since = now - RECENT_MS;
    let (tenant_filter, params): (&str, Vec<&str>) = match scope {
        Scope::Tenant(t) => (" AND tenant = $1", vec![t.as_str()]),
        Scope::All => ("", Vec::new()),
    };
    let recent_sql = format!(
        "SELECT count(*) AS n, \
         sum(CASE WHEN token_source = 'untokenized' THEN 1 ELSE 0 END) AS untokenized \
         FROM steps WHERE date >= '{}' AND CAST(event_time AS BIGINT) >= {since}{tenant_filter}",
        crate::tables::day(since)
    );
    let (recent, weights, stats) = tokio::join!(
        rows(engine, &ctx, &recent_sql, &params),
        facts::weights(engine, &ctx),
        batcher_stats(engine),
    );
    let (recent, weights) = (recent?, weights?);
    let recent_steps = recent.first().and_then(|r| n(r, "n")).unwrap_or(0);
    let untokenized = recent
        .first()
        .and_then(|r| n(r, "untokenized"))
        .unwrap_or(0);

    let mut lines = Vec::new();
    if recent_steps == 0 {
        let last_sql = format!(
            "SELECT max(CAST(event_time AS BIGINT)) AS t FROM steps WHERE true{tenant_filter}"
        );
        let last = rows(engine, &ctx, &last_sql, &params).await?;
        let last = last
            .first()
            .and_then(|r| r.get("t"))
            .and_then(Value::as_i64);
        lines.push(match last {
            Some(t) => format!(
                "no steps captured in the last 10 min (the last one {} ago, at {})",
                human_duration(now - t),
                rfc3339(t)
            ),
            None => "no steps captured yet: point your agent's base_url at the gateway".into(),
        });
    } else if untokenized > 0 {
        lines.push(format!(
            "steps arrive untokenized: {untokenized} of {recent_steps} in the last 10 min have no \
             token ids (the engine returns no token ids and the gateway has no --tokenizer), so \
             they cannot train"
        ));
    }
    match &stats {
        Some(stats) => batcher_lines(stats, &mut lines),
        None => lines.push(
            "batcher not answering (clawline.datapool.stats): is clawline-batcher running?".into(),
        ),
    }
    let serving_version = weights_lines(engine, &ctx, &weights, now, &mut lines).await?;
    if let Some(js) = engine.jetstream() {
        let all = [
            streams::STEPS,
            streams::TRAJECTORIES,
            streams::REWARDS,
            streams::BATCHES,
            streams::WEIGHTS,
        ];
        for c in facts::consumers(js, &all).await {
            let threshold = match c.stream {
                streams::BATCHES => 4,
                streams::WEIGHTS => 2,
                _ => 1000,
            };
            if c.pending >= threshold {
                lines.push(format!(
                    "consumer {} lags {} messages on {} ({} delivered, not yet acked)",
                    c.name, c.pending, c.stream, c.unacked
                ));
            }
        }
    }
    let ok = lines.is_empty();
    if ok {
        lines.push(match serving_version {
            Some(v) => format!(
                "no problem found: v{v} serves; {recent_steps} steps captured in the last 10 min"
            ),
            None => format!(
                "no problem found: {recent_steps} steps captured in the last 10 min; no version \
                 trained yet"
            ),
        });
    }
    Ok(Diagnosis {
        time: rfc3339(now),
        ok,
        lines,
        serving_version,
        recent_steps,
    })
}

/// What each drop reason means, for the sentence.
fn drop_reason(reason: &str) -> &'static str {
    match reason {
        "untokenized" => {
            "untokenized (the engine returns no token ids and the gateway has no --tokenizer)"
        }
        "missing_reward" => {
            "without their required rewards (rewards.deadline_secs passed, fallback = \"drop\")"
        }
        "abandoned" => "abandoned (their trajectory went idle, completion.on_idle = \"abandon\")",
        "stale" => "as stale (more than staleness.max_lag versions behind the serving one)",
        "zero_variance" => "in groups whose rewards were all equal (zero_variance = \"drop\")",
        "group_timeout" => "in groups still short of group_size at group_timeout_secs",
        "queue_full" => "because the queue was full (max_queue_size)",
        "background" => {
            "as background turns (an agent's heartbeat or wake, no user in them; train_background = false)"
        }
        _ => "",
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Sentences from the batcher's statistics.
fn batcher_lines(stats: &Value, lines: &mut Vec<String>) {
    if stats.get("caught_up").and_then(Value::as_bool) == Some(false) {
        lines.push(
            "the batcher is still reading the log up to where it stood at its start; it forms no \
             batch until then"
                .into(),
        );
    }
    let empty = serde_json::Map::new();
    let channels = stats
        .get("channels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    // Late feedback (a reaction after its step was batched), summed over the channels.
    let late_of = |v: &Value| {
        v.get("late_feedback")
            .map(|l| (count(l, "trained"), count(l, "too_late")))
    };
    let mut late = late_of(stats);
    for (channel, c) in channels {
        let on = if channels.len() > 1 {
            format!(" on channel {channel}")
        } else {
            String::new()
        };
        if let Some(w) = c.get("waiting") {
            let window = c
                .get("reaction_wait_secs")
                .or_else(|| stats.get("reaction_wait_secs"))
                .and_then(Value::as_u64)
                .map(|s| format!(" (they train at most {s} s after their answer)"))
                .unwrap_or_default();
            for (key, what) in [
                (
                    "reaction",
                    format!("a user reaction (explicit feedback or their next turn){window}"),
                ),
                (
                    "rewards",
                    "their required rewards (is clawline-reward running?)".into(),
                ),
                (
                    "completion",
                    "their trajectory to complete (complete_trajectory, a last step, or the idle \
                     timeout)"
                        .into(),
                ),
            ] {
                match count(w, key) {
                    0 => {}
                    1 => lines.push(format!(
                        "1 step{on} waits for {}",
                        what.replace("their required", "its required")
                            .replace("their trajectory", "its trajectory")
                    )),
                    k => lines.push(format!("{k} steps{on} wait for {what}")),
                }
            }
        }
        if let Some(dropped) = c.get("dropped").and_then(Value::as_object) {
            for (reason, k) in dropped {
                let k = k.as_u64().unwrap_or(0);
                if k == 0 {
                    continue;
                }
                lines.push(match (reason.as_str(), drop_reason(reason)) {
                    ("untokenized", _) => format!(
                        "steps arrive untokenized: {k}{on} dropped (the engine returns no token \
                         ids and the gateway has no --tokenizer)"
                    ),
                    (_, "") => format!("{k} steps{on} dropped: {reason}"),
                    (_, why) => format!("{k} steps{on} dropped {why}"),
                });
            }
        }
        if let Some((trained, too_late)) = late_of(c) {
            let (t, l) = late.unwrap_or_default();
            late = Some((t + trained, l + too_late));
        }
    }
    if let Some((trained, too_late)) = late
        && too_late > 0
    {
        lines.push(format!(
            "{too_late} reactions came after their step was batched and trained nothing \
             (late_feedback mode \"report\", or the step was no longer kept); {trained} trained \
             as late samples"
        ));
    }
}

/// Sentences from the WEIGHTS events; returns the serving version.
async fn weights_lines(
    engine: &SqlEngine,
    ctx: &datafusion::prelude::SessionContext,
    weights: &[WeightsEvent],
    now: i64,
    lines: &mut Vec<String>,
) -> Result<Option<u64>, ExplainError> {
    let published: Vec<&WeightsEvent> = weights.iter().filter(|w| w.event == "published").collect();
    let last_activation = weights
        .iter()
        .filter(|w| w.event == "activated")
        .max_by_key(|w| w.time);
    let serving = last_activation.map(|w| w.version);
    let batches_after = |t: i64| {
        format!("SELECT count(*) AS n FROM batches WHERE CAST(event_time AS BIGINT) > {t}")
    };
    let Some(last_published) = published.iter().max_by_key(|w| w.time) else {
        let formed = rows(engine, ctx, &batches_after(-1), &[]).await?;
        let formed = formed.first().and_then(|r| n(r, "n")).unwrap_or(0);
        if formed > 0 {
            lines.push(format!(
                "no version published yet, though {formed} batches were formed: is \
                 clawline-trainer running? (it publishes every --publish-every updates)"
            ));
        }
        return Ok(serving);
    };
    // Rejections since the last promotion.
    let promoted_at = last_activation.map(|w| w.time).unwrap_or(i64::MIN);
    let mut rejected: Vec<&WeightsEvent> = weights
        .iter()
        .filter(|w| w.event == "rejected" && w.time > promoted_at)
        .collect();
    rejected.sort_by_key(|w| w.time);
    let mut versions: Vec<u64> = rejected.iter().map(|w| w.version).collect();
    versions.sort_unstable();
    versions.dedup();
    if let Some(latest) = rejected.last() {
        let since = match last_activation {
            Some(a) => format!("for {}", human_duration(now - a.time)),
            None => "yet".into(),
        };
        let by = if latest.json.get("canary").is_some_and(Value::is_object)
            || latest.reason().contains("canary")
        {
            "the canary"
        } else {
            "the broadcaster"
        };
        let which = match versions.as_slice() {
            [v] => format!("v{v}"),
            [first, .., last] => format!("the last {} (v{first}–v{last})", versions.len()),
            [] => String::new(),
        };
        lines.push(format!(
            "no version promoted {since}: {by} rejected {which}: {}",
            latest.reason_with_canary()
        ));
    }
    // Published versions no engine decided on.
    for p in &published {
        let decided = weights
            .iter()
            .any(|w| w.version == p.version && (w.event == "activated" || w.event == "rejected"));
        if !decided && now - p.time > UNDECIDED_MS {
            lines.push(format!(
                "v{} was published {} ago and is neither activated nor rejected: is \
                 clawline-broadcaster running (and the reward scorer its canary asks)?",
                p.version,
                human_duration(now - p.time)
            ));
        }
    }
    // A trainer that stopped publishing while batches keep coming.
    if now - last_published.time > RECENT_MS {
        let formed = rows(engine, ctx, &batches_after(last_published.time), &[]).await?;
        let formed = formed.first().and_then(|r| n(r, "n")).unwrap_or(0);
        if formed > 0 {
            lines.push(format!(
                "the trainer has not published since {} ({} ago, v{}), though {formed} batches \
                 were formed since",
                rfc3339(last_published.time),
                human_duration(now - last_published.time),
                last_published.version
            ));
        }
    }
    Ok(serving)
}
