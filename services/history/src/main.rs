use clap::Parser;
use clawline_history::command::{Cli, run};
use clawline_runtime::{Shutdown, init_tracing};

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let shutdown = Shutdown::on_signals();
    run(cli.command, shutdown.token()).await
}
