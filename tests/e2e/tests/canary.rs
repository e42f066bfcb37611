#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The canary gate with the real reward scorer (bundled model, over NATS) and the real model code:
//! a version whose answers score worse than the serving version's is rejected and never served;
//! so is one whose language broke while the reward model likes its words (reference NLL, KL to the
//! serving version, degenerate answers); the serving weights and a normal update are promoted,
//! with their evaluation on the event.

mod learning;

use std::path::Path;

use clawline_model::{LlamaConfig, Loaded};
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{CanaryResult, WeightsActivated, WeightsRejected};
use learning::*;

struct Gate {
    nats: NatsServer,
    js: async_nats::jetstream::Context,
    model: tempfile::TempDir,
    policy_url: String,
    _work: tempfile::TempDir,
    _stop: Stop,
}

/// A warm-started base model served by the policy server, the reward scorer, and a broadcaster
/// with the canary on, and `configure`'s settings.
async fn gate(configure: impl FnOnce(&mut clawline_broadcaster::Settings)) -> Gate {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    // A base that has learned the bundled corpus: its answers open with "Sure", "Here is", …
    let model = model_dir(60);
    let stop = CancellationToken::new();
    let reward = clawline_reward::Settings {
        nats: clawline_runtime::NatsArgs::at(nats.url()),
        ..Default::default()
    };
    let reward = tokio::task::spawn_blocking(move || clawline_reward::Service::load(reward))
        .await
        .unwrap()
        .unwrap();
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    tokio::spawn(reward.run(listener, stop.clone()));
    let policy_url = policy(model.path(), &stop).await;
    let work = tempfile::tempdir().unwrap();
    let engines = [format!("policy=clawline:{policy_url}")];
    let configure = |s: &mut clawline_broadcaster::Settings| {
        s.canary = true;
        configure(s);
    };
    broadcaster(&nats, model.path(), work.path(), &engines, configure, &stop);
    Gate {
        nats,
        js,
        model,
        policy_url,
        _work: work,
        _stop: Stop(stop),
    }
}

