//! Gateway benchmark: added latency over calling the engine directly, with capture on and acked,
//! side by side with LiteLLM's proxy and a do-nothing proxy on the gateway's HTTP stack in one run; and `/submit_steps` ingestion against raw async-nats
//! publishes of the same events. Writes `benches/results/gateway.md`.
//!
//! Run through `scripts/bench-gateway.sh`, which installs oha and LiteLLM and builds the binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use clawline_nats::server::{LocalServer, LocalServerConfig, free_port};
use serde_json::{Value, json};

mod protocols;
mod report;
use report::render;

#[derive(Parser)]
struct Args {
    /// Where the release binaries are (clawline-gateway, clawline-mock-vllm).
    #[arg(long)]
    bin_dir: PathBuf,
    /// The `litellm` executable; skipped when absent.
    #[arg(long)]
    litellm: Option<PathBuf>,
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Seconds per constant-rate run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "500,1000,2000", value_delimiter = ',')]
    rates: Vec<u32>,
    /// Requests in the one-in-flight run.
    #[arg(long, default_value_t = 2000)]
    serial_requests: u32,
    #[arg(long, default_value = "benches/results/gateway.md")]
    report: PathBuf,
    /// Only the per-protocol run (chat, Responses, Anthropic Messages, completions).
    #[arg(long)]
    protocols_only: bool,
    /// Leave out the per-protocol run (to measure a gateway built before it had those protocols).
    #[arg(long, conflicts_with = "protocols_only")]
    skip_protocols: bool,
    /// Calls per protocol row.
    #[arg(long, default_value_t = 1000)]
    protocol_requests: u32,
    #[arg(long, default_value = "benches/results/gateway-protocols.md")]
    protocols_report: PathBuf,
}

/// A child process killed on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = command
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    Ok(Proc { child })
}

async fn wait_http(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not up within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tokenizer every gateway here is started with (the decoded text is part of what it stores).
const TOKENIZER: &str = "data/tokenizer";

/// A gauge from a service's `/metrics` (NaN when it cannot be read).
async fn gauge(base: &str, name: &str) -> f64 {
    let text = match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    clawline_runtime::sample(&text, name).unwrap_or(f64::NAN)
}

/// Resident and peak resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    ok: u64,
    failed: u64,
    /// Requests the run meant to send (rate × seconds, or the serial count).
    scheduled: u64,
}

enum Mode {
    Serial(u32),
    Rate { rps: u32, seconds: u64 },
}

/// LiteLLM refuses to start without a master key; every target gets the same header.
const BENCH_KEY: &str = "sk-clawline-bench-0123456789abcdef0123456789abcdef";

fn run_oha(oha: &Path, url: &str, body: &str, mode: &Mode) -> anyhow::Result<Load> {
    let mut cmd = Command::new(oha);
    cmd.args(["-H", &format!("authorization: Bearer {BENCH_KEY}")]);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "-m",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        body,
    ]);
    match mode {
        Mode::Serial(n) => {
            cmd.args(["-n", &n.to_string(), "-c", "1"]);
        }
        Mode::Rate { rps, seconds } => {
            // Open loop at a fixed rate; latency counts from the scheduled send (no coordinated omission).
            cmd.args([
                "-z",
                &format!("{seconds}s"),
                "-q",
                &rps.to_string(),
                "-c",
                "256",
                "--latency-correction",
            ]);
        }
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", oha.display()))?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha JSON")?;
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = v["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // oha's distributions map a status code or error text to a count.
    let sum_where = |m: &serde_json::Map<String, Value>, keep: &dyn Fn(&str) -> bool| -> u64 {
        m.iter()
            .filter(|(k, _)| keep(k))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    };
    let ok = sum_where(&codes, &|c| c.starts_with('2'));
    let bad_status = sum_where(&codes, &|c| !c.starts_with('2'));
    // Requests still in flight when a timed run ends are cut by oha, not failed by the target.
    let error_map = v["errorDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let errors = sum_where(&error_map, &|e| !e.contains("deadline"));
    if errors + bad_status > 0 {
        eprintln!("failures from {url}: status {codes:?}, errors {error_map:?}");
    }
    Ok(Load {
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN),
        ok,
        failed: bad_status + errors,
        scheduled: match mode {
            Mode::Serial(n) => u64::from(*n),
            Mode::Rate { rps, seconds } => u64::from(*rps) * seconds,
        },
    })
}

