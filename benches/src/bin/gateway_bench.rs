//! Gateway benchmark: added latency over calling the engine directly, with capture on and acked,
//! side by side with LiteLLM's proxy in one run; and `/submit_steps` ingestion against raw async-nats
//! publishes of the same events. Writes `benches/results/gateway.md`.
//!
//! Run through `scripts/bench-gateway.sh`, which installs oha and LiteLLM and builds the binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use clawline_nats::server::{LocalServer, LocalServerConfig};
use serde_json::{Value, json};

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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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
    let ok: u64 = codes
        .iter()
        .filter(|(c, _)| c.starts_with('2'))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let bad_status: u64 = codes
        .iter()
        .filter(|(c, _)| !c.starts_with('2'))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    // Requests still in flight when a timed run ends are cut by oha, not failed by the target.
    let error_map = v["errorDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let errors: u64 = error_map
        .iter()
        .filter(|(e, _)| !e.contains("deadline"))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
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

    let mock_port = free_port()?;
    let mut mock_cmd = Command::new(args.bin_dir.join("clawline-mock-vllm"));
    mock_cmd.args(["--listen", &format!("127.0.0.1:{mock_port}")]);
    let _mock = spawn(mock_cmd, &dir.path().join("mock.log"))?;
    let mock_url = format!("http://127.0.0.1:{mock_port}/v1");
    wait_http(&format!("{mock_url}/models"), Duration::from_secs(10)).await?;

    let gw_port = free_port()?;
    let mut gw_cmd = Command::new(args.bin_dir.join("clawline-gateway"));
    gw_cmd.args([
        "--upstream",
        &mock_url,
        "--nats-url",
        &nats_url,
        "--listen",
        &format!("127.0.0.1:{gw_port}"),
    ]);
    gw_cmd.args([
        "--spool-dir",
        &dir.path().join("spool").display().to_string(),
        "--log-level",
        "warn",
    ]);
    gw_cmd.args(["--tokenizer", "data/tokenizer"]);
    let gateway = spawn(gw_cmd, &dir.path().join("gateway.log"))?;
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    wait_http(&format!("{gw_url}/ready"), Duration::from_secs(20)).await?;

    let mut _litellm = None;
    let mut litellm_url = None;
    if let Some(bin) = &args.litellm {
        let port = free_port()?;
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
    let targets: Vec<(&str, String)> = [
        Some(("direct", format!("{mock_url}/chat/completions"))),
        Some(("clawline", format!("{gw_url}/v1/chat/completions"))),
        litellm_url
            .as_ref()
            .map(|u| ("litellm", format!("{u}/v1/chat/completions"))),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (_, url) in &targets {
        run_oha(&args.oha, url, &body, &Mode::Serial(200))?; // warm-up
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
    for phase in [&["direct", "clawline"][..], &["litellm"][..]] {
        for (i, (label, mode)) in modes.iter().enumerate() {
            for (name, url) in targets.iter().filter(|(n, _)| phase.contains(n)) {
                let load = run_oha(&args.oha, url, &body, mode)?;
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
    // Capture on and acked: every answered call through the gateway is a stored step.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steps = stream_messages(&nats_url, "STEPS").await? - steps_before;

    // The floor: one ack of a step the gateway captured (the last one stored).
    let mut stored = js.get_stream("STEPS").await?;
    let last = stored.info().await?.state.last_sequence;
    let captured = stored.get_raw_message(last).await?.payload;
    let floor = floor::ack_floor(&nats_url, "clawline.steps.bench.floor", captured, 2000).await?;
    let ingest = ingest::compare(&nats_url, &gw_url).await?;
    let mut report = render(
        &args,
        &rows,
        rss,
        peak,
        gateway_ok,
        steps,
        &ingest,
        litellm_url.is_some(),
    );
    report.push('\n');
    report.push_str(&floor.render());
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one call site")]
fn render(
    args: &Args,
    rows: &[(String, Vec<(&str, Load)>)],
    rss: f64,
    peak: f64,
    gateway_ok: u64,
    steps: u64,
    ingest: &ingest::Result,
    with_litellm: bool,
) -> String {
    let mut out = String::new();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    out.push_str("# Gateway benchmark\n\n");
    out.push_str(&format!(
        "Generated by `scripts/bench-gateway.sh` on {cpus} CPU cores; the load tool (oha), the mock engine, nats-server \
         (JetStream on disk), the gateway and LiteLLM's proxy all share this machine. Request: a 2-message chat, `max_tokens` \
         64, non-streaming. Constant-rate runs last {} s each, open loop with latency correction (latency counted from the \
         scheduled send, so a target that falls behind shows its queueing). The targets run back to back at each load. \
         *Unanswered* are requests scheduled in a run that got no answer before the run ended.\n\n",
        args.seconds
    ));
    out.push_str("**Added latency** is the target's percentile minus the direct call's percentile at the same load.\n\n");
    out.push_str("| load | target | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | ok | failed | unanswered |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, results) in rows {
        let direct = results
            .iter()
            .find(|(n, _)| *n == "direct")
            .map(|(_, l)| *l)
            .unwrap_or_default();
        for (name, l) in results {
            let added = |a: f64, b: f64| {
                if *name == "direct" {
                    "—".to_string()
                } else {
                    format!("{:.3}", a - b)
                }
            };
            let unanswered = l.scheduled.saturating_sub(l.ok + l.failed);
            out.push_str(&format!(
                "| {label} | {name} | {:.3} | {:.3} | {} | {} | {:.0} | {} | {} | {unanswered} |\n",
                l.p50_ms,
                l.p99_ms,
                added(l.p50_ms, direct.p50_ms),
                added(l.p99_ms, direct.p99_ms),
                l.rps,
                l.ok,
                l.failed
            ));
        }
    }
    let get = |label: &str, name: &str| {
        rows.iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, r)| r.iter().find(|(n, _)| *n == name).map(|(_, l)| *l))
    };
    let added = |label: &str, name: &str, p99: bool| -> Option<f64> {
        let (t, d) = (get(label, name)?, get(label, "direct")?);
        Some(if p99 {
            t.p99_ms - d.p99_ms
        } else {
            t.p50_ms - d.p50_ms
        })
    };
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    out.push_str("\n## Against the targets\n\n| target | measured | |\n|---|---|---|\n");
    if let Some(a) = added("1 in flight", "clawline", false) {
        out.push_str(&format!(
            "| one in flight: p50 added ≤ 0.2 ms | {a:.3} ms | {} |\n",
            verdict(a <= 0.2)
        ));
    }
    if let Some(a) = added("1000 RPS", "clawline", true) {
        out.push_str(&format!(
            "| 1000 RPS: p99 added ≤ 1 ms | {a:.3} ms | {} |\n",
            verdict(a <= 1.0)
        ));
    }
    out.push_str(&format!(
        "| gateway RSS ≤ 64 MB | peak {peak:.1} MiB (now {rss:.1}) | {} |\n",
        verdict(peak <= 64.0)
    ));
    if with_litellm {
        for (label, _) in rows {
            if let (Some(c), Some(l)) = (
                added(label, "clawline", true),
                added(label, "litellm", true),
            ) {
                let ratio = l / c.max(0.001);
                out.push_str(&format!(
                    "| {label}: p99 added ≥ 10× below LiteLLM's | LiteLLM {l:.3} ms ÷ clawline {c:.3} ms = {ratio:.1}× | {} |\n",
                    verdict(ratio >= 10.0)
                ));
            }
        }
    } else {
        out.push_str(
            "| p99 added ≥ 10× below LiteLLM's | LiteLLM was not run | **not measured** |\n",
        );
    }
    let ratio = 100.0 * ingest.gateway_per_s / ingest.raw_per_s;
    out.push_str(&format!(
        "| `/submit_steps` ≥ 50 % of raw publish | {ratio:.0} % | {} |\n",
        verdict(ratio >= 50.0)
    ));
    out.push_str(&format!(
        "\n**Capture:** {gateway_ok} calls answered to oha through clawline; {steps} steps stored on JetStream, each acked \
         before its response. (oha cuts the requests still in flight when a timed run ends; the gateway still finishes those \
         calls and records them, so stored steps can exceed the answers oha counted.)\n\n"
    ));
    out.push_str(&ingest.render());
    out
}
