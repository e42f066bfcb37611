//! API keys isolate tenants; bad input and failing engines get clear 4xx/5xx answers and change nothing.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use clawline_mock_vllm::MockConfig;
use common::*;
use serde_json::{Value, json};

const KEYS: &str = "# tenants\nkey-a alpha\nkey-b beta\nkey-admin ops admin\n";

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_trajectory() {
    let h = Harness::with(Options {
        api_keys: Some(KEYS),
        ..Default::default()
    })
    .await;
    let init: Value = h
        .post_as("key-a", "/init_trajectory", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let uid = init["trajectory_uid"].as_str().unwrap();
    let r = h
        .post_as(
            "key-a",
            &format!("/{uid}/1/v1/chat/completions"),
            chat_body("mine"),
        )
        .await;
    assert_eq!(r.status(), 200);

    for (path, body) in [
        (format!("/{uid}/1/v1/chat/completions"), chat_body("theirs")),
        (
            format!("/{uid}/1/v1/register_trajectory"),
            json!({"channel": "val"}),
        ),
        (
            format!("/{uid}/1/v1/complete_trajectory"),
            json!({"reward": 1}),
        ),
        (format!("/complete_trajectory/{uid}"), json!({})),
        (
            "/v1/feedback".to_string(),
            json!({"trajectory_uid": uid, "thumbs": "down"}),
        ),
    ] {
        let r = h.post_as("key-b", &path, body).await;
        assert_eq!(
            r.status(),
            404,
            "beta reached alpha's trajectory through {path}"
        );
    }
    let steps = h.steps().await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].tenant, "alpha");
    assert_eq!(
        stream_count(&h.js().await, "TRAJECTORIES").await,
        1,
        "only alpha's registration"
    );

    // Implicit sessions are per tenant too.
    let r = h
        .post_as("key-b", "/v1/chat/completions", chat_body("hello"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.steps().await[1].tenant, "beta");
}

