//! `clawline weights list | activate VERSION | rollback`: the versions the trainer published, where
//! each is serving, and putting any of them back into service (through the broadcaster).

use clap::{Args, Subcommand};
use clawline_broadcaster::{ControlReply, ControlRequest, History};
use clawline_nats::buckets;
use clawline_runtime::{NatsArgs, connect_nats};

#[derive(Debug, Args)]
pub struct WeightsArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Debug, Subcommand)]
enum WeightsCommand {
    /// Every published version: parent, format, size, sha256, and what became of it per engine.
    List,
    /// Serve VERSION on every engine (no canary: you decide).
    Activate { version: u64 },
    /// Serve the version that was serving before the current one.
    Rollback,
}

pub async fn run(args: WeightsArgs) -> anyhow::Result<()> {
    let client = connect_nats(&args.nats, "clawline-weights", true).await?;
    let request = match args.command {
        WeightsCommand::List => return list(&client).await,
        WeightsCommand::Activate { version } => ControlRequest::Activate { version },
        WeightsCommand::Rollback => ControlRequest::Rollback,
    };
    let reply = request.send(&client).await?;
    print_reply(&reply);
    anyhow::ensure!(reply.ok, "not every engine serves the version");
    Ok(())
}

fn print_reply(reply: &ControlReply) {
    if let Some(error) = &reply.error {
        eprintln!("refused: {error}");
    }
    for e in &reply.engines {
        match &e.reason {
            None => println!("{}: activated", e.engine),
            Some(why) => println!("{}: rejected: {why}", e.engine),
        }
    }
    println!("serving: v{}", reply.serving);
}

async fn list(client: &async_nats::Client) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let history = History::read(&js).await?;
    let serving = match js
        .get_key_value(buckets::STATE)
        .await?
        .get(buckets::POLICY_VERSION_KEY)
        .await?
    {
        Some(v) => String::from_utf8_lossy(&v).trim().parse::<u64>().ok(),
        None => None,
    };
    println!(
        "{:>7}  {:>6}  {:<6}  {:>10}  {:<12}  status",
        "version", "parent", "format", "bytes", "sha256"
    );
    for (version, e) in &history.published {
        let mut status: Vec<String> = Vec::new();
        if serving == Some(*version) {
            status.push("SERVING".into());
        }
        let mut engines: Vec<&str> = history
            .activated
            .iter()
            .filter(|a| a.version == *version)
            .map(|a| a.engine.as_str())
            .collect();
        engines.sort_unstable();
        engines.dedup();
        if !engines.is_empty() {
            status.push(format!("activated on {}", engines.join(", ")));
        }
        if let Some(r) = history
            .rejected
            .iter()
            .rev()
            .find(|r| r.version == *version)
        {
            status.push(format!("rejected by {}: {}", r.engine, r.reason));
        }
        println!(
            "{:>7}  {:>6}  {:<6}  {:>10}  {:<12}  {}",
            format!("v{version}"),
            format!("v{}", e.parent),
            format!("{:?}", e.format).to_lowercase(),
            e.size,
            e.sha256.get(..12).unwrap_or(&e.sha256),
            status.join("; ")
        );
    }
    if history.published.is_empty() {
        println!("(no version published yet)");
    }
    Ok(())
}
