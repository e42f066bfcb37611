//! "Why isn't it learning?": where one step is on its way into a served policy, and what the
//! system as a whole is stuck on.
//!
//! A step's path is captured → rewards → batch → update → version → activated / rejected → first
//! answer served with it. The history comes from SQL (archive + live tail: `steps`, `rewards`,
//! `feedback`, `batches`, `weights`); what a step not yet batched waits for comes from the batcher
//! (`clawline.datapool.explain`), the trainer's progress from its durable consumer on `BATCHES`.
//! The diagnosis adds the batcher's statistics, the WEIGHTS events and every consumer's lag.
//!
//! Served by `clawline explain`, the SQL service's `GET /explain/{step_id}` and `GET /diagnosis`,
//! and over NATS (`clawline.explain`, for the gateway's `/v1/explain` and `/v1/diagnosis`). Must not
//! change anything: it only reads.

mod diagnosis;
mod facts;
mod step;
pub mod text;
mod trained;

use std::sync::Arc;
use std::time::Duration;

use clawline_nats::subjects;
use clawline_runtime::CancellationToken;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sql::{Scope, SqlEngine, SqlError};

pub use diagnosis::Diagnosis;
pub use step::{Explanation, Stage, Status};

/// How long the batcher may take to say what a step waits for before the answer goes on without it.
pub const BATCHER_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an explanation could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    BadStepId(String),
    /// No such step, or one of another tenant (the same answer: its existence is not disclosed).
    #[error("unknown step {0:?}: no step with this id was captured")]
    UnknownStep(String),
    #[error(transparent)]
    Sql(#[from] SqlError),
}

impl ExplainError {
    /// The HTTP status it maps to.
    pub fn status(&self) -> u16 {
        match self {
            ExplainError::BadStepId(_) => 400,
            ExplainError::UnknownStep(_) => 404,
            ExplainError::Sql(SqlError::Invalid(_)) => 400,
            ExplainError::Sql(SqlError::Timeout(_)) => 408,
            ExplainError::Sql(SqlError::Memory(_)) => 507,
            ExplainError::Sql(SqlError::Internal(_)) => 500,
        }
    }

    /// The OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        let (kind, param, code) = match self {
            ExplainError::BadStepId(_) => ("invalid_request_error", Some("step_id"), None),
            ExplainError::UnknownStep(_) => {
                ("not_found_error", Some("step_id"), Some("unknown_step"))
            }
            ExplainError::Sql(SqlError::Timeout(_)) => ("query_timeout", None, None),
            ExplainError::Sql(SqlError::Memory(_)) => ("query_memory_limit", None, None),
            ExplainError::Sql(_) => ("internal_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

/// A step id as the gateway makes them (`stp_…`) or a client sends them: 1–200 characters of
/// `[A-Za-z0-9_.:-]`.
pub fn check_step_id(step_id: &str) -> Result<(), ExplainError> {
    let ok = !step_id.is_empty()
        && step_id.len() <= 200
        && step_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ExplainError::BadStepId(format!(
            "step_id {:?} is not a step id (1-200 characters of A-Z a-z 0-9 _ - . :)",
            step_id.chars().take(80).collect::<String>()
        )))
    }
}

/// Explains steps and diagnoses the system from one SQL engine (with the live tail, when it has
/// a JetStream context, which is also how it reaches the batcher and the consumers).
pub struct Explainer {
    engine: Arc<SqlEngine>,
}

impl Explainer {
    pub fn new(engine: Arc<SqlEngine>) -> Self {
        Self { engine }
    }

    /// Where `step_id` is and what it waits for, as `scope` may see it (another tenant's step is
    /// an unknown step).
    pub async fn step(&self, step_id: &str, scope: &Scope) -> Result<Explanation, ExplainError> {
        check_step_id(step_id)?;
        let timeout = self.engine.timeout();
        tokio::time::timeout(timeout, step::explain(&self.engine, step_id, scope))
            .await
            .map_err(|_| ExplainError::Sql(SqlError::Timeout(timeout)))?
    }

