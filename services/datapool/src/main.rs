use clap::{Parser, Subcommand};
use clawline_datapool::{ArchiveArgs, ServeConfig, SqlCommand};
use clawline_runtime::{LogArgs, NatsArgs, Shutdown, init_tracing};

#[derive(Parser)]
#[command(
    name = "clawline-datapool",
    version,
    about = "clawline's history: Parquet archive and SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Archive every stream to Parquet (resumes after the last archived message).
    Archive {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        archive: ArchiveArgs,
    },
    /// The archiver plus `POST /sql`.
    Serve(Box<ServeConfig>),
    /// Run one query and print the answer.
    Sql(SqlCommand),
}

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let shutdown = Shutdown::on_signals();
    match cli.command {
        Command::Archive { nats, archive } => {
            let client = clawline_runtime::connect_nats(&nats, "clawline-datapool", true).await?;
            let js = async_nats::jetstream::new(client);
            clawline_nats::ensure_topology(&js, &nats.topology()).await?;
            clawline_datapool::run_archiver(js, archive.config(), shutdown.token()).await
        }
        Command::Serve(config) => clawline_datapool::serve(*config, shutdown.token()).await,
        Command::Sql(cmd) => clawline_datapool::run_sql_command(cmd).await,
    }
}
