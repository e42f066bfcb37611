//! Learn-and-serve benchmark: the policy server's generated tokens/s (one client, then many at
//! once), the GRPO update's tokens/s, and how long a new weight version takes to save (with its
//! sha256) and to swap into the serving policy; then the trainer service end to end (its update,
//! and update → version stored in the object store). Writes `benches/results/learn.md`. Run
//! through `scripts/bench-learn.sh`.

mod trainer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use clawline_benches::median;
use clawline_model::LlamaConfig;
use clawline_model::init::{InitOptions, init};
use clawline_model::weights::{Loaded, Precision, save_weights};
use clawline_model::{LossConfig, Sample, update};
use clawline_runtime::CancellationToken;
use serde_json::{Value, json};
use tch::nn::OptimizerConfig;

#[derive(Parser)]
struct Args {
    /// Completion tokens per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: u64,
    /// Sequential requests of the single-client measurement.
    #[arg(long, default_value_t = 10)]
    requests: usize,
    /// Concurrent clients (each sends `requests` / 2 requests).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Samples per update, and their prompt / response lengths.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    response_tokens: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A checkpoint directory (config, safetensors, tokenizer) to measure instead of a fresh
    /// `clawline model init` model: e.g. random weights at a 0.5B-class geometry on a GPU.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The machine, as the report names it.
    #[arg(long, default_value = "this machine (2 CPU cores, libtorch 2.13 CPU)")]
    machine: String,
    #[arg(long, default_value = "benches/results/learn.md")]
    report: PathBuf,
}