fn chat_body() -> String {
    json!({"model": "mock-model", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather in Paris today? Answer in one sentence."}
    ], "max_tokens": 64, "temperature": 0.7})
    .to_string()
}

fn litellm_config(dir: &Path, mock_url: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("litellm.yaml");
    std::fs::write(
        &path,
        format!(
            "model_list:\n  - model_name: mock-model\n    litellm_params:\n      model: openai/mock-model\n      api_base: {mock_url}\n      api_key: none\nlitellm_settings:\n  telemetry: false\n  drop_params: true\n"
        ),
    )?;
    Ok(path)
}

async fn stream_messages(nats_url: &str, stream: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

use clawline_benches::{floor, ingest};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let nats = tokio::task::spawn_blocking({
        let d = dir.path().join("nats");
        move || LocalServer::start(LocalServerConfig::new(d))
    })
    .await??;
    let nats_url = nats.url();
    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await?);
    clawline_nats::ensure_topology(&js, &Default::default()).await?;

    let mock_port = free_port();
    let mut mock_cmd = Command::new(args.bin_dir.join("clawline-mock-vllm"));
    mock_cmd.args([
        "--listen",
        &format!("127.0.0.1:{mock_port}"),
        "--messages",
        "--responses",
    ]);
    let _mock = spawn(mock_cmd, &dir.path().join("mock.log"))?;
    let mock_url = format!("http://127.0.0.1:{mock_port}/v1");
    wait_http(&format!("{mock_url}/models"), Duration::from_secs(10)).await?;

    // The yardstick for one extra HTTP hop: the same server and client stack, nothing else.
    let proxy_port = free_port();
    let mut proxy_cmd = Command::new(args.bin_dir.join("bare-proxy"));
    proxy_cmd.args([
        "--listen",
        &format!("127.0.0.1:{proxy_port}"),
        "--upstream",
        &mock_url,
    ]);
    let _proxy = spawn(proxy_cmd, &dir.path().join("proxy.log"))?;
    let proxy_url = format!("http://127.0.0.1:{proxy_port}");
    wait_http(&format!("{proxy_url}/healthz"), Duration::from_secs(10)).await?;

    let start_gateway = |name: &str, extra: &[&str]| {
        let port = free_port();
        let mut cmd = Command::new(args.bin_dir.join("clawline-gateway"));
        cmd.args([
            "--upstream",
            &mock_url,
            "--nats-url",
            &nats_url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        cmd.args([
            "--spool-dir",
            &dir.path()
                .join(format!("spool-{name}"))
                .display()
                .to_string(),
            "--log-level",
            "warn",
        ]);
        cmd.args(["--tokenizer", TOKENIZER]);
        cmd.args(extra);
        let child = spawn(cmd, &dir.path().join(format!("{name}.log")))?;
        anyhow::Ok((child, format!("http://127.0.0.1:{port}")))
    };
    // The chat loads go to a gateway that serves nothing else, so its memory is theirs; the
    // protocol rows have their own (translating and native).
    let (gateway, gw_url) = start_gateway("gateway", &[])?;
    wait_http(&format!("{gw_url}/ready"), Duration::from_secs(20)).await?;
    if !args.skip_protocols {
        let (_translating, translating_url) = start_gateway("protocols", &[])?;
        wait_http(&format!("{translating_url}/ready"), Duration::from_secs(20)).await?;
        let (_native, native_url) =
            start_gateway("native", &["--engine-speaks", "messages,responses"])?;
        wait_http(&format!("{native_url}/ready"), Duration::from_secs(20)).await?;
        let per_protocol = protocols::measure(
            &args.oha,
            &mock_url,
            (&translating_url, &native_url),
            args.protocol_requests,
        )?;
        std::fs::write(&args.protocols_report, &per_protocol)?;
        println!("{per_protocol}");
    }
    if args.protocols_only {
        return Ok(());
    }

    let mut _litellm = None;
    let mut litellm_url = None;
    if let Some(bin) = &args.litellm {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--config",
            &litellm_config(dir.path(), &mock_url)?.display().to_string(),
            "--port",
            &port.to_string(),
            "--num_workers",
            "1",
        ]);
        cmd.env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MASTER_KEY", BENCH_KEY)
            // No internet here: use the bundled model cost map instead of fetching it at start.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
        _litellm = Some(spawn(cmd, &dir.path().join("litellm.log"))?);
        let url = format!("http://127.0.0.1:{port}");
        match wait_http(
            &format!("{url}/health/liveliness"),
            Duration::from_secs(300),
        )
        .await
        {
            Ok(()) => litellm_url = Some(url),
            Err(e) => eprintln!(
                "litellm did not start ({e}); see {}",
                dir.path().join("litellm.log").display()
            ),
        }
    }

    let body = chat_body();
    // The request the gateway sends on: the engine's share of the added latency (returning ids and
    // logprobs) shows as this row's.
    let extended = {
        let mut b: Value = serde_json::from_str(&body)?;
        b["logprobs"] = Value::Bool(true);
        b["return_token_ids"] = Value::Bool(true);
        b.to_string()
    };
    let targets: Vec<(&str, String, &str)> = [
        Some((
            "direct",
            format!("{mock_url}/chat/completions"),
            body.as_str(),
        )),
        Some((
            "direct + ids",
            format!("{mock_url}/chat/completions"),
            extended.as_str(),
        )),
        Some((
            "bare proxy",
            format!("{proxy_url}/v1/chat/completions"),
            body.as_str(),
        )),
        Some((
            "clawline",
            format!("{gw_url}/v1/chat/completions"),
            body.as_str(),
        )),
        litellm_url
            .as_ref()
            .map(|u| ("litellm", format!("{u}/v1/chat/completions"), body.as_str())),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (_, url, body) in &targets {
        run_oha(&args.oha, url, body, &Mode::Serial(200))?; // warm-up
    }
    let steps_before = stream_messages(&nats_url, "STEPS").await?;

    let mut modes = vec![(
        "1 in flight".to_string(),
        Mode::Serial(args.serial_requests),
    )];
    for &rps in &args.rates {
        modes.push((
            format!("{rps} RPS"),
            Mode::Rate {
                rps,
                seconds: args.seconds,
            },
        ));
    }
    let mut gateway_ok = 0;
    // LiteLLM keeps working through its backlog after a run it could not keep up with, which would
    // load the machine during the next runs; so it runs last, after direct and clawline at every load.
    let mut rows: Vec<(String, Vec<(&str, Load)>)> =
        modes.iter().map(|(l, _)| (l.clone(), Vec::new())).collect();
    for phase in [
        &["direct", "direct + ids", "bare proxy", "clawline"][..],
        &["litellm"][..],
    ] {
        for (i, (label, mode)) in modes.iter().enumerate() {
            for (name, url, body) in targets.iter().filter(|(n, _, _)| phase.contains(n)) {
                let load = run_oha(&args.oha, url, body, mode)?;
                eprintln!(
                    "{label:>12} {name:>9}: p50 {:.3} ms  p99 {:.3} ms  {:.0} req/s  ok {} failed {}",
                    load.p50_ms, load.p99_ms, load.rps, load.ok, load.failed
                );
                if *name == "clawline" {
                    gateway_ok += load.ok;
                }
                rows[i].1.push((*name, load));
            }
        }
    }
    let (rss, peak) = rss_mib(gateway.child.id());
    let memory = report::Memory {
        rss,
        peak,
        conversations: gauge(&gw_url, "clawline_gateway_trajectories_in_memory").await,
    };
    // Capture on and acked: every answered call through the gateway is a stored step.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steps = stream_messages(&nats_url, "STEPS").await? - steps_before;

    // The floor: one ack of a step the gateway captured (the last one stored).
    let mut stored = js.get_stream("STEPS").await?;
    let last = stored.info().await?.state.last_sequence;
    let captured = stored.get_raw_message(last).await?.payload;
    let floor = floor::ack_floor(&nats_url, "clawline.steps.bench.floor", captured, 2000).await?;
    let ingest = ingest::compare(&nats_url, &gw_url, Some(std::path::Path::new(TOKENIZER))).await?;
    let mut report = render(
        &args,
        &rows,
        &memory,
        gateway_ok,
        steps,
        &ingest,
        litellm_url.is_some(),
        &floor,
    );
    report.push('\n');
    report.push_str(&floor.render());
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    Ok(())
}
