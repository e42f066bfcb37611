#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! "Why isn't it learning?" against a real nats-server and real DataFusion: real events for a
//! step's whole path (step, rewards, a batch holding it, a version listing the batch, its
//! activation, a later answer served with it), then the explanation names every stage with the
//! right ids and times; a step not yet batched shows what the batcher says it waits for; unknown
//! steps and other tenants' steps are 404; the diagnosis names a canary rejection and waiting steps.
//!
//! The batcher's side of `clawline.datapool.explain` / `clawline.datapool.stats` is answered here
//! by a small responder returning the contract JSON (the batcher implements it separately).

mod common;

use std::sync::Arc;

use clawline_history::explain::{Explainer, Status, rfc3339};
use clawline_history::{ArchiveRoot, Scope, SqlConfig, SqlEngine};
use clawline_nats::async_nats::{self, jetstream};
use clawline_nats::testing::NatsServer;
use clawline_nats::{publish_event, subjects};
use clawline_runtime::testing::Answer as _;
use clawline_schemas::*;
use futures::StreamExt;
use serde_json::{Value, json};

const CANARY: &str = "reference NLL 2.91 vs serving 2.40 (+0.51 > 0.10)";

/// The events of one step's whole path, and a few around it.
struct Story {
    base: i64,
    step: StepRecorded,
    served: StepRecorded,
    pending: StepRecorded,
    batch_id: String,
}

fn step_at(tenant: &str, traj: &str, index: u32, t: i64, version: u64) -> StepRecorded {
    let mut s = common::step(tenant, 0, "an answer");
    s.trajectory_uid = traj.into();
    s.step_index = index;
    s.envelope = Envelope::new(StepRecorded::id_for(tenant, traj, index, 0), "test").at(t);
    s.policy_version = Some(version);
    s
}

async fn tell(js: &jetstream::Context) -> Story {
    let base = now_ms() - 120_000;
    let step = step_at("acme", "traj-1", 0, base, 2);
    let neighbour = step_at("acme", "traj-0", 0, base - 1000, 2);
    // Answered with v3 before v3 was activated (a canary sample): not the first served answer.
    let early = step_at("acme", "traj-e", 0, base + 15_000, 3);
    let served = step_at("acme", "traj-2", 0, base + 30_000, 3);
    let pending = step_at("acme", "traj-3", 0, base + 35_000, 3);
    let other = step_at("globex", "traj-g", 0, base + 36_000, 3);
    for s in [&neighbour, &step, &early, &served, &pending, &other] {
        publish_event(js, subjects::steps("train"), s)
            .await
            .unwrap();
    }
    let reward = RewardAssigned {
        envelope: Envelope::new(
            RewardAssigned::id_for(step.event_id(), "rm:rm@1234abcd", "v"),
            "test",
        )
        .at(base + 1000),
        tenant: "acme".into(),
        channel: Some("train".into()),
        trajectory_uid: step.trajectory_uid.clone(),
        step_id: Some(step.envelope.event_id.clone()),
        source: "rm:rm@1234abcd".into(),
        value: 0.61,
        caused_by: step.envelope.event_id.clone(),
        ..Default::default()
    };
    publish_event(js, subjects::rewards("rm"), &reward)
        .await
        .unwrap();
    let batch_step = |s: &StepRecorded| BatchStep {
        step_id: s.envelope.event_id.clone(),
        tenant: s.tenant.clone(),
        trajectory_uid: s.trajectory_uid.clone(),
        ..Default::default()
    };
    let first_batch = BatchFormed {
        envelope: Envelope::new(BatchFormed::id_for([neighbour.event_id()]), "test")
            .at(base + 3000),
        channel: "train".into(),
        steps: vec![batch_step(&neighbour)],
        ..Default::default()
    };
    let batch = BatchFormed {
        envelope: Envelope::new(BatchFormed::id_for([step.event_id()]), "test").at(base + 5000),
        channel: "train".into(),
        steps: vec![batch_step(&step)],
        ..Default::default()
    };
    for b in [&first_batch, &batch] {
        publish_event(js, subjects::batches("train"), b)
            .await
            .unwrap();
    }
    let v3 = WeightsPublished {
        envelope: Envelope::new(WeightsPublished::id_for(3, "ab12cd34ef56aa"), "test")
            .at(base + 10_000),
        version: 3,
        parent: 2,
        sha256: "ab12cd34ef56aa".into(),
        batch_ids: vec![first_batch.event_id().into(), batch.event_id().into()],
        ..Default::default()
    };
    publish_event(js, subjects::WEIGHTS_PUBLISHED.into(), &v3)
        .await
        .unwrap();
    let activated = WeightsActivated {
        envelope: Envelope::new("wa-3".into(), "test").at(base + 20_000),
        version: 3,
        engine: "policy".into(),
        reason: "published".into(),
        ..Default::default()
    };
    publish_event(js, subjects::WEIGHTS_ACTIVATED.into(), &activated)
        .await
        .unwrap();
    let v4 = WeightsPublished {
        envelope: Envelope::new(WeightsPublished::id_for(4, "ffee"), "test").at(base + 40_000),
        version: 4,
        parent: 3,
        sha256: "ffee".into(),
        ..Default::default()
    };
    publish_event(js, subjects::WEIGHTS_PUBLISHED.into(), &v4)
        .await
        .unwrap();
    let rejected = WeightsRejected {
        envelope: Envelope::new("wr-4".into(), "test").at(base + 45_000),
        version: 4,
        engine: "policy".into(),
        reason: format!("canary: {CANARY}"),
        ..Default::default()
    };
    publish_event(js, subjects::WEIGHTS_REJECTED.into(), &rejected)
        .await
        .unwrap();
    Story {
        base,
        step,
        served,
        pending,
        batch_id: batch.envelope.event_id,
    }
}

