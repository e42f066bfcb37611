//! History back into the pipeline: replay republishes steps chosen by SQL as new steps on another
//! channel, with provenance (`metadata.replay_of`, `metadata.replay_query`); the batcher and trainer
//! then treat them like live traffic. The original events are read back from STEPS by their stream
//! sequence, so a replayed step is exactly the captured one. Ids derive from (original step,
//! channel), and steps already replayed to the channel are skipped, so running the same replay twice
//! adds nothing. Also the progress line and the query helper that import and export share.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_nats::{publish_event, streams, subjects};
use clawline_schemas::{
    CompletionReason, Envelope, StepRecorded, StepSource, TrajectoryCompleted, derived_id,
};
use serde_json::{Value, json};

use crate::sql::{Format, Scope, SqlEngine, render};
/// A progress line on stderr, redrawn at most ten times a second.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    last: Instant,
    started: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            done: 0,
            last: Instant::now() - Duration::from_secs(1),
            started: Instant::now(),
        }
    }

    pub fn inc(&mut self) {
        self.done += 1;
        if self.last.elapsed() >= Duration::from_millis(100) || self.done == self.total {
            self.last = Instant::now();
            let width = 30usize;
            let filled = (self.done * width as u64)
                .checked_div(self.total)
                .unwrap_or(0) as usize;
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r{} [{}{}] {}/{} ({rate:.0}/s)",
                self.what,
                "#".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width)),
                self.done,
                self.total
            );
            let _ = std::io::stderr().flush();
        }
    }

    pub fn finish(&self) {
        eprintln!();
    }
}

/// Rows of a query as JSON objects.
pub(crate) async fn rows(engine: &SqlEngine, sql: &str) -> anyhow::Result<Vec<Value>> {
    let answer = engine
        .query(sql, &Scope::All)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = render(&answer, Format::Json).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub selected: u64,
    pub published: u64,
    pub already_replayed: u64,
    /// Selected steps whose original event is no longer in STEPS.
    pub missing: u64,
}

/// Replays the steps `query` selects (it must return `step_id`) onto `channel`.
pub async fn replay(
    engine: &SqlEngine,
    js: &jetstream::Context,
    query: &str,
    channel: &str,
    rate: f64,
    producer: &str,
) -> anyhow::Result<ReplayReport> {
    anyhow::ensure!(
        clawline_nats::subjects::is_valid_token(channel),
        "--channel {channel:?} must be 1-64 of [A-Za-z0-9_-]"
    );
    let selected = rows(
        engine,
        &format!(
            "SELECT step_id, stream_seq FROM steps WHERE step_id IN (SELECT step_id FROM ({query})) ORDER BY stream_seq"
        ),
    )
    .await
    .context("--sql must select a `step_id` column from steps")?;
    let done: HashSet<String> = rows(
        engine,
        &format!(
            "SELECT replay_of FROM steps WHERE channel = {} AND replay_of IS NOT NULL",
            sql_string(channel)
        ),
    )
    .await?
    .into_iter()
    .filter_map(|r| {
        r.get("replay_of")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
    .collect();
    let mut report = ReplayReport {
        selected: selected.len() as u64,
        ..Default::default()
    };
    let stream = js.get_stream(streams::STEPS).await?;
    let mut progress = Progress::new("replay", report.selected);
    let mut trajectories: BTreeMap<(String, String), (u32, String)> = BTreeMap::new();
    let pace = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    for (i, row) in selected.iter().enumerate() {
        progress.inc();
        let id = row
            .get("step_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if done.contains(id) {
            report.already_replayed += 1;
            continue;
        }
        let Some(seq) = row.get("stream_seq").and_then(Value::as_u64) else {
            report.missing += 1;
            continue;
        };
        let original: StepRecorded = match stream.get_raw_message(seq).await {
            Ok(m) => clawline_schemas::decode(&m.payload)?,
            Err(_) => {
                report.missing += 1;
                continue;
            }
        };
        let step = replayed(&original, channel, query, producer);
        let due = started + pace.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        publish_event(js, subjects::steps(channel), &step).await?;
        let entry = trajectories
            .entry((step.tenant.clone(), step.trajectory_uid.clone()))
            .or_insert((step.step_index, step.prompt_uid.clone()));
        entry.0 = entry.0.max(step.step_index);
        report.published += 1;
    }
    progress.finish();
    // The replayed trajectories are complete as selected.
    for ((tenant, uid), (last, prompt)) in trajectories {
        let done = TrajectoryCompleted {
            envelope: Envelope::new(TrajectoryCompleted::id_for(&tenant, &uid), producer),
            tenant,
            channel: channel.to_string(),
            trajectory_uid: uid,
            prompt_uid: Some(prompt),
            last_step_index: Some(last),
            reason: CompletionReason::Client,
            ..Default::default()
        };
        publish_event(js, subjects::TRAJECTORY_COMPLETED.into(), &done).await?;
    }
    Ok(report)
}

/// The replayed copy of a step: new id, trajectory and channel, same tokens and text.
pub fn replayed(
    original: &StepRecorded,
    channel: &str,
    query: &str,
    producer: &str,
) -> StepRecorded {
    let trajectory_uid = format!(
        "replay-{}",
        &derived_id("t", &[&original.trajectory_uid, channel])[2..26]
    );
    let mut metadata = match &original.metadata {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    };
    metadata.insert("replay_of".into(), json!(original.envelope.event_id));
    metadata.insert("replay_query".into(), json!(query));
    let event_id = StepRecorded::id_for(
        &original.tenant,
        &trajectory_uid,
        original.step_index,
        original.choice_index,
    );
    StepRecorded {
        envelope: Envelope::new(event_id, producer),
        channel: channel.to_string(),
        trajectory_uid,
        source: StepSource::Replayed,
        previous_step_id: None,
        is_last: false,
        metadata: Some(Value::Object(metadata)),
        ..original.clone()
    }
}
