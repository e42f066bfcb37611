//! Reward-scoring benchmark: texts per second, tokenization included, through the reward service's
//! model thread (`clawline_reward::model::RewardModel`), side by side with Python `onnxruntime` +
//! `tokenizers` (`benches/python/reward_bench.py`) on the same model, texts and thread count.
//! Writes `benches/results/reward.md`.
//!
//! `reward-bench rust …` measures one configuration and prints one JSON line (`--serve`: scores the
//! chunks named on stdin, one JSON line each). `reward-bench compare …` starts both sides as servers
//! for each configuration and hands them the same chunks of the text file in turn, Rust then Python
//! then Python then Rust …, so the two always run seconds apart on the same machine state; then it
//! writes the report. Run through `scripts/bench-reward.sh`, which makes the model.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use clawline_reward::config::ModelConfig;
use clawline_reward::model::{BatchObserver, RewardModel, default_runtime_path, init_runtime};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

mod report;
mod server;
mod side;

use report::*;
use server::*;
use side::*;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Work {
    /// The model directory (`model.onnx`, `tokenizer.json`, `config.json`).
    #[arg(long)]
    model: PathBuf,
    /// The texts, one per line.
    #[arg(long, default_value = "benches/data/reward-texts.txt")]
    texts: PathBuf,
    /// Tokens a text is cut to (from the left, the service's default side).
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// Texts scored before anything is timed.
    #[arg(long, default_value_t = 64)]
    warmup: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// One configuration through `RewardModel`.
    Rust {
        #[command(flatten)]
        work: Work,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The model thread's `max_batch`; 2 × batch requests are kept in flight so every batch is full.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Times the whole text file is scored (without --serve).
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Print `{"ready":true}`, then score the chunk of each stdin line `START COUNT`.
        #[arg(long)]
        serve: bool,
        /// The ONNX Runtime library (default: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts it).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// Every configuration, Rust and Python in turn, then the report.
    Compare(Compare),
}

#[derive(clap::Args)]
struct Compare {
    #[command(flatten)]
    work: Work,
    /// The Python with `onnxruntime` and `tokenizers` (the venv of `scripts/setup.sh --test`).
    #[arg(long)]
    python: PathBuf,
    #[arg(long, default_value = "benches/python/reward_bench.py")]
    script: PathBuf,
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    threads: Vec<usize>,
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Passes over the text file per configuration, each with freshly started processes.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Texts per turn (a multiple of every batch size).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// CPU cores other processes may use during a turn. A pair of turns above it is thrown away
    /// and run again, up to --attempts times (then that chunk is left out); each pair first waits
    /// up to --quiet-wait seconds for the machine to be this quiet.
    #[arg(long, default_value_t = 0.25)]
    max_others: f64,
    #[arg(long, default_value_t = 8)]
    attempts: usize,
    #[arg(long, default_value_t = 3600)]
    quiet_wait: u64,
    #[arg(long, default_value = "benches/results/reward.md")]
    report: PathBuf,
    /// Every turn's JSON line.
    #[arg(long, default_value = "benches/results/raw/reward.jsonl")]
    raw: PathBuf,
    /// Write the report from the turns already in --raw; measure nothing.
    #[arg(long)]
    report_only: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Rust {
            work,
            threads,
            batch,
            passes,
            serve,
            ort_library,
        } => {
            let side = RustSide::load(&work, threads, batch, ort_library)?;
            if serve {
                side.serve()
            } else {
                let all: Vec<String> = std::iter::repeat_n(&side.texts, passes)
                    .flatten()
                    .cloned()
                    .collect();
                println!("{}", side.timed(all)?);
                Ok(())
            }
        }
        Cmd::Compare(c) => compare(&c),
    }
}

fn work_args(work: &Work) -> Vec<String> {
    vec![
        "--model".into(),
        work.model.display().to_string(),
        "--texts".into(),
        work.texts.display().to_string(),
        "--max-length".into(),
        work.max_length.to_string(),
        "--warmup".into(),
        work.warmup.to_string(),
    ]
}

fn side_command(c: &Compare, side: &str, threads: usize, batch: usize) -> anyhow::Result<Command> {
    let mut cmd = if side == "rust" {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("rust");
        cmd
    } else {
        let mut cmd = Command::new(&c.python);
        cmd.arg(&c.script);
        cmd
    };
    cmd.args(work_args(&c.work)).args([
        "--threads",
        &threads.to_string(),
        "--batch",
        &batch.to_string(),
    ]);
    Ok(cmd)
}

