//! Operator requests (`clawline weights activate N | rollback`) to the broadcaster, as JSON over
//! core NATS request/reply on `clawline.control.weights`, and reading the WEIGHTS history.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_nats::{streams, subjects};
use clawline_schemas::{WeightsActivated, WeightsPublished, WeightsRejected};
use serde::{Deserialize, Serialize};

use crate::service::{Broadcaster, Trigger};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Serve `version` on every engine (no canary: the operator decides).
    Activate { version: u64 },
    /// Serve the version that was serving before the current one.
    Rollback,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineOutcome {
    pub engine: String,
    pub activated: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The version every engine serves after the request.
    pub serving: u64,
    #[serde(default)]
    pub engines: Vec<EngineOutcome>,
}

impl ControlRequest {
    /// Sends the request to the running broadcaster and waits for its answer.
    pub async fn send(&self, client: &async_nats::Client) -> anyhow::Result<ControlReply> {
        let body = serde_json::to_vec(self)?;
        let reply = tokio::time::timeout(
            Duration::from_secs(900),
            client.request(subjects::WEIGHTS_CONTROL, body.into()),
        )
        .await
        .context("the broadcaster did not answer in 15 minutes")?
        .context("no broadcaster is running (nothing answers clawline.control.weights)")?;
        serde_json::from_slice(&reply.payload).context("the broadcaster's answer is not JSON")
    }
}

/// Everything the WEIGHTS stream says: versions by number, and each activation / rejection.
#[derive(Debug, Default)]
pub struct History {
    pub published: BTreeMap<u64, WeightsPublished>,
    pub activated: Vec<WeightsActivated>,
    pub rejected: Vec<WeightsRejected>,
}

impl History {
    /// Reads the whole WEIGHTS stream (weight events are few).
    pub async fn read(js: &jetstream::Context) -> anyhow::Result<Self> {
        let mut stream = js
            .get_stream(streams::WEIGHTS)
            .await
            .context("opening the WEIGHTS stream")?;
        let last = stream.info().await?.state.last_sequence;
        let mut history = History::default();
        for seq in 1..=last {
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            match m.subject.as_str() {
                subjects::WEIGHTS_PUBLISHED => {
                    if let Ok(e) = clawline_nats::decode_message::<WeightsPublished>(&m.payload) {
                        history.published.insert(e.version, e);
                    }
                }
                subjects::WEIGHTS_ACTIVATED => {
                    if let Ok(e) = clawline_nats::decode_message(&m.payload) {
                        history.activated.push(e);
                    }
                }
                subjects::WEIGHTS_REJECTED => {
                    if let Ok(e) = clawline_nats::decode_message(&m.payload) {
                        history.rejected.push(e);
                    }
                }
                _ => {}
            }
        }
        Ok(history)
    }

    /// Versions activated, in order, consecutive repeats (one per engine) collapsed.
    pub fn promoted(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for a in &self.activated {
            if out.last() != Some(&a.version) {
                out.push(a.version);
            }
        }
        out
    }
}

impl Broadcaster {
    pub(crate) async fn on_control(&mut self, request: async_nats::Message) {
        let Some(reply_to) = request.reply.clone() else {
            return;
        };
        let reply = match serde_json::from_slice::<ControlRequest>(&request.payload) {
            Err(e) => self.refusal(format!("bad request: {e}")),
            Ok(ControlRequest::Activate { version }) => self.operator(version, "activate").await,
            Ok(ControlRequest::Rollback) => {
                let previous = self
                    .promoted
                    .iter()
                    .rev()
                    .copied()
                    .find(|v| *v != self.serving);
                match previous {
                    Some(v) => self.operator(v, "rollback").await,
                    None => self.refusal("no earlier version was ever served".into()),
                }
            }
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        let _ = self.client.publish(reply_to, body.into()).await;
    }

    fn refusal(&self, error: String) -> ControlReply {
        ControlReply {
            ok: false,
            error: Some(error),
            serving: self.serving,
            engines: Vec::new(),
        }
    }

    async fn operator(&mut self, version: u64, reason: &'static str) -> ControlReply {
        let event = if version == 0 {
            // The base model: every engine's starting point.
            None
        } else {
            match self.published.get(&version) {
                Some(e) => Some(e.clone()),
                None => return self.refusal(format!("version {version} was never published")),
            }
        };
        let result = match &event {
            Some(event) => self.promote(event, Trigger::Operator(reason)).await,
            None => Err(anyhow::anyhow!(
                "version 0 (the base model) cannot be activated through the broadcaster; restart the engines from --base-model"
            )),
        };
        match result {
            Ok(engines) => ControlReply {
                ok: engines.iter().all(|e| e.activated),
                error: None,
                serving: self.serving,
                engines,
            },
            Err(e) => self.refusal(format!("{e:#}")),
        }
    }
}