/// Stands in for the batcher: `clawline.datapool.explain` and `.stats` with the contract JSON.
async fn batcher(client: async_nats::Client, pending: String) {
    let client_for_probe = client.clone();
    let mut explain = client.subscribe(subjects::DATAPOOL_EXPLAIN).await.unwrap();
    let mut stats = client.subscribe(subjects::DATAPOOL_STATS).await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        loop {
            let (m, answer) = tokio::select! {
                Some(m) = explain.next() => {
                    let asked: Value = serde_json::from_slice(&m.payload).unwrap();
                    let answer = if asked["step_id"] == pending.as_str() {
                        json!({"step_id": pending, "state": "waiting", "channel": "train",
                               "trajectory_uid": "traj-3",
                               "waits_for": ["reward rm:* (required by rewards.required; the reward scorer gives it)",
                                             "trajectory completion (complete_trajectory, a step marked last, or no event until 2026-12-03T08:31:02Z = 1800 s idle)"],
                               "rewards": []})
                    } else {
                        json!({"step_id": asked["step_id"], "state": "unknown", "waits_for": [], "rewards": []})
                    };
                    (m, answer)
                }
                Some(m) = stats.next() => (m, json!({"caught_up": true, "channels": {"train": {
                    "steps": 500, "queued_steps": 3, "dropped": {"untokenized": 7},
                    "waiting": {"reaction": 412, "rewards": 0, "completion": 2},
                    "late_feedback": {"trained": 5, "too_late": 1}}}})),
                else => return,
            };
            let reply = m.reply.unwrap();
            client
                .publish(reply, serde_json::to_vec(&answer).unwrap().into())
                .await
                .unwrap();
        }
    });
    // Live once it answers (a flush alone does not wait for the server to take the subscription).
    let probe = client_for_probe;
    for _ in 0..500 {
        if probe
            .request(subjects::DATAPOOL_STATS, "".into())
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the stand-in batcher never answered");
}

fn explainer(js: &jetstream::Context, dir: &tempfile::TempDir) -> Explainer {
    let engine = SqlEngine::new(
        SqlConfig {
            root: ArchiveRoot::local(dir.path().join("archive")),
            ..Default::default()
        },
        Some(js.clone()),
    );
    Explainer::new(Arc::new(engine))
}

fn stage<'a>(
    e: &'a clawline_history::explain::Explanation,
    name: &str,
) -> &'a clawline_history::explain::Stage {
    e.stages.iter().find(|s| s.stage == name).unwrap()
}

