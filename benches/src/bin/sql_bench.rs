//! SQL benchmark: a generated archive (steps with rewards and feedback), a fixed set of realistic
//! queries on DataFusion (through clawline's SQL engine, as `clawline sql` runs them) and on DuckDB
//! over the same Parquet files in the same run, and the capture-to-queryable latency. Writes
//! `benches/results/sql.md`. Run through `scripts/bench-sql.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use clawline_benches::median;
use clawline_history::archive::{Checkpoint, checkpoint_path, file_name, partition_dir};
use clawline_history::tables::{self, Row};
use clawline_history::{Scope, SqlConfig, SqlEngine};
use clawline_nats::server::{LocalServer, LocalServerConfig};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Steps in the generated archive (each with one reward; one in ten with feedback).
    #[arg(long, default_value_t = 10_000_000)]
    steps: u64,
    /// Where the archive is generated (reused when it already holds `--steps`).
    #[arg(long)]
    archive: PathBuf,
    /// Python with duckdb installed.
    #[arg(long)]
    python: PathBuf,
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[arg(long, default_value = "benches/results/sql.md")]
    report: PathBuf,
    /// Run only the queries whose name contains this (for exploring; write the report elsewhere).
    #[arg(long)]
    only: Option<String>,
    /// Print DataFusion's `EXPLAIN ANALYZE` of each query (to stderr) before timing it.
    #[arg(long)]
    explain: bool,
}

/// (name, DataFusion SQL, DuckDB SQL)
const QUERIES: &[(&str, &str, &str)] = &[
    (
        "reward by day and policy version",
        "SELECT s.date, s.policy_version, avg(r.value) AS reward, count(*) AS n FROM steps s JOIN rewards r ON r.step_id = s.step_id GROUP BY s.date, s.policy_version ORDER BY 1, 2",
        "SELECT s.date, s.policy_version, avg(r.value) AS reward, count(*) AS n FROM steps s JOIN rewards r ON r.step_id = s.step_id GROUP BY s.date, s.policy_version ORDER BY 1, 2",
    ),
    (
        "top trajectories by reward",
        "SELECT s.trajectory_uid, sum(r.value) AS total FROM steps s JOIN rewards r ON r.step_id = s.step_id GROUP BY s.trajectory_uid ORDER BY total DESC, s.trajectory_uid LIMIT 10",
        "SELECT s.trajectory_uid, sum(r.value) AS total FROM steps s JOIN rewards r ON r.step_id = s.step_id GROUP BY s.trajectory_uid ORDER BY total DESC, s.trajectory_uid LIMIT 10",
    ),
    (
        "reward by explicit feedback",
        "SELECT f.thumbs, avg(r.value) AS reward, count(*) AS n FROM feedback f JOIN rewards r ON r.step_id = f.step_id GROUP BY f.thumbs ORDER BY 1",
        "SELECT f.thumbs, avg(r.value) AS reward, count(*) AS n FROM feedback f JOIN rewards r ON r.step_id = f.step_id GROUP BY f.thumbs ORDER BY 1",
    ),
    (
        "token counts by tenant",
        "SELECT tenant, sum(cardinality(prompt_ids)) AS prompt_tokens, sum(cardinality(response_ids)) AS response_tokens FROM steps GROUP BY tenant ORDER BY 1",
        "SELECT tenant, sum(len(prompt_ids)) AS prompt_tokens, sum(len(response_ids)) AS response_tokens FROM steps GROUP BY tenant ORDER BY 1",
    ),
    (
        "policy lag histogram",
        "SELECT 12 - policy_version AS lag, count(*) AS n FROM steps GROUP BY 1 ORDER BY 1",
        "SELECT 12 - policy_version AS lag, count(*) AS n FROM steps GROUP BY 1 ORDER BY 1",
    ),
    (
        "latency p50/p99 by model",
        "SELECT upstream_model, approx_percentile_cont(latency_ms, 0.5) AS p50, approx_percentile_cont(latency_ms, 0.99) AS p99 FROM steps GROUP BY 1 ORDER BY 1",
        "SELECT upstream_model, approx_quantile(latency_ms, 0.5) AS p50, approx_quantile(latency_ms, 0.99) AS p99 FROM steps GROUP BY 1 ORDER BY 1",
    ),
    (
        "trajectories per channel and day",
        "SELECT channel, date, count(DISTINCT trajectory_uid) AS trajectories FROM steps GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT channel, date, count(DISTINCT trajectory_uid) AS trajectories FROM steps GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "apologies per tenant",
        "SELECT tenant, count(*) AS n FROM steps WHERE response_text LIKE '%Sorry%' GROUP BY 1 ORDER BY 1",
        "SELECT tenant, count(*) AS n FROM steps WHERE response_text LIKE '%Sorry%' GROUP BY 1 ORDER BY 1",
    ),
    (
        "reward sources",
        "SELECT source, avg(value) AS mean, stddev(value) AS sd FROM rewards GROUP BY 1 ORDER BY 1",
        "SELECT source, avg(value) AS mean, stddev(value) AS sd FROM rewards GROUP BY 1 ORDER BY 1",
    ),
    (
        "steps per hour",
        "SELECT date_trunc('hour', event_time) AS hour, count(*) AS n FROM steps GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('hour', event_time) AS hour, count(*) AS n FROM steps GROUP BY 1 ORDER BY 1",
    ),
];

