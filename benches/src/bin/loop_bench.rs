//! Swap under load: constant-rate chat traffic through the gateway to the built-in policy server
//! while the broadcaster activates a new version every few seconds. Reports failed requests, the
//! p99 latency of requests that overlapped a swap against the steady ones, and the time from each
//! `WeightsPublished` to the engine serving it against a target of twice the weights' bytes over
//! this machine's memcpy rate plus 200 ms. Writes `benches/results/loop.md`. Run through
//! `scripts/bench-loop.sh`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use clawline_benches::median;
use clawline_model::init::{InitOptions, init};
use clawline_nats::server::{LocalServer, LocalServerConfig};
use clawline_nats::{buckets, publish_event, subjects};
use clawline_runtime::CancellationToken;
use clawline_schemas::{Envelope, WeightsActivated, WeightsFormat, WeightsPublished};
use futures::StreamExt as _;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Requests per second through the gateway.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seconds of steady traffic before the first swap.
    #[arg(long, default_value_t = 15)]
    steady_secs: u64,
    /// Versions activated, one every `--every` seconds.
    #[arg(long, default_value_t = 30)]
    versions: u64,
    #[arg(long, default_value_t = 1)]
    every: u64,
    #[arg(long, default_value_t = 16)]
    max_tokens: u64,
    #[arg(long, default_value = "benches/results/loop.md")]
    report: PathBuf,
    /// A `clawline demo` report (its JSON) to add: reward per window and interaction → served
    /// update.
    #[arg(long)]
    demo: Option<PathBuf>,
}