    /// What the learning loop is stuck on, in plain sentences.
    pub async fn diagnose(&self, scope: &Scope) -> Result<Diagnosis, ExplainError> {
        let timeout = self.engine.timeout();
        tokio::time::timeout(timeout, diagnosis::diagnose(&self.engine, scope))
            .await
            .map_err(|_| ExplainError::Sql(SqlError::Timeout(timeout)))?
    }

    /// The answer to one `clawline.explain` request: `{"status", "body"}`.
    pub async fn answer(&self, request: &[u8]) -> Value {
        let request: Request = match serde_json::from_slice(request) {
            Ok(r) => r,
            Err(e) => {
                return json!({"status": 400, "body": {"error": {
                    "message": format!("invalid explain request: {e}"),
                    "type": "invalid_request_error", "param": null, "code": null}}});
            }
        };
        let scope = match request.tenant {
            Some(t) => Scope::Tenant(t),
            None => Scope::All,
        };
        let answer = match request.step_id {
            Some(id) => self.step(&id, &scope).await.map(|e| json!(e)),
            None => self.diagnose(&scope).await.map(|d| json!(d)),
        };
        match answer {
            Ok(body) => json!({"status": 200, "body": body}),
            Err(e) => {
                if e.status() >= 500 {
                    tracing::error!(error = %e, "explain failed");
                }
                json!({"status": e.status(), "body": e.body()})
            }
        }
    }
}

/// A `clawline.explain` request (see [`subjects::EXPLAIN`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub step_id: Option<String>,
    /// The tenant whose view this is; none: every tenant's (an admin key).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Answers `clawline.explain` (queue group `explain`, so several SQL services share the work)
/// until `shutdown`; each request in its own task, at most 4 at once.
pub async fn respond(
    explainer: Arc<Explainer>,
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = requests.next() => match m {
                Some(m) => m,
                None => anyhow::bail!("the {} subscription ended", subjects::EXPLAIN),
            },
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (explainer, client) = (explainer.clone(), client.clone());
        tokio::spawn(async move {
            let answer = explainer.answer(&message.payload).await;
            let bytes = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = client.publish(reply, bytes.into()).await {
                tracing::warn!(error = %e, "explain reply not sent");
            }
            drop(permit);
        });
    }
}

/// What the batcher says about one step (see [`subjects::DATAPOOL_EXPLAIN`]); `None` when no
/// batcher answers within [`BATCHER_TIMEOUT`].
pub(crate) async fn ask_batcher(engine: &SqlEngine, step_id: &str) -> Option<Value> {
    let payload = serde_json::to_vec(&json!({"step_id": step_id})).ok()?;
    ask(engine, subjects::DATAPOOL_EXPLAIN, payload).await
}

/// The batcher's statistics (`clawline.datapool.stats`); `None` when none answers in time.
pub(crate) async fn batcher_stats(engine: &SqlEngine) -> Option<Value> {
    ask(engine, subjects::DATAPOOL_STATS, Vec::new()).await
}

/// A JSON object answered on `subject` within [`BATCHER_TIMEOUT`]; `None` without one.
async fn ask(engine: &SqlEngine, subject: &'static str, payload: Vec<u8>) -> Option<Value> {
    let client = engine.jetstream()?.client();
    let reply = tokio::time::timeout(BATCHER_TIMEOUT, client.request(subject, payload.into()))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice::<Value>(&reply.payload)
        .ok()
        .filter(Value::is_object)
}

/// `2026-12-03T08:01:02.123Z` for a Unix time in ms.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A duration for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_that_could_inject_are_refused() {
        assert!(check_step_id("stp_0a1b2c").is_ok());
        for bad in ["", "a'b", "a b", "x;DROP", &"x".repeat(201)] {
            assert_eq!(check_step_id(bad).unwrap_err().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human_duration(45_000), "45 s");
        assert_eq!(human_duration(20 * 60_000), "20 min");
        assert_eq!(human_duration(3 * 3_600_000 + 5 * 60_000), "3 h 5 min");
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
