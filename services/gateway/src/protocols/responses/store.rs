//! The Responses answers the gateway keeps (`store`, the default), for `previous_response_id` and
//! `GET /v1/responses/{id}`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

/// One stored response: the conversation it added (its input and its answer, in chat form) and the
/// response object `GET /v1/responses/{id}` returns.
#[derive(Debug, Clone)]
pub struct Stored {
    pub tenant: String,
    pub previous: Option<String>,
    pub messages: Vec<Value>,
    pub response: Value,
}

/// Responses kept for `previous_response_id` and retrieval, in memory, the oldest forgotten past
/// `capacity`.
pub struct ResponseStore {
    capacity: usize,
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl ResponseStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub fn insert(&self, id: String, stored: Stored) {
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

    pub fn get(&self, tenant: &str, id: &str) -> Option<Stored> {
        let guard = self.inner.lock().ok()?;
        guard.0.get(id).filter(|s| s.tenant == tenant).cloned()
    }

    pub fn remove(&self, tenant: &str, id: &str) -> bool {
        let Ok(mut guard) = self.inner.lock() else {
            return false;
        };
        let (map, order) = &mut *guard;
        if map.get(id).is_some_and(|s| s.tenant == tenant) {
            map.remove(id);
            order.retain(|o| o != id);
            true
        } else {
            false
        }
    }

    /// The whole conversation up to and including response `id`, oldest first; `None` when `id`
    /// or a response it continues is unknown (or another tenant's).
    pub fn conversation(&self, tenant: &str, id: &str) -> Option<Vec<Value>> {
        let mut turns = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(id) = next {
            let stored = self.get(tenant, &id)?;
            next = stored.previous.clone();
            turns.push(stored.messages);
            if turns.len() > self.capacity {
                return None; // a cycle cannot happen through the API, but never loop forever
            }
        }
        Some(turns.into_iter().rev().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_responses_chain_and_stay_with_their_tenant() {
        let store = ResponseStore::new(2);
        let turn = |t: &str| vec![json!({"role": "user", "content": t})];
        store.insert(
            "r1".into(),
            Stored {
                tenant: "a".into(),
                previous: None,
                messages: turn("1"),
                response: json!({}),
            },
        );
        store.insert(
            "r2".into(),
            Stored {
                tenant: "a".into(),
                previous: Some("r1".into()),
                messages: turn("2"),
                response: json!({}),
            },
        );
        assert_eq!(
            store.conversation("a", "r2"),
            Some([turn("1"), turn("2")].concat())
        );
        assert_eq!(
            store.conversation("b", "r2"),
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
            },
        );
        assert_eq!(
            store.conversation("a", "r3"),
            None,
            "r1 was forgotten past capacity"
        );
    }
}
