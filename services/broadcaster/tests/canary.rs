#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The canary gate with the real reward scorer (bundled model, over NATS) and the real model code:
//! a version whose answers score worse than the serving version's is rejected and never served;
//! one that scores as well is promoted, with its evaluation on the event.

mod common;

use clap::Parser as _;
use clawline_model::{LlamaConfig, Loaded};
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{WeightsActivated, WeightsRejected};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_rejects_a_worse_version_and_promotes_an_equal_one() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    // A base that has learned the bundled corpus: its answers open with "Sure", "Here is", …
    let model = model_dir(60);
    let stop = CancellationToken::new();
    let _stop = Stop(stop.clone());
    let reward = clawline_reward::Config::try_parse_from([
        "clawline-reward",
        "--nats-url",
        &nats.url(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .unwrap();
    let reward = tokio::task::spawn_blocking(move || clawline_reward::Service::load(reward))
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(reward.run(stop.clone()));
    let policy_url = policy(model.path(), &stop).await;
    let work = tempfile::tempdir().unwrap();
    let engines = [format!("policy=clawline:{policy_url}")];
    let canary = ["--canary", "--canary-tolerance", "0"];
    broadcaster(&nats, model.path(), work.path(), &engines, &canary, &stop);

    // v1: untrained weights, whose answers are noise to the reward model.
    let config = LlamaConfig::load(&model.path().join("config.json")).unwrap();
    let noise_dir = tempfile::tempdir().unwrap();
    Loaded::fresh(&config, tch::Device::Cpu, 99)
        .unwrap()
        .save(noise_dir.path())
        .unwrap();
    let noise = std::fs::read(noise_dir.path().join("model.safetensors")).unwrap();
    publish_version(&js, 1, &noise, &sha256(&noise)).await;
    // v2: the serving weights themselves, which score exactly as well.
    let same = std::fs::read(model.path().join("model.safetensors")).unwrap();
    publish_version(&js, 2, &same, &sha256(&same)).await;

    wait_for(
        || async { kv(&js, buckets::POLICY_VERSION_KEY).await.as_deref() == Some("2") },
        300,
    )
    .await;
    let rejected: Vec<WeightsRejected> = events(&js, subjects::WEIGHTS_REJECTED).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    let result = r.canary.clone().unwrap();
    assert_eq!((r.version, r.engine.as_str()), (1, "policy"));
    assert!(r.reason.starts_with("canary:"), "{}", r.reason);
    assert!(
        result.candidate_reward < result.serving_reward,
        "{result:?}"
    );
    assert_eq!(result.serving_version, 0);
    let activated: Vec<WeightsActivated> = events(&js, subjects::WEIGHTS_ACTIVATED).await;
    assert_eq!(activated.len(), 1);
    let c = activated[0].canary.clone().unwrap();
    assert_eq!(activated[0].version, 2);
    assert!(
        (c.candidate_reward - c.serving_reward).abs() < 1e-9,
        "{c:?}"
    );
    assert_eq!(served_version(&policy_url).await, "2");
}