#[tokio::test]
async fn a_batched_step_is_followed_to_the_first_answer_served_with_its_version() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let story = tell(&js).await;
    let e = explainer(&js, &dir)
        .step(&story.step.envelope.event_id, &Scope::Tenant("acme".into()))
        .await
        .unwrap();
    let names: Vec<&str> = e.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        names,
        [
            "captured",
            "rewards",
            "batch",
            "update",
            "version",
            "activation",
            "served"
        ]
    );
    assert!(e.stages.iter().all(|s| s.status == Status::Done), "{e:#?}");
    assert_eq!(e.state, "served");
    assert_eq!(
        (e.channel.as_str(), e.trajectory_uid.as_str()),
        ("train", "traj-1")
    );
    assert_eq!(e.policy_version, Some(2));
    let at = |ms: i64| Some(rfc3339(story.base + ms));
    assert_eq!(stage(&e, "captured").time, at(0));
    let rewards = stage(&e, "rewards");
    assert_eq!(rewards.detail["rewards"][0]["source"], "rm:rm@1234abcd");
    assert_eq!(rewards.detail["rewards"][0]["value"], 0.61);
    assert_eq!(rewards.time, at(1000));
    let batch = stage(&e, "batch");
    assert_eq!(batch.detail["batch_id"], story.batch_id.as_str());
    assert_eq!(batch.time, at(5000));
    let update = stage(&e, "update");
    assert_eq!(update.text, "trained: update 2 of 2 since v2");
    let version = stage(&e, "version");
    assert_eq!(version.detail["version"], 3);
    assert_eq!(version.time, at(10_000));
    let activation = stage(&e, "activation");
    assert_eq!(activation.detail["engines"][0]["engine"], "policy");
    assert_eq!(activation.time, at(20_000));
    assert_eq!(activation.text, "v3 serves on policy");
    let served = stage(&e, "served");
    assert_eq!(
        served.detail["step_id"],
        story.served.envelope.event_id.as_str(),
        "the first v3 answer after the activation, not the canary-time one before it"
    );
    assert_eq!(served.time, at(30_000));
    assert!(e.summary.starts_with("done"), "{}", e.summary);
    let text = clawline_history::explain::text::explanation(&e);
    eprintln!("{text}");
    assert!(
        text.contains(&story.batch_id) && text.contains("v3 published"),
        "{text}"
    );
}

#[tokio::test]
async fn a_step_not_yet_batched_shows_what_the_batcher_says_it_waits_for() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let story = tell(&js).await;
    let explain = explainer(&js, &dir);

    // No batcher yet: SQL's part, and the note.
    let e = explain
        .step(&story.pending.envelope.event_id, &Scope::All)
        .await
        .unwrap();
    assert_eq!(e.notes, ["batcher not answering"]);
    assert_eq!(stage(&e, "batch").status, Status::Unknown);
    assert_eq!(stage(&e, "captured").status, Status::Done);

    batcher(nats.client().await, story.pending.envelope.event_id.clone()).await;
    let e = explain
        .step(&story.pending.envelope.event_id, &Scope::All)
        .await
        .unwrap();
    assert!(e.notes.is_empty(), "{:?}", e.notes);
    assert_eq!(e.state, "waiting");
    let rewards = stage(&e, "rewards");
    assert_eq!(rewards.status, Status::Waiting);
    assert_eq!(
        rewards.detail["awaited"],
        json!(["reward rm:* (required by rewards.required; the reward scorer gives it)"])
    );
    let batch = stage(&e, "batch");
    assert_eq!(batch.status, Status::Waiting);
    assert!(
        batch
            .text
            .contains("trajectory completion (complete_trajectory"),
        "{}",
        batch.text
    );
    assert_eq!(stage(&e, "version").status, Status::NotReached);
    assert_eq!(e.batcher.as_ref().unwrap()["state"], "waiting");
    assert!(e.summary.starts_with("waits at rewards"), "{}", e.summary);
}

