use clap::Parser;
use clawline_batcher::Args;
use clawline_runtime::{Shutdown, bind, init_tracing};

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log);
    let listener = bind("--listen", args.listen).await?;
    let shutdown = Shutdown::on_signals();
    clawline_batcher::run(args.settings(), listener, shutdown.token()).await
}
