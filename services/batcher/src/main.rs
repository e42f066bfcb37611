use clap::Parser;
use clawline_batcher::Config;
use clawline_runtime::{Shutdown, init_tracing};

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config.log);
    let shutdown = Shutdown::on_signals();
    clawline_batcher::run(config, shutdown.token()).await
}
