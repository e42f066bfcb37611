use clap::Parser;
use clawline_runtime::{Shutdown, init_tracing};
use clawline_trainer::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config.log);
    let shutdown = Shutdown::on_signals();
    clawline_trainer::run(config, shutdown.token()).await
}
