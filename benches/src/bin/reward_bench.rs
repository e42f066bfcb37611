//! Reward-scoring benchmark: texts per second, tokenization included, through the reward service's
//! model thread (`clawline_reward::model::RewardModel`), side by side with Python `onnxruntime` +
//! `tokenizers` (`benches/python/reward_bench.py`) on the same model, texts and thread count.
//! Writes `benches/results/reward.md`.
//!
//! `reward-bench rust …` measures one configuration and prints one JSON line; `reward-bench compare …`
//! runs every configuration, Rust and Python alternately in fresh processes, for several rounds,
//! and writes the report. Run through `scripts/bench-reward.sh`, which makes the model.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    /// Texts scored before the clock starts.
    #[arg(long, default_value_t = 64)]
    warmup: usize,
    /// Times the whole text file is scored while timed.
    #[arg(long, default_value_t = 1)]
    passes: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// One configuration through `RewardModel`; prints one JSON line.
    Rust {
        #[command(flatten)]
        work: Work,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// The model thread's `max_batch`; 2 × batch requests are kept in flight so every batch is full.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// The ONNX Runtime library (default: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts it).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// Every configuration, Rust and Python alternately, then the report.
    Compare {
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
        /// Rounds over all configurations; the report takes the median of each.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value = "benches/results/reward.md")]
        report: PathBuf,
        /// Every run's JSON line.
        #[arg(long, default_value = "benches/results/raw/reward.jsonl")]
        raw: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Rust {
            work,
            threads,
            batch,
            ort_library,
        } => {
            let result = run_rust(&work, threads, batch, ort_library)?;
            println!("{result}");
            Ok(())
        }
        Cmd::Compare {
            work,
            python,
            script,
            threads,
            batches,
            rounds,
            report,
            raw,
        } => compare(&Compare {
            work,
            python,
            script,
            threads,
            batches,
            rounds,
            report,
            raw,
        }),
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

fn run_rust(
    work: &Work,
    threads: usize,
    batch: usize,
    ort_library: Option<PathBuf>,
) -> anyhow::Result<Value> {
    let texts = load_texts(&work.texts)?;
    let env = init_runtime(&ort_library.unwrap_or_else(default_runtime_path))?;
    let mut config = ModelConfig::from_dir("bench", work.model.clone());
    config.max_batch = batch;
    // Only a batch's first text waits for the rest; with 2 × batch in flight they are always queued.
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
    let in_flight = 2 * batch;
    // Requests go out in file order (`buffered` polls new futures first in, first out), so the
    // worker sees the same batches as the Python side.
    let score = |texts: Vec<String>| {
        let model = model.clone();
        async move {
            futures::stream::iter(texts)
                .map(|t| model.logits(t))
                .buffered(in_flight)
                .try_for_each(|_| async { Ok(()) })
                .await
                .map_err(anyhow::Error::msg)
        }
    };
    let warm: Vec<String> = texts.iter().take(work.warmup).cloned().collect();
    let timed: Vec<String> = std::iter::repeat_n(&texts, work.passes)
        .flatten()
        .cloned()
        .collect();
    let count = timed.len();
    runtime.block_on(score(warm))?;
    // The warm-up's last batch is reported just after its replies are sent.
    std::thread::sleep(Duration::from_millis(20));
    seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let started = Instant::now();
    runtime.block_on(score(timed))?;
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(20));
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ms: Vec<f64> = seen.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Ok(json!({
        "side": "rust",
        "threads": threads,
        "batch": batch,
        "texts": count,
        "batches": seen.len(),
        "full_batches": seen.iter().filter(|(n, _)| *n == batch).count(),
        "seconds": seconds,
        "texts_per_s": count as f64 / seconds,
        "batch_ms_p50": percentile(&ms, 0.5),
        "batch_ms_p99": percentile(&ms, 0.99),
    }))
}

struct Compare {
    work: Work,
    python: PathBuf,
    script: PathBuf,
    threads: Vec<usize>,
    batches: Vec<usize>,
    rounds: usize,
    report: PathBuf,
    raw: PathBuf,
}

/// Runs a command that prints one JSON line last.
fn json_line(command: &mut Command) -> anyhow::Result<Value> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{command:?} printed no JSON line: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("{command:?} printed {line}"))
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
        "--passes".into(),
        work.passes.to_string(),
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn compare(c: &Compare) -> anyhow::Result<()> {
    let mut describe = Command::new(&c.python);
    describe.arg(&c.script).args(work_args(&c.work)).args([
        "--describe",
        "--batches",
        &c.batches
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]);
    let about = json_line(&mut describe)?;
    if let Some(dir) = c.raw.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut raw = String::new();
    let mut runs: Vec<Value> = Vec::new();
    for round in 0..c.rounds {
        for &threads in &c.threads {
            for &batch in &c.batches {
                // Alternate which side goes first, so neither always runs on a machine the other
                // just heated.
                let sides = if round % 2 == 0 {
                    ["rust", "python"]
                } else {
                    ["python", "rust"]
                };
                for side in sides {
                    let mut v = json_line(&mut side_command(c, side, threads, batch)?)?;
                    v["round"] = json!(round);
                    eprintln!(
                        "round {round} threads {threads} batch {batch:>2} {side:>6}: {:7.1} texts/s  batch p50 {:8.2} ms  p99 {:8.2} ms  full {}/{}",
                        v["texts_per_s"].as_f64().unwrap_or(f64::NAN),
                        v["batch_ms_p50"].as_f64().unwrap_or(f64::NAN),
                        v["batch_ms_p99"].as_f64().unwrap_or(f64::NAN),
                        v["full_batches"],
                        v["batches"],
                    );
                    raw.push_str(&format!("{v}\n"));
                    std::fs::write(&c.raw, &raw)?;
                    runs.push(v);
                }
            }
        }
    }
    let report = render(c, &about, &runs);
    std::fs::write(&c.report, &report)?;
    println!("{report}");
    Ok(())
}