async fn chat(
    http: &reqwest::Client,
    url: &str,
    max_tokens: u64,
    seed: u64,
) -> anyhow::Result<u64> {
    let body: Value = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({
            "messages": [{"role": "user", "content": format!("Question {seed}: Ana has 3 apples. How many now?")}],
            "max_tokens": max_tokens, "ignore_eos": true, "seed": seed,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["usage"]["completion_tokens"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no usage: {body}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = clawline_model::device(&args.device)?;
    let dir = tempfile::tempdir()?;
    let (model_dir, config) = match &args.model {
        Some(model) => (
            model.clone(),
            LlamaConfig::load(&model.join("config.json"))?,
        ),
        None => {
            let model_dir = dir.path().join("model");
            let config = init(&model_dir, &InitOptions::default())?;
            (model_dir, config)
        }
    };
    let serving = Precision::Auto.kind(device);
    let params: i64 = Loaded::load(&model_dir, device)?
        .vs
        .trainable_variables()
        .iter()
        .map(tch::Tensor::numel)
        .map(|n| n as i64)
        .sum();

    // Serving.
    let listener = clawline_runtime::bind_loopback().await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let mut server = clawline_policy::Settings::new(&model_dir);
    server.device = args.device.clone();
    server.max_batch = args.clients;
    tokio::spawn(clawline_policy::run(server, listener, stop.clone()));
    let http = reqwest::Client::new();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    chat(&http, &url, 8, 0).await?; // warm-up
    let started = Instant::now();
    let mut single_tokens = 0;
    for i in 0..args.requests {
        single_tokens += chat(&http, &url, args.max_tokens, i as u64).await?;
    }
    let single = single_tokens as f64 / started.elapsed().as_secs_f64();
    let per_client = (args.requests / 2).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (http, url) = (http.clone(), url.clone());
        let max = args.max_tokens;
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..per_client {
                n += chat(&http, &url, max, (c * 1000 + i) as u64).await?;
            }
            anyhow::Ok(n)
        }));
    }
    let mut concurrent_tokens = 0;
    for t in tasks {
        concurrent_tokens += t.await??;
    }
    let concurrent = concurrent_tokens as f64 / started.elapsed().as_secs_f64();

    // Training: GRPO updates on synthetic batches.
    let policy = Loaded::load(&model_dir, device)?;
    let mut opt = tch::nn::AdamW::default().build(&policy.vs, 1e-4)?;
    let vocab = config.vocab_size as u32;
    let samples: Vec<Sample> = (0..args.batch)
        .map(|i| {
            let prompt: Vec<u32> = (0..args.prompt_tokens)
                .map(|t| ((i * 31 + t * 7) as u32) % vocab)
                .collect();
            let response: Vec<u32> = (0..args.response_tokens)
                .map(|t| ((i * 17 + t * 13) as u32) % vocab)
                .collect();
            Sample {
                old_logprobs: policy.model.completion_logprobs(&prompt, &response),
                prompt,
                response,
                advantage: if i % 2 == 0 { 1.0 } else { -1.0 },
                importance_cap: None,
            }
        })
        .collect();
    let cfg = LossConfig {
        micro_batch: 8,
        ..Default::default()
    };
    update(&policy, None, &mut opt, &samples, &cfg)?; // warm-up
    let mut update_secs = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        update(&policy, None, &mut opt, &samples, &cfg)?;
        update_secs.push(t.elapsed().as_secs_f64());
    }
    let tokens_per_update = (args.batch * (args.prompt_tokens + args.response_tokens)) as f64;
    let update_median = median(update_secs.clone());

    // A version: save + sha256 (what the trainer publishes), then swap into the server.
    let mut save_secs = Vec::new();
    let mut swap_secs = Vec::new();
    let mut bytes = 0;
    for round in 0..args.rounds {
        let version_dir = dir.path().join(format!("v{round}"));
        std::fs::create_dir_all(&version_dir)?;
        let t = Instant::now();
        let file = version_dir.join("model.safetensors");
        save_weights(&policy.vs, &file)?;
        let data = std::fs::read(&file)?;
        bytes = data.len();
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&data))
        };
        save_secs.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        http.post(format!("{url}/admin/weights"))
            .json(&json!({"path": file, "version": format!("{}", round + 1), "sha256": sha}))
            .send()
            .await?
            .error_for_status()?;
        swap_secs.push(t.elapsed().as_secs_f64());
    }
    stop.cancel();

    // The trainer service: the same batch through BATCHES, a version after every update.
    let service = trainer::measure(&model_dir, &args.device, &samples, args.rounds).await?;

    let gpu_note = if device.is_cuda() {
        ""
    } else {
        " No GPU was lent to this run, so the 0.5B-class configuration was not measured."
    };
    let report = format!(
        "# Learn-and-serve benchmark\n\n\
         Generated by `scripts/bench-learn.sh` (`benches/src/bin/learn_bench/main.rs`) on {machine} \
         (release build, device `{device}`).{gpu_note}\n\n\
         **Model:** {what} — `{family}`, {layers} layers, hidden {hidden}, {heads} heads \
         ({kv} key/value), vocabulary {vocab}, {params} parameters. Precision: the policy server \
         computes in {serving:?} (its `--dtype auto` on this device); the update trains f32 weights.\n\n\
         | | value |\n| --- | ---: |\n\
         | policy server, one client ({req} requests × {mt} tokens, `ignore_eos`) | {single:.0} tokens/s |\n\
         | policy server, {clients} clients at once ({pc} requests each) | {concurrent:.0} tokens/s |\n\
         | GRPO update ({batch} samples × {pt}+{rt} tokens, micro-batches of 8, AdamW) | {upd:.0} tokens/s ({us:.3} s per update, median of {rounds}) |\n\
         | new version: save safetensors + sha256 ({mb:.1} MiB) | {save:.1} ms (median of {rounds}) |\n\
         | new version: `POST /admin/weights` (load, check, swap) | {swap:.1} ms (median of {rounds}) |\n\
         | trainer service: the same update, batch from BATCHES | {supd:.0} tokens/s ({sus:.3} s per update, {ratio:.2}× the bare update's time) |\n\
         | trainer service: update done → version stored (checkpoint, sha256, object store put of {smb:.1} MiB, `WeightsPublished` acked) | {spub:.1} ms (median of {rounds}) |\n",
        machine = args.machine,
        device = args.device,
        what = if args.model.is_some() {
            "the checkpoint given with `--model`"
        } else {
            "the `clawline model init` default"
        },
        family = config.model_type,
        layers = config.num_hidden_layers,
        hidden = config.hidden_size,
        heads = config.num_attention_heads,
        kv = config.kv_heads(),
        vocab = config.vocab_size,
        req = args.requests,
        mt = args.max_tokens,
        clients = args.clients,
        pc = per_client,
        batch = args.batch,
        pt = args.prompt_tokens,
        rt = args.response_tokens,
        upd = tokens_per_update / update_median,
        us = update_median,
        rounds = args.rounds,
        mb = bytes as f64 / (1 << 20) as f64,
        save = median(save_secs) * 1e3,
        swap = median(swap_secs) * 1e3,
        supd = tokens_per_update / service.update_secs,
        sus = service.update_secs,
        ratio = service.update_secs / update_median,
        smb = service.bytes as f64 / (1 << 20) as f64,
        spub = service.publish_secs * 1e3,
    );
    std::fs::create_dir_all(args.report.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    Ok(())
}
