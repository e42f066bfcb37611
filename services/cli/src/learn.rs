//! The learning half of `clawline up`: the built-in policy server (on a model created at first
//! run), the trainer and the broadcaster, so traffic through the gateway trains the policy that
//! serves it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use clawline_broadcaster::EngineSpec;
use clawline_model::init::{InitOptions, init};
use clawline_runtime::{CancellationToken, NatsArgs, TaskSet};

#[derive(Debug, Clone, Args)]
pub struct LearnArgs {
    /// The policy model (a Hugging Face model dir). Default `<data-dir>/model`, created on the
    /// first run by `clawline model init` with `--warm-start-steps`.
    #[arg(long, env = "CLAWLINE_MODEL")]
    pub model: Option<PathBuf>,
    /// Corpus steps of a model created on the first run (so its first answers are not noise).
    #[arg(long = "warm-start-steps", default_value_t = 200)]
    pub warm_start_steps: usize,
    /// The built-in policy server's address (when no `--upstream` is given).
    #[arg(long = "policy-listen", default_value_t = clawline_policy::settings::LISTEN)]
    pub policy_listen: SocketAddr,
    /// `cpu`, `cuda` or `auto` for the policy server and the trainer.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Engines the broadcaster activates versions on (`NAME=KIND:URL…`, see clawline-broadcaster);
    /// default: the built-in policy server. With `--upstream` and no `--engine`, nothing trains.
    #[arg(long = "engine")]
    pub engines: Vec<EngineSpec>,
    /// Updates (batches) per published version. Default 1: a user's thumbs-up reaches the served
    /// weights a batch sooner (median 4.8 s instead of 5.9 s with plain clients on 2 cores,
    /// `benches/results/learn-user.md`); `clawline demo` publishes every 2.
    #[arg(long = "publish-every")]
    pub publish_every: Option<u64>,
    /// The trainer's learning rate (the default suits the tiny built-in model; a real model wants
    /// about 1e-6 to 1e-5).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight of the trainer's KL penalty to the starting model: keeps the policy's language
    /// intact while it moves toward what is rewarded (without it, the tiny model learns to repeat
    /// the bundled reward model's favourite words; with 0.1 it learned users' taste but its
    /// sentences frayed). Default 0.3 for the model `up` creates, 0 for
    /// a `--model` of yours: the penalty keeps a second, frozen copy of the model in memory.
    #[arg(long = "kl-coef")]
    pub kl_coef: Option<f64>,
    /// Weight of the trainer's entropy bonus.
    #[arg(long = "entropy-coef", default_value_t = 0.0)]
    pub entropy_coef: f64,
    /// Promote versions without the canary evaluation.
    #[arg(long = "no-canary")]
    pub no_canary: bool,
    #[arg(long = "trainer-listen", default_value_t = clawline_trainer::settings::LISTEN)]
    pub trainer_listen: SocketAddr,
    #[arg(long = "broadcaster-listen", default_value_t = clawline_broadcaster::settings::LISTEN)]
    pub broadcaster_listen: SocketAddr,
}

/// What the learning services expose.
pub struct Learning {
    /// The built-in policy server's `/v1` URL, when it runs.
    pub policy_url: Option<String>,
    /// The model it serves (its tokenizer and chat template are the gateway's too).
    pub policy_model: Option<PathBuf>,
    pub lines: Vec<String>,
}