#[tokio::test]
async fn http_explain_and_diagnosis_keep_tenants_apart_and_speak_openai_errors() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let story = tell(&js).await;
    batcher(nats.client().await, story.pending.envelope.event_id.clone()).await;
    let keys =
        clawline_runtime::keys::ApiKeys::parse("ka acme\nkg globex\nkadm ops admin\n").unwrap();
    let engine = SqlEngine::new(
        SqlConfig {
            root: ArchiveRoot::local(dir.path().join("archive")),
            ..Default::default()
        },
        Some(js.clone()),
    );
    let app = clawline_history::http::router(engine, keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let get =
        |key: &'static str, path: String| http.get(format!("{url}{path}")).bearer_auth(key).send();

    let r = get("ka", format!("/explain/{}", story.step.envelope.event_id))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["stages"][2]["detail"]["batch_id"],
        story.batch_id.as_str()
    );

    for (key, id, status) in [
        ("kg", story.step.envelope.event_id.clone(), 404),
        ("ka", "stp_doesnotexist".to_string(), 404),
        ("ka", "a'b".to_string(), 400),
    ] {
        let r = get(key, format!("/explain/{id}")).await.unwrap();
        assert_eq!(r.status(), status, "{key} {id}");
        let err: Value = r.json().await.unwrap();
        let mut keys: Vec<&String> = err["error"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["code", "message", "param", "type"], "{err}");
        assert_eq!(err["error"]["param"], "step_id");
        if status == 404 {
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("unknown step"),
                "{err}"
            );
            assert!(
                !err.to_string().contains("acme"),
                "no hint of whose step it is: {err}"
            );
        }
    }
    let r = http.get(format!("{url}/diagnosis")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let d: Value = get("kadm", "/diagnosis".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> = d["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has(&format!("the canary rejected v4: canary: {CANARY}")),
        "{lines:#?}"
    );
    assert!(has("no version promoted for 1 min"), "{lines:#?}");
    assert!(has("412 steps wait for a user reaction"), "{lines:#?}");
    assert!(has("steps arrive untokenized: 7 dropped"), "{lines:#?}");
    assert!(
        has("1 reactions came after their step was batched and trained nothing"),
        "{lines:#?}"
    );
    assert_eq!(d["ok"], false);
    let text = http
        .get(format!("{url}/diagnosis"))
        .bearer_auth("kadm")
        .header("accept", "text/plain")
        .text_answer()
        .await;
    eprintln!("{text}");
    assert!(
        text.contains("412 steps wait for a user reaction"),
        "{text}"
    );
    assert_eq!(d["serving_version"], 3);

    let text = http
        .get(format!("{url}/explain/{}", story.step.envelope.event_id))
        .bearer_auth("ka")
        .header("accept", "text/plain")
        .text_answer()
        .await;
    assert!(text.contains("first answer with v3"), "{text}");
}

#[tokio::test]
async fn the_nats_responder_answers_the_gateway_with_status_and_body() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let story = tell(&js).await;
    let shutdown = clawline_runtime::CancellationToken::new();
    let responder = nats.client().await;
    let requests = clawline_nats::answer_on(&responder, subjects::EXPLAIN, Some("explain"))
        .await
        .unwrap();
    tokio::spawn(clawline_history::explain::respond(
        Arc::new(explainer(&js, &dir)),
        responder,
        requests,
        shutdown.clone(),
    ));
    // The subscription is in force: the first request is answered.
    let client = nats.client().await;
    let ask = |request: Value| {
        let client = client.clone();
        async move {
            let m = client
                .request(
                    subjects::EXPLAIN,
                    serde_json::to_vec(&request).unwrap().into(),
                )
                .await
                .unwrap_or_else(|e| panic!("nobody answered {}: {e}", subjects::EXPLAIN));
            serde_json::from_slice::<Value>(&m.payload).unwrap()
        }
    };
    let mine = ask(json!({"step_id": story.step.envelope.event_id, "tenant": "acme"})).await;
    assert_eq!(mine["status"], 200);
    assert_eq!(mine["body"]["state"], "served");
    let theirs = ask(json!({"step_id": story.step.envelope.event_id, "tenant": "globex"})).await;
    assert_eq!(theirs["status"], 404);
    assert_eq!(theirs["body"]["error"]["code"], "unknown_step");
    let diagnosis = ask(json!({"tenant": "globex"})).await;
    assert_eq!(diagnosis["status"], 200);
    assert!(
        diagnosis["body"]["lines"]
            .to_string()
            .contains("rejected v4"),
        "the learning loop's state is everyone's: {diagnosis}"
    );
    assert_eq!(
        diagnosis["body"]["recent_steps"], 1,
        "a tenant's own steps only"
    );
    let bad = ask(json!({"step_id": 7})).await;
    assert_eq!(bad["status"], 400);
    shutdown.cancel();
}
