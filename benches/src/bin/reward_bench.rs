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
    /// The Python with `onnxruntime` and `tokenizers` (the venv of `scripts/setup.sh`).
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

fn load_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let texts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if texts.is_empty() {
        bail!("{}: no texts", path.display());
    }
    Ok(texts)
}

/// Nearest rank, as the Python side computes it.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Busy CPU seconds so far of the whole machine (every core; steal counted as busy) and of this
/// process, from `/proc` (clock ticks of 10 ms). The Python side reads the same.
fn cpu_seconds() -> (f64, f64) {
    const TICK: f64 = 0.01;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let machine: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, v)| v)
        .sum();
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name: state is field 3, utime 14 and stime 15.
    let own: u64 = me
        .rsplit_once(") ")
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (machine as f64 * TICK, own as f64 * TICK)
}

/// The Rust side: a `RewardModel` as the reward service runs it.
struct RustSide {
    model: RewardModel,
    runtime: tokio::runtime::Runtime,
    /// (texts, time) of every batch, from the model thread's observer.
    seen: Arc<Mutex<Vec<(usize, Duration)>>>,
    texts: Vec<String>,
    threads: usize,
    batch: usize,
}

impl RustSide {
    fn load(
        work: &Work,
        threads: usize,
        batch: usize,
        ort_library: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let texts = load_texts(&work.texts)?;
        let env = init_runtime(&ort_library.unwrap_or_else(default_runtime_path))?;
        let mut config = ModelConfig::from_dir("bench", work.model.clone());
        config.max_batch = batch;
        // Only a batch's first text waits for the rest; with 2 × batch in flight they are queued.
        config.max_wait_ms = 50;
        config.intra_threads = threads;
        config.max_length = Some(work.max_length);
        let seen: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
        let observe: BatchObserver = {
            let seen = seen.clone();
            Arc::new(move |n, took| {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((n, took))
            })
        };
        let model = RewardModel::load(&env, &config, Some(observe))
            .with_context(|| format!("loading {}", work.model.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let side = Self {
            model,
            runtime,
            seen,
            texts,
            threads,
            batch,
        };
        side.timed(side.texts.iter().take(work.warmup).cloned().collect())?;
        Ok(side)
    }

    /// Scores `texts` with 2 × batch in flight; the sum of all logits. Requests go out in order
    /// (`buffered` polls new futures first in, first out), so the model thread forms the same
    /// batches as the Python side.
    fn score(&self, texts: Vec<String>) -> anyhow::Result<f64> {
        self.runtime
            .block_on(
                futures::stream::iter(texts)
                    .map(|t| self.model.logits(t))
                    .buffered(2 * self.batch)
                    .try_fold(0.0, |sum, row| async move {
                        Ok(sum + row.iter().map(|&l| f64::from(l)).sum::<f64>())
                    }),
            )
            .map_err(anyhow::Error::msg)
    }

    fn timed(&self, texts: Vec<String>) -> anyhow::Result<Value> {
        let count = texts.len();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let (machine_before, own_before) = cpu_seconds();
        let started = Instant::now();
        let logits_sum = self.score(texts)?;
        let seconds = started.elapsed().as_secs_f64();
        let (machine_after, own_after) = cpu_seconds();
        let own = own_after - own_before;
        // The model thread reports a batch just after sending its replies.
        let deadline = Instant::now() + Duration::from_secs(1);
        let seen = loop {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if seen.iter().map(|(n, _)| n).sum::<usize>() >= count || Instant::now() > deadline {
                break seen;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let ms: Vec<f64> = seen.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
        Ok(turn_json(
            "rust",
            self.threads,
            self.batch,
            count,
            seconds,
            &ms,
            seen.iter().filter(|(n, _)| *n == self.batch).count(),
            own,
            (machine_after - machine_before - own) / seconds,
            logits_sum,
        ))
    }

    fn serve(&self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", json!({"ready": true}))?;
        out.flush()?;
        for line in std::io::stdin().lines() {
            let line = line?;
            let (start, count) = chunk_command(&line)?;
            let chunk = (start..start + count)
                .map(|i| self.texts[i % self.texts.len()].clone())
                .collect();
            writeln!(out, "{}", self.timed(chunk)?)?;
            out.flush()?;
        }
        Ok(())
    }
}

fn chunk_command(line: &str) -> anyhow::Result<(usize, usize)> {
    let mut parts = line.split_whitespace().map(str::parse::<usize>);
    match (parts.next(), parts.next()) {
        (Some(Ok(start)), Some(Ok(count))) => Ok((start, count)),
        _ => bail!("expected `START COUNT`, got {line:?}"),
    }
}

/// One timed run, in the shape the Python side prints too.
#[expect(clippy::too_many_arguments, reason = "one JSON shape, two callers")]
fn turn_json(
    side: &str,
    threads: usize,
    batch: usize,
    texts: usize,
    seconds: f64,
    batch_ms: &[f64],
    full_batches: usize,
    cpu_s: f64,
    others_cores: f64,
    logits_sum: f64,
) -> Value {
    let mut sorted = batch_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "side": side,
        "threads": threads,
        "batch": batch,
        "texts": texts,
        "seconds": seconds,
        "texts_per_s": texts as f64 / seconds,
        "batches": batch_ms.len(),
        "full_batches": full_batches,
        "batch_ms": batch_ms,
        "batch_ms_p50": percentile(&sorted, 0.5),
        "batch_ms_p99": percentile(&sorted, 0.99),
        "cpu_s": cpu_s,
        "others_cores": others_cores,
        "logits_sum": logits_sum,
    })
}

/// A side started with `--serve`; closing its stdin ends it.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: &'static str,
}

impl Server {
    fn start(mut command: Command, name: &'static str) -> anyhow::Result<Self> {
        let mut child = command
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut server = Self {
            child,
            stdin,
            stdout,
            name,
        };
        let ready = server.line()?;
        if ready["ready"] != true {
            bail!("{name}: expected the ready line, got {ready}");
        }
        Ok(server)
    }