const T0: i64 = 1_795_000_000_000; // 2026-11-17
const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const MODELS: [&str; 3] = ["qwen-1.5b", "llama-8b", "mistral-7b"];
/// How answers open; each answer goes on with its own numbers, so (as in real traffic) nearly
/// every response text is distinct. With a handful of fixed texts, Parquet stores the column as a
/// dictionary and an engine can evaluate `LIKE` on the dictionary alone, which real archives
/// never allow.
const OPENERS: [&str; 4] = [
    "Sure, here is the answer:",
    "Sorry, I cannot help with that request.",
    "First, open the file; then run the script and check the result.",
    "The capital of France is Paris.",
];
/// Bumped when the generated data changes, so a cached archive is generated again.
const GENERATOR: &str = "v2";

fn response_text(i: u64, r: u64) -> String {
    let (a, b) = (2 + (r >> 28) % 97, 2 + (r >> 36) % 89);
    let (opener, days, total) = (OPENERS[((r >> 4) % 4) as usize], 1 + (r >> 44) % 30, a * b);
    format!(
        "{opener} Order {i} ships in {days} days; the total is {total} because {a} times {b} is {total}."
    )
}

fn rng(i: u64) -> u64 {
    // splitmix64: deterministic data, no dependency.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rows_for(i: u64) -> (Row, Row, Option<Row>) {
    let r = rng(i);
    let tenant = TENANTS[(r % 4) as usize];
    let channel = if r.is_multiple_of(10) { "val" } else { "train" };
    let traj = format!("t{}", i / 3);
    let step_id = format!("stp_{i:016x}");
    // Seven days of traffic.
    let t = T0 + (i as i64 * 604_800_000) / 10_000_000 + (r % 1000) as i64;
    let prompt: Vec<u64> = (0..32).map(|k| (r >> (k % 48)) % 50_000).collect();
    let response: Vec<u64> = (0..16).map(|k| (r >> (k % 40)) % 50_000).collect();
    let step = json!({
        "event_id": step_id, "event_time": t, "producer": "gateway", "schema_version": 1, "tenant": tenant, "channel": channel,
        "trajectory_uid": traj, "prompt_uid": format!("p{}", i % 5000), "step_index": i % 3, "choice_index": 0,
        "is_last": i % 3 == 2, "policy_version": 8 + (r >> 8) % 5, "source": "chat",
        "messages": [{"role": "user", "content": "question"}], "response_text": response_text(i, r),
        "token_source": "engine", "prompt_ids": prompt, "response_ids": response,
        "response_logprobs": vec![-0.5; 16], "upstream_model": MODELS[((r >> 12) % 3) as usize],
        "latency_ms": 50.0 + ((r >> 16) % 2000) as f64 / 3.0, "stream": false,
    });
    let reward = json!({
        "event_id": format!("rwd_{i:016x}"), "event_time": t + 50, "producer": "reward", "tenant": tenant,
        "channel": channel, "trajectory_uid": traj, "scope": "step", "step_id": step_id,
        "source": if r.is_multiple_of(2) { "rm:bundled@0123abcd" } else { "rule:gsm8k" }, "source_version": "v",
        "value": ((r >> 20) % 1000) as f64 / 1000.0, "caused_by": step_id,
    });
    let feedback = (r % 10 == 3).then(|| json!({
        "event_id": format!("fbk_{i:016x}"), "event_time": t + 5000, "tenant": tenant, "trajectory_uid": traj,
        "step_id": step_id, "kind": "explicit", "thumbs": if (r >> 24).is_multiple_of(3) { "down" } else { "up" },
    }));
    let row = |json, seq| Row {
        seq,
        subject: String::new(),
        json,
    };
    (
        row(step, i + 1),
        row(reward, i + 1),
        feedback.map(|f| row(f, i + 1)),
    )
}

