//! Batcher benchmark: steps per second from the streams to published batches, against a plain
//! consume of the same STEPS stream in the same run, and memory per million buffered steps.
//! Writes `benches/results/batcher.md`. Run through `scripts/bench-batcher.sh`.
//!
//! Each round: a fresh batcher (BATCHES recreated) reads N trajectories (a step, its reward-model
//! score, its completion) from the start of the streams and publishes window batches until every
//! step is in one; the plain consume reads the N step messages with an ordered consumer and does
//! nothing with them. Rounds alternate so both see the same machine state.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use clawline_batcher::config::FileConfig;
use clawline_batcher::pool::Pool;
use clawline_benches::median;
use clawline_nats::async_nats::jetstream::{
    self, consumer::DeliverPolicy, consumer::pull::OrderedConfig,
};
use clawline_nats::server::{LocalServer, LocalServerConfig};
use clawline_nats::subjects;
use clawline_runtime::CancellationToken;
use clawline_schemas::*;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    /// Trajectories (one step each) in the stream.
    #[arg(long, default_value_t = 100_000)]
    steps: u32,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Steps held in memory for the memory figure (reported per million).
    #[arg(long, default_value_t = 500_000)]
    memory_steps: u32,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Prompt and response lengths in tokens.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: u32,
    #[arg(long, default_value_t = 32)]
    response_tokens: u32,
    #[arg(long, default_value = "benches/results/batcher.md")]
    report: PathBuf,
    /// Steps per trajectory (one completion per trajectory, so fewer messages per step).
    #[arg(long, default_value_t = 1)]
    steps_per_trajectory: u32,
}

fn step(args: &Args, i: u32) -> StepRecorded {
    let n = args.steps_per_trajectory;
    let uid = format!("t{:08}", i / n);
    StepRecorded {
        envelope: Envelope {
            event_id: StepRecorded::id_for("bench", &uid, i % n, 0),
            event_time: 1_800_000_000_000 + i64::from(i),
            producer: "bench".into(),
            schema_version: SCHEMA_VERSION,
        },
        step_index: i % n,
        tenant: "bench".into(),
        channel: "train".into(),
        trajectory_uid: uid,
        prompt_uid: format!("p{}", i % 1000),
        response_text: "x".repeat(args.response_tokens as usize * 4),
        token_source: TokenSource::Engine,
        prompt_ids: (0..args.prompt_tokens).map(|t| t * 7 + i % 13).collect(),
        response_ids: (0..args.response_tokens).map(|t| t * 3 + i % 11).collect(),
        response_logprobs: Some(vec![-0.25; args.response_tokens as usize]),
        policy_version: Some(1),
        ..Default::default()
    }
}

