//! `GET /v1/explain/{step_id}` and `GET /v1/diagnosis` through the gateway: it asks the SQL
//! service over `clawline.explain` with the caller's tenant (none for an admin), passes the
//! status and body through, and says 503 when no SQL service runs.
//!
//! The SQL service's side is played here by a small responder speaking the contract (the real one,
//! `clawline-history serve`, is tested against real DataFusion in services/history/tests/explain.rs):
//! it explains only `stp_alpha`, a step of tenant alpha.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::{Arc, Mutex};

use clawline_nats::subjects;
use common::*;
use futures::StreamExt as _;
use serde_json::{Value, json};

const KEYS: &str = "key-a alpha\nkey-b beta\nkey-admin ops admin\n";

async fn get(h: &Harness, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut r = h.http.get(format!("{}{path}", h.url));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Answers `clawline.explain` like the SQL service; returns the requests it saw.
async fn sql_service(h: &Harness) -> Arc<Mutex<Vec<Value>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = h.nats.client().await;
    let mut requests = client.subscribe(subjects::EXPLAIN).await.unwrap();
    client.flush().await.unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            let request: Value = serde_json::from_slice(&m.payload).unwrap();
            log.lock().unwrap().push(request.clone());
            let visible = request["tenant"].is_null() || request["tenant"] == "alpha";
            let answer = match request["step_id"].as_str() {
                None => json!({"status": 200, "body": {"ok": true, "lines": ["no problem found"]}}),
                Some("stp_alpha") if visible => json!({"status": 200, "body": {
                    "step_id": "stp_alpha", "state": "served", "stages": []}}),
                Some(id) => json!({"status": 404, "body": {"error": {
                    "message": format!("unknown step {id:?}: no step with this id was captured"),
                    "type": "not_found_error", "param": "step_id", "code": "unknown_step"}}}),
            };
            client
                .publish(m.reply.unwrap(), answer.to_string().into())
                .await
                .unwrap();
        }
    });
    // Live once it answers (a flush alone does not wait for the server to take the subscription).
    let probe = h.nats.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe.request(subjects::EXPLAIN, "{}".into()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    seen.lock().unwrap().clear();
    seen
}

#[tokio::test]
async fn explain_goes_to_the_sql_service_with_the_callers_tenant() {
    let h = Harness::with(Options {
        api_keys: Some(KEYS),
        ..Default::default()
    })
    .await;
    let (status, body) = get(&h, Some("key-a"), "/v1/diagnosis").await;
    assert_eq!(status, 503, "no SQL service yet: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no SQL service is running"),
        "{body}"
    );

    let seen = sql_service(&h).await;
    let (status, body) = get(&h, Some("key-a"), "/v1/explain/stp_alpha").await;
    assert_eq!((status, &body["state"]), (200, &json!("served")), "{body}");
    let (status, body) = get(&h, Some("key-b"), "/v1/explain/stp_alpha").await;
    assert_eq!(status, 404, "beta may not explain alpha's step: {body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["code"], "unknown_step");
    let (status, _) = get(&h, Some("key-admin"), "/v1/explain/stp_alpha").await;
    assert_eq!(status, 200);
    let (status, body) = get(&h, Some("key-b"), "/v1/diagnosis").await;
    assert_eq!(
        (status, &body["lines"][0]),
        (200, &json!("no problem found"))
    );
    let (status, body) = get(&h, None, "/v1/diagnosis").await;
    assert_eq!(status, 401, "{body}");

    let tenants: Vec<(Value, Value)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r["step_id"].clone(), r["tenant"].clone()))
        .collect();
    assert_eq!(
        tenants,
        [
            (json!("stp_alpha"), json!("alpha")),
            (json!("stp_alpha"), json!("beta")),
            (json!("stp_alpha"), Value::Null),
            (Value::Null, json!("beta")),
        ],
        "the tenant comes from the key, never from the client; admins see every tenant"
    );
}
