//! `clawline up`: nats-server (JetStream on disk under the data dir) plus every service, in one
//! process; Ctrl-C stops it cleanly and running it again resumes from the data dir. A nats-server
//! that exits on its own is started again on the same port and store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use clawline_nats::server::{LocalServer, LocalServerConfig};
use clawline_runtime::{CancellationToken, NatsArgs, Shutdown, TaskSet};

use crate::learn::LearnArgs;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Where clawline keeps its state: JetStream store, spool, logs.
    #[arg(long, env = "CLAWLINE_DATA_DIR", default_value = "./data/run")]
    pub data_dir: PathBuf,
    /// Use this NATS server (or cluster: its nodes comma-separated) instead of starting one.
    #[arg(long, env = "CLAWLINE_NATS_URL")]
    nats_url: Option<String>,
    /// Stream replicas when creating the topology: 3 on a 3-node cluster (`--nats-url`).
    #[arg(long = "nats-replicas", default_value_t = 1)]
    nats_replicas: usize,
    /// Credentials and TLS for `--nats-url`.
    #[command(flatten)]
    nats_auth: clawline_runtime::NatsAuth,
    /// Client port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// fsync every JetStream write (an acked step survives power loss; slower).
    #[arg(long)]
    nats_sync_always: bool,
    /// The gateway's address (Claw-R1's port).
    #[arg(long, default_value_t = clawline_gateway::settings::LISTEN)]
    pub listen: SocketAddr,
    /// OpenAI-compatible engine(s) to serve from, e.g. a vLLM at http://127.0.0.1:8000/v1.
    /// Without it, the built-in policy server serves `--model` and learns (trainer + broadcaster).
    #[arg(long = "upstream", env = "CLAWLINE_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    #[command(flatten)]
    pub learn: LearnArgs,
    /// Tokenizer dir for steps whose engine returns no token ids (default with the built-in policy:
    /// its model's).
    #[arg(long, env = "CLAWLINE_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// API key file (`KEY TENANT [admin]` lines); without it the gateway is open.
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// The reward service's TOML (models, rules, feedback); default: the bundled reward model plus
    /// the ground-truth and tool-call rules.
    #[arg(long = "reward-config", env = "CLAWLINE_REWARD_CONFIG")]
    reward_config: Option<PathBuf>,
    /// The reward service's `/metrics` address.
    #[arg(long = "reward-listen", default_value_t = clawline_reward::settings::LISTEN)]
    reward_listen: SocketAddr,
    /// The batcher's TOML (channels, readiness, grouping); default: window batches of 8.
    #[arg(long = "batcher-config", env = "CLAWLINE_BATCHER_CONFIG")]
    batcher_config: Option<PathBuf>,
    /// The batcher's `/stats` address.
    #[arg(long = "batcher-listen", default_value_t = clawline_batcher::settings::LISTEN)]
    batcher_listen: SocketAddr,
    /// `POST /sql` (archive + live tail, behind --api-keys).
    #[arg(long = "sql-listen", default_value_t = clawline_history::LISTEN)]
    sql_listen: SocketAddr,
    /// The gateway's serving options, as `clawline-gateway` takes them.
    #[command(flatten, next_help_heading = "Gateway")]
    pub gateway: clawline_gateway::ServingArgs,
    /// The ONNX Runtime library for the reward models (default: where scripts/setup.sh puts it).
    #[arg(long = "ort-library", env = "ORT_DYLIB_PATH")]
    ort_library: Option<PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    start(args, &shutdown).await?.wait().await
}

/// Everything `up` started.
pub struct Running {
    pub nats_url: String,
    tasks: TaskSet,
    server: Option<Arc<Mutex<LocalServer>>>,
    _lock: clawline_runtime::DirLock,
}

impl Running {
    /// Waits until every service stopped (after the shutdown token is cancelled, or one failed),
    /// then stops nats-server.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.tasks.join().await;
        if let Some(server) = self.server {
            tokio::task::spawn_blocking(move || {
                if let Ok(mut server) = server.lock() {
                    server.stop();
                }
            })
            .await?;
            tracing::info!("nats-server stopped");
        }
        result
    }
}