async fn load(js: &jetstream::Context, args: &Args) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(4096);
    for i in 0..args.steps {
        let s = step(args, i);
        let reward = RewardAssigned {
            envelope: Envelope {
                event_id: RewardAssigned::id_for(&s.envelope.event_id, "rm:bench@1", "v"),
                event_time: s.envelope.event_time,
                ..Default::default()
            },
            tenant: s.tenant.clone(),
            channel: Some("train".into()),
            trajectory_uid: s.trajectory_uid.clone(),
            step_id: Some(s.envelope.event_id.clone()),
            source: "rm:bench@1".into(),
            value: f64::from(i % 10) / 10.0,
            caused_by: s.envelope.event_id.clone(),
            ..Default::default()
        };
        // The completion goes out with a trajectory's last step.
        let last = i % args.steps_per_trajectory == args.steps_per_trajectory - 1;
        let done = TrajectoryCompleted {
            envelope: Envelope {
                event_id: TrajectoryCompleted::id_for("bench", &s.trajectory_uid),
                event_time: s.envelope.event_time,
                ..Default::default()
            },
            tenant: "bench".into(),
            channel: "train".into(),
            trajectory_uid: s.trajectory_uid.clone(),
            last_step_index: Some(args.steps_per_trajectory - 1),
            ..Default::default()
        };
        for (subject, id, payload) in [
            (
                subjects::steps("train"),
                s.envelope.event_id.clone(),
                encode(&s)?,
            ),
            (
                subjects::rewards("rm"),
                reward.envelope.event_id.clone(),
                encode(&reward)?,
            ),
            (
                subjects::TRAJECTORY_COMPLETED.to_string(),
                done.envelope.event_id.clone(),
                encode(&done)?,
            ),
        ]
        .into_iter()
        .take(if last { 3 } else { 2 })
        {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            acks.push(
                js.publish_with_headers(subject, headers, payload.into())
                    .await?,
            );
            if acks.len() >= 4096 {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Reads `n` messages of `stream` (of `subject` only, when given) with an ordered consumer.
async fn plain_consume(
    js: &jetstream::Context,
    stream: &str,
    subject: Option<&str>,
    n: u32,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let stream = js.get_stream(stream).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            filter_subjects: subject.map(|s| vec![s.to_string()]).unwrap_or_default(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0;
    while let Some(m) = messages.next().await {
        std::hint::black_box(m?.payload.len());
        seen += 1;
        if seen == n {
            break;
        }
    }
    Ok(started.elapsed())
}

async fn batcher_run(
    js: &jetstream::Context,
    url: &str,
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<Duration> {
    // A fresh BATCHES (deleted, not purged: its duplicate window would drop the same batch ids).
    js.delete_stream("BATCHES").await?;
    clawline_nats::ensure_topology(js, &Default::default()).await?;
    let config_path = dir.join("batcher.toml");
    std::fs::write(
        &config_path,
        // The whole backlog is ready at once: let the queue hold it (the default cap would drop most).
        format!(
            "max_queue_size = {}\n[defaults]\nbatch_size = {}\n",
            args.steps, args.batch_size
        ),
    )?;
    let config = clawline_batcher::Settings {
        nats: clawline_runtime::NatsArgs::at(url),
        config: Some(config_path.clone()),
    };
    // The batcher's warnings (retries, stalls) show on stderr.
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| {
        clawline_runtime::init_tracing(&clawline_runtime::LogArgs {
            level: "warn".into(),
            ..Default::default()
        })
    });
    let listener = clawline_runtime::bind_loopback().await?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(clawline_batcher::run(config, listener, shutdown.clone()));
    let want = u64::from(args.steps) / args.batch_size as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = js.get_stream("BATCHES").await?.info().await?.state.messages;
        if n >= want {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "batcher formed {n} of {want} batches in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    let _ = task.await;
    Ok(took)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    // Memory first, in a fresh heap: steps held while their trajectories are open.
    let before = rss_bytes();
    let mut pool = Pool::new(FileConfig::default(), "bench");
    for i in 0..args.memory_steps {
        pool.add_step(step(&args, i));
    }
    let held = pool.held_steps();
    let after = rss_bytes();
    drop(pool);
    let per_million_mib = (after.saturating_sub(before)) as f64 / f64::from(args.memory_steps)
        * 1e6
        / (1 << 20) as f64;

    let dir = tempfile::tempdir()?;
    let mut server_config = LocalServerConfig::new(dir.path().join("nats"));
    server_config.port = None;
    let server = LocalServer::start(server_config).context("nats-server")?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    clawline_nats::ensure_topology(&js, &Default::default()).await?;
    let loading = Instant::now();
    load(&js, &args).await?;
    let load_secs = loading.elapsed().as_secs_f64();

    let (mut plain, mut inputs, mut batcher) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let p = plain_consume(&js, "STEPS", None, args.steps).await?;
        // Everything the batcher reads, the three streams at once as the batcher reads them.
        let started = Instant::now();
        tokio::try_join!(
            plain_consume(&js, "STEPS", None, args.steps),
            plain_consume(&js, "REWARDS", None, args.steps),
            plain_consume(
                &js,
                "TRAJECTORIES",
                Some(subjects::TRAJECTORY_COMPLETED),
                args.steps / args.steps_per_trajectory
            ),
        )?;
        let i = started.elapsed();
        let b = batcher_run(&js, &server.url(), &args, dir.path()).await?;
        eprintln!(
            "round {round}: plain {:.3}s, inputs {:.3}s, batcher {:.3}s",
            p.as_secs_f64(),
            i.as_secs_f64(),
            b.as_secs_f64()
        );
        plain.push(f64::from(args.steps) / p.as_secs_f64());
        inputs.push(f64::from(args.steps) / i.as_secs_f64());
        batcher.push(f64::from(args.steps) / b.as_secs_f64());
    }
    let (p, i, b) = (
        median(plain.clone()),
        median(inputs.clone()),
        median(batcher.clone()),
    );
    let ratio = b / p;
    let input_ratio = b / i;
    let step_bytes = encode(&step(&args, 0))?.len();
    let report = format!(
        "# Batcher benchmark\n\n\
         Generated by `scripts/bench-batcher.sh` (`benches/src/bin/batcher_bench.rs`) on this machine \
         (2 cores, nats-server 2.15.1 with file storage, release build).\n\n\
         **Workload:** {n} steps in trajectories of {spt} already in the streams: per step \
         ({pt} prompt + {rt} response tokens with logprobs, {step_bytes} B encoded) its reward-model \
         score, per trajectory its completion — {msgs} messages in three streams (loaded in \
         {load_secs:.1} s). \
         Window batches of {bs}.\n\n\
         **Batcher:** a fresh batcher (BATCHES recreated) reads BATCHES, STEPS, REWARDS and completions \
         from the start, forms every batch and has each acked by JetStream; timed from start to the \
         last batch stored. **Plain consume of STEPS:** an ordered consumer reading the {n} STEPS \
         messages and doing nothing with them. **Plain consume of the batcher's input:** the same for \
         the three streams the batcher reads ({msgs} messages), concurrently as the batcher reads them. \
         Rounds alternate; medians of {rounds}.\n\n\
         | | steps/s (median) | rounds |\n| --- | ---: | --- |\n\
         | plain consume of STEPS | {p:.0} | {plain:?} |\n\
         | plain consume of STEPS + REWARDS + completions | {i:.0} | {inputs:?} |\n\
         | batcher, streams → acked batches | {b:.0} | {batcher:?} |\n\n\
         **Ratio batcher / plain consume of STEPS: {ratio:.2}** (target ≥ 0.50: {verdict}). \
         **Ratio batcher / plain consume of its whole input: {input_ratio:.2}.** The batcher reads \
         {msgs_per_step:.2} messages per step (step, reward, completion), decodes them, reads the whole log \
         before forming any batch (so a restart decides on the same facts), and writes every token \
         id and logprob again into BATCHES; nats-server shares the same two cores (in a profile \
         it used half of all CPU time). Nothing that reads these three streams, the batcher included, \
         can go faster than the plain consume of them, which ran at {bound:.2} of the STEPS-only \
         rate: to reach 0.50 the batcher would have to run at \
         {need:.0} % of a plain read of its own input.\n\n\
         **Memory:** {ms} steps held (open trajectories, {pt} + {rt} tokens each; {held} counted by \
         the pool) took {mem:.0} MiB of RSS: **{per_million_mib:.0} MiB per million buffered steps**, \
         i.e. {per_step:.0} B per step, of which the token ids and logprobs are {payload} B.\n",
        n = args.steps,
        bound = i / p,
        need = 50.0 * p / i,
        pt = args.prompt_tokens,
        rt = args.response_tokens,
        msgs = args.steps * 2 + args.steps / args.steps_per_trajectory,
        spt = args.steps_per_trajectory,
        msgs_per_step = 2.0 + 1.0 / f64::from(args.steps_per_trajectory),
        bs = args.batch_size,
        rounds = args.rounds,
        plain = plain.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>(),
        inputs = inputs.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>(),
        batcher = batcher
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>(),
        verdict = if ratio >= 0.5 { "met" } else { "not met" },
        ms = args.memory_steps,
        mem = per_million_mib * f64::from(args.memory_steps) / 1e6,
        per_step = per_million_mib * (1 << 20) as f64 / 1e6,
        payload = (args.prompt_tokens + args.response_tokens * 2) * 4,
    );
    std::fs::create_dir_all(args.report.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    Ok(())
}