    fn line(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("{} side exited", self.name);
            }
            // Anything else a library prints to stdout is not ours.
            if line.starts_with('{') {
                return serde_json::from_str(&line)
                    .with_context(|| format!("{} side printed {line}", self.name));
            }
        }
    }

    fn turn(&mut self, start: usize, count: usize) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{start} {count}")?;
        stdin.flush()?;
        self.line()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Machine busy cores over `window`.
fn busy_cores(window: Duration) -> f64 {
    let (before, _) = cpu_seconds();
    std::thread::sleep(window);
    let (after, _) = cpu_seconds();
    (after - before) / window.as_secs_f64()
}

/// Waits until processes use at most `max_cores` of the machine (this one only sleeps), or until
/// `limit` has passed.
fn wait_quiet(max_cores: f64, limit: Duration) {
    let until = Instant::now() + limit;
    let mut said = false;
    loop {
        let busy = busy_cores(Duration::from_millis(500));
        if busy <= max_cores {
            return;
        }
        if Instant::now() > until {
            eprintln!("the machine stayed busy ({busy:.2} cores); running anyway");
            return;
        }
        if !said {
            eprintln!("waiting for a quiet machine ({busy:.2} cores busy)");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
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

/// One side's kept turns of one configuration, pooled.
struct Cell {
    per_s: f64,
    per_round: Vec<f64>,
    p50: f64,
    p99: f64,
    batches: usize,
    full_batches: usize,
}

fn cell(turns: &[Value], side: &str, threads: usize, batch: usize, rounds: usize) -> Cell {
    let mine: Vec<&Value> = turns
        .iter()
        .filter(|v| {
            v["kept"] == true && v["side"] == side && v["threads"] == threads && v["batch"] == batch
        })
        .collect();
    let rate = |vs: &mut dyn Iterator<Item = &&Value>| {
        let (n, s) = vs.fold((0.0, 0.0), |(n, s), v| {
            (
                n + v["texts"].as_f64().unwrap_or(0.0),
                s + v["seconds"].as_f64().unwrap_or(f64::NAN),
            )
        });
        n / s
    };
    let mut ms: Vec<f64> = mine
        .iter()
        .flat_map(|v| v["batch_ms"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_f64())
        .collect();
    ms.sort_by(f64::total_cmp);
    let count = |k: &str| {
        mine.iter()
            .map(|v| v[k].as_u64().unwrap_or(0) as usize)
            .sum()
    };
    Cell {
        per_s: rate(&mut mine.iter()),
        per_round: (0..rounds)
            .map(|r| rate(&mut mine.iter().filter(|v| v["round"] == r)))
            .collect(),
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        batches: count("batches"),
        full_batches: count("full_batches"),
    }
}

/// The largest difference between the two sides' logit sums over one chunk.
fn logits_gap(turns: &[Value]) -> f64 {
    let mut sums: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for v in turns {
        let key = format!(
            "{} {} {} {} {}",
            v["round"], v["threads"], v["batch"], v["start"], v["attempt"]
        );
        sums.entry(key)
            .or_default()
            .push(v["logits_sum"].as_f64().unwrap_or(f64::NAN));
    }
    sums.values()
        .filter(|s| s.len() == 2)
        .map(|s| (s[0] - s[1]).abs())
        .fold(0.0, f64::max)
}

/// Chunks (of a round and configuration) with no kept pair of turns.
fn left_out(turns: &[Value]) -> usize {
    let key = |v: &Value| {
        format!(
            "{} {} {} {}",
            v["round"], v["threads"], v["batch"], v["start"]
        )
    };
    let tried: std::collections::BTreeSet<String> = turns.iter().map(key).collect();
    let kept: std::collections::BTreeSet<String> = turns
        .iter()
        .filter(|v| v["kept"] == true)
        .map(key)
        .collect();
    tried.len() - kept.len()
}

/// A 95 % bootstrap interval of Rust ÷ Python texts/s, resampling the kept pairs of turns (each
/// pair scored the same chunk, so the ratio is Python's total seconds over Rust's).
fn ratio_interval(turns: &[Value], threads: usize, batch: usize) -> (f64, f64) {
    let mut pairs: std::collections::BTreeMap<(u64, u64), [f64; 2]> = Default::default();
    for v in turns
        .iter()
        .filter(|v| v["kept"] == true && v["threads"] == threads && v["batch"] == batch)
    {
        let key = (
            v["round"].as_u64().unwrap_or(0),
            v["start"].as_u64().unwrap_or(0),
        );
        let slot = pairs.entry(key).or_insert([f64::NAN; 2]);
        slot[usize::from(v["side"] != "rust")] = v["seconds"].as_f64().unwrap_or(f64::NAN);
    }
    let pairs: Vec<[f64; 2]> = pairs
        .into_values()
        .filter(|p| p.iter().all(|s| s.is_finite()))
        .collect();
    if pairs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // xorshift64*, fixed seed: the same raw data gives the same interval.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let mut ratios: Vec<f64> = (0..4000)
        .map(|_| {
            let (mut rust, mut python) = (0.0, 0.0);
            for _ in 0..pairs.len() {
                let [r, p] = pairs[next(pairs.len())];
                rust += r;
                python += p;
            }
            python / rust
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (percentile(&ratios, 0.025), percentile(&ratios, 0.975))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cpus} CPU cores ({}), {mem_gib:.0} GiB memory, Linux {}",
        simd.join(", "),
        kernel.trim()
    )
}

/// A package's version from Cargo.lock (the report is written from the workspace root).
fn locked(name: &str) -> String {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let needle = format!("name = \"{name}\"\n");
    lock.split("[[package]]")
        .find(|p| p.trim_start().starts_with(&needle))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("?".into(), |v| v.trim_matches('"').to_string())
}

fn rustc() -> String {
    Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rustc ?".into())
}

fn render(c: &Compare, about: &Value, turns: &[Value]) -> String {
    let a = |k: &str| about[k].clone();
    let s = |k: &str| about[k].as_str().unwrap_or("?").to_string();
    let f = |k: &str| about[k].as_f64().unwrap_or(f64::NAN);
    let kept: Vec<&Value> = turns.iter().filter(|v| v["kept"] == true).collect();
    let mut out = String::new();
    out.push_str("# Reward-scoring benchmark\n\n");
    out.push_str(&format!(
        "Generated by `scripts/bench-reward.sh` on {}.\n\n",
        machine()
    ));
    out.push_str(&format!(
        "**How.** For each configuration (intra-op threads × batch size) both sides start as long-running \
         processes, load the model and score the first {} texts untimed; then they take turns on the text file in \
         chunks of {} texts: Rust scores a chunk, then Python the same chunk, then Python the next, then Rust, and so \
         on, so the two are timed seconds apart on the same machine state (a shared VM's speed drifts by 10–20 % \
         within minutes). Each configuration runs {} rounds, each with fresh processes and the whole file; the \
         figures pool all rounds. Before each pair of turns the machine must be quiet, and a pair during which \
         other processes used more than {} CPU cores is thrown away and run again ({} of {} turns thrown away, {} \
         chunks left out after {} busy attempts; the kept turns saw at most {:.2} cores of other load).\n\n",
        c.work.warmup,
        c.chunk,
        c.rounds,
        c.max_others,
        turns.len() - kept.len(),
        turns.len(),
        left_out(turns),
        c.attempts,
        kept.iter()
            .filter_map(|v| v["others_cores"].as_f64())
            .fold(0.0, f64::max),
    ));
    out.push_str(&format!(
        "**What is timed.** Texts per second (= steps/s: one step's answer is one text), tokenization included.\n\n\
         - **Rust**: the reward service's model thread (`clawline_reward::model::RewardModel`) with `max_batch` = \
         batch, fed through `RewardModel::logits` with 2 × batch requests in flight so every batch is full. Per \
         batch the thread tokenizes (`tokenizers` {} `encode_batch`), builds the int64 tensors and runs ONNX Runtime \
         through `ort` {}. Batch latency is the thread's own (tokenize + run + reply), from its batch observer.\n\
         - **Python**: a plain loop over the same batches: `tokenizers` {} `encode_batch`, numpy int64 arrays \
         (input_ids, attention_mask, token_type_ids), `InferenceSession.run` with onnxruntime {} (Python {}, numpy \
         {}). Batch latency is that loop body.\n\n\
         Both: the same `model.onnx` and `tokenizer.json`; ONNX Runtime 1.32.0 (Rust loads the \
         `libonnxruntime.so` of the same wheel), CPU provider, `threads` intra-op threads, 1 inter-op thread, all \
         graph optimizations (`GraphOptimizationLevel::All` / `ORT_ENABLE_ALL`), default spinning; texts cut to {} \
         tokens from the left (the service's default side) and padded to the longest text of their batch. \
         `encode_batch` is parallel (rayon) on both sides. Rust: {}, release profile. The two sides must return \
         the same logits for every chunk (their sums agree to 1e-4 per text, or the run stops); the largest \
         difference of a chunk's sums here was {}.\n\n",
        locked("tokenizers"),
        locked("ort"),
        s("tokenizers"),
        s("onnxruntime"),
        s("python"),
        s("numpy"),
        c.work.max_length,
        rustc(),
        match logits_gap(turns) {
            0.0 => "0: the logits were the same bit for bit".to_string(),
            gap => format!("{gap:.1e}"),
        },
    ));
    out.push_str(&format!(
        "**Model.** MiniLM-sized BERT classifier from `scripts/make_reward_model.py transformer` (random weights, \
         seed 0; generated at bench time, not committed): {} layers, hidden {}, {} heads, intermediate {}, \
         vocabulary {}, {:.1} M parameters, logits [batch, 2]. Tokenizer: the real all-MiniLM-L6-v2 WordPiece \
         `tokenizer.json`.\n\n",
        a("layers"),
        a("hidden"),
        a("heads"),
        a("intermediate"),
        a("vocab"),
        f("params") / 1e6,
    ));
    let padded = |b: usize| {
        about["padded_tokens_per_text"][b.to_string()]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    out.push_str(&format!(
        "**Texts.** `{}`: {} assistant answers of {}–{} words (mean {:.1}), {:.1} tokens on average after \
         truncation (min {}, max {}; {} of them were longer than {} tokens and were cut). Padded to the longest of \
         their batch, a text costs on average {}: so on this CPU a text costs more at larger batches, and texts/s \
         falls with the batch size on both sides.\n\n",
        c.work.texts.display(),
        a("texts"),
        a("words_min"),
        a("words_max"),
        f("words_mean"),
        f("tokens_mean"),
        a("tokens_min"),
        a("tokens_max"),
        a("truncated"),
        c.work.max_length,
        c.batches
            .iter()
            .map(|&b| format!("{:.1} tokens at batch {b}", padded(b)))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str("## Results\n\n");
    out.push_str(
        "| threads | batch | Rust texts/s | Python texts/s | Rust ÷ Python (95 % interval) | per round | Rust batch p50 / p99 ms | Python batch p50 / p99 ms | ≥ 0.95× Python |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut met = 0;
    let mut rows = 0;
    let mut partial = Vec::new();
    for &threads in &c.threads {
        for &batch in &c.batches {
            let r = cell(turns, "rust", threads, batch, c.rounds);
            let p = cell(turns, "python", threads, batch, c.rounds);
            let ratio = r.per_s / p.per_s;
            let (low, high) = ratio_interval(turns, threads, batch);
            let per_round: Vec<String> = r
                .per_round
                .iter()
                .zip(&p.per_round)
                .map(|(r, p)| {
                    let ratio = r / p;
                    if ratio.is_finite() {
                        format!("{ratio:.2}")
                    } else {
                        "—".into()
                    }
                })
                .collect();
            let ok = ratio >= 0.95;
            rows += 1;
            met += usize::from(ok);
            if r.full_batches != r.batches {
                partial.push(format!(
                    "threads {threads} batch {batch}: {}/{}",
                    r.full_batches, r.batches
                ));
            }
            out.push_str(&format!(
                "| {threads} | {batch} | {:.1} | {:.1} | **{ratio:.2}** ({low:.2}–{high:.2}) | {} | {:.1} / {:.1} | {:.1} / {:.1} | {} |\n",
                r.per_s,
                p.per_s,
                per_round.join(", "),
                r.p50,
                r.p99,
                p.p50,
                p.p99,
                if ok { "met" } else { "**not met**" },
            ));
        }
    }
    out.push_str(&format!(
        "\n**Target** (≥ 0.95× Python): met in {met} of {rows} configurations. The interval is a bootstrap over the \
         pairs of turns (Rust and Python on the same chunk, seconds apart); *per round* is Rust ÷ Python within each \
         round. {}\n",
        if partial.is_empty() {
            "Every Rust batch was full.".to_string()
        } else {
            format!("Rust batches not full: {}.", partial.join("; "))
        }
    ));
    out
}
