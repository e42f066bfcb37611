//! `clawline model …`: the policy model's files.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use clawline_model::init::{InitOptions, init};

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Create a fresh tiny model and its tokenizer in DIR (a Hugging Face model dir), no download.
    Init {
        dir: PathBuf,
        /// Tokenizer (and embedding) size.
        #[arg(long, default_value_t = 2048)]
        vocab_size: usize,
        /// Seed of the initial weights.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Replace a model already in DIR.
        #[arg(long)]
        force: bool,
        /// Next-token training steps on the bundled corpus (16 lines each), so the text is not
        /// noise; 0 leaves the weights random.
        #[arg(long, default_value_t = 0)]
        warm_start_steps: usize,
    },
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Init {
            dir,
            vocab_size,
            seed,
            force,
            warm_start_steps,
        } => {
            let config = init(
                &dir,
                &InitOptions {
                    vocab_size,
                    seed,
                    force,
                    warm_start_steps,
                },
            )?;
            println!(
                "{}: {} layers, hidden {}, {} heads ({} key/value), vocabulary {}",
                dir.display(),
                config.num_hidden_layers,
                config.hidden_size,
                config.num_attention_heads,
                config.kv_heads(),
                config.vocab_size
            );
            Ok(())
        }
    }
}
