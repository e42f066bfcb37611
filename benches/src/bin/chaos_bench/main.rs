//! The chaos suite: the whole pipeline as separate processes (two gateways behind a client-side
//! balancer, reward scorer, batcher, trainer, broadcaster, archiver, nats-server with file
//! storage) under a bounded load, while every service and nats-server itself is SIGKILLed in
//! turn and restarted. Then SQL over the archive and the streams counts what a user would care
//! about: steps lost, steps stored twice, steps in two batches, batches trained twice, failed
//! requests (apart from those in flight in a killed gateway, which are counted on their own).
//! Writes `benches/results/chaos.md`. Run through `scripts/bench-chaos.sh`.

mod count;
mod procs;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use clawline_history::{SqlConfig, SqlEngine};
use clawline_model::init::{InitOptions, init};
use clawline_nats::server::{LocalServer, LocalServerConfig};
use count::{drain, report};
use procs::{Proc, free_port};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Requests (steps) in all.
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Requests per second.
    #[arg(long, default_value_t = 120.0)]
    rate: f64,
    /// Seconds between kills (each victim restarts 2 s after its kill).
    #[arg(long, default_value_t = 8)]
    every: u64,
    #[arg(long, default_value = "benches/results/chaos.md")]
    report: PathBuf,
    /// Keep the services' logs and stores here (default: a temp dir, removed).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// What happened to one request.
#[derive(Clone, Debug)]
enum Outcome {
    Answered(String),
    /// Broken off by the death of the gateway it was in.
    InFlightInKilledGateway,
    Failed(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = match &args.keep {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            tempfile::Builder::new().tempdir_in(p)?.keep()
        }
        None => temp.path().to_path_buf(),
    };
    let dir = &dir;
    let d = |p: &str| dir.as_path().join(p).display().to_string();
    let model = dir.as_path().join("model");
    init(&model, &InitOptions::default())?;