/// Bytes per second of a plain memory copy (256 MiB, best of 3).
fn memcpy_rate() -> f64 {
    let src = vec![1u8; 256 << 20];
    let mut dst = vec![0u8; 256 << 20];
    (0..3)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            src.len() as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model");
    init(&model, &InitOptions::default())?;
    let mut nats_config = LocalServerConfig::new(dir.path().join("nats"));
    nats_config.port = None;
    let server = LocalServer::start(nats_config).context("nats-server")?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    clawline_nats::ensure_topology(&js, &Default::default()).await?;
    let stop = CancellationToken::new();

    let policy_listener = clawline_runtime::bind_loopback().await?;
    let policy_port = policy_listener.local_addr()?.port();
    let mut policy = clawline_policy::Settings::new(&model);
    policy.device = "cpu".into();
    tokio::spawn(clawline_policy::run(policy, policy_listener, stop.clone()));
    let gateway_listener = clawline_runtime::bind_loopback().await?;
    let gateway_port = gateway_listener.local_addr()?.port();
    let mut gateway =
        clawline_gateway::Settings::new(vec![format!("http://127.0.0.1:{policy_port}/v1")]);
    gateway.nats = clawline_runtime::NatsArgs::at(server.url());
    gateway.spool_dir = dir.path().join("spool");
    tokio::spawn(clawline_gateway::run(
        gateway,
        gateway_listener,
        stop.clone(),
    ));
    let engine = format!("policy=clawline:http://127.0.0.1:{policy_port}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let mut broadcaster = clawline_broadcaster::Settings::new(&model, vec![engine]);
    broadcaster.nats = clawline_runtime::NatsArgs::at(server.url());
    broadcaster.work_dir = dir.path().join("weights");
    let listener = clawline_runtime::bind_loopback().await?;
    tokio::spawn(clawline_broadcaster::run(
        broadcaster,
        listener,
        stop.clone(),
    ));

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{gateway_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{url}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "the gateway did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic: one request every 1/rate seconds, each on its own task.
    let start = Instant::now();
    let total = Duration::from_secs(args.steady_secs + args.versions * args.every + 5);
    let samples: Arc<Mutex<Vec<(f64, f64, bool)>>> = Arc::default();
    let traffic = {
        let (http, samples, url) = (http.clone(), samples.clone(), url.clone());
        let (rate, max_tokens) = (args.rate, args.max_tokens);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut inflight = Vec::new();
            while start.elapsed() < total {
                tick.tick().await;
                let (http, samples, url) = (http.clone(), samples.clone(), url.clone());
                inflight.push(tokio::spawn(async move {
                    let sent = start.elapsed().as_secs_f64();
                    let body = json!({"model": "m", "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": "Can you help me with a recipe?"}]});
                    let r = http.post(format!("{url}/v1/chat/completions")).json(&body).send().await;
                    let ok = match r {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    let took = start.elapsed().as_secs_f64() - sent;
                    if let Ok(mut s) = samples.lock() {
                        s.push((sent, took, ok));
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        })
    };

    // Versions: the base weights re-published (the swap costs the same whatever the values).
    let bytes = std::fs::read(model.join("model.safetensors"))?;
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let mut activated = client.subscribe(subjects::WEIGHTS_ACTIVATED).await?;
    let store = js.get_object_store(buckets::WEIGHTS_OBJECTS).await?;
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let mut windows = Vec::new();
    let mut to_serving = Vec::new();
    for version in 1..=args.versions {
        let object = format!("v{version}/model.safetensors");
        store.put(object.as_str(), &mut &bytes[..]).await?;
        let event = WeightsPublished {
            envelope: Envelope {
                event_id: WeightsPublished::id_for(version, &sha),
                event_time: clawline_schemas::now_ms(),
                ..Default::default()
            },
            version,
            parent: version - 1,
            format: WeightsFormat::Full,
            bucket: buckets::WEIGHTS_OBJECTS.into(),
            object,
            sha256: sha.clone(),
            size: bytes.len() as u64,
            ..Default::default()
        };
        let begin = start.elapsed().as_secs_f64();
        publish_event(&js, subjects::WEIGHTS_PUBLISHED.into(), &event).await?;
        let m = tokio::time::timeout(Duration::from_secs(60), activated.next())
            .await?
            .context("no activation")?;
        let a: WeightsActivated = clawline_nats::decode_message(&m.payload)?;
        to_serving.push(a.seconds);
        windows.push((begin, start.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_secs(args.every)).await;
    }
    traffic.await?;
    stop.cancel();

    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let failed = samples.iter().filter(|s| !s.2).count();
    let overlaps = |s: &(f64, f64, bool)| windows.iter().any(|(a, b)| s.0 <= *b && s.0 + s.1 >= *a);
    let during: Vec<f64> = samples
        .iter()
        .filter(|s| s.2 && overlaps(s))
        .map(|s| s.1)
        .collect();
    let steady: Vec<f64> = samples
        .iter()
        .filter(|s| s.2 && !overlaps(s))
        .map(|s| s.1)
        .collect();
    let rate = memcpy_rate();
    let target = 2.0 * bytes.len() as f64 / rate + 0.2;
    let (p_steady, p_during) = (p99(steady.clone()), p99(during.clone()));
    let report = format!(
        "# Swap under load\n\n\
         Generated by `scripts/bench-loop.sh` (`benches/src/bin/loop_bench.rs`) on this machine (2 CPU \
         cores, release build): the gateway in front of the built-in policy server (the `clawline model \
         init` default, {mb:.1} MiB of weights), {rate_rps} requests/s of {mt}-token chats for {secs} s, \
         and the broadcaster activating {n} versions, one every {every} s after {steady_secs} s of steady \
         traffic (no canary).\n\n\
         | | value | target |\n| --- | ---: | ---: |\n\
         | requests | {count} ({failed} failed) | 0 failed |\n\
         | p99 latency, steady ({ns} requests) | {ps:.1} ms | |\n\
         | p99 latency, overlapping a swap ({nd} requests) | {pd:.1} ms ({ratio:.2}×) | ≤ 1.25× |\n\
         | median latency, steady / during | {ms:.1} / {md:.1} ms | |\n\
         | `WeightsPublished` → serving (median, max of {n}) | {tm:.0} / {tx:.0} ms | ≤ {tt:.0} ms (2 × bytes / memcpy {gbs:.1} GB/s + 200 ms) |\n",
        mb = bytes.len() as f64 / (1 << 20) as f64,
        rate_rps = args.rate,
        mt = args.max_tokens,
        secs = total.as_secs(),
        n = args.versions,
        every = args.every,
        steady_secs = args.steady_secs,
        count = samples.len(),
        ns = steady.len(),
        nd = during.len(),
        ps = p_steady * 1e3,
        pd = p_during * 1e3,
        ratio = p_during / p_steady,
        ms = median(steady) * 1e3,
        md = median(during) * 1e3,
        tm = median(to_serving.clone()) * 1e3,
        tx = to_serving.iter().copied().fold(0.0, f64::max) * 1e3,
        tt = target * 1e3,
        gbs = rate / 1e9,
    );
    let report = match &args.demo {
        Some(path) => report + &demo_section(path)?,
        None => report,
    };
    std::fs::create_dir_all(args.report.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    drop(server);
    Ok(())
}

/// The closed loop as `clawline demo` measured it (run by `scripts/bench-loop.sh` just before).
fn demo_section(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--demo {}", path.display()))?;
    let demo: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--demo {}", path.display()))?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let windows = demo["windows"].as_array().cloned().unwrap_or_default();
    let served = &demo["interaction_to_served"];
    let mut out = format!(
        "\n## The closed loop: interaction → served update\n\n\
         `clawline demo` (release build, canary on, defaults): {requests} requests from simulated users \
         in {secs:.0} s, {failed} failed, {versions} version activations. For each step, the time from its \
         capture to the first answer served by weights that trained on it:\n\n\
         | steps served their update | median | p90 | max | not yet served at the end |\n\
         | ---: | ---: | ---: | ---: | ---: |\n\
         | {steps} | {median:.2} s | {p90:.2} s | {max:.2} s | {pending} |\n\n\
         Mean reward per window of answers (the figure: [`demo.svg`](demo.svg)):\n\n\
         | window | mean reward (std) | versions serving |\n| ---: | ---: | --- |\n",
        requests = demo["requests"],
        secs = f(&demo["seconds"]),
        failed = demo["failed"],
        versions = demo["timeline"].as_array().map_or(0, Vec::len),
        steps = served["steps"],
        median = f(&served["median_s"]),
        p90 = f(&served["p90_s"]),
        max = f(&served["max_s"]),
        pending = served["pending"],
    );
    for w in &windows {
        out += &format!(
            "| {} | {:.3} ({:.3}) | v{}–v{} |\n",
            w["index"],
            f(&w["mean_reward"]),
            f(&w["std_reward"]),
            w["versions"][0],
            w["versions"][1]
        );
    }
    Ok(out)
}
