//! `clawline replay`, `clawline import`, `clawline export`: the history back into the pipeline,
//! outside data in, datasets out (the work is in `clawline_history::replay`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use clawline_history::{ArchiveRoot, Format, QueryLimits, SqlEngine};
use clawline_runtime::NatsArgs;

const PRODUCER: &str = concat!("clawline-cli/", env!("CARGO_PKG_VERSION"));

/// Which deployment's history a command reads: its NATS (live tail) and its archive.
#[derive(Debug, Args)]
pub struct Where {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// The archive: a directory or `s3://bucket/prefix`.
    #[arg(
        long = "archive-dir",
        env = "CLAWLINE_ARCHIVE_DIR",
        default_value = clawline_history::ARCHIVE_DIR
    )]
    pub(crate) root: ArchiveRoot,
    #[command(flatten)]
    limits: QueryLimits,
}

impl Where {
    /// For commands that write: [`connect`](Self::connect), with the topology ensured.
    async fn open(&self) -> anyhow::Result<(SqlEngine, async_nats::jetstream::Context)> {
        let (engine, js) = self.connect().await?;
        clawline_nats::ensure_topology(&js, &self.nats.topology()).await?;
        Ok((engine, js))
    }

    /// SQL over this deployment's archive and live tail, and its JetStream (created nothing).
    pub(crate) async fn connect(
        &self,
    ) -> anyhow::Result<(SqlEngine, async_nats::jetstream::Context)> {
        let client = self
            .nats
            .options("clawline-cli")
            .await?
            .connection_timeout(std::time::Duration::from_secs(3))
            .connect(self.nats.servers()?)
            .await
            .map_err(|e| anyhow::anyhow!("--nats-url {}: {e}", self.nats.url))?;
        let js = async_nats::jetstream::new(client);
        let engine = SqlEngine::new(self.limits.sql_config(self.root.clone()), Some(js.clone()));
        Ok((engine, js))
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Which steps: a query over `steps` returning `step_id`.
    #[arg(long)]
    sql: String,
    /// The channel the copies go to (train on it like live traffic).
    #[arg(long)]
    channel: String,
    /// Steps per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[command(flatten)]
    at: Where,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let (engine, js) = args.at.open().await?;
    let r = clawline_history::replay::replay(
        &engine,
        &js,
        &args.sql,
        &args.channel,
        args.rate,
        PRODUCER,
    )
    .await?;
    println!(
        "selected {}, replayed {}, already replayed {}, missing from STEPS {}",
        r.selected, r.published, r.already_replayed, r.missing
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// One chat per line: {"messages": [..., assistant answer], "tools"?, "reward"?, "metadata"?}.
    OpenaiJsonl,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = ImportFormat::OpenaiJsonl)]
    format: ImportFormat,
    #[arg(long)]
    channel: String,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Tokenizer dir (tokenizer.json + tokenizer_config.json) to tokenize with the chat template;
    /// without it the steps are imported as text only.
    #[arg(long, env = "CLAWLINE_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    at: Where,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let ImportFormat::OpenaiJsonl = args.format;
    let tokenizer = match &args.tokenizer {
        Some(dir) => Some(
            clawline_runtime::tokenize::ChatTokenizer::load(dir)
                .map_err(|e| anyhow::anyhow!("--tokenizer {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    if !clawline_nats::subjects::is_valid_token(&args.tenant) {
        anyhow::bail!("--tenant {:?} must be 1-64 of [A-Za-z0-9_-]", args.tenant);
    }
    let (_, js) = args.at.open().await?;
    let r = clawline_history::import::import(
        &js,
        &args.file,
        &args.channel,
        &args.tenant,
        tokenizer.as_ref(),
        PRODUCER,
    )
    .await?;
    for (line, reason) in &r.bad {
        eprintln!("{}:{line}: skipped: {reason}", args.file.display());
    }
    println!(
        "imported {} of {} lines ({} skipped)",
        r.imported,
        r.lines,
        r.bad.len()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long)]
    sql: String,
    /// parquet or json (JSON lines).
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    format: Format,
    dir: PathBuf,
    #[command(flatten)]
    at: Where,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let (engine, _) = args.at.open().await?;
    let manifest =
        clawline_history::export::export(&engine, &args.sql, args.format, &args.dir).await?;
    println!("wrote {}", manifest.display());
    Ok(())
}
