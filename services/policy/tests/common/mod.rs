//! A policy server on a free port with a small model, and the requests the tests send it.
#![allow(dead_code, reason = "each test binary uses some of these")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use clawline_model::init::{InitOptions, init};
use clawline_runtime::CancellationToken;
use serde_json::{Value, json};

pub struct Server {
    pub url: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn model_dir(seed: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        &InitOptions {
            vocab_size: 512,
            seed,
            force: false,
            warm_start_steps: 0,
        },
    )
    .unwrap();
    dir
}

/// The server's settings: `model` on the CPU, with `extra` flags.
pub fn config(model: &Path, extra: &[&str]) -> clawline_policy::Settings {
    let mut args = vec![
        "clawline-policy",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    clawline_policy::Args::try_parse_from(args)
        .unwrap()
        .settings()
}

/// A policy server on a free loopback port.
pub async fn start(model: &Path, extra: &[&str]) -> Server {
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(clawline_policy::run(
        config(model, extra),
        listener,
        stop.clone(),
    ));
    for _ in 0..200 {
        if reqwest::get(format!("{url}/healthz")).await.is_ok() {
            return Server { url, stop };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("policy server did not start");
}

pub async fn post(url: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let version = r
        .headers()
        .get("x-clawline-policy-version")
        .map(|v| v.to_str().unwrap().to_string());
    (status, version, r.json().await.unwrap())
}

pub fn chat(max_tokens: u64, seed: u64) -> Value {
    json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Ana has 3 apples. How many now?"}],
        "max_tokens": max_tokens, "seed": seed, "temperature": 1.0,
        "logprobs": true, "return_token_ids": true,
    })
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The logprobs a chat choice was served with, one a generated token.
pub fn served_logprobs(choice: &Value) -> Vec<f32> {
    choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logprob"].as_f64().unwrap() as f32)
        .collect()
}
