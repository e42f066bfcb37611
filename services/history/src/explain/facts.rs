//! The facts an explanation is made of, read with SQL (one session per explanation, so the
//! archive and the live tail are read once) and from JetStream's consumer state.

use async_nats::jetstream;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde_json::Value;

use crate::sql::{Format, SqlEngine, SqlError};

/// Runs `sql` with `$1, $2, …` bound to `params` and returns the rows as JSON objects.
pub async fn rows(
    engine: &SqlEngine,
    ctx: &SessionContext,
    sql: &str,
    params: &[&str],
) -> Result<Vec<Value>, SqlError> {
    let values: Vec<ScalarValue> = params
        .iter()
        .map(|p| ScalarValue::Utf8(Some((*p).to_string())))
        .collect();
    let df = ctx.sql(sql).await?.with_param_values(values)?;
    let answer = engine.collect(df).await?;
    let bytes = crate::sql::render(&answer, Format::Json)?;
    serde_json::from_slice::<Vec<Value>>(&bytes).map_err(|e| SqlError::Internal(e.to_string()))
}

/// A string field of a row.
pub fn s<'a>(row: &'a Value, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// An integer field of a row.
pub fn n(row: &Value, key: &str) -> Option<u64> {
    row.get(key).and_then(Value::as_u64)
}

/// A time column selected as `CAST(event_time AS BIGINT)` (ms).
pub fn t(row: &Value) -> i64 {
    row.get("t").and_then(Value::as_i64).unwrap_or_default()
}

/// One weights event, from `weights.event_json`.
#[derive(Debug, Clone)]
pub struct WeightsEvent {
    /// `published`, `activated` or `rejected`.
    pub event: String,
    pub time: i64,
    pub version: u64,
    pub json: Value,
}

impl WeightsEvent {
    pub fn engine(&self) -> &str {
        s(&self.json, "engine")
    }

    pub fn reason(&self) -> &str {
        s(&self.json, "reason")
    }

    pub fn parent(&self) -> Option<u64> {
        n(&self.json, "parent")
    }

    pub fn batch_ids(&self) -> Vec<&str> {
        self.json
            .get("batch_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The reason, with the canary's reward means when the reason does not carry them.
    pub fn reason_with_canary(&self) -> String {
        let reason = self.reason().to_string();
        let Some(c) = self.json.get("canary").filter(|c| c.is_object()) else {
            return reason;
        };
        let (Some(cand), Some(serv)) = (
            c.get("candidate_reward").and_then(Value::as_f64),
            c.get("serving_reward").and_then(Value::as_f64),
        ) else {
            return reason;
        };
        if reason.contains(&format!("{cand:.2}")) || (cand == 0.0 && serv == 0.0) {
            return reason;
        }
        let sep = if reason.is_empty() { "" } else { "; " };
        format!("{reason}{sep}canary reward {cand:.2} vs serving {serv:.2}")
    }
}

/// Every weights event, in stream order (the table is small: a few rows per version).
pub async fn weights(
    engine: &SqlEngine,
    ctx: &SessionContext,
) -> Result<Vec<WeightsEvent>, SqlError> {
    let rows = rows(
        engine,
        ctx,
        "SELECT event, version, CAST(event_time AS BIGINT) AS t, event_json FROM weights \
         ORDER BY stream_seq",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| WeightsEvent {
            event: s(r, "event").to_string(),
            time: t(r),
            version: n(r, "version").unwrap_or_default(),
            json: serde_json::from_str(s(r, "event_json")).unwrap_or(Value::Null),
        })
        .collect())
}

/// A durable consumer of a stream and how far it got.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    pub stream: &'static str,
    pub name: String,
    pub filters: Vec<String>,
    /// Messages not yet delivered to it / delivered and not acked.
    pub pending: u64,
    pub unacked: u64,
    /// Stream sequences: the last delivered, and the floor below which everything is acked.
    pub delivered: u64,
    pub ack_floor: u64,
}

impl ConsumerState {
    /// Whether it reads `subject`.
    pub fn reads(&self, subject: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| subject_matches(f, subject))
    }
}

/// Every durable consumer of `streams` (ephemeral readers, e.g. the archiver's, are left out).
pub async fn consumers(js: &jetstream::Context, streams: &[&'static str]) -> Vec<ConsumerState> {
    let mut out = Vec::new();
    for &name in streams {
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let mut list = stream.consumers();
        while let Some(Ok(info)) = list.next().await {
            if info.config.durable_name.is_none() {
                continue;
            }
            let mut filters = info.config.filter_subjects.clone();
            if !info.config.filter_subject.is_empty() {
                filters.push(info.config.filter_subject.clone());
            }
            out.push(ConsumerState {
                stream: name,
                name: info.name.clone(),
                filters,
                pending: info.num_pending,
                unacked: info.num_ack_pending as u64,
                delivered: info.delivered.stream_sequence,
                ack_floor: info.ack_floor.stream_sequence,
            });
        }
    }
    out
}

/// NATS subject matching: `*` one token, `>` the rest.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches(
            "clawline.batches.>",
            "clawline.batches.train"
        ));
        assert!(subject_matches(
            "clawline.batches.*",
            "clawline.batches.train"
        ));
        assert!(subject_matches(
            "clawline.batches.train",
            "clawline.batches.train"
        ));
        assert!(!subject_matches(
            "clawline.batches.grpo",
            "clawline.batches.train"
        ));
        assert!(!subject_matches(
            "clawline.batches",
            "clawline.batches.train"
        ));
    }
}
