//! `clawline explain [STEP_ID]`: "why isn't it learning?". With a step id, that step's timeline
//! (captured → rewards → batch → update → version → activated / rejected → first answer served
//! with it) and what it waits for; without, the system diagnosis. The work is in
//! `clawline_history::explain`; this reads the same archive and NATS as `clawline sql`.

use std::sync::Arc;

use clap::Args;
use clawline_history::Scope;
use clawline_history::explain::{self, ExplainError, Explainer};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The step to follow (`stp_…`, e.g. from `clawline sql "SELECT step_id FROM steps"`); without
    /// it, the system diagnosis.
    step_id: Option<String>,
    /// JSON for machines instead of the timeline.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: crate::history::Where,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.step_id {
        explain::check_step_id(id).map_err(|e| anyhow::anyhow!("STEP_ID: {e}"))?;
    }
    let (engine, _) = args.at.connect().await?;
    let explainer = Explainer::new(Arc::new(engine));
    let out = match &args.step_id {
        Some(id) => match explainer.step(id, &Scope::All).await {
            Ok(e) if args.json => serde_json::to_string_pretty(&e)? + "\n",
            Ok(e) => explain::text::explanation(&e),
            Err(e @ ExplainError::UnknownStep(_)) => anyhow::bail!(
                "{e} (is --archive-dir {} / --nats-url {} the right deployment?)",
                args.at.root,
                args.at.nats.url
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
