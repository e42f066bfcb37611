#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The broadcaster between a real trainer and real / mocked engines: versions go live everywhere
//! and KV follows; rollback and activation by operators; LoRA adapters on vLLM under their own
//! name; corrupt versions and refusing engines leave the old version serving.

mod learning;

use clawline_broadcaster::ControlRequest;
use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{WeightsActivated, WeightsRejected};
use learning::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_go_live_on_every_engine_and_operators_roll_back() {
    let (nats, js, model, stop, _stop, policy_url) = policy_rig().await;
    let sglang = MockVllm::start(MockConfig::default()).await.unwrap();
    let vllm = MockVllm::start(MockConfig::default()).await.unwrap();
    let vllm_dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.path().join(f), vllm_dir.path().join(f)).unwrap();
    }
    let engines = [
        format!("policy=clawline:{policy_url}"),
        format!("sg=sglang:http://{}", sglang.addr),
        format!(
            "vl=vllm:http://{};model_dir={}",
            vllm.addr,
            vllm_dir.path().display()
        ),
    ];
    let work = tempfile::tempdir().unwrap();
    let (_, task) = broadcaster(&nats, model.path(), work.path(), &engines, |_| {}, &stop);
    // Before any version is promoted the starting weights serve, and steps are stamped with v0.
    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("0") },
        60,
    )
    .await;
    let ckpt = tempfile::tempdir().unwrap();
    trainer(&nats, model.path(), ckpt.path(), None, &stop);
    publish_batches(&js, model.path(), 0..2).await;

    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("2") },
        120,
    )
    .await;
    assert_eq!(served_version(&policy_url).await, "2");
    let published: Vec<clawline_schemas::WeightsPublished> =
        events(&js, subjects::WEIGHTS_PUBLISHED).await;
    let v2 = &published[1];
    let v2_dir = work.path().join("v2");
    assert_eq!(
        sglang.weights().model_path.as_deref(),
        Some(v2_dir.to_str().unwrap())
    );
    assert_eq!(vllm.weights().reloads, 2);
    let copied = std::fs::read(vllm_dir.path().join("model.safetensors")).unwrap();
    assert_eq!(sha256(&copied), v2.sha256, "vLLM's model dir holds v2");
    let activated: Vec<WeightsActivated> = events(&js, subjects::WEIGHTS_ACTIVATED).await;
    let mut seen: Vec<(u64, &str)> = activated
        .iter()
        .map(|a| (a.version, a.engine.as_str()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, "policy"),
            (1, "sg"),
            (1, "vl"),
            (2, "policy"),
            (2, "sg"),
            (2, "vl")
        ]
    );
    assert!(
        activated
            .iter()
            .all(|a| a.reason == "published" && a.seconds >= 0.0)
    );

    // Operators: roll back to v1, then activate v2 again; an unknown version is refused.
    let client = nats.client().await;
    let reply = ControlRequest::Rollback.send(&client).await.unwrap();
    assert!(reply.ok && reply.serving == 1, "{reply:?}");
    assert_eq!(served_version(&policy_url).await, "1");
    assert_eq!(
        kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref(),
        Some("1")
    );
    assert_eq!(
        sglang.weights().model_path.as_deref(),
        Some(work.path().join("v1").to_str().unwrap())
    );
    let reply = ControlRequest::Activate { version: 2 }
        .send(&client)
        .await
        .unwrap();
    assert!(reply.ok && reply.serving == 2, "{reply:?}");
    assert_eq!(served_version(&policy_url).await, "2");
    let reply = ControlRequest::Activate { version: 9 }
        .send(&client)
        .await
        .unwrap();
    assert!(!reply.ok && reply.error.unwrap().contains("never published"));
    assert_eq!(reply.serving, 2);
    assert!(!task.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_versions_load_on_vllm_under_their_own_name() {
    let (nats, js, model, stop, _stop, policy_url) = policy_rig().await;
    let vllm = MockVllm::start(MockConfig::default()).await.unwrap();
    let engines = [
        format!("policy=clawline:{policy_url}"),
        format!("vl=vllm:{}", vllm.url),
    ];
    let work = tempfile::tempdir().unwrap();
    broadcaster(&nats, model.path(), work.path(), &engines, |_| {}, &stop);
    let ckpt = tempfile::tempdir().unwrap();
    trainer(&nats, model.path(), ckpt.path(), Some(4), &stop);
    publish_batches(&js, model.path(), 0..1).await;
    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("1") },
        120,
    )
    .await;
    assert_eq!(
        kv(&js, buckets::POLICY_MODEL_KEY).await.as_deref(),
        Some("clawline-v1")
    );
    let adapters = vllm.weights().adapters;
    assert_eq!(adapters.keys().collect::<Vec<_>>(), ["clawline-v1"]);
    assert!(
        std::path::Path::new(&adapters["clawline-v1"])
            .join("adapter_config.json")
            .is_file()
    );
    assert_eq!(
        served_version(&policy_url).await,
        "1",
        "the policy server merged the adapter"
    );

    // The gateway routes requests to the adapter's name.
    let spool = tempfile::tempdir().unwrap();
    let mut config = clawline_gateway::Settings::new(vec![vllm.url.clone()]);
    config.nats = clawline_runtime::NatsArgs::at(nats.url());
    config.spool_dir = spool.path().into();
    let client = clawline_runtime::connect_nats(&config.nats, "test-gateway", false)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let state = clawline_gateway::build(config, client).unwrap();
    tokio::spawn(clawline_gateway::serve(state, listener, stop.clone()));
    let sent_model = || async {
        let body = serde_json::json!({"model": "whatever", "messages": [{"role": "user", "content": "Hi"}]});
        let _ = reqwest::Client::new()
            .post(&gateway)
            .json(&body)
            .send()
            .await;
        let last = vllm.stats.last_request.lock().unwrap().clone();
        last.and_then(|r| r["model"].as_str().map(str::to_string))
    };
    wait_for(
        || async { sent_model().await.as_deref() == Some("clawline-v1") },
        30,
    )
    .await;

    publish_batches(&js, model.path(), 1..2).await;
    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("2") },
        120,
    )
    .await;
    wait_for(
        || async { sent_model().await.as_deref() == Some("clawline-v2") },
        30,
    )
    .await;
    let adapters = vllm.weights().adapters;
    assert_eq!(
        adapters.keys().collect::<Vec<_>>(),
        ["clawline-v2"],
        "v1 unloaded once v2 serves"
    );
    assert_eq!(
        kv(&js, buckets::POLICY_MODEL_KEY).await.as_deref(),
        Some("clawline-v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_versions_and_refusing_engines_leave_the_old_version_serving() {
    let (nats, js, model, stop, _stop, policy_url) = policy_rig().await;
    let sglang = MockVllm::start(MockConfig::default()).await.unwrap();
    let engines = [
        format!("policy=clawline:{policy_url}"),
        format!("sg=sglang:http://{}", sglang.addr),
    ];
    let work = tempfile::tempdir().unwrap();
    broadcaster(&nats, model.path(), work.path(), &engines, |_| {}, &stop);
    let good = std::fs::read(model.path().join("model.safetensors")).unwrap();

    // v1: the object does not match the event's sha256 (a corrupt upload).
    publish_version(&js, 1, &good, &"0".repeat(64)).await;
    // v2: intact, but not weights this model can take: the policy server refuses it.
    let junk = b"not a safetensors file".to_vec();
    publish_version(&js, 2, &junk, &sha256(&junk)).await;
    // v3: good.
    publish_version(&js, 3, &good, &sha256(&good)).await;
    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("3") },
        120,
    )
    .await;

    let rejected: Vec<WeightsRejected> = events(&js, subjects::WEIGHTS_REJECTED).await;
    let v1: Vec<&WeightsRejected> = rejected.iter().filter(|r| r.version == 1).collect();
    assert_eq!(v1.len(), 2, "rejected for both engines: {rejected:?}");
    assert!(
        v1.iter().all(|r| r.reason.starts_with("integrity:")),
        "{v1:?}"
    );
    let v2: Vec<&WeightsRejected> = rejected.iter().filter(|r| r.version == 2).collect();
    assert_eq!(v2.len(), 1, "{rejected:?}");
    assert_eq!(v2[0].engine, "policy");
    assert!(v2[0].reason.contains("400"), "{}", v2[0].reason);
    assert!(
        !work.path().join("v1").exists(),
        "a corrupt version never reaches an engine's disk"
    );
    assert_eq!(served_version(&policy_url).await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rejection_the_trainer_continues_from_the_serving_version() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let model = model_dir(0);
    let stop = CancellationToken::new();
    let _stop = Stop(stop.clone());
    // An engine that refuses every version (it has no /admin/weights): nothing is ever served.
    let refusing = MockVllm::start(MockConfig::default()).await.unwrap();
    let engines = [format!("policy=clawline:http://{}", refusing.addr)];
    let work = tempfile::tempdir().unwrap();
    broadcaster(&nats, model.path(), work.path(), &engines, |_| {}, &stop);
    let ckpt = tempfile::tempdir().unwrap();
    trainer(&nats, model.path(), ckpt.path(), None, &stop);
    publish_batches(&js, model.path(), 0..1).await;
    wait_for(
        || async {
            !events::<WeightsRejected>(&js, subjects::WEIGHTS_REJECTED)
                .await
                .is_empty()
        },
        120,
    )
    .await;
    publish_batches(&js, model.path(), 1..2).await;
    wait_for(
        || async {
            events::<WeightsRejected>(&js, subjects::WEIGHTS_REJECTED)
                .await
                .len()
                >= 2
        },
        120,
    )
    .await;
    let published: Vec<clawline_schemas::WeightsPublished> =
        events(&js, subjects::WEIGHTS_PUBLISHED).await;
    assert_eq!(published.len(), 2);
    // v2 was trained from the base model the engines still serve, not from the rejected v1.
    assert_eq!((published[1].version, published[1].parent), (2, 0));
    let v1 = std::fs::read(model.path().join("model.safetensors")).unwrap();
    assert_ne!(sha256(&v1), published[1].sha256, "v2 learned its own batch");
    // The starting weights still serve.
    assert_eq!(
        kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref(),
        Some("0")
    );
}