#[tokio::test]
async fn keys_are_required_and_submit_steps_needs_an_admin() {
    let h = Harness::with(Options {
        api_keys: Some(KEYS),
        ..Default::default()
    })
    .await;
    let r = h.post("/v1/chat/completions", chat_body("x")).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        h.post_as("wrong", "/v1/chat/completions", chat_body("x"))
            .await
            .status(),
        401
    );
    let step = json!({"steps": [{"prompt_ids": [1], "response_ids": [2]}]});
    assert_eq!(
        h.post_as("key-a", "/submit_steps", step.clone())
            .await
            .status(),
        403
    );
    assert_eq!(
        h.post_as("key-admin", "/submit_steps", step).await.status(),
        200
    );
    assert_eq!(h.steps().await[0].tenant, "ops");
    assert_eq!(h.mock.chat_requests(), 0);
    // Probes stay open.
    assert_eq!(
        h.http
            .get(format!("{}/healthz", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_requests_get_openai_style_errors_and_record_nothing() {
    let h = Harness::with(Options {
        extra_args: vec!["--max-body-bytes".into(), "2048".into()],
        ..Default::default()
    })
    .await;
    let raw = |body: &'static str| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = error_of(raw("{not json").await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );
    let (status, body) = error_of(raw("[1, 2]").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = error_of(
        h.post("/v1/chat/completions", json!({"messages": "hi"}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("messages"))
    );
    let (status, body) = error_of(
        h.post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "n": "two"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("n")));
    let big = chat_body(&"x".repeat(4096));
    let (status, body) = error_of(h.post("/v1/chat/completions", big).await).await;
    assert_eq!(status, 413);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("2048"),
        "{body}"
    );
    let (status, body) = error_of(h.post("/no/such/route/here", json!({})).await).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    assert_eq!(h.mock.chat_requests(), 0);
    assert_eq!(stream_count(&h.js().await, "STEPS").await, 0);
}

#[tokio::test]
async fn engine_errors_pass_through_and_a_hanging_engine_times_out() {
    let mock = MockConfig {
        fail_status: Some(500),
        ..Default::default()
    };
    let h = Harness::with(Options {
        mock,
        extra_args: vec!["--upstream-timeout".into(), "300ms".into()],
        ..Default::default()
    })
    .await;
    let (status, body) = error_of(h.post("/v1/chat/completions", chat_body("x")).await).await;
    assert_eq!(status, 500);
    assert_eq!(
        body["error"]["message"], "mock failure",
        "the engine's own error body"
    );

    h.mock.configure(|c| {
        c.fail_status = None;
        c.delay = Duration::from_secs(5);
    });
    let started = std::time::Instant::now();
    let (status, body) = error_of(h.post("/v1/chat/completions", chat_body("x")).await).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A stalled stream ends with an error event instead of hanging.
    h.mock.configure(|c| c.delay = Duration::ZERO);
    h.mock.configure(|c| c.token_delay = Duration::from_secs(5));
    let mut body = chat_body("x");
    body["stream"] = json!(true);
    let (chunks, done) = read_sse(h.post("/v1/chat/completions", body).await).await;
    assert!(!done);
    assert_eq!(chunks.last().unwrap()["error"]["type"], "upstream_error");
    assert_eq!(
        stream_count(&h.js().await, "STEPS").await,
        0,
        "failed calls are not steps"
    );
    // Nothing is left behind by the failed, timed-out and stalled calls (the stream's task ends
    // just after its last event, so allow it a moment).
    let mut in_flight = String::new();
    for _ in 0..20 {
        let metrics = h
            .http
            .get(format!("{}/metrics", h.url))
            .send()
            .await
            .unwrap();
        let metrics = metrics.text().await.unwrap();
        in_flight = metrics
            .lines()
            .find(|l| l.starts_with("clawline_gateway_in_flight_chats "))
            .unwrap_or_else(|| panic!("no in-flight gauge in {metrics}"))
            .to_string();
        if in_flight.ends_with(" 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_flight, "clawline_gateway_in_flight_chats 0");
}

#[tokio::test]
async fn an_unreachable_engine_is_skipped_for_a_healthy_one() {
    let h = Harness::with(Options {
        extra_args: vec!["--upstream".into(), "http://127.0.0.1:9/v1".into()],
        ..Default::default()
    })
    .await;
    for i in 0..4 {
        let r = h
            .post("/v1/chat/completions", chat_body(&format!("call {i}")))
            .await;
        assert_eq!(r.status(), 200, "round-robin must fail over");
    }
    assert_eq!(h.mock.chat_requests(), 4);
    let dead = h
        .state
        .upstreams
        .all()
        .iter()
        .find(|u| u.base.contains(":9/"))
        .unwrap();
    assert!(!dead.is_healthy());
}

#[tokio::test]
async fn every_endpoint_needs_a_key_and_admin_endpoints_an_admin_key() {
    let h = Harness::with(Options {
        api_keys: Some(KEYS),
        ..Default::default()
    })
    .await;
    let uid = "traj-x";
    let posts = [
        ("/v1/chat/completions", chat_body("x"), false),
        ("/init_trajectory", json!({}), false),
        (
            &*format!("/{uid}/1/v1/chat/completions"),
            chat_body("x"),
            false,
        ),
        (
            &*format!("/{uid}/1/v1/register_trajectory"),
            json!({}),
            false,
        ),
        (
            &*format!("/{uid}/1/v1/complete_trajectory"),
            json!({}),
            false,
        ),
        (&*format!("/complete_trajectory/{uid}"), json!({}), false),
        (
            "/v1/feedback",
            json!({"trajectory_uid": uid, "thumbs": "up"}),
            false,
        ),
        ("/compute_reward", json!({"trajectory_uid": uid}), false),
        ("/generate", json!({"prompt_ids": [1]}), false),
        ("/submit_steps", json!({"steps": []}), true),
    ];
    for (path, body, _) in &posts {
        let (status, error) = error_of(h.post(path, body.clone()).await).await;
        assert_eq!(status, 401, "POST {path} without a key");
        assert_eq!(
            error["error"]["type"], "authentication_error",
            "POST {path}"
        );
    }
    // (`/compute_reward` with a key waits for a reward scorer this harness does not run.)
    for (path, body, admin) in posts.iter().filter(|p| p.0 != "/compute_reward") {
        let status = h.post_as("key-a", path, body.clone()).await.status();
        assert_ne!(status, 401, "POST {path} with a tenant key");
        assert_eq!(status == 403, *admin, "POST {path}: {status}");
    }
    let get = |path: &'static str, key: Option<&'static str>| {
        let mut r = h.http.get(format!("{}{path}", h.url));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    for path in ["/v1/models", "/v1/datapool/stats", "/metrics"] {
        assert_eq!(get(path, None).await.unwrap().status(), 401, "GET {path}");
    }
    assert_eq!(
        get("/v1/models", Some("key-a")).await.unwrap().status(),
        200
    );
    for path in ["/v1/datapool/stats", "/metrics"] {
        assert_eq!(
            get(path, Some("key-a")).await.unwrap().status(),
            403,
            "GET {path}"
        );
        assert_ne!(
            get(path, Some("key-admin")).await.unwrap().status(),
            403,
            "GET {path}"
        );
    }
    // Probes stay open for load balancers.
    for path in ["/healthz", "/ready"] {
        assert_eq!(get(path, None).await.unwrap().status(), 200, "GET {path}");
    }
    assert!(
        h.steps()
            .await
            .iter()
            .all(|s| s.tenant == "alpha" || s.tenant == "ops")
    );
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_and_other_keys_do_not_notice() {
    let h = Harness::with(Options {
        api_keys: Some("key-a alpha rate=0.2\nkey-b beta\n"),
        extra_args: vec!["--rate-limit".into(), "50".into()],
        ..Default::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = h
            .post_as("key-a", "/v1/chat/completions", chat_body(&format!("q{i}")))
            .await;
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=5).contains(&retry), "{retry}");
            let (_, body) = error_of(r).await;
            assert_eq!(body["error"]["type"], "rate_limit_error");
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    // rate=0.2: a burst of one request, then one every 5 s.
    assert_eq!(statuses, [200, 429, 429, 429]);
    for i in 0..4 {
        let r = h
            .post_as("key-b", "/v1/chat/completions", chat_body(&format!("b{i}")))
            .await;
        assert_eq!(r.status(), 200, "beta has its own bucket (default 50/s)");
    }
    let steps = h.steps().await;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        steps.len(),
        8 - refused,
        "a refused request records nothing"
    );
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 403, "beta is no admin");
}

#[tokio::test]
async fn a_key_s_own_body_cap_holds_and_other_keys_keep_the_default() {
    let h = Harness::with(Options {
        api_keys: Some("key-a alpha max_body=300\nkey-b beta max_body=100000\nkey-c gamma\n"),
        extra_args: vec!["--max-body-bytes".into(), "2048".into()],
        ..Default::default()
    })
    .await;
    let send = |key: &'static str, size: usize| {
        let body = chat_body(&"x".repeat(size));
        let h = &h;
        async move { h.post_as(key, "/v1/chat/completions", body).await }
    };
    let (status, body) = error_of(send("key-a", 1000).await).await;
    assert_eq!(status, 413, "alpha's cap is 300 bytes: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("300"),
        "{body}"
    );
    assert_eq!(send("key-a", 100).await.status(), 200);
    assert_eq!(
        send("key-b", 5000).await.status(),
        200,
        "beta may send more than the default"
    );
    assert_eq!(error_of(send("key-b", 150_000).await).await.0, 413);
    assert_eq!(
        error_of(send("key-c", 5000).await).await.0,
        413,
        "gamma has the default 2048"
    );
    assert_eq!(h.steps().await.len(), 2, "refused requests record nothing");
}
