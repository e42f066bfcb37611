//! Pooling the turns and writing the report.

use super::*;

/// One side's kept turns of one configuration, pooled.
pub(crate) struct Cell {
    pub(crate) per_s: f64,
    pub(crate) per_round: Vec<f64>,
    p50: f64,
    p99: f64,
    pub(crate) batches: usize,
    pub(crate) full_batches: usize,
}

pub(crate) fn cell(
    turns: &[Value],
    side: &str,
    threads: usize,
    batch: usize,
    rounds: usize,
) -> Cell {
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
pub(crate) fn logits_gap(turns: &[Value]) -> f64 {
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
pub(crate) fn left_out(turns: &[Value]) -> usize {
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
pub(crate) fn ratio_interval(turns: &[Value], threads: usize, batch: usize) -> (f64, f64) {
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

pub(crate) fn machine() -> String {
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
pub(crate) fn locked(name: &str) -> String {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let needle = format!("name = \"{name}\"\n");
    lock.split("[[package]]")
        .find(|p| p.trim_start().starts_with(&needle))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("?".into(), |v| v.trim_matches('"').to_string())
}

pub(crate) fn rustc() -> String {
    Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rustc ?".into())
}

pub(crate) fn render(c: &Compare, about: &Value, turns: &[Value]) -> String {
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