pub async fn spawn(
    args: &LearnArgs,
    data_dir: &Path,
    builtin: bool,
    nats: &NatsArgs,
    tasks: &mut TaskSet,
    shutdown: CancellationToken,
) -> anyhow::Result<Learning> {
    let model = args.model.clone().unwrap_or_else(|| data_dir.join("model"));
    let mut lines = Vec::new();
    let mut engines = args.engines.clone();
    let mut policy_url = None;
    if builtin {
        if !model.join("config.json").is_file() {
            let (dir, steps) = (model.clone(), args.warm_start_steps);
            println!(
                "creating the policy model in {} ({steps} warm-start steps) …",
                dir.display()
            );
            tokio::task::spawn_blocking(move || {
                init(
                    &dir,
                    &InitOptions {
                        warm_start_steps: steps,
                        ..Default::default()
                    },
                )
            })
            .await??;
        }
        let mut policy = clawline_policy::Settings::new(&model);
        policy.device = args.device.clone();
        let listener = clawline_runtime::bind("--policy-listen", args.policy_listen).await?;
        tasks.spawn(
            "policy",
            clawline_policy::run(policy, listener, shutdown.clone()),
        );
        let url = format!("http://{}", args.policy_listen);
        if engines.is_empty() {
            engines.push(
                format!("policy=clawline:{url}")
                    .parse()
                    .map_err(anyhow::Error::msg)?,
            );
        }
        lines.push(format!(
            "policy server:            {url}/v1  (model {})",
            model.display()
        ));
        policy_url = Some(format!("{url}/v1"));
    }
    if engines.is_empty() {
        lines.push("learning:                 off (--upstream without --engine)".into());
        return Ok(Learning {
            policy_url,
            policy_model: builtin.then(|| model.clone()),
            lines,
        });
    }
    let kl_coef = args.kl_coef.unwrap_or(if builtin && args.model.is_none() {
        0.3
    } else {
        0.0
    });
    // Trust region (per update to the serving policy, per version to the base): the broadcaster
    // keeps the serving policy close, so the per-update bound is on for any model; the bound to
    // the base (a second copy of the model in memory) only for the built-in tiny one.
    // Trust region (per update to the serving policy, per version to the base): the broadcaster
    // keeps the serving policy close, so the per-update bound is on for any model; the bound to
    // the base (a second copy of the model in memory) only for the built-in tiny one. Measured on
    // the warm-started tiny model at --lr 1e-3: ordinary updates move 0.02–0.15 from the serving
    // policy, a runaway one 0.8–10; its KL to the base reaches 0.25–0.6 after 24 updates and 1.4
    // after one update at 1e-2.
    let mut trainer = clawline_trainer::Settings::new(&model);
    trainer.nats = nats.clone();
    trainer.checkpoint_dir = data_dir.join("trainer");
    trainer.device = args.device.clone();
    trainer.publish_every = args.publish_every.unwrap_or(1);
    trainer.lr = args.lr;
    trainer.kl_coef = kl_coef;
    trainer.entropy_coef = args.entropy_coef;
    // The broadcaster runs beside it: keep the served policy close to the trained one.
    trainer.max_ahead = 1;
    trainer.max_kl_serving = 0.25;
    trainer.max_kl_base = if builtin && args.model.is_none() {
        0.5
    } else {
        0.0
    };
    let listener = clawline_runtime::bind("--trainer-listen", args.trainer_listen).await?;
    tasks.spawn(
        "trainer",
        clawline_trainer::run(trainer, listener, shutdown.clone()),
    );
    let mut broadcaster = clawline_broadcaster::Settings::new(&model, engines);
    broadcaster.nats = nats.clone();
    broadcaster.work_dir = data_dir.join("weights");
    broadcaster.canary = !args.no_canary;
    let listener = clawline_runtime::bind("--broadcaster-listen", args.broadcaster_listen).await?;
    tasks.spawn(
        "broadcaster",
        clawline_broadcaster::run(broadcaster, listener, shutdown),
    );
    lines.push(format!(
        "trainer:                  http://{}/status  (checkpoints in {})",
        args.trainer_listen,
        data_dir.join("trainer").display()
    ));
    lines.push(format!(
        "broadcaster:              http://{}/status  (clawline weights list){}",
        args.broadcaster_listen,
        if args.no_canary { "" } else { ", canary on" }
    ));
    Ok(Learning {
        policy_url,
        policy_model: builtin.then_some(model),
        lines,
    })
}