/// Writes the archive in chunks: one file per (table, day, channel) per chunk.
fn generate(root: &Path, steps: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(root);
    let chunk = 500_000u64;
    let mut first = 0u64;
    while first < steps {
        let last = (first + chunk).min(steps);
        let (mut s, mut r, mut f) = (Vec::new(), Vec::new(), Vec::new());
        for i in first..last {
            let (a, b, c) = rows_for(i);
            s.push(a);
            r.push(b);
            f.extend(c);
        }
        for (table, rows, stream) in [
            ("steps", s, "STEPS"),
            ("rewards", r, "REWARDS"),
            ("feedback", f, "TRAJECTORIES"),
        ] {
            let table = tables::table(table).context("table")?;
            let mut groups: std::collections::BTreeMap<(String, String), Vec<Row>> =
                Default::default();
            for row in rows {
                groups.entry(row.partition(table)).or_default().push(row);
            }
            for ((date, channel), rows) in groups {
                let dir = partition_dir(root, table, &date, &channel);
                std::fs::create_dir_all(&dir)?;
                let batch = tables::to_batch(table, &rows, false)?;
                let file = std::fs::File::create(dir.join(file_name(stream, first + 1, last)))?;
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let mut w =
                    parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
                w.write(&batch)?;
                w.close()?;
            }
        }
        eprint!("\rgenerated {last}/{steps} steps");
        first = last;
    }
    eprintln!();
    for stream in ["STEPS", "REWARDS", "TRAJECTORIES"] {
        let path = checkpoint_path(root, stream);
        std::fs::create_dir_all(path.parent().context("dir")?)?;
        std::fs::write(
            path,
            serde_json::to_vec(&Checkpoint {
                last_seq: steps,
                ..Default::default()
            })?,
        )?;
    }
    std::fs::write(root.join("_generated"), format!("{steps} {GENERATOR}"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let existing = std::fs::read_to_string(args.archive.join("_generated")).ok();
    if existing.as_deref() != Some(format!("{} {GENERATOR}", args.steps).as_str()) {
        let started = Instant::now();
        generate(&args.archive, args.steps)?;
        eprintln!(
            "archive generated in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let bytes: u64 = {
        let mut files = Vec::new();
        clawline_history::store::walk(&args.archive, &mut files);
        files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    };

    // DataFusion, as `clawline sql --archive-only` runs it.
    let engine = SqlEngine::new(
        SqlConfig {
            root: clawline_history::ArchiveRoot::local(&args.archive),
            memory_limit: 8 << 30,
            timeout: Duration::from_secs(600),
        },
        None,
    );
    let queries: Vec<_> = QUERIES
        .iter()
        .filter(|(name, _, _)| args.only.as_ref().is_none_or(|o| name.contains(o.as_str())))
        .collect();
    // DuckDB over the same files, in one Python process: a query per line in, its time and row
    // count per line out, so the two engines can take turns on each query.
    let duck_script = r#"
import duckdb, json, sys, time
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
for t in ["steps", "rewards", "feedback"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{sys.argv[1]}/{t}/**/*.parquet', hive_partitioning=true)")
for line in sys.stdin:
    q = json.loads(line)
    s = time.perf_counter(); rows = con.execute(q).fetchall(); t = time.perf_counter() - s
    print(json.dumps({"time": t, "rows": len(rows)}), flush=True)
"#;
    let mut duck = Command::new(&args.python)
        .args(["-c", duck_script])
        .arg(&args.archive)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("python with duckdb")?;
    let mut duck_in = duck.stdin.take().context("stdin")?;
    let mut duck_out = std::io::BufReader::new(duck.stdout.take().context("stdout")?);
    // Owns DuckDB's stdin: dropping it ends the Python process.
    let mut duck_run = move |q: &str| -> anyhow::Result<(f64, usize)> {
        use std::io::{BufRead as _, Write as _};
        writeln!(duck_in, "{}", serde_json::to_string(q)?)?;
        let mut line = String::new();
        duck_out.read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line).context("duckdb failed on a query")?;
        Ok((
            v["time"].as_f64().context("time")?,
            v["rows"].as_u64().context("rows")? as usize,
        ))
    };
    // Each query: the engines take turns, which goes first alternating, so a slow spell of this
    // shared machine or a warmer page cache does not favour either.
    let mut results = Vec::new();
    for (name, q, duck_q) in &queries {
        if args.explain {
            let plan = engine
                .query(&format!("EXPLAIN ANALYZE {q}"), &Scope::All)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let text = clawline_history::sql::render(&plan, clawline_history::sql::Format::Csv)?;
            eprintln!("{}", String::from_utf8_lossy(&text));
        }
        let (mut df, mut dk) = (Vec::new(), Vec::new());
        let mut df_rows = 0;
        for run in 0..args.runs {
            if run % 2 == 1 {
                dk.push(duck_run(duck_q)?);
            }
            let started = Instant::now();
            let answer = engine
                .query(q, &Scope::All)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            df.push(started.elapsed().as_secs_f64());
            df_rows = answer.batches.iter().map(|b| b.num_rows()).sum::<usize>();
            if run % 2 == 0 {
                dk.push(duck_run(duck_q)?);
            }
        }
        let dk_rows = dk.last().map_or(0, |(_, n)| *n);
        let (df, dk) = (median(df), median(dk.into_iter().map(|(t, _)| t).collect()));
        eprintln!("{name}: DataFusion {df:.3} s, DuckDB {dk:.3} s");
        results.push((df, dk, df_rows, dk_rows));
    }
    drop(duck_run);
    anyhow::ensure!(duck.wait()?.success(), "duckdb exited with an error");

    // Capture to queryable: publish a step, query until it is there.
    let dir = tempfile::tempdir()?;
    let server = LocalServer::start(LocalServerConfig::new(dir.path().join("nats")))?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    clawline_nats::ensure_topology(&js, &Default::default()).await?;
    let live = SqlEngine::new(
        SqlConfig {
            root: clawline_history::ArchiveRoot::local(dir.path().join("archive")),
            ..Default::default()
        },
        Some(js.clone()),
    );
    let mut latencies = Vec::new();
    for i in 0..20u64 {
        let (step, _, _) = rows_for(i);
        let id = step.json["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut step: clawline_schemas::StepRecorded = serde_json::from_value(step.json)?;
        step.envelope.event_time = clawline_schemas::now_ms();
        let started = Instant::now();
        clawline_nats::publish_event(&js, clawline_nats::subjects::steps("train"), &step).await?;
        loop {
            let a = live
                .query(
                    &format!("SELECT count(*) FROM steps WHERE step_id = '{id}'"),
                    &Scope::All,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let n = arrow::array::cast::as_primitive_array::<arrow::datatypes::Int64Type>(
                a.batches[0].column(0),
            )
            .value(0);
            if n > 0 {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let mut table = String::from(
        "| query | DataFusion (s) | DuckDB (s) | ratio | rows |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut log_sum = 0.0;
    for ((name, _, _), (df, dk, df_rows, dk_rows)) in queries.iter().zip(&results) {
        let ratio = df / dk;
        log_sum += ratio.ln();
        table.push_str(&format!(
            "| {name} | {df:.3} | {dk:.3} | {ratio:.2} | {df_rows} / {dk_rows} |\n"
        ));
    }
    let geo = (log_sum / queries.len() as f64).exp();
    let p50 = median(latencies.clone());
    let max = latencies.iter().copied().fold(0.0, f64::max);
    let report = format!(
        "# SQL benchmark\n\nGenerated by `scripts/bench-sql.sh` (`benches/src/bin/sql_bench.rs`) on this machine (2 cores).\n\n\
         **Data:** {steps} steps (32 prompt + 16 response token ids, logprobs, a response text that is \
         nearly always distinct, as real answers are — a quarter open with an apology), {steps} rewards and \
         {fb} feedback events over 7 days, 4 tenants, 2 channels, written as the archiver writes them \
         (zstd Parquet, hive-partitioned by day and channel, 500 000 rows a file): {gib:.2} GiB.\n\n\
         **Engines:** DataFusion 55.2 through clawline's SQL engine (the tables `clawline sql` sees, archive \
         only, memory pool 8 GiB) and DuckDB (Python package, 2 threads) with views over the same files; \
         medians of {runs} runs each, in the same run, the engines taking turns on each query.\n\n{table}\n\
         **Geometric-mean ratio DataFusion / DuckDB: {geo:.2}** (target ≤ 1.2: {verdict}).\n\n\
         **Capture to queryable** (publish a step to JetStream, then query `steps` until it is there, \
         through the live tail): median {p50:.1} ms, worst of 20 {max:.1} ms (target ≤ 2 s: {lat}).\n",
        steps = args.steps,
        fb = args.steps / 10,
        gib = bytes as f64 / (1u64 << 30) as f64,
        runs = args.runs,
        verdict = if geo <= 1.2 { "met" } else { "not met" },
        lat = if max <= 2000.0 { "met" } else { "not met" },
    );
    std::fs::create_dir_all(args.report.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&args.report, &report)?;
    println!("{report}");
    Ok(())
}
