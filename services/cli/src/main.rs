//! `clawline` — one command for the whole system on one machine.
//!
//! `clawline up` starts a local nats-server with JetStream on disk (unless `--nats-url` points at
//! one) and every service in this process: gateway, reward scorer, batcher, archive + SQL, and —
//! unless it fronts an external engine — the built-in policy server, trainer and broadcaster.
//! Each service also runs alone as its own binary against the same NATS: that is how it scales.

mod datapool;
mod demo;
mod explain;
mod history;
mod learn;
mod model;
mod plot;
mod served;
mod up;
mod weights;

use clap::{Parser, Subcommand};
use clawline_runtime::{LogArgs, init_tracing};

#[derive(Parser)]
#[command(name = "clawline", version, about = "clawline: deployment = training")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole system on this machine.
    Up(Box<up::UpArgs>),
    /// The closed loop: `up` plus simulated users; prints and plots reward per window.
    Demo(Box<demo::DemoArgs>),
    /// The DataPool (batcher): statistics.
    Datapool(datapool::DatapoolArgs),
    /// SQL over the whole history (archive + live tail), e.g.
    /// `clawline sql "SELECT channel, count(*) FROM steps GROUP BY channel"`.
    Sql(Box<clawline_history::SqlCommand>),
    /// "Why isn't it learning?": a step's way into a served policy (`clawline explain STEP_ID`),
    /// or, without an id, what the learning loop is stuck on.
    Explain(Box<explain::ExplainArgs>),
    /// Republish steps chosen by SQL as new steps on a channel (black-box offline training).
    Replay(Box<history::ReplayArgs>),
    /// Import pre-collected chat logs as steps.
    Import(Box<history::ImportArgs>),
    /// Export a query's rows as a dataset with a provenance manifest.
    Export(Box<history::ExportArgs>),
    /// The policy model: `clawline model init DIR`.
    Model(model::ModelArgs),
    /// Weight versions: `list`, `activate VERSION`, `rollback`.
    Weights(Box<weights::WeightsArgs>),
}

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match cli.command {
        Command::Up(args) => up::run(*args).await,
        Command::Demo(args) => demo::run(*args).await,
        Command::Datapool(args) => datapool::run(args).await,
        Command::Sql(cmd) => clawline_history::run_sql_command(*cmd).await,
        Command::Explain(args) => explain::run(*args).await,
        Command::Replay(args) => history::replay(*args).await,
        Command::Import(args) => history::import(*args).await,
        Command::Export(args) => history::export(*args).await,
        Command::Model(args) => model::run(args),
        Command::Weights(args) => weights::run(*args).await,
    }
}

#[cfg(test)]
mod tests {
    /// Every command's flags, including the service flag groups `up` and `demo` take in, have
    /// distinct names and valid defaults (clap's own consistency check).
    #[test]
    fn the_commands_flags_are_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
