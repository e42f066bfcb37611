//! Import: OpenAI-format JSONL logs become steps (tokenized with the chat template when a tokenizer
//! is given), one line one trajectory; bad lines are reported by number and skipped.

use std::io::BufRead as _;
use std::path::Path;

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_nats::{publish_event, subjects};
use clawline_schemas::{Envelope, StepRecorded, StepSource, TokenSource};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::replay::Progress;

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
        envelope: Envelope::new(
            StepRecorded::id_for(tenant, &trajectory_uid, 0, 0),
            producer,
        ),
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
