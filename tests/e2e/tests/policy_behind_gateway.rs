#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The gateway in front of the policy server, unchanged: every call through it is captured with
//! the engine's exact token ids and logprobs, and those logprobs are what the trainer recomputes.

use std::time::{Duration, Instant};

use clawline_model::init::{InitOptions, init};
use clawline_model::weights::Loaded;
use clawline_nats::async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use clawline_nats::testing::NatsServer;
use clawline_runtime::CancellationToken;
use clawline_schemas::{StepRecorded, TokenSource};
use futures::StreamExt;
use serde_json::json;
use tch::Device;

async fn steps(js: &jetstream::Context, n: usize) -> Vec<StepRecorded> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream("STEPS").await.unwrap();
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .unwrap();
        let pending = consumer.cached_info().num_pending as usize;
        if pending >= n {
            let mut messages = consumer.messages().await.unwrap().take(n);
            let mut out = Vec::new();
            while let Some(m) = messages.next().await {
                out.push(clawline_schemas::decode(&m.unwrap().payload).unwrap());
            }
            return out;
        }
        assert!(Instant::now() < deadline, "{pending} of {n} steps captured");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_gateway_captures_the_policy_servers_exact_tokens_and_logprobs() {
    let model_dir = tempfile::tempdir().unwrap();
    init(
        model_dir.path(),
        &InitOptions {
            vocab_size: 512,
            seed: 11,
            force: false,
            warm_start_steps: 0,
        },
    )
    .unwrap();
    let stop = CancellationToken::new();
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let policy_port = listener.local_addr().unwrap().port();
    let mut policy = clawline_policy::Settings::new(model_dir.path());
    policy.device = "cpu".into();
    tokio::spawn(clawline_policy::run(policy, listener, stop.clone()));

    let nats = NatsServer::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut config =
        clawline_gateway::Settings::new(vec![format!("http://127.0.0.1:{policy_port}/v1")]);
    config.nats = clawline_runtime::NatsArgs::at(nats.url());
    config.spool_dir = spool.path().into();
    let client = clawline_runtime::connect_nats(&config.nats, "test-gateway", false)
        .await
        .unwrap();
    let state = clawline_gateway::build(config, client).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(clawline_gateway::serve(state, listener, stop.clone()));

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http.get(format!("{gateway}/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for stream in [false, true] {
        let r = http
            .post(format!("{gateway}/v1/chat/completions"))
            .json(&json!({
                "model": "policy",
                "messages": [{"role": "user", "content": "Ben has 4 coins. How many now?"}],
                "max_tokens": 10, "seed": 3, "stream": stream,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let captured = steps(&nats.jetstream().await, 2).await;
    let model = Loaded::load(model_dir.path(), Device::Cpu).unwrap();
    for step in &captured {
        assert_eq!(
            step.token_source,
            TokenSource::Engine,
            "exact ids from the engine"
        );
        let lps = step
            .response_logprobs
            .as_ref()
            .expect("engine logprobs captured");
        assert_eq!(lps.len(), step.response_ids.len());
        let recomputed = model
            .model
            .completion_logprobs(&step.prompt_ids, &step.response_ids);
        for (a, b) in lps.iter().zip(&recomputed) {
            assert!((a - b).abs() < 1e-4, "captured {a}, recomputed {b}");
        }
    }
    assert_eq!(
        captured[0].response_ids, captured[1].response_ids,
        "same seed, stream or not"
    );
    stop.cancel();
}