/// One side's medians over the rounds of one configuration.
struct Cell {
    per_s: f64,
    p50: f64,
    p99: f64,
    per_round: Vec<f64>,
}

fn cell(runs: &[Value], side: &str, threads: usize, batch: usize) -> Cell {
    let mine: Vec<&Value> = runs
        .iter()
        .filter(|v| v["side"] == side && v["threads"] == threads && v["batch"] == batch)
        .collect();
    let field = |name: &str| -> Vec<f64> {
        mine.iter()
            .map(|v| v[name].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    Cell {
        per_s: median(field("texts_per_s")),
        p50: median(field("batch_ms_p50")),
        p99: median(field("batch_ms_p99")),
        per_round: field("texts_per_s"),
    }
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
        .find(|p| p.trim_start().starts_with(needle.trim_start()))
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

fn render(c: &Compare, about: &Value, runs: &[Value]) -> String {
    let a = |k: &str| about[k].clone();
    let f = |k: &str| about[k].as_f64().unwrap_or(f64::NAN);
    let mut out = String::new();
    out.push_str("# Reward-scoring benchmark\n\n");
    out.push_str(&format!(
        "Generated by `scripts/bench-reward.sh` on {}. Nothing else ran on the machine; the two sides ran \
         alternately in fresh processes (which goes first flips every round), {} rounds over every \
         configuration; each figure is the median over the rounds.\n\n",
        machine(),
        c.rounds
    ));
    out.push_str("**What is timed.** Texts per second (= steps/s; one step's answer is one text), tokenization \
         included, over the whole text file after a warm-up of the first ");
    out.push_str(&format!(
        "{} texts:\n\n\
         - **Rust**: the reward service's model thread (`clawline_reward::model::RewardModel`) with `max_batch` = batch, \
         fed through `RewardModel::logits` with 2 × batch requests in flight so every batch is full (the *full* column \
         counts full batches / batches). Per batch the thread tokenizes with `tokenizers` {} (`encode_batch`), builds \
         the int64 tensors and runs ONNX Runtime through `ort` {}. Batch latency is the thread's own \
         (tokenize + run + reply), from its batch observer.\n\
         - **Python**: a plain loop over batches in the same order: `tokenizers` {} `encode_batch`, numpy int64 arrays \
         (input_ids, attention_mask, token_type_ids), `InferenceSession.run` with onnxruntime {} (Python {}, numpy {}). \
         Batch latency is that loop body.\n\n\
         Both sides: the same `model.onnx` and `tokenizer.json`, ONNX Runtime 1.32.0 (the same wheel's \
         `libonnxruntime.so` for Rust), CPU provider, `threads` intra-op threads, 1 inter-op thread, all graph \
         optimizations (Rust `Level3`, Python `ORT_ENABLE_ALL`), default spinning; texts truncated to {} tokens from \
         the left (the service's default side) and padded to the batch's longest text. Tokenization's `encode_batch` is \
         parallel (rayon) on both sides. Compiled with {}, release profile.\n\n",
        c.work.warmup,
        locked("tokenizers"),
        locked("ort"),
        a("tokenizers").as_str().unwrap_or("?"),
        a("onnxruntime").as_str().unwrap_or("?"),
        a("python").as_str().unwrap_or("?"),
        a("numpy").as_str().unwrap_or("?"),
        c.work.max_length,
        rustc(),
    ));
    out.push_str(&format!(
        "**Model.** MiniLM-sized BERT classifier from `scripts/make_reward_model.py transformer` (random weights, seed 0): \
         {} layers, hidden {}, {} heads, intermediate {}, vocabulary {}, {:.1} M parameters; \
         logits [batch, 2]. Tokenizer: the real all-MiniLM-L6-v2 WordPiece `tokenizer.json`.\n\n",
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
        "**Texts.** `{}`: {} assistant answers of {}–{} words (mean {:.1}); {:.1} tokens per text on average \
         (min {}, max {} after truncation; {} texts longer than {} tokens were cut). Padded to the batch's longest, a \
         text costs {} tokens on average.\n\n",
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
            .map(|&b| format!("{:.1} at batch {b}", padded(b)))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str("## Results\n\n");
    out.push_str(
        "| threads | batch | Rust texts/s | Python texts/s | Rust ÷ Python | per round | Rust batch p50 / p99 ms | Python batch p50 / p99 ms | ≥ 0.95× Python |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut met = 0;
    let mut rows = 0;
    for &threads in &c.threads {
        for &batch in &c.batches {
            let r = cell(runs, "rust", threads, batch);
            let p = cell(runs, "python", threads, batch);
            let ratio = r.per_s / p.per_s;
            let per_round: Vec<String> = r
                .per_round
                .iter()
                .zip(&p.per_round)
                .map(|(r, p)| format!("{:.2}", r / p))
                .collect();
            let ok = ratio >= 0.95;
            rows += 1;
            met += usize::from(ok);
            out.push_str(&format!(
                "| {threads} | {batch} | {:.1} | {:.1} | **{ratio:.2}** | {} | {:.1} / {:.1} | {:.1} / {:.1} | {} |\n",
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
    let full: Vec<String> = runs
        .iter()
        .filter(|v| v["side"] == "rust" && v["full_batches"] != v["batches"])
        .map(|v| {
            format!(
                "threads {} batch {}: {}/{}",
                v["threads"], v["batch"], v["full_batches"], v["batches"]
            )
        })
        .collect();
    out.push_str(&format!(
        "\n**Target** (≥ 0.95× Python): met in {met} of {rows} configurations. *Per round* is Rust ÷ Python within each \
         round. {}\n",
        if full.is_empty() {
            "Every Rust batch was full.".to_string()
        } else {
            format!("Rust runs with partial batches: {}.", full.join("; "))
        }
    ));
    out
}
