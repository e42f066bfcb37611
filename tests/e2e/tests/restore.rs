#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Engines that restart come back with their base weights: the broadcaster notices and activates
//! the serving version on them again, without a new version being published.

mod learning;

use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::WeightsActivated;
use learning::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_engines_get_the_serving_version_back() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let model = model_dir(0);
    let stop = CancellationToken::new();
    let _stop = Stop(stop.clone());
    let port = free_port();
    let first_policy = stop.child_token();
    let policy_url = policy_on(model.path(), port, &first_policy).await;
    let sglang = MockVllm::start(MockConfig::default()).await.unwrap();
    let engines = [
        format!("policy=clawline:{policy_url}"),
        format!("sg=sglang:http://{}", sglang.addr),
    ];
    let work = tempfile::tempdir().unwrap();
    let (_, task) = broadcaster(
        &nats,
        model.path(),
        work.path(),
        &engines,
        |s| s.check_engines_secs = 1,
        &stop,
    );
    let ckpt = tempfile::tempdir().unwrap();
    trainer(&nats, model.path(), ckpt.path(), None, &stop);
    publish_batches(&js, model.path(), 0..1).await;
    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("1") },
        120,
    )
    .await;
    assert_eq!(served_version(&policy_url).await, "1");
    let v1_dir = work.path().join("v1").display().to_string();
    assert_eq!(
        sglang.weights().model_path.as_deref(),
        Some(v1_dir.as_str())
    );

    // Both engines restart from their base weights.
    first_policy.cancel();
    wait_for(
        || async { reqwest::get(format!("{policy_url}/healthz")).await.is_err() },
        30,
    )
    .await;
    let sglang = sglang.restart().await.unwrap();
    assert_eq!(sglang.weights().model_path, None, "restarted from scratch");
    let again = policy_on(model.path(), port, &stop).await;
    assert_eq!(again, policy_url);

    wait_for(
        || async {
            served_version(&policy_url).await == "1"
                && sglang.weights().model_path.as_deref() == Some(v1_dir.as_str())
        },
        30,
    )
    .await;
    let activated: Vec<WeightsActivated> = events(&js, subjects::WEIGHTS_ACTIVATED).await;
    let mut restored: Vec<(u64, &str)> = activated
        .iter()
        .filter(|a| a.reason == "restore")
        .map(|a| (a.version, a.engine.as_str()))
        .collect();
    restored.sort();
    restored.dedup();
    assert_eq!(restored, [(1, "policy"), (1, "sg")]);
    assert_eq!(
        kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref(),
        Some("1"),
        "nothing new was promoted"
    );
    assert!(!task.is_finished());
}
