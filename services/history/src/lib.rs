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
mod service;
mod settings;
mod snapshot;
pub mod sql;
pub mod store;
pub mod tables;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clawline_runtime::NatsArgs;

pub use archive::ArchiveConfig;
pub use service::{archive_all, run};
pub use settings::{
    ARCHIVE_DIR, ArchiveArgs, LISTEN, QueryLimits, ROLL_ROWS, ROLL_SECS, SQL_MEMORY_LIMIT,
    SQL_TIMEOUT_SECS, ServeArgs, Settings,
};
pub use sql::{Format, Scope, SqlConfig, SqlEngine, SqlError, render};
pub use store::ArchiveRoot;

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
    #[arg(long = "archive-dir", env = "CLAWLINE_ARCHIVE_DIR", default_value = ARCHIVE_DIR)]
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
