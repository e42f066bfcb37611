use clap::Parser;
use clawline_broadcaster::Config;
use clawline_runtime::{Shutdown, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config.log);
    let shutdown = Shutdown::on_signals();
    clawline_broadcaster::run(config, shutdown.token()).await
}
