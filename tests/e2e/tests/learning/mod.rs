//! The learning loop in process, shared by the broadcaster, canary and restore scenarios: a real
//! policy server, trainer and broadcaster, mocks of vLLM / SGLang for their weight-update APIs, and
//! reading what happened on NATS.
#![allow(dead_code, clippy::unwrap_used, reason = "tests fail loudly")]

mod versions;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use clawline_model::init::{InitOptions, init};
use clawline_model::{Llama, Loaded};
use clawline_nats::testing::NatsServer;
use clawline_nats::{buckets, publish_event, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{BatchFormed, BatchStep, Envelope, WeightsFormat, WeightsPublished};
use tch::Device;
#[allow(unused_imports, reason = "only the canary tests make versions")]
pub use versions::*;

/// Cancels its services when dropped.
pub struct Stop(pub CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub use clawline_nats::server::free_port;

pub fn model_dir(warm_start_steps: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        &InitOptions {
            vocab_size: 512,
            seed: 3,
            force: false,
            warm_start_steps,
        },
    )
    .unwrap();
    dir
}

/// What the broadcaster tests start from: a nats-server and its JetStream, the starting model on
/// disk, a stop token (cancelled when the `Stop` drops) and the built-in policy server on the model
/// (its base URL).
#[allow(dead_code, reason = "only the broadcaster tests start from it")]
pub async fn policy_rig() -> (
    NatsServer,
    async_nats::jetstream::Context,
    tempfile::TempDir,
    CancellationToken,
    Stop,
    String,
) {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    let model = model_dir(0);
    let stop = CancellationToken::new();
    let guard = Stop(stop.clone());
    let policy_url = policy(model.path(), &stop).await;
    (nats, js, model, stop, guard, policy_url)
}

/// The built-in policy server on `model`; returns its base URL (no `/v1`).
pub async fn policy(model: &Path, stop: &CancellationToken) -> String {
    policy_on(model, free_port(), stop).await
}

/// The built-in policy server on `model` at `port`.
pub async fn policy_on(model: &Path, port: u16, stop: &CancellationToken) -> String {
    let mut settings = clawline_policy::Settings::new(model);
    settings.device = "cpu".into();
    let listener = clawline_runtime::bind("--listen", ([127, 0, 0, 1], port).into())
        .await
        .unwrap();
    tokio::spawn(clawline_policy::run(settings, listener, stop.clone()));
    let url = format!("http://127.0.0.1:{port}");
    wait_for(
        || async { reqwest::get(format!("{url}/healthz")).await.is_ok() },
        60,
    )
    .await;
    url
}

/// The version the policy server's answers name.
pub async fn served_version(url: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(
            &serde_json::json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.headers()["x-clawline-policy-version"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Starts a trainer on `model` publishing every update; `lora_r` trains adapters of that rank.
pub fn trainer(
    nats: &NatsServer,
    model: &Path,
    ckpt: &Path,
    lora_r: Option<usize>,
    stop: &CancellationToken,
) {
    let mut settings = clawline_trainer::Settings::new(model);
    settings.nats = clawline_runtime::NatsArgs::at(nats.url());
    settings.checkpoint_dir = ckpt.into();
    settings.device = "cpu".into();
    settings.lr = 0.001;
    settings.publish_every = 1;
    settings.lora_r = lora_r;
    let listener = clawline_runtime::bind_sync("--listen", ([127, 0, 0, 1], 0).into()).unwrap();
    tokio::spawn(clawline_trainer::run(settings, listener, stop.clone()));
}

/// Starts the broadcaster; returns its `/status` port and the task (to see its error).
pub fn broadcaster(
    nats: &NatsServer,
    model: &Path,
    work: &Path,
    engines: &[String],
    configure: impl FnOnce(&mut clawline_broadcaster::Settings),
    stop: &CancellationToken,
) -> (u16, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let engines = engines
        .iter()
        .map(|e| e.parse().expect("an engine spec"))
        .collect();
    let mut settings = clawline_broadcaster::Settings::new(model, engines);
    settings.nats = clawline_runtime::NatsArgs::at(nats.url());
    settings.work_dir = work.into();
    configure(&mut settings);
    let listener = clawline_runtime::bind_sync("--listen", ([127, 0, 0, 1], 0).into()).unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        port,
        tokio::spawn(clawline_broadcaster::run(settings, listener, stop.clone())),
    )
}

/// A batch rewarding one answer to a fixed prompt, with the model's behaviour logprobs.
pub fn batch(model: &Llama, i: usize) -> BatchFormed {
    let prompt = vec![10, 11, 12];
    let step = |id: String, response: Vec<u32>, advantage: f64| BatchStep {
        step_id: id.clone(),
        tenant: "t".into(),
        trajectory_uid: id,
        prompt_uid: "p".into(),
        old_logprobs: Some(model.completion_logprobs(&prompt, &response)),
        prompt_ids: prompt.clone(),
        response_ids: response,
        reward: advantage,
        advantage,
        ..Default::default()
    };
    let steps = vec![
        step(format!("b{i}-good"), vec![20, 21], 1.0),
        step(format!("b{i}-bad"), vec![30, 31], -1.0),
    ];
    BatchFormed {
        envelope: Envelope {
            event_id: BatchFormed::id_for(steps.iter().map(|s| s.step_id.as_str())),
            ..Default::default()
        },
        channel: "train".into(),
        steps,
        ..Default::default()
    }
}

pub async fn publish_batches(js: &jetstream::Context, model: &Path, range: std::ops::Range<usize>) {
    let base = Loaded::load(model, Device::Cpu).unwrap();
    for i in range {
        publish_event(js, subjects::batches("train"), &batch(&base.model, i))
            .await
            .unwrap();
    }
}

/// Stores `bytes` as version `version` and publishes its event (as the trainer does), with
/// `sha256` as given (a wrong one makes a corrupt version).
pub async fn publish_version(
    js: &jetstream::Context,
    version: u64,
    bytes: &[u8],
    sha256: &str,
) -> WeightsPublished {
    let object = format!("v{version}/model.safetensors");
    let store = js.get_object_store(buckets::WEIGHTS_OBJECTS).await.unwrap();
    store.put(object.as_str(), &mut &bytes[..]).await.unwrap();
    let event = WeightsPublished {
        envelope: Envelope::new(WeightsPublished::id_for(version, sha256), "test")
            .at(clawline_schemas::now_ms()),
        version,
        parent: version - 1,
        format: WeightsFormat::Full,
        bucket: buckets::WEIGHTS_OBJECTS.into(),
        object,
        sha256: sha256.into(),
        size: bytes.len() as u64,
        ..Default::default()
    };
    publish_event(js, subjects::WEIGHTS_PUBLISHED.into(), &event)
        .await
        .unwrap();
    event
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub async fn kv(js: &jetstream::Context, key: &str) -> Option<String> {
    let kv = js.get_key_value(buckets::STATE).await.unwrap();
    kv.get(key)
        .await
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Polls `check` every 50 ms until it holds; panics after `secs`.
pub async fn wait_for<F, Fut>(mut check: F, secs: u64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event on `subject` of the WEIGHTS stream, decoded.
pub async fn events<E: clawline_schemas::Event>(js: &jetstream::Context, subject: &str) -> Vec<E> {
    let stream = js
        .get_stream(clawline_nats::streams::WEIGHTS)
        .await
        .unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == subject
        {
            out.push(clawline_nats::decode_message(&m.payload).unwrap());
        }
    }
    out
}