    let mut nats_config = LocalServerConfig::new(dir.as_path().join("nats"));
    nats_config.port = Some(free_port());
    let mut nats = LocalServer::start(nats_config).context("nats-server")?;
    let url = nats.url();
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client.clone());
    clawline_nats::ensure_topology(&js, &Default::default()).await?;

    let mock_addr = format!("127.0.0.1:{}", free_port());
    let mock_url = format!("http://{mock_addr}/v1");
    let gateways: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let listen = || format!("127.0.0.1:{}", free_port());
    let nats_flags = ["--nats-url".to_string(), url.clone()];
    let mut procs = vec![Proc::new(
        "engine",
        "clawline-mock-vllm",
        &[
            "--listen",
            &mock_addr,
            "--tokenizer",
            &model.display().to_string(),
        ],
        &[],
        dir.as_path(),
    )];
    for (i, g) in gateways.iter().enumerate() {
        let spool = d(&format!("spool-{i}"));
        procs.push(Proc::new(
            &format!("gateway-{i}"),
            "clawline-gateway",
            // Each request is its own conversation: its session completes after 3 s idle.
            &[
                "--upstream",
                &mock_url,
                "--listen",
                g,
                "--spool-dir",
                &spool,
                "--session-idle",
                "3s",
            ],
            &nats_flags,
            dir.as_path(),
        ));
    }
    let model_arg = model.display().to_string();
    // A killed gateway forgets its open sessions: the batcher completes them after 15 s idle.
    let batcher_toml = dir.as_path().join("batcher.toml");
    // Versions come every few batches here, far faster than sessions complete: measure batching
    // integrity, not the staleness policy (which would drop most steps as too old).
    std::fs::write(
        &batcher_toml,
        "[defaults]\nflush_after_secs = 5\n[completion]\nidle_timeout_secs = 15\n\
         [staleness]\nmax_lag = 1000000\n",
    )?;
    let batcher_listen = listen();
    let specs: [(&str, &str, Vec<String>); 5] = [
        (
            "reward",
            "clawline-reward",
            vec!["--listen".into(), listen()],
        ),
        (
            "batcher",
            "clawline-batcher",
            vec![
                "--listen".into(),
                batcher_listen.clone(),
                "--config".into(),
                batcher_toml.display().to_string(),
            ],
        ),
        (
            "trainer",
            "clawline-trainer",
            vec![
                "--model".into(),
                model_arg.clone(),
                "--checkpoint-dir".into(),
                d("trainer"),
                "--listen".into(),
                listen(),
                "--device".into(),
                "cpu".into(),
                "--publish-every".into(),
                "4".into(),
                "--lr".into(),
                "1e-4".into(),
            ],
        ),
        (
            "broadcaster",
            "clawline-broadcaster",
            vec![
                "--base-model".into(),
                model_arg.clone(),
                "--work-dir".into(),
                d("weights"),
                "--listen".into(),
                listen(),
                "--engine".into(),
                format!("engine=sglang:http://{mock_addr}"),
            ],
        ),
        (
            "archiver",
            "clawline-history",
            vec![
                "serve".into(),
                "--archive-dir".into(),
                d("archive"),
                "--listen".into(),
                listen(),
                "--roll-secs".into(),
                "2".into(),
            ],
        ),
    ];
    for (name, bin, flags) in &specs {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        procs.push(Proc::new(name, bin, &flags, &nats_flags, dir.as_path()));
    }
    for p in &mut procs {
        p.start()?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    for g in &gateways {
        procs::wait_ready(&http, &format!("http://{g}/ready"), 60).await?;
    }

    // Load: one request every 1/rate s, each on its own task; a refused connection goes to the
    // other gateway, as a load balancer would send it.
    let started = Instant::now();
    let killed_at: Arc<Mutex<HashMap<usize, (f64, f64)>>> = Arc::default();
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let load = {
        let (http, outcomes, killed_at) = (http.clone(), outcomes.clone(), killed_at.clone());
        let (gateways, total, rate) = (gateways.clone(), args.steps, args.rate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut tasks = Vec::with_capacity(total);
            for i in 0..total {
                tick.tick().await;
                let (http, outcomes, killed_at) =
                    (http.clone(), outcomes.clone(), killed_at.clone());
                let gateways = gateways.clone();
                tasks.push(tokio::spawn(async move {
                    let o = one_request(&http, &gateways, i, started, &killed_at).await;
                    if let Ok(mut v) = outcomes.lock() {
                        v.push(o);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    // Chaos: every service in turn, then nats-server; each SIGKILLed and restarted 2 s later.
    let victims = [
        "gateway-0",
        "reward",
        "batcher",
        "trainer",
        "broadcaster",
        "archiver",
        "nats-server",
        "gateway-1",
    ];
    let mut kills = Vec::new();
    for victim in victims {
        tokio::time::sleep(Duration::from_secs(args.every)).await;
        if load.is_finished() {
            break;
        }
        let at = started.elapsed().as_secs_f64();
        let gateway: Option<usize> = victim.strip_prefix("gateway-").and_then(|i| i.parse().ok());
        if let (Some(i), Ok(mut k)) = (gateway, killed_at.lock()) {
            k.insert(i, (at, f64::INFINITY));
        }
        if victim == "nats-server" {
            nats.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            nats.restart().context("restarting nats-server")?;
        } else {
            let p = procs
                .iter_mut()
                .find(|p| p.name == victim)
                .context("victim")?;
            p.kill9();
            tokio::time::sleep(Duration::from_secs(2)).await;
            p.start()?;
        }
        let back = started.elapsed().as_secs_f64();
        if let (Some(i), Ok(mut k)) = (gateway, killed_at.lock()) {
            k.insert(i, (at, back));
        }
        println!("{at:>6.1} s  SIGKILL {victim}, restarted at {back:.1} s");
        kills.push((victim, at));
    }
    load.await?;
    let load_secs = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let answered: HashSet<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Answered(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    println!(
        "load done in {load_secs:.0} s: {} answered; waiting for the pipeline to drain …",
        answered.len()
    );

    // Drain: until every answered step is batched and the counts stop moving.
    let engine = SqlEngine::new(
        SqlConfig {
            root: clawline_history::ArchiveRoot::local(dir.as_path().join("archive")),
            memory_limit: 2 << 30,
            timeout: Duration::from_secs(120),
        },
        Some(js.clone()),
    );
    let counts = drain(&engine, &js, answered.len()).await?;
    let batcher_stats = http
        .get(format!("http://{batcher_listen}/stats"))
        .send()
        .await
        .ok()
        .map(|r| r.json::<Value>());
    let dropped = match batcher_stats {
        Some(f) => f
            .await
            .map(|s| s["channels"]["train"]["dropped"].clone())
            .unwrap_or_default(),
        None => Value::Null,
    };

    for p in &mut procs {
        p.kill9();
    }
    let report = report(
        &args, &outcomes, &answered, &engine, &kills, load_secs, &counts,
    )
    .await?
        + &format!(
            "The batcher's drops by reason (steps stored but deliberately not batched): {dropped}.\n"
        );
    std::fs::create_dir_all(args.report.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    drop(nats);
    Ok(())
}

async fn one_request(
    http: &reqwest::Client,
    gateways: &[String],
    i: usize,
    started: Instant,
    killed_at: &Mutex<HashMap<usize, (f64, f64)>>,
) -> Outcome {
    let body = json!({"model": "m", "max_tokens": 8,
        "messages": [{"role": "user", "content": format!("chaos question {i}")}]});
    let first = i % gateways.len();
    let mut last_error = String::new();
    for attempt in 0..gateways.len() * 3 {
        let g = (first + attempt) % gateways.len();
        let sent = started.elapsed().as_secs_f64();
        let r = http
            .post(format!("http://{}/v1/chat/completions", gateways[g]))
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let id = r
                    .headers()
                    .get("x-clawline-step-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return match (id, r.bytes().await) {
                    (Some(id), Ok(_)) => Outcome::Answered(id),
                    (_, Err(e)) => in_flight(g, sent, started, killed_at, e.to_string()),
                    (None, _) => Outcome::Failed("no step id".into()),
                };
            }
            Ok(r) => return Outcome::Failed(format!("HTTP {}", r.status())),
            // Nobody listening: the balancer tries the other gateway.
            Err(e) if e.is_connect() => {
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return in_flight(g, sent, started, killed_at, e.to_string()),
        }
    }
    Outcome::Failed(format!("no gateway reachable: {last_error}"))
}

/// A request broken off mid-way: in flight in a killed gateway when that gateway died during it.
fn in_flight(
    g: usize,
    sent: f64,
    started: Instant,
    killed_at: &Mutex<HashMap<usize, (f64, f64)>>,
    error: String,
) -> Outcome {
    let now = started.elapsed().as_secs_f64();
    // The kill time is recorded just before the SIGKILL.
    let killed = killed_at
        .lock()
        .ok()
        .and_then(|k| k.get(&g).copied())
        .is_some_and(|(at, _)| sent <= at + 0.2 && now >= at - 0.2);
    if killed {
        Outcome::InFlightInKilledGateway
    } else {
        Outcome::Failed(error)
    }
}