async fn serving_becomes(js: &async_nats::jetstream::Context, version: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    while kv(js, buckets::POLICY_VERSION_KEY).await.as_deref() != Some(version) {
        if tokio::time::Instant::now() > deadline {
            let r: Vec<WeightsRejected> = events(js, subjects::WEIGHTS_REJECTED).await;
            let reasons: Vec<_> = r.iter().map(|r| (r.version, &r.reason)).collect();
            panic!("v{version} does not serve in 300 s; rejected: {reasons:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_rejects_a_worse_version_and_promotes_an_equal_one() {
    let g = gate(|s| s.canary_tolerance = 0.0).await;
    // v1: untrained weights, whose answers are noise to the reward model.
    let config = LlamaConfig::load(&g.model.path().join("config.json")).unwrap();
    let noise_dir = tempfile::tempdir().unwrap();
    Loaded::fresh(&config, tch::Device::Cpu, 99)
        .unwrap()
        .save(noise_dir.path())
        .unwrap();
    let noise = std::fs::read(noise_dir.path().join("model.safetensors")).unwrap();
    publish_version(&g.js, 1, &noise, &sha256(&noise)).await;
    // v2: the serving weights themselves, which score exactly as well.
    let same = std::fs::read(g.model.path().join("model.safetensors")).unwrap();
    publish_version(&g.js, 2, &same, &sha256(&same)).await;

    serving_becomes(&g.js, "2").await;
    let rejected: Vec<WeightsRejected> = events(&g.js, subjects::WEIGHTS_REJECTED).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    let result = r.canary.clone().unwrap();
    assert_eq!((r.version, r.engine.as_str()), (1, "policy"));
    assert!(r.reason.starts_with("canary:"), "{}", r.reason);
    assert!(r.reason.contains("mean reward"), "{}", r.reason);
    assert!(
        result.candidate_reward < result.serving_reward,
        "{result:?}"
    );
    assert_eq!(result.serving_version, 0);
    let activated: Vec<WeightsActivated> = events(&g.js, subjects::WEIGHTS_ACTIVATED).await;
    assert_eq!(activated.len(), 1);
    let c = activated[0].canary.clone().unwrap();
    assert_eq!(activated[0].version, 2);
    assert!(
        (c.candidate_reward - c.serving_reward).abs() < 1e-9,
        "{c:?}"
    );
    // The same weights speak exactly as well: the quality numbers are published for plotting.
    let q = c.quality.unwrap();
    assert!((q.candidate_nll - q.serving_nll).abs() < 1e-6, "{q:?}");
    assert!(q.kl.abs() < 1e-3 && q.kl_tokens > 0, "{q:?}");
    assert_eq!(q.candidate_degenerate, q.serving_degenerate);
    assert!(q.reference_tokens > 500, "{q:?}");
    // The base model's own weights have not drifted from it: exactly, not up to sampling noise.
    let (c, b) = (q.candidate_fluency.unwrap(), q.base_fluency.unwrap());
    assert!((c - b).abs() < 1e-6 && b > 0.0, "{q:?}");
    assert_eq!(served_version(&g.policy_url).await, "2");
}

/// The reward check alone (the old canary) would have promoted `result`.
fn reward_check_passes(result: &CanaryResult) {
    assert!(
        result.candidate_reward >= result.serving_reward - result.tolerance,
        "the reward model must like this version as much: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_language_the_reward_model_likes_is_rejected_and_a_normal_update_is_not() {
    // This test's model is warm-started briefly: its answers carry ~3 nats/token of entropy (the
    // model `clawline up` creates, ~0.6), and one normal update moves its drift from the start by
    // 0.08–0.15 (`clawline up`'s: ~0.01). The broken versions measure 1.75–2.6.
    let g = gate(|s| s.canary_max_fluency_increase = 0.5).await;
    let base = g.model.path();
    // v1: learned to repeat the reward model's favourite words (issue 19's "Anything else.
    // Anything else. Thanks").
    let parrot = fine_tuned(
        base,
        "Sure, happy to help. Sure, happy to help. Great, thanks. Great, thanks. Sure, happy to help.",
        60,
    );
    publish_version(&g.js, 1, &parrot, &sha256(&parrot)).await;
    // v2: pleasant words around control characters (issue 19's answers with \u0007).
    let bell = fine_tuned(
        base,
        "Sure\u{7}, happy\u{7} to help\u{7}! Great\u{7} answer\u{7}, thanks\u{7}.",
        60,
    );
    publish_version(&g.js, 2, &bell, &sha256(&bell)).await;
    // v3: one version as `clawline up` trains it (1 GRPO update per version, lr 1e-3, KL 0.3).
    let normal = normal_update(base, 1, 1);
    publish_version(&g.js, 3, &normal, &sha256(&normal)).await;

    serving_becomes(&g.js, "3").await;
    let rejected: Vec<WeightsRejected> = events(&g.js, subjects::WEIGHTS_REJECTED).await;
    assert_eq!(
        rejected.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 2],
        "{rejected:?}"
    );
    for r in &rejected {
        let result = r.canary.clone().unwrap();
        eprintln!("v{} rejected: {}\n  {result:?}", r.version, r.reason);
        reward_check_passes(&result);
        assert!(!r.reason.contains("mean reward"), "{}", r.reason);
        let q = result.quality.unwrap();
        assert!(
            q.candidate_nll > q.serving_nll + q.max_nll_increase,
            "{q:?}"
        );
        assert!(r.reason.contains(&format!(
            "reference NLL {:.2} vs serving v0's {:.2}",
            q.candidate_nll, q.serving_nll
        )));
        assert!(
            r.reason.contains("KL to serving v0's answers"),
            "{}",
            r.reason
        );
        // The drift from the starting model (the trainer's `--max-drift-base`) sees it too.
        assert!(r.reason.contains("its language drifted"), "{}", r.reason);
    }
    assert!(
        rejected[0].reason.contains("answers with repetition"),
        "{}",
        rejected[0].reason
    );
    assert!(
        rejected[1]
            .reason
            .contains("answers with control characters"),
        "{}",
        rejected[1].reason
    );

    let activated: Vec<WeightsActivated> = events(&g.js, subjects::WEIGHTS_ACTIVATED).await;
    assert_eq!(activated.len(), 1, "{activated:?}");
    let c = activated[0].canary.clone().unwrap();
    eprintln!("v3 promoted: {c:?}");
    assert!(clawline_broadcaster::passes(&c));
    assert!(c.quality.unwrap().kl > 0.0);
    assert_eq!(served_version(&g.policy_url).await, "3");
}

/// Not run by default: a chain of normal versions, each trained from the last, for picking the
/// limits. Prints each version's canary numbers (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "calibration: cargo test -p clawline-broadcaster --test canary -- --ignored --nocapture"]
async fn calibration_normal_versions_stay_within_the_limits() {
    let g = gate(|_| {}).await;
    let mut current = copy_model(g.model.path(), None);
    for v in 1..=8u64 {
        let bytes = normal_update(current.path(), 1, v);
        publish_version(&g.js, v, &bytes, &sha256(&bytes)).await;
        wait_for(
            || async {
                let a: Vec<WeightsActivated> = events(&g.js, subjects::WEIGHTS_ACTIVATED).await;
                let r: Vec<WeightsRejected> = events(&g.js, subjects::WEIGHTS_REJECTED).await;
                a.iter().any(|e| e.version == v) || r.iter().any(|e| e.version == v)
            },
            300,
        )
        .await;
        let a: Vec<WeightsActivated> = events(&g.js, subjects::WEIGHTS_ACTIVATED).await;
        match a.iter().find(|e| e.version == v) {
            Some(e) => {
                let c = e.canary.clone().unwrap();
                let q = c.quality.unwrap();
                eprintln!(
                    "v{v} promoted: reward {:.4} vs {:.4}, NLL {:.4} vs {:.4} ({:+.4}), KL {:.4}, repetition {:.2} vs {:.2}, cut off {:.2} vs {:.2}",
                    c.candidate_reward,
                    c.serving_reward,
                    q.candidate_nll,
                    q.serving_nll,
                    q.candidate_nll - q.serving_nll,
                    q.kl,
                    q.candidate_degenerate.repetition,
                    q.serving_degenerate.repetition,
                    q.candidate_degenerate.cut_off,
                    q.serving_degenerate.cut_off
                );
                current = copy_model(g.model.path(), Some(&bytes));
            }
            None => {
                let r: Vec<WeightsRejected> = events(&g.js, subjects::WEIGHTS_REJECTED).await;
                let r = r.iter().find(|e| e.version == v).unwrap();
                panic!("v{v} rejected: {}", r.reason);
            }
        }
    }
    drop(g.nats);
}

/// A copy of the model dir `base`, with `weights` as its `model.safetensors` when given.
fn copy_model(base: &Path, weights: Option<&[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(base).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    if let Some(w) = weights {
        std::fs::write(dir.path().join("model.safetensors"), w).unwrap();
    }
    dir
}
