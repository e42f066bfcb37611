//! clawline-history — the history: every stream archived to Parquet, SQL over the archive plus
//! the live tail (DataFusion), over HTTP (`POST /sql`, behind the API keys) and from the CLI.
//!
//! Owns: the archive layout and its resume rule, the SQL tables and views, the query limits.
//! Must not publish steps or rewards (replay and import, which do, live in the CLI commands).

pub mod archive;
pub mod command;
pub mod explain;
pub mod export;
mod functions;
pub mod http;
pub mod import;
pub mod replay;
mod rows;
mod snapshot;
pub mod sql;
pub mod store;
pub mod tables;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clawline_runtime::{CancellationToken, NatsArgs, TaskSet};

pub use archive::ArchiveConfig;
pub use sql::{Format, Scope, SqlConfig, SqlEngine, SqlError, render};
pub use store::ArchiveRoot;

/// Where the archive lives and how it rolls files.
#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    /// Root of the Parquet archive (one directory per table, hive-partitioned): a directory, or
    /// `s3://bucket/prefix` on S3-compatible storage (credentials and endpoint from `AWS_*`).
    #[arg(
        long = "archive-dir",
        env = "CLAWLINE_ARCHIVE_DIR",
        default_value = "./data/run/archive"
    )]
    pub root: ArchiveRoot,
    /// Roll a file after this many messages of a stream...
    #[arg(long = "roll-rows", default_value_t = 100_000)]
    pub roll_rows: usize,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long = "roll-secs", default_value_t = 10)]
    pub roll_secs: u64,
}

impl ArchiveArgs {
    pub fn config(&self) -> ArchiveConfig {
        ArchiveConfig {
            root: self.root.clone(),
            roll_rows: self.roll_rows.max(1),
            roll_every: Duration::from_secs(self.roll_secs.max(1)),
        }
    }
}

/// Limits on one query.
#[derive(Debug, Clone, Args)]
pub struct QueryLimits {
    /// Memory a query may use (bytes; DataFusion's memory pool).
    #[arg(long = "sql-memory-limit", env = "CLAWLINE_SQL_MEMORY_LIMIT", default_value_t = 1 << 30)]
    pub memory_limit: usize,
    /// Longest a query may run (seconds).
    #[arg(
        long = "sql-timeout",
        env = "CLAWLINE_SQL_TIMEOUT",
        default_value_t = 30
    )]
    pub timeout_secs: u64,
}

impl QueryLimits {
    pub fn sql_config(&self, root: ArchiveRoot) -> SqlConfig {
        SqlConfig {
            root,
            memory_limit: self.memory_limit,
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
        }
    }
}

/// `clawline-history serve`: the archiver plus `POST /sql`, `GET /explain/{step_id}`,
/// `GET /diagnosis`, and the `clawline.explain` NATS responder the gateway asks.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    #[command(flatten)]
    pub limits: QueryLimits,
    /// API key file (`KEY TENANT [admin]`); a tenant's queries see only its rows. Without it the
    /// SQL endpoint is open.
    #[arg(long = "api-keys", env = "CLAWLINE_API_KEYS")]
    pub api_keys: Option<PathBuf>,
}

/// Archives every stream until `shutdown`.
pub async fn run_archiver(
    js: async_nats::jetstream::Context,
    config: ArchiveConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config
        .root
        .create()
        .await
        .map_err(|e| anyhow::anyhow!("--archive-dir {}: {e}", config.root))?;
    // One archiver per local archive: a second would take the first one's flush in progress for
    // leftovers of a crash, and write every row again.
    let _lock = match &config.root {
        ArchiveRoot::Local(dir) => Some(
            clawline_runtime::lock_dir(dir)
                .map_err(|e| anyhow::anyhow!("--archive-dir {}: {e}", dir.display()))?,
        ),
        ArchiveRoot::Remote { .. } => None,
    };
    let mut tasks = TaskSet::new(shutdown.clone());
    for stream in tables::archived_streams() {
        tasks.spawn(
            "archive",
            archive::archive_stream(js.clone(), stream, config.clone(), shutdown.clone()),
        );
    }
    tasks.join().await
}

/// Where `POST /sql`, `GET /explain/{step_id}`, `GET /diagnosis` and `/healthz` are by default.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8103);

/// The archiver and the SQL endpoint on `listener`, until `shutdown`.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let keys = match &config.api_keys {
        Some(path) => clawline_runtime::keys::ApiKeys::load(path)?,
        None => clawline_runtime::keys::ApiKeys::open(),
    };
    let (client, js) = clawline_runtime::start_nats(&config.nats, "clawline-history").await?;
    let engine = std::sync::Arc::new(SqlEngine::new(
        config.limits.sql_config(config.archive.root.clone()),
        Some(js.clone()),
    ));
    let explainer = std::sync::Arc::new(explain::Explainer::new(engine.clone()));
    // In force before the SQL port answers.
    let requests =
        clawline_nats::answer_on(&client, clawline_nats::subjects::EXPLAIN, Some("explain"))
            .await?;
    let mut tasks = TaskSet::new(shutdown.clone());
    tasks.spawn(
        "explain",
        explain::respond(explainer, client, requests, shutdown.clone()),
    );
    tasks.spawn(
        "archiver",
        run_archiver(js, config.archive.config(), shutdown.clone()),
    );
    tasks.spawn("sql", http::serve(listener, engine, keys, shutdown.clone()));
    tasks.join().await
}

/// `clawline sql` / `clawline-history sql`: one query, printed or written to a file.
#[derive(Debug, Clone, Args)]
pub struct SqlCommand {
    /// The query, e.g. `SELECT channel, count(*) FROM steps GROUP BY channel`.
    pub query: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the answer here instead of to stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Only the archive: do not read the live tail from NATS.
    #[arg(long)]
    pub archive_only: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The archive: a directory or `s3://bucket/prefix`.
    #[arg(
        long = "archive-dir",
        env = "CLAWLINE_ARCHIVE_DIR",
        default_value = "./data/run/archive"
    )]
    pub root: ArchiveRoot,
    #[command(flatten)]
    pub limits: QueryLimits,
}

pub async fn run_sql_command(cmd: SqlCommand) -> anyhow::Result<()> {
    use std::io::Write as _;
    if cmd.format == Format::Parquet && cmd.output.is_none() {
        anyhow::bail!("--format parquet needs --output FILE");
    }
    let js = if cmd.archive_only {
        None
    } else {
        let options = cmd
            .nats
            .options("clawline-sql")
            .await?
            .connection_timeout(Duration::from_secs(3));
        let client = options.connect(cmd.nats.servers()?).await.map_err(|e| {
            anyhow::anyhow!(
                "--nats-url {}: {e} (use --archive-only to query only the archive)",
                cmd.nats.url
            )
        })?;
        Some(async_nats::jetstream::new(client))
    };
    if let Some(dir) = cmd.root.as_local()
        && !dir.is_dir()
        && js.is_none()
    {
        anyhow::bail!("--archive-dir {}: no such directory", dir.display());
    }
    let engine = SqlEngine::new(cmd.limits.sql_config(cmd.root.clone()), js);
    let answer = engine
        .query(&cmd.query, &Scope::All)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = sql::render(&answer, cmd.format).map_err(|e| anyhow::anyhow!("{e}"))?;
    match &cmd.output {
        Some(path) => std::fs::write(path, bytes)
            .map_err(|e| anyhow::anyhow!("--output {}: {e}", path.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}
