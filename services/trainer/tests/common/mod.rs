//! Shared by the trainer tests: a small model on disk, batches that reward one response and
//! punish another, and reading what the trainer published.
#![allow(dead_code, clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use clawline_model::{Llama, LlamaConfig, Loaded};
use clawline_nats::{publish_event, publish_raw, streams, subjects};
use clawline_schemas::{
    BatchFormed, BatchStep, Envelope, GroupMode, TokenSource, WeightsPublished,
};
use tch::Device;

pub const PROMPT: [u32; 3] = [1, 2, 3];
pub const GOOD: [u32; 2] = [5, 6];
pub const BAD: [u32; 2] = [7, 8];
pub const VOCAB: usize = 64;

/// A 2-layer model with `VOCAB` tokens, written in the HF layout.
pub fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LlamaConfig::tiny(VOCAB);
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.max_position_embeddings = 64;
    Loaded::fresh(&c, Device::Cpu, 7)
        .unwrap()
        .save(dir.path())
        .unwrap();
    dir
}

/// What most trainer tests start from: a nats-server, its JetStream, and the tiny model on disk
/// and loaded.
pub async fn setup() -> (
    clawline_nats::testing::NatsServer,
    jetstream::Context,
    tempfile::TempDir,
    Loaded,
) {
    let nats = clawline_nats::testing::NatsServer::start().await;
    let js = nats.jetstream().await;
    let model = model_dir();
    let base = Loaded::load(model.path(), Device::Cpu).unwrap();
    (nats, js, model, base)
}

/// A trainer running in this process.
pub struct Running {
    pub stop: clawline_runtime::CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub port: u16,
}

impl Running {
    /// Stops it and returns how its run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// The trainer on `model`, checkpointing into `ckpt`, `/status` on `port`, on the CPU, with
/// `flags` after those.
pub fn start_trainer(
    nats: &clawline_nats::testing::NatsServer,
    model: &Path,
    ckpt: &Path,
    port: u16,
    flags: &[&str],
) -> Running {
    use clap::Parser as _;
    let (url, listen) = (nats.url(), format!("127.0.0.1:{port}"));
    let mut args = vec![
        "clawline-trainer",
        "--nats-url",
        &url,
        "--model",
        model.to_str().unwrap(),
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
        "--listen",
        &listen,
        "--device",
        "cpu",
    ];
    args.extend_from_slice(flags);
    let parsed = clawline_trainer::Args::try_parse_from(args).unwrap();
    let listener = clawline_runtime::bind_sync("--listen", parsed.listen).unwrap();
    let stop = clawline_runtime::CancellationToken::new();
    let task = tokio::spawn(clawline_trainer::run(
        parsed.settings(),
        listener,
        stop.clone(),
    ));
    Running { stop, task, port }
}

pub use clawline_nats::server::free_port;

pub fn step(model: &Llama, id: String, response: &[u32], advantage: f64) -> BatchStep {
    BatchStep {
        step_id: id.clone(),
        tenant: "acme".into(),
        trajectory_uid: id,
        prompt_uid: "p".into(),
        token_source: TokenSource::Engine,
        prompt_ids: PROMPT.to_vec(),
        response_ids: response.to_vec(),
        old_logprobs: Some(model.completion_logprobs(&PROMPT, response)),
        reward: advantage,
        advantage,
        ..Default::default()
    }
}

/// Batch `i`: GOOD rewarded, BAD punished, with the base model's behaviour logprobs.
pub fn batch(model: &Llama, i: usize) -> BatchFormed {
    let steps = vec![
        step(model, format!("s{i}-good"), &GOOD, 1.0),
        step(model, format!("s{i}-bad"), &BAD, -1.0),
    ];
    BatchFormed {
        envelope: Envelope::new(
            BatchFormed::id_for(steps.iter().map(|s| s.step_id.as_str())),
            "test",
        ),
        channel: "train".into(),
        mode: GroupMode::Window,
        policy_version: None,
        groups: Vec::new(),
        steps,
    }
}

pub async fn publish_batches(js: &jetstream::Context, batches: &[BatchFormed]) {
    for b in batches {
        publish_event(js, subjects::batches(&b.channel), b)
            .await
            .unwrap();
    }
}

pub async fn publish_garbage(js: &jetstream::Context) {
    publish_raw(
        js,
        subjects::batches("train"),
        "garbage-1",
        b"\xc1 not msgpack".to_vec().into(),
    )
    .await
    .unwrap();
}

/// Every `WeightsPublished` on the WEIGHTS stream, in order.
pub async fn published(js: &jetstream::Context) -> Vec<WeightsPublished> {
    let stream = js.get_stream(streams::WEIGHTS).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == subjects::WEIGHTS_PUBLISHED
        {
            out.push(clawline_nats::decode_message(&m.payload).unwrap());
        }
    }
    out
}

/// Waits until `n` versions are published (panics after `secs`).
pub async fn wait_versions(js: &jetstream::Context, n: usize, secs: u64) -> Vec<WeightsPublished> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let events = published(js).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} versions published after {secs} s",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bytes of a version's object.
/// The batch ids the versions say they trained, in version order, beside the ids of the batches
/// sent: equal when every batch was trained exactly once, in order.
pub fn trained_and_sent(
    events: &[WeightsPublished],
    batches: &[BatchFormed],
) -> (Vec<String>, Vec<String>) {
    let trained = events.iter().flat_map(|e| e.batch_ids.clone()).collect();
    let sent = batches
        .iter()
        .map(|b| b.envelope.event_id.clone())
        .collect();
    (trained, sent)
}

pub async fn object(js: &jetstream::Context, name: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let store = js
        .get_object_store(clawline_nats::buckets::WEIGHTS_OBJECTS)
        .await
        .unwrap();
    let mut obj = store.get(name).await.unwrap();
    let mut bytes = Vec::new();
    obj.read_to_end(&mut bytes).await.unwrap();
    bytes
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Mean logprob of GOOD minus that of BAD after PROMPT.
pub fn preference(model: &Llama) -> f32 {
    let mean = |r: &[u32]| {
        let lp = model.completion_logprobs(&PROMPT, r);
        lp.iter().sum::<f32>() / lp.len() as f32
    };
    mean(&GOOD) - mean(&BAD)
}

/// Fetches `/metrics` and returns the value of `series` (name and labels).
pub async fn metric(port: u16, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    clawline_runtime::sample(&text, series)
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}
