use clap::Parser;
use clawline_gateway::Args;
use clawline_runtime::{Shutdown, bind, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log);
    let listener = bind("--listen", args.listen).await?;
    let shutdown = Shutdown::on_signals();
    clawline_gateway::run(args.settings(), listener, shutdown.token()).await
}