/// The model's and texts' statistics, from the Python side's `--describe`.
fn describe(c: &Compare) -> anyhow::Result<Value> {
    let mut cmd = Command::new(&c.python);
    cmd.arg(&c.script).args(work_args(&c.work)).args([
        "--describe",
        "--batches",
        &c.batches
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{cmd:?} printed no JSON line: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("{cmd:?} printed {line}"))
}

fn compare(c: &Compare) -> anyhow::Result<()> {
    let texts = load_texts(&c.work.texts)?.len();
    if let Some(b) = c.batches.iter().find(|&&b| !c.chunk.is_multiple_of(b)) {
        bail!("--chunk {} is not a multiple of batch size {b}", c.chunk);
    }
    let about = describe(c)?;
    if c.report_only {
        let raw = std::fs::read_to_string(&c.raw)
            .with_context(|| format!("reading {}", c.raw.display()))?;
        let turns = raw
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        let report = render(c, &about, &turns);
        std::fs::write(&c.report, &report)?;
        println!("{report}");
        return Ok(());
    }
    if let Some(dir) = c.raw.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut raw = String::new();
    let mut turns: Vec<Value> = Vec::new();
    for round in 0..c.rounds {
        for &threads in &c.threads {
            for &batch in &c.batches {
                let mut rust = Server::start(side_command(c, "rust", threads, batch)?, "rust")?;
                let mut python =
                    Server::start(side_command(c, "python", threads, batch)?, "python")?;
                // One untimed turn each, so neither times its first turn right after the other
                // started up.
                rust.turn(0, c.chunk)?;
                python.turn(0, c.chunk)?;
                let mut rate = [(0usize, 0f64); 2];
                for (k, start) in (0..texts).step_by(c.chunk).enumerate() {
                    let count = c.chunk.min(texts - start);
                    // Rust first on even turns, Python first on odd ones (and the other way round
                    // every other round), so a drift in machine speed loads both sides alike.
                    let rust_first = (k + round) % 2 == 0;
                    for attempt in 1..=c.attempts {
                        wait_quiet(c.max_others, Duration::from_secs(c.quiet_wait));
                        let mut pair = Vec::with_capacity(2);
                        for first in [true, false] {
                            let server = if first == rust_first {
                                &mut rust
                            } else {
                                &mut python
                            };
                            if !first {
                                // ONNX Runtime's and rayon's idle workers spin a moment before
                                // they sleep; let the first side's settle.
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            pair.push(server.turn(start, count)?);
                        }
                        let worst = pair
                            .iter()
                            .map(|v| v["others_cores"].as_f64().unwrap_or(f64::INFINITY))
                            .fold(0.0, f64::max);
                        let kept = worst <= c.max_others;
                        // Both sides must compute the same thing: the same logits, up to float
                        // rounding.
                        let sums: Vec<f64> = pair
                            .iter()
                            .map(|v| v["logits_sum"].as_f64().unwrap_or(f64::NAN))
                            .collect();
                        let gap = (sums[0] - sums[1]).abs() / count as f64;
                        if gap.is_nan() || gap > 1e-4 {
                            bail!(
                                "texts {start}..{}: the logits differ between the sides (sums {sums:?})",
                                start + count
                            );
                        }
                        for mut v in pair {
                            v["round"] = json!(round);
                            v["start"] = json!(start);
                            v["attempt"] = json!(attempt);
                            v["kept"] = json!(kept);
                            let i = usize::from(v["side"] != "rust");
                            if kept {
                                rate[i].0 += count;
                                rate[i].1 += v["seconds"].as_f64().unwrap_or(f64::NAN);
                            }
                            raw.push_str(&format!("{v}\n"));
                            turns.push(v);
                        }
                        std::fs::write(&c.raw, &raw)?;
                        if kept {
                            break;
                        }
                        eprintln!(
                            "  texts {start}..{}: other processes used {worst:.2} cores; {}",
                            start + count,
                            if attempt < c.attempts {
                                "again"
                            } else {
                                "left out"
                            }
                        );
                    }
                }
                let per_s = |(n, s): (usize, f64)| n as f64 / s;
                eprintln!(
                    "round {round} threads {threads} batch {batch:>2}: rust {:6.1} texts/s  python {:6.1} texts/s  ratio {:.3}",
                    per_s(rate[0]),
                    per_s(rate[1]),
                    per_s(rate[0]) / per_s(rate[1]),
                );
            }
        }
    }
    let report = render(c, &about, &turns);
    std::fs::write(&c.report, &report)?;
    println!("{report}");
    Ok(())
}
