//! Replay, import and export: history back into the pipeline, outside data in, datasets out.
//!
//! - **Replay** republishes steps chosen by SQL as new steps on another channel, with provenance
//!   (`metadata.replay_of`, `metadata.replay_query`); the batcher and trainer then treat them like
//!   live traffic. The original events are read back from STEPS by their stream sequence, so a
//!   replayed step is exactly the captured one. Ids derive from (original step, channel), and steps
//!   already replayed to the channel are skipped, so running the same replay twice adds nothing.
//! - **Import** turns OpenAI-format JSONL logs into steps (tokenized with the chat template when a
//!   tokenizer is given), one line one trajectory; bad lines are reported by number and skipped.
//! - **Export** writes a query's rows as Parquet or JSONL plus a `manifest.json` with provenance.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_nats::{publish_event, streams, subjects};
use clawline_schemas::{
    CompletionReason, SCHEMA_VERSION, StepRecorded, StepSource, TokenSource, TrajectoryCompleted,
    derived_id, now_ms,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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
async fn rows(engine: &SqlEngine, sql: &str) -> anyhow::Result<Vec<Value>> {
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
            event_id: TrajectoryCompleted::id_for(&tenant, &uid),
            event_time: now_ms(),
            producer: producer.to_string(),
            schema_version: SCHEMA_VERSION,
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
    metadata.insert("replay_of".into(), json!(original.event_id));
    metadata.insert("replay_query".into(), json!(query));
    StepRecorded {
        event_id: StepRecorded::id_for(
            &original.tenant,
            &trajectory_uid,
            original.step_index,
            original.choice_index,
        ),
        event_time: now_ms(),
        producer: producer.to_string(),
        channel: channel.to_string(),
        trajectory_uid,
        source: StepSource::Replayed,
        previous_step_id: None,
        is_last: false,
        metadata: Some(Value::Object(metadata)),
        ..original.clone()
    }
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub lines: u64,
    pub imported: u64,
    /// `(line number, reason)` of each skipped line.
    pub bad: Vec<(u64, String)>,
}

/// Imports OpenAI chat-format JSONL: each line `{"messages": [..., {"role": "assistant", ...}],
/// "tools"?, "reward"?, "metadata"?}` becomes a one-step trajectory on `channel`.
pub async fn import(
    js: &jetstream::Context,
    file: &Path,
    channel: &str,
    tenant: &str,
    tokenizer: Option<&clawline_runtime::tokenize::ChatTokenizer>,
    producer: &str,
) -> anyhow::Result<ImportReport> {
    anyhow::ensure!(
        clawline_nats::subjects::is_valid_token(channel),
        "--channel {channel:?} must be 1-64 of [A-Za-z0-9_-]"
    );
    let handle = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
    let total = std::io::BufReader::new(std::fs::File::open(file)?)
        .lines()
        .count() as u64;
    let mut report = ImportReport::default();
    let mut progress = Progress::new("import", total);
    for (n, line) in std::io::BufReader::new(handle).lines().enumerate() {
        let number = n as u64 + 1;
        progress.inc();
        let line = line.with_context(|| format!("{}: line {number}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        match import_line(&line, channel, tenant, tokenizer, producer) {
            Ok(step) => {
                publish_event(js, subjects::steps(channel), &step).await?;
                report.imported += 1;
            }
            Err(reason) => report.bad.push((number, reason)),
        }
    }
    progress.finish();
    Ok(report)
}

/// One JSONL line → a step, or why not.
pub fn import_line(
    line: &str,
    channel: &str,
    tenant: &str,
    tokenizer: Option<&clawline_runtime::tokenize::ChatTokenizer>,
    producer: &str,
) -> Result<StepRecorded, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("missing `messages` array")?;
    let (last, prompt) = messages.split_last().ok_or("`messages` is empty")?;
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return Err("the last message must be the assistant's answer".into());
    }
    if prompt.is_empty() {
        return Err("no prompt before the answer".into());
    }
    for (i, m) in messages.iter().enumerate() {
        if m.get("role").and_then(Value::as_str).is_none() {
            return Err(format!("messages[{i}] has no string `role`"));
        }
    }
    let reward = match value.get("reward") {
        None | Some(Value::Null) => None,
        Some(r) => Some(
            r.as_f64()
                .filter(|r| r.is_finite())
                .ok_or("`reward` must be a finite number")?,
        ),
    };
    let metadata = match value.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.clone()),
        Some(_) => return Err("`metadata` must be an object".into()),
    };
    let tools = value.get("tools").filter(|t| !t.is_null());
    let text = last
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tool_calls: Vec<clawline_schemas::ToolCall> = last
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| clawline_schemas::ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    name: c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    arguments: c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let (token_source, prompt_ids, response_ids) = match tokenizer {
        Some(tok) => {
            let p = tok
                .encode_chat(prompt, tools)
                .map_err(|e| format!("rendering the prompt: {e}"))?;
            let mut r = tok
                .encode(&text)
                .map_err(|e| format!("tokenizing the answer: {e}"))?;
            if let Some(eos) = tok.token_id(tok.eos_token()) {
                r.push(eos);
            }
            (TokenSource::Retokenized, p, r)
        }
        None => (TokenSource::Untokenized, Vec::new(), Vec::new()),
    };
    // The same line imported again gets the same ids.
    let digest = hex::encode(&Sha256::digest(line.trim().as_bytes())[..12]);
    let trajectory_uid = format!("import-{digest}");
    let prompt_uid = format!(
        "import-{}",
        hex::encode(&Sha256::digest(serde_json::to_vec(prompt).unwrap_or_default())[..8])
    );
    Ok(StepRecorded {
        event_id: StepRecorded::id_for(tenant, &trajectory_uid, 0, 0),
        event_time: now_ms(),
        producer: producer.to_string(),
        schema_version: SCHEMA_VERSION,
        tenant: tenant.to_string(),
        channel: channel.to_string(),
        trajectory_uid,
        prompt_uid,
        is_last: true,
        source: StepSource::Imported,
        messages: prompt.iter().map(to_message).collect(),
        tools_json: tools.map(Value::to_string),
        response_text: text,
        response_tool_calls: tool_calls,
        token_source,
        prompt_ids,
        response_ids,
        reward,
        metadata,
        ..Default::default()
    })
}

