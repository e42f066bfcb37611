//! `clawline datapool stats`: the batcher's `get_statistics`, asked over NATS.

use std::time::Duration;

use clap::{Args, Subcommand};
use clawline_runtime::NatsArgs;

#[derive(Debug, Args)]
pub struct DatapoolArgs {
    #[command(subcommand)]
    command: DatapoolCommand,
}

#[derive(Debug, Subcommand)]
enum DatapoolCommand {
    /// Per channel: steps, trajectories, ready groups, consumed, dropped by reason, lag.
    Stats {
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub async fn run(args: DatapoolArgs) -> anyhow::Result<()> {
    match args.command {
        DatapoolCommand::Stats { nats } => {
            let client = clawline_runtime::connect_nats(&nats, "clawline-cli", true).await?;
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(clawline_nats::subjects::DATAPOOL_STATS, "".into()),
            )
            .await
            .map_err(|_| anyhow::anyhow!("the batcher did not answer within 5 s"))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => anyhow::anyhow!(
                    "no batcher is running on {} (start clawline up or clawline-batcher)",
                    nats.url
                ),
                _ => anyhow::anyhow!("asking the batcher: {e}"),
            })?;
            let stats: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
    }
}
