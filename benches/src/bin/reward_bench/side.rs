//! The Rust side: texts, timing, one configuration measured or served chunk by chunk.

use super::*;

pub(crate) fn load_texts(path: &Path) -> anyhow::Result<Vec<String>> {
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
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Busy CPU seconds so far of the whole machine (every core; steal counted as busy) and of this
/// process, from `/proc` (clock ticks of 10 ms). The Python side reads the same.
pub(crate) fn cpu_seconds() -> (f64, f64) {
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
pub(crate) struct RustSide {
    pub(crate) model: RewardModel,
    pub(crate) runtime: tokio::runtime::Runtime,
    /// (texts, time) of every batch, from the model thread's observer.
    pub(crate) seen: Arc<Mutex<Vec<(usize, Duration)>>>,
    pub(crate) texts: Vec<String>,
    pub(crate) threads: usize,
    pub(crate) batch: usize,
}

impl RustSide {
    pub(crate) fn load(
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
    pub(crate) fn score(&self, texts: Vec<String>) -> anyhow::Result<f64> {
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

    pub(crate) fn timed(&self, texts: Vec<String>) -> anyhow::Result<Value> {
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

    pub(crate) fn serve(&self) -> anyhow::Result<()> {
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

pub(crate) fn chunk_command(line: &str) -> anyhow::Result<(usize, usize)> {
    let mut parts = line.split_whitespace().map(str::parse::<usize>);
    match (parts.next(), parts.next()) {
        (Some(Ok(start)), Some(Ok(count))) => Ok((start, count)),
        _ => bail!("expected `START COUNT`, got {line:?}"),
    }
}

/// One timed run, in the shape the Python side prints too.
#[expect(clippy::too_many_arguments, reason = "one JSON shape, two callers")]
pub(crate) fn turn_json(
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
