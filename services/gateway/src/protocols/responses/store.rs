//! The Responses answers the gateway keeps (`store`, the default), for `previous_response_id` and
//! `GET /v1/responses/{id}`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_nats::jetstream::kv::Store;
use clawline_nats::buckets;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

/// One stored response: the conversation it added (its input and its answer, in chat form) and the
/// response object `GET /v1/responses/{id}` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub tenant: String,
    pub previous: Option<String>,
    pub messages: Vec<Value>,
    pub response: Value,
    /// For an engine that speaks Responses itself: this turn's input and output items as the
    /// engine took and gave them, to send a later turn's whole input when the engine keeps no
    /// state of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Value>,
}

/// The longest `previous_response_id` chain followed (a cycle cannot be made through the API, but a
/// walk must end).
const MAX_CHAIN: usize = 100_000;

/// How long a lookup waits for KV (during a NATS outage the memory answers alone).
const KV_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Responses kept for `previous_response_id` and retrieval: in KV `responses` (30 days, across
/// restarts and gateways), with the newest `capacity` also in memory. Without NATS (unit tests,
/// an outage) the memory is all there is.
pub struct ResponseStore {
    capacity: usize,
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
    kv: Option<(async_nats::Client, OnceCell<Store>)>,
}

impl ResponseStore {
    pub fn new(capacity: usize, client: Option<async_nats::Client>) -> Self {
        Self {
            capacity,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            kv: client.map(|c| (c, OnceCell::new())),
        }
    }

    async fn kv(&self) -> Option<&Store> {
        let (client, cell) = self.kv.as_ref()?;
        let store = tokio::time::timeout(
            KV_WAIT,
            cell.get_or_try_init(|| async {
                async_nats::jetstream::new(client.clone())
                    .get_key_value(buckets::RESPONSES)
                    .await
                    .map_err(|e| e.to_string())
            }),
        )
        .await
        .unwrap_or_else(|_| Err("no answer".to_string()));
        match store {
            Ok(store) => Some(store),
            Err(err) => {
                tracing::warn!(error = %err, "KV {} unavailable; stored responses only in memory", buckets::RESPONSES);
                None
            }
        }
    }

    fn remember(&self, id: String, stored: Stored) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let (map, order) = &mut *guard;
        if map.insert(id.clone(), stored).is_none() {
            order.push_back(id);
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Keeps a finished response: in memory at once (the client's next call may come right
    /// away), in KV in the background.
    pub fn insert(self: &std::sync::Arc<Self>, id: String, stored: Stored) {
        self.remember(id.clone(), stored.clone());
        if self.kv.is_none() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let Some(kv) = store.kv().await else {
                return;
            };
            let result = match serde_json::to_vec(&stored) {
                Ok(bytes) => kv
                    .put(id.as_str(), bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(err) = result {
                tracing::warn!(response_id = %id, error = %err, "storing the response in KV failed; kept in memory only");
            }
        });
    }

    /// A stored response of `tenant`: from memory, else from KV.
    pub async fn get(&self, tenant: &str, id: &str) -> Option<Stored> {
        let cached = self.inner.lock().ok()?.0.get(id).cloned();
        let stored = match cached {
            Some(s) => s,
            None => {
                let kv = self.kv().await?;
                let entry = tokio::time::timeout(KV_WAIT, kv.get(id))
                    .await
                    .ok()?
                    .ok()??;
                let stored: Stored = serde_json::from_slice(&entry).ok()?;
                self.remember(id.to_string(), stored.clone());
                stored
            }
        };
        (stored.tenant == tenant).then_some(stored)
    }

    pub async fn remove(&self, tenant: &str, id: &str) -> bool {
        if self.get(tenant, id).await.is_none() {
            return false;
        }
        if let Ok(mut guard) = self.inner.lock() {
            let (map, order) = &mut *guard;
            map.remove(id);
            order.retain(|o| o != id);
        }
        if let Some(kv) = self.kv().await
            && let Err(err) = kv.delete(id).await
        {
            tracing::warn!(response_id = %id, error = %err, "deleting the response from KV failed");
        }
        true
    }

    /// The whole conversation up to and including response `id`, oldest first; `None` when `id`
    /// or a response it continues is unknown (or another tenant's).
    pub async fn conversation(&self, tenant: &str, id: &str) -> Option<Vec<Value>> {
        self.chain(tenant, id).await.map(|(messages, _)| messages)
    }

    /// The conversation up to and including response `id`, oldest first, in chat form and as
    /// the engine's own items; `None` as [`Self::conversation`].
    pub async fn chain(&self, tenant: &str, id: &str) -> Option<(Vec<Value>, Vec<Value>)> {
        let mut turns = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(id) = next {
            let stored = self.get(tenant, &id).await?;
            next = stored.previous.clone();
            turns.push((stored.messages, stored.items));
            if turns.len() > MAX_CHAIN {
                return None;
            }
        }
        let (messages, items): (Vec<_>, Vec<_>) = turns.into_iter().rev().unzip();
        Some((
            messages.into_iter().flatten().collect(),
            items.into_iter().flatten().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn stored_responses_chain_and_stay_with_their_tenant() {
        let store = std::sync::Arc::new(ResponseStore::new(2, None));
        let turn = |t: &str| vec![json!({"role": "user", "content": t})];
        store.insert(
            "r1".into(),
            Stored {
                tenant: "a".into(),
                previous: None,
                messages: turn("1"),
                response: json!({}),
                items: vec![json!({"type": "item", "n": 1})],
            },
        );
        store.insert(
            "r2".into(),
            Stored {
                tenant: "a".into(),
                previous: Some("r1".into()),
                messages: turn("2"),
                response: json!({}),
                items: vec![json!({"type": "item", "n": 2})],
            },
        );
        assert_eq!(
            store.conversation("a", "r2").await,
            Some([turn("1"), turn("2")].concat())
        );
        assert_eq!(
            store.chain("a", "r2").await.map(|(_, items)| items),
            Some(vec![
                json!({"type": "item", "n": 1}),
                json!({"type": "item", "n": 2})
            ]),
            "the engine's own items, oldest first"
        );
        assert_eq!(
            store.conversation("b", "r2").await,
            None,
            "another tenant's response is unknown"
        );
        store.insert(
            "r3".into(),
            Stored {
                tenant: "a".into(),
                previous: Some("r2".into()),
                messages: turn("3"),
                response: json!({}),
                items: vec![json!({"type": "item", "n": 3})],
            },
        );
        assert_eq!(
            store.conversation("a", "r3").await,
            None,
            "r1 was forgotten past capacity"
        );
    }
}
