//! `clawline explain [STEP_ID]`: "why isn't it learning?". With a step id, that step's timeline
//! (captured → rewards → batch → update → version → activated / rejected → first answer served
//! with it) and what it waits for; without, the system diagnosis. The work is in
//! `clawline_history::explain`; this reads the same archive and NATS as `clawline sql`.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clawline_history::explain::{self, ExplainError, Explainer};
use clawline_history::{ArchiveRoot, QueryLimits, Scope, SqlEngine};
use clawline_runtime::NatsArgs;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The step to follow (`stp_…`, e.g. from `clawline sql "SELECT step_id FROM steps"`); without
    /// it, the system diagnosis.
    step_id: Option<String>,
    /// JSON for machines instead of the timeline.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: NatsArgs,
    /// The archive: a directory or `s3://bucket/prefix`.
    #[arg(
        long = "archive-dir",
        env = "CLAWLINE_ARCHIVE_DIR",
        default_value = "./data/run/archive"
    )]
    root: ArchiveRoot,
    #[command(flatten)]
    limits: QueryLimits,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.step_id {
        explain::check_step_id(id).map_err(|e| anyhow::anyhow!("STEP_ID: {e}"))?;
    }
    let client = args
        .nats
        .options("clawline-cli")
        .await?
        .connection_timeout(Duration::from_secs(3))
        .connect(args.nats.servers()?)
        .await
        .map_err(|e| anyhow::anyhow!("--nats-url {}: {e}", args.nats.url))?;
    let js = async_nats::jetstream::new(client);
    let engine = SqlEngine::new(args.limits.sql_config(args.root.clone()), Some(js));
    let explainer = Explainer::new(Arc::new(engine));
    let out = match &args.step_id {
        Some(id) => match explainer.step(id, &Scope::All).await {
            Ok(e) if args.json => serde_json::to_string_pretty(&e)? + "\n",
            Ok(e) => explain::text::explanation(&e),
            Err(e @ ExplainError::UnknownStep(_)) => anyhow::bail!(
                "{e} (is --archive-dir {} / --nats-url {} the right deployment?)",
                args.root,
                args.nats.url
            ),
            Err(e) => anyhow::bail!("{e}"),
        },
        None => {
            let d = explainer
                .diagnose(&Scope::All)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                serde_json::to_string_pretty(&d)? + "\n"
            } else {
                explain::text::diagnosis(&d)
            }
        }
    };
    print!("{out}");
    Ok(())
}
