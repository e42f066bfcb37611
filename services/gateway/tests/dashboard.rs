//! The live dashboard: `/v1/dashboard/data` shows a tenant its own traffic only and an admin all
//! of it plus the system; the page, opened in headless Chromium (Debian's `chromium` driven by
//! `playwright-core`), draws every chart with data, keeps updating, and shows a prompt full of
//! markup as text without running any of it (Claw-R1's dashboard had a stored-XSS hole here), also
//! in the "Why isn't it learning?" panel.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clawline_nats::{publish_event, subjects};
use clawline_runtime::testing::Answer as _;
use clawline_schemas::{
    Envelope, FeedbackReceived, RewardAssigned, Thumbs, TrainingMetrics, WeightsActivated, now_ms,
};
use common::*;
use futures::StreamExt as _;
use serde_json::Value;

const KEYS: &str = "key-a alpha\nkey-b beta\nkey-admin ops admin\n";
const XSS: &str =
    "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script><b>bold</b>";

async fn data(h: &Harness, key: &str) -> Value {
    h.http
        .get(format!("{}/v1/dashboard/data", h.url))
        .bearer_auth(key)
        .json_answer()
        .await
}

/// Rewards, feedback, an activation and a training update, as the other services publish them.
async fn system_events(h: &Harness) {
    let js = h.js().await;
    for (i, (tenant, value, ago)) in [
        ("alpha", 0.25, 0),
        ("beta", 0.75, 0),
        ("alpha", 0.5, 30_000),
    ]
    .into_iter()
    .enumerate()
    {
        let reward = RewardAssigned {
            envelope: Envelope {
                event_id: format!("rw-{i}"),
                event_time: now_ms() - ago,
                ..Default::default()
            },
            tenant: tenant.into(),
            trajectory_uid: format!("t-{i}"),
            source: "rm:bundled@1234abcd".into(),
            value,
            caused_by: format!("st-{i}"),
            ..Default::default()
        };
        publish_event(&js, subjects::rewards("rm"), &reward)
            .await
            .unwrap();
        let feedback = FeedbackReceived {
            envelope: Envelope {
                event_id: format!("fb-{i}"),
                event_time: now_ms(),
                ..Default::default()
            },
            tenant: tenant.into(),
            trajectory_uid: format!("t-{i}"),
            thumbs: Some(Thumbs::Up),
            ..Default::default()
        };
        publish_event(&js, subjects::FEEDBACK.into(), &feedback)
            .await
            .unwrap();
    }
    let activated = WeightsActivated {
        envelope: Envelope {
            event_id: "wa-1".into(),
            event_time: now_ms(),
            ..Default::default()
        },
        version: 1,
        engine: "policy".into(),
        reason: "published".into(),
        ..Default::default()
    };
    publish_event(&js, subjects::WEIGHTS_ACTIVATED.into(), &activated)
        .await
        .unwrap();
    let metrics = TrainingMetrics {
        event_time: now_ms(),
        loss: 0.5,
        kl: 0.01,
        entropy: 2.0,
        ..Default::default()
    };
    // Core NATS, as the trainer sends it: flushed before the client goes away.
    let client = h.nats.client().await;
    let payload = serde_json::to_vec(&metrics).unwrap();
    client
        .publish(subjects::TRAINING_METRICS, payload.into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_tenant_its_own_traffic_and_renders_live_without_running_markup() {
    let h = Harness::with(Options {
        api_keys: Some(KEYS),
        ..Default::default()
    })
    .await;
    for (key, prompt) in [
        ("key-a", XSS),
        ("key-a", "alpha asks"),
        ("key-b", "beta's private question"),
    ] {
        let r = h
            .post_as(key, "/v1/chat/completions", chat_body(prompt))
            .await;
        assert_eq!(r.status(), 200);
    }
    system_events(&h).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        let d = data(&h, "key-admin").await;
        if d["recent"].as_array().unwrap().len() == 3
            && d["timeline"].as_array().unwrap().len() == 1
            && !d["training"]["loss"].as_array().unwrap().is_empty()
            && d["feedback"].as_object().is_some_and(|f| !f.is_empty())
        {
            break d;
        }
        assert!(Instant::now() < deadline, "the board did not fill: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        admin["rewards"]["rm:bundled@1234abcd"][0][1], 0.5,
        "both tenants' mean"
    );
    let series: Vec<&String> = admin["steps"].as_object().unwrap().keys().collect();
    assert!(
        series.iter().any(|k| k.ends_with("/alpha")) && series.iter().any(|k| k.ends_with("/beta")),
        "{series:?}"
    );

    let alpha = data(&h, "key-a").await;
    let shown = alpha.to_string();
    assert!(
        !shown.contains("beta"),
        "alpha sees beta's traffic: {shown}"
    );
    assert_eq!(alpha["recent"].as_array().unwrap().len(), 2);
    assert_eq!(alpha["rewards"]["rm:bundled@1234abcd"][1][1], 0.25);
    assert_eq!(
        alpha["timeline"],
        Value::Array(vec![]),
        "system sections are admin-only"
    );
    let no_key = h
        .http
        .get(format!("{}/v1/dashboard/data", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let page = h
        .http
        .get(format!("{}/dashboard", h.url))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );

    // "Why isn't it learning?" lines, as the SQL service would answer `clawline.explain` (a
    // stand-in: the gateway only forwards it); one of them full of markup.
    let client = h.nats.client().await;
    let mut explain = client.subscribe(subjects::EXPLAIN).await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = explain.next().await {
            let body = serde_json::json!({"status": 200, "body": {"ok": false,
                "lines": [XSS, "412 steps wait for a user reaction (explicit feedback or their next turn)"]}});
            let reply = m.reply.unwrap();
            client
                .publish(reply, serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
        }
    });

    // In a real browser, as the admin.
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    assert!(
        dashboard.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/setup.sh --test (npm ci in services/gateway/dashboard)"
    );
    let shot = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let out = Command::new("node")
        .arg("test/check.mjs")
        .arg(&h.url)
        .arg("key-admin")
        .arg(shot.path())
        .current_dir(&dashboard)
        .output()
        .unwrap();
    let seen = clawline_runtime::testing::json_of("test/check.mjs", out);
    assert!(seen["rendered"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
    // (A point is ~15 pixels of the series colour; axes and grid are grey.)
    for chart in ["steps", "rewards", "feedback", "versions", "training"] {
        assert!(
            seen["ink"][chart].as_u64().unwrap() > 10,
            "chart {chart} drew no data in its series colour: {seen}"
        );
    }
    assert_eq!(seen["timeline"], 1);
    // The markup is shown as text and nothing in it ran.
    assert!(
        seen["prompts"].as_array().unwrap().iter().any(|p| p == XSS),
        "{seen}"
    );
    assert_eq!(
        seen["diagnosis"],
        serde_json::json!([
            XSS,
            "412 steps wait for a user reaction (explicit feedback or their next turn)"
        ]),
        "the diagnosis lines, as text"
    );
    assert_eq!(seen["injectedElements"], 0, "{seen}");
    assert_eq!(seen["xss"], Value::Null, "{seen}");
    assert_eq!(seen["dialogs"], Value::Array(vec![]));
    let png = std::fs::read(shot.path()).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot: {} bytes",
        png.len()
    );
    if let Ok(dir) = std::env::var("CLAWLINE_DASHBOARD_SCREENSHOT") {
        std::fs::copy(shot.path(), dir).unwrap();
    }
}