fn to_message(m: &Value) -> clawline_schemas::Message {
    clawline_schemas::Message {
        role: m
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
        content: m.get("content").and_then(Value::as_str).map(str::to_string),
        content_parts_json: m
            .get("content")
            .filter(|c| c.is_array())
            .map(Value::to_string),
        name: m.get("name").and_then(Value::as_str).map(str::to_string),
        tool_call_id: m
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    }
}

/// Writes `query`'s rows to `dir` as `data.parquet` or `data.jsonl`, plus `manifest.json`.
pub async fn export(
    engine: &SqlEngine,
    query: &str,
    format: Format,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let answer = engine
        .query(query, &Scope::All)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (name, bytes) = match format {
        Format::Parquet => (
            "data.parquet",
            render(&answer, Format::Parquet).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        Format::Json => {
            let rows: Vec<Value> = serde_json::from_slice(
                &render(&answer, Format::Json).map_err(|e| anyhow::anyhow!("{e}"))?,
            )?;
            let mut out = Vec::new();
            for r in rows {
                serde_json::to_writer(&mut out, &r)?;
                out.push(b'\n');
            }
            ("data.jsonl", out)
        }
        other => anyhow::bail!("--format {other:?}: export writes parquet or jsonl"),
    };
    let path = dir.join(name);
    std::fs::write(&path, &bytes).with_context(|| format!("{}", path.display()))?;
    let row_count: usize = answer.batches.iter().map(|b| b.num_rows()).sum();
    let columns: BTreeSet<String> = answer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let wrapped = |select: &str| format!("SELECT {select} FROM ({query}) AS q");
    let mut provenance = serde_json::Map::new();
    if columns.contains("stream_seq") {
        let r = rows(
            engine,
            &wrapped("min(stream_seq) AS first, max(stream_seq) AS last"),
        )
        .await?;
        provenance.insert(
            "stream_sequences".into(),
            r.into_iter().next().unwrap_or(Value::Null),
        );
    }
    if columns.contains("policy_version") {
        let r = rows(engine, &wrapped("DISTINCT policy_version")).await?;
        let versions: Vec<Value> = r
            .into_iter()
            .filter_map(|v| v.get("policy_version").cloned())
            .collect();
        provenance.insert("policy_versions".into(), Value::Array(versions));
    }
    if columns.contains("step_id") {
        let r = rows(
            engine,
            &format!(
                "SELECT DISTINCT source, source_version FROM rewards WHERE source LIKE 'rm:%' \
                 AND step_id IN (SELECT step_id FROM ({query}) AS q) ORDER BY source"
            ),
        )
        .await?;
        provenance.insert("reward_models".into(), Value::Array(r));
    }
    let manifest = json!({
        "query": query,
        "created_at_ms": now_ms(),
        "format": name.rsplit('.').next(),
        "rows": row_count,
        "columns": answer.schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
        "provenance": provenance,
        "files": [{
            "name": name,
            "rows": row_count,
            "bytes": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
        }],
        "producer": format!("clawline-datapool/{}", env!("CARGO_PKG_VERSION")),
    });
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest_path)
}