/// Starts nats-server (unless `--nats-url`) and every service, and prints where they are.
pub async fn start(args: UpArgs, shutdown: &Shutdown) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating --data-dir {}", args.data_dir.display()))?;
    // One `up` per data dir: a second would run its own nats-server on the same JetStream store.
    let lock = clawline_runtime::lock_dir(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;

    let mut server = None;
    let nats_url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let mut config = LocalServerConfig::new(args.data_dir.join("nats"));
            config.port = Some(args.nats_port);
            config.sync_always = args.nats_sync_always;
            let local = tokio::task::spawn_blocking(move || LocalServer::start(config))
                .await?
                .context(
                    "starting nats-server (try --nats-port, or --nats-url for an existing server)",
                )?;
            let url = local.url();
            tracing::info!(url = %url, store = %args.data_dir.join("nats/js").display(), "nats-server started");
            server = Some(Arc::new(Mutex::new(local)));
            url
        }
    };

    let nats = NatsArgs {
        url: nats_url.clone(),
        replicas: args.nats_replicas,
        auth: args.nats_auth.clone(),
    };
    let reward = clawline_reward::Settings {
        nats: nats.clone(),
        config: args.reward_config.clone(),
        models: Vec::new(),
        ort_library: args.ort_library.clone(),
    };
    // Load the reward models before serving: a broken model stops `up` with its file named.
    let reward =
        tokio::task::spawn_blocking(move || clawline_reward::Service::load(reward)).await??;

    // Without --batcher-config, `up` keeps an editable one in the data dir: the built-in defaults
    // plus advantages normalised by the running reward spread (what learns on live traffic).
    let batcher_config = match &args.batcher_config {
        Some(path) => path.clone(),
        None => {
            let path = args.data_dir.join("batcher.toml");
            if !path.exists() {
                std::fs::write(&path, DEFAULT_BATCHER_TOML)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            path
        }
    };
    let batcher = clawline_batcher::Settings {
        nats: nats.clone(),
        config: Some(batcher_config),
    };

    let history = clawline_history::Settings {
        api_keys: args.api_keys.clone(),
        ..clawline_history::Settings::new(
            nats.clone(),
            clawline_history::ArchiveRoot::local(args.data_dir.join("archive")),
        )
    };
    // Every address is taken before anything starts: one in use stops `up` with its flag named.
    let gateway_listener = clawline_runtime::bind("--listen", args.listen).await?;
    let reward_listener = clawline_runtime::bind("--reward-listen", args.reward_listen).await?;
    let batcher_listener = clawline_runtime::bind("--batcher-listen", args.batcher_listen).await?;
    let sql_listener = clawline_runtime::bind("--sql-listen", args.sql_listen).await?;

    let mut tasks = TaskSet::new(shutdown.token());
    if let Some(server) = &server {
        tasks.spawn("nats-server", supervise(server.clone(), shutdown.token()));
    }
    let learning = crate::learn::spawn(
        &args.learn,
        &args.data_dir,
        args.upstreams.is_empty(),
        &nats,
        &mut tasks,
        shutdown.token(),
    )
    .await?;
    let upstreams = match &learning.policy_url {
        Some(url) => vec![url.clone()],
        None => args.upstreams,
    };
    let mut gateway = clawline_gateway::Settings::new(upstreams);
    gateway.nats = nats.clone();
    // The built-in policy's own tokenizer unless another is named: `/compute_reward` on token ids,
    // white-box steps and `count_tokens` then read and count exactly what the model sees.
    gateway.tokenizer = args.tokenizer.or(learning.policy_model);
    gateway.api_keys = args.api_keys;
    gateway.spool_dir = args.data_dir.join("spool");
    args.gateway.apply(&mut gateway);

    println!("clawline is up");
    println!("  base_url for your agent:  http://{}/v1", args.listen);
    println!(
        "  Claw-R1 agents:           POST http://{}/init_trajectory",
        args.listen
    );
    println!(
        "  dashboard:                http://{}/dashboard",
        args.listen
    );
    println!("  metrics:                  http://{}/metrics", args.listen);
    println!(
        "  reward scorer metrics:    http://{}/metrics",
        args.reward_listen
    );
    println!(
        "  DataPool statistics:      http://{}/stats  (or: clawline datapool stats)",
        args.batcher_listen
    );
    println!(
        "  SQL:                      POST http://{}/sql  (or: clawline sql \"SELECT …\" --archive-dir {})",
        args.sql_listen,
        args.data_dir.join("archive").display()
    );
    for line in &learning.lines {
        println!("  {line}");
    }
    println!("  NATS:                     {nats_url}");
    println!("  data dir:                 {}", args.data_dir.display());
    println!("Ctrl-C stops everything; running it again resumes from the data dir.");

    tasks.spawn(
        "gateway",
        clawline_gateway::run(gateway, gateway_listener, shutdown.token()),
    );
    tasks.spawn("reward", reward.run(reward_listener, shutdown.token()));
    tasks.spawn(
        "batcher",
        clawline_batcher::run(batcher, batcher_listener, shutdown.token()),
    );
    tasks.spawn(
        "history",
        clawline_history::run(history, sql_listener, shutdown.token()),
    );
    Ok(Running {
        nats_url,
        tasks,
        server,
        _lock: lock,
    })
}

/// Keeps the local nats-server alive: looked at every second, and started again on the same port
/// and store when it has exited (killed, crashed). The services reconnect by themselves and the
/// gateway drains what it spooled meanwhile, so nothing acked is lost and nothing is counted twice.
async fn supervise(
    server: Arc<Mutex<LocalServer>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        let (running, log) = {
            let mut s = server
                .lock()
                .map_err(|_| anyhow::anyhow!("nats-server lock poisoned"))?;
            (s.is_running(), s.log_path())
        };
        if running {
            backoff = Duration::from_secs(1);
            continue;
        }
        tracing::error!(log = %log.display(), "nats-server exited; starting it again");
        let s = server.clone();
        let restarted = tokio::task::spawn_blocking(move || match s.lock() {
            Ok(mut s) => s.restart().map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("nats-server lock poisoned")),
        })
        .await?;
        match restarted {
            Ok(()) => tracing::info!("nats-server running again"),
            Err(err) => {
                backoff = (backoff * 2).min(Duration::from_secs(30));
                tracing::error!(error = %err, retry_in = ?backoff, "starting nats-server again failed");
            }
        }
    }
}

/// The batcher settings `up` starts with (see the batcher's README section for every key).
const DEFAULT_BATCHER_TOML: &str = "\
# clawline up's batcher settings; edit and restart. Every key is optional.
[defaults]
mode = \"window\"
batch_size = 8
# Divide advantages by the running reward spread, so small reward differences still teach.
normalize = true
";
