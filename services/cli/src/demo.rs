//! `clawline demo`: the closed loop on this machine. Everything `clawline up` starts, plus
//! simulated users who send the bundled prompts through the gateway the way Claw-R1 agents do
//! (`/init_trajectory`, chat, feedback now and then, `/complete_trajectory`). The reward model
//! scores every answer, batches train the policy, versions are canaried and swapped in while the
//! users keep going. Prints the mean reward per window of requests and the version timeline, and
//! writes them as SVG and JSON.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use clawline_runtime::Shutdown;
use clawline_schemas::{RewardAssigned, WeightsActivated};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::served::{Latency, Lineage, Served};
use crate::up::UpArgs;

const BUNDLED_USERS: &str = include_str!("../../../data/prompts/users.jsonl");
/// Words a simulated user likes to see (thumbs up) — the same taste as the bundled reward model.
const LIKED: [&str; 6] = ["sure", "here", "happy", "glad", "help", "good"];

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub up: UpArgs,
    /// Simulated users sending at once.
    #[arg(long, default_value_t = 4)]
    pub users: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 1280)]
    pub requests: usize,
    /// Requests per reported window.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Tokens per answer.
    #[arg(long = "max-tokens", default_value_t = 24)]
    pub max_tokens: usize,
    /// One user in this many sends thumbs feedback on each answer (0: none).
    #[arg(long = "feedback-every", default_value_t = 4)]
    pub feedback_every: usize,
    /// The users' prompts (JSONL, a string a line); default: bundled.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The figure (SVG); the JSON report is written beside it. Default `<data-dir>/demo.svg`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One request as a user saw it.
#[derive(Debug, Clone, Serialize)]
struct Call {
    step_id: Option<String>,
    version: Option<u64>,
    failed: Option<String>,
    /// When the answer arrived, seconds since the demo started.
    at: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub index: usize,
    pub requests: usize,
    pub scored: usize,
    pub mean_reward: f64,
    /// Standard deviation of the rewards in the window (the mean's standard error is this over
    /// √scored).
    pub std_reward: f64,
    pub versions: (u64, u64),
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub requests: usize,
    pub failed: usize,
    pub windows: Vec<Window>,
    /// (seconds since start, version) whenever a version started serving on an engine.
    pub timeline: Vec<(f64, u64)>,
    /// From a step's capture to the first answer served by weights that trained on it.
    pub interaction_to_served: Option<Latency>,
    pub seconds: f64,
}

/// The trainer's KL coefficient for the demo's built-in model and its updates per version, unless
/// `--kl-coef` / `--publish-every` say otherwise: the settings its README numbers were measured with.
const DEMO_KL_COEF: f64 = 0.1;
const DEMO_PUBLISH_EVERY: u64 = 2;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let prompts = prompts(&args)?;
    let data_dir = args.up.data_dir.clone();
    let gateway = format!("http://{}", args.up.listen);
    let shutdown = Shutdown::on_signals();
    let mut up = args.up.clone();
    if up.learn.model.is_none() {
        // The demo's users like what the bundled reward model likes, and the demo shows the reward
        // rising at the pace the README reports; `up`'s 0.3 holds the language of users with a
        // taste of their own (benches/results/learn-user.md).
        up.learn.kl_coef.get_or_insert(DEMO_KL_COEF);
    }
    up.learn.publish_every.get_or_insert(DEMO_PUBLISH_EVERY);
    let running = crate::up::start(up, &shutdown).await?;
    let client = async_nats::connect(running.nats_url.clone()).await?;
    let started = Instant::now();
    let rewards: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let timeline: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let lineage = Lineage::follow(&client).await?;
    let mut reward_sub = client.subscribe("clawline.rewards.rm").await?;
    let mut weights_sub = client
        .subscribe(clawline_nats::subjects::WEIGHTS_ACTIVATED)
        .await?;
    {
        let rewards = rewards.clone();
        tokio::spawn(async move {
            while let Some(m) = reward_sub.next().await {
                if let Ok(r) = clawline_nats::decode_message::<RewardAssigned>(&m.payload)
                    && let Some(step) = r.step_id
                    && let Ok(mut map) = rewards.lock()
                {
                    map.insert(step, r.value);
                }
            }
        });
        let timeline = timeline.clone();
        tokio::spawn(async move {
            while let Some(m) = weights_sub.next().await {
                if let Ok(a) = clawline_nats::decode_message::<WeightsActivated>(&m.payload)
                    && let Ok(mut t) = timeline.lock()
                {
                    t.push((started.elapsed().as_secs_f64(), a.version));
                }
            }
        });
    }
    let http = reqwest::Client::new();
    wait_ready(&http, &gateway).await?;
    println!("{} users send {} requests …", args.users, args.requests);

    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let mut users = Vec::new();
    for user in 0..args.users {
        let (http, gateway, prompts) = (http.clone(), gateway.clone(), prompts.clone());
        let (calls, next) = (calls.clone(), next.clone());
        let feedback = args.feedback_every > 0 && user % args.feedback_every == 0;
        let (total, max_tokens) = (args.requests, args.max_tokens);
        users.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let prompt = &prompts[(i * 7 + user) % prompts.len()];
                let mut call = one_call(&http, &gateway, prompt, max_tokens, feedback).await;
                call.at = started.elapsed().as_secs_f64();
                if let Ok(mut c) = calls.lock() {
                    c.push(call);
                }
            }
        }));
    }
    for u in users {
        u.await?;
    }
    let calls = calls.lock().map(|c| c.clone()).unwrap_or_default();
    // The last answers' rewards are still on their way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let have = rewards.lock().map(|r| r.len()).unwrap_or(0);
        if have >= calls.iter().filter(|c| c.step_id.is_some()).count() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rewards = rewards.lock().map(|r| r.clone()).unwrap_or_default();
    let served: Vec<Served> = calls
        .iter()
        .filter_map(|c| {
            Some(Served {
                step_id: c.step_id.as_deref()?,
                version: c.version?,
                at: c.at,
            })
        })
        .collect();
    let interaction_to_served = lineage
        .lock()
        .ok()
        .and_then(|l| crate::served::latency(&served, &l));
    let report = Report {
        requests: calls.len(),
        failed: calls.iter().filter(|c| c.failed.is_some()).count(),
        windows: windows(&calls, &rewards, args.window),
        timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        interaction_to_served,
        seconds: started.elapsed().as_secs_f64(),
    };
    print(&report);
    let out = args.out.unwrap_or_else(|| data_dir.join("demo.svg"));
    crate::plot::write(&report, &out)?;
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "figure: {}  report: {}",
        out.display(),
        out.with_extension("json").display()
    );
    if let Some(first) = calls.iter().find_map(|c| c.failed.as_ref()) {
        println!("first failure: {first}");
    }
    shutdown.trigger();
    running.wait().await
}

