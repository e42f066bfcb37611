//! The `clawline-history` binary's commands, so that its `main.rs` only parses and runs them.

use clap::{Parser, Subcommand};
use clawline_runtime::{CancellationToken, LogArgs, NatsArgs};

use crate::{ArchiveArgs, ServeArgs, SqlCommand};

#[derive(Parser)]
#[command(
    name = "clawline-history",
    version,
    about = "clawline's history: Parquet archive and SQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Archive every stream to Parquet (resumes after the last archived message).
    Archive {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// The archiver plus `POST /sql`.
    Serve(Box<ServeArgs>),
    /// Run one query and print the answer.
    Sql(SqlCommand),
}

/// Runs `command` until it ends or `shutdown` is cancelled.
pub async fn run(command: Command, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Archive { nats, archive } => {
            let (_, js) = clawline_runtime::start_nats(&nats, "clawline-history").await?;
            crate::archive_all(js, archive.config(), shutdown).await
        }
        Command::Serve(args) => {
            let listener = clawline_runtime::bind("--listen", args.listen).await?;
            crate::run(args.settings(), listener, shutdown).await
        }
        Command::Sql(cmd) => crate::run_sql_command(cmd).await,
    }
}