fn prompts(args: &DemoArgs) -> anyhow::Result<Arc<Vec<String>>> {
    let text = match &args.prompts {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("--prompts {}", p.display()))?
        }
        None => BUNDLED_USERS.to_string(),
    };
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str::<String>(l).context("--prompts: each line a JSON string"))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!prompts.is_empty(), "--prompts: no prompts");
    Ok(Arc::new(prompts))
}

async fn wait_ready(http: &reqwest::Client, gateway: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{gateway}/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the gateway did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Claw-R1-style episode: register, one chat turn, maybe feedback, complete.
async fn one_call(
    http: &reqwest::Client,
    gateway: &str,
    prompt: &str,
    max_tokens: usize,
    feedback: bool,
) -> Call {
    let mut call = Call {
        step_id: None,
        version: None,
        failed: None,
        at: 0.0,
    };
    let result: anyhow::Result<()> = async {
        let init: Value = http
            .post(format!("{gateway}/init_trajectory"))
            .json(&json!({"channel": "train"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let base = init["base_url"].as_str().context("no base_url")?.to_string();
        let uid = init["trajectory_uid"].as_str().unwrap_or_default().to_string();
        let body = json!({"model": "policy", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 1.0});
        let response = http.post(format!("{base}/chat/completions")).json(&body).send().await?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        call.step_id = header("x-clawline-step-id");
        call.version = header("x-clawline-policy-version").and_then(|v| v.parse().ok());
        let answer: Value = response.error_for_status()?.json().await?;
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_lowercase();
        if feedback {
            let liked = LIKED.iter().any(|w| text.contains(w));
            let body = json!({"trajectory_uid": uid, "step_id": call.step_id, "thumbs": if liked { "up" } else { "down" }});
            http.post(format!("{gateway}/v1/feedback")).json(&body).send().await?.error_for_status()?;
        }
        http.post(format!("{base}/complete_trajectory")).json(&json!({})).send().await?.error_for_status()?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        call.failed = Some(format!("{e:#}"));
    }
    call
}

fn windows(calls: &[Call], rewards: &HashMap<String, f64>, size: usize) -> Vec<Window> {
    calls
        .chunks(size.max(1))
        .enumerate()
        .map(|(index, chunk)| {
            let scored: Vec<f64> = chunk
                .iter()
                .filter_map(|c| c.step_id.as_ref().and_then(|s| rewards.get(s)))
                .copied()
                .collect();
            let versions = chunk.iter().filter_map(|c| c.version);
            let n = scored.len().max(1) as f64;
            let mean = scored.iter().sum::<f64>() / n;
            let var = scored.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            Window {
                index,
                requests: chunk.len(),
                scored: scored.len(),
                mean_reward: mean,
                std_reward: var.sqrt(),
                versions: (
                    versions.clone().min().unwrap_or(0),
                    versions.max().unwrap_or(0),
                ),
            }
        })
        .collect()
}

fn print(report: &Report) {
    println!("window  requests  scored  mean reward  (std)    versions");
    for w in &report.windows {
        println!(
            "{:>6}  {:>8}  {:>6}  {:>11.4}  ({:.3})  v{}–v{}",
            w.index, w.requests, w.scored, w.mean_reward, w.std_reward, w.versions.0, w.versions.1
        );
    }
    let mut promoted: Vec<u64> = report.timeline.iter().map(|(_, v)| *v).collect();
    promoted.dedup();
    println!(
        "{} requests in {:.0} s, {} failed; versions served: {:?}",
        report.requests, report.seconds, report.failed, promoted
    );
    match &report.interaction_to_served {
        Some(l) => println!(
            "interaction → served update: median {:.1} s, p90 {:.1} s, max {:.1} s \
             ({} steps; {} not served by a version that learned them before the end)",
            l.median_s, l.p90_s, l.max_s, l.steps, l.pending
        ),
        None => println!("interaction → served update: no step's update was served yet"),
    }
}
