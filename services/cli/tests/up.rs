//! `clawline up` starts nats-server, the gateway, the reward scorer, the batcher, the archive and —
//! without `--upstream` — the built-in policy server, trainer and broadcaster; serves, stops
//! cleanly on SIGTERM, starts a killed nats-server again, and a second run resumes from the data
//! dir.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;
use common::*;

/// nats-server killed under `clawline up`.
#[path = "up/recovery.rs"]
mod recovery;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_runtime::testing::Answer as _;
use serde_json::{Value, json};

/// The SQL port of the `clawline up` serving on `http_port`: one free port per test, remembered.
fn sql_port_for(http_port: u16) -> u16 {
    static PORTS: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
    let mut ports = PORTS.lock().unwrap();
    if let Some((_, p)) = ports.iter().find(|(h, _)| *h == http_port) {
        return *p;
    }
    let p = free_port();
    ports.push((http_port, p));
    p
}

/// A running `clawline up`; a test that fails before `stop` still stops it (SIGTERM, so it also
/// stops its nats-server), leaving nothing running behind.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn up(data_dir: &std::path::Path, nats_port: u16, http_port: u16, upstream: &str) -> Up {
    let sql_port = sql_port_for(http_port);
    Up(Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--nats-port", &nats_port.to_string()])
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .args(["--upstream", upstream])
        .args(["--reward-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--batcher-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--sql-listen", &format!("127.0.0.1:{sql_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

async fn wait_ready(http: &reqwest::Client, url: &str, up: &mut Up) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if is_ready(http, url).await {
            return;
        }
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "clawline up exited early"
        );
        assert!(Instant::now() < deadline, "clawline up not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(mut up: Up) {
    let child = &mut up.0;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clawline up exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "clawline up did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored_steps(nats_port: u16) -> u64 {
    stream_messages(nats_port, "STEPS").await
}

async fn stream_messages(nats_port: u16, stream: &str) -> u64 {
    let client = async_nats_client(nats_port).await;
    let js = clawline_nats::async_nats::jetstream::new(client);
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Reward-model rewards stored (`clawline.rewards.rm`; the rules score the same steps apart).
async fn rm_rewards(nats_port: u16) -> u64 {
    use futures::StreamExt as _;
    let client = async_nats_client(nats_port).await;
    let js = clawline_nats::async_nats::jetstream::new(client);
    let stream = js.get_stream("REWARDS").await.unwrap();
    let mut subjects = stream
        .info_with_subjects(clawline_nats::subjects::rewards("rm"))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(subject) = subjects.next().await {
        n += subject.unwrap().1 as u64;
    }
    n
}

/// Waits (bounded) until the reward scorer has published `n` reward-model rewards.
async fn wait_rewards(nats_port: u16, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let count = rm_rewards(nats_port).await;
        if count >= n {
            assert_eq!(count, n, "one bundled-model reward per step");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "REWARDS has {count} reward-model rewards, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn async_nats_client(port: u16) -> clawline_nats::async_nats::Client {
    clawline_nats::async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// `clawline up` serving calls from the mock engine, ready.
struct Running {
    mock: MockVllm,
    data: tempfile::TempDir,
    nats_port: u16,
    http_port: u16,
    url: String,
    http: reqwest::Client,
    child: Up,
}

impl Running {
    async fn start() -> Self {
        let mock = MockVllm::start(MockConfig::default()).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let (nats_port, http_port) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{http_port}");
        let http = reqwest::Client::new();
        let mut child = up(data.path(), nats_port, http_port, &mock.url);
        wait_ready(&http, &url, &mut child).await;
        Self {
            mock,
            data,
            nats_port,
            http_port,
            url,
            http,
            child,
        }
    }
}

#[tokio::test]
async fn clawline_up_serves_stops_cleanly_and_resumes_from_its_data_dir() {
    let run = Running::start().await;
    let (data, mock, http, url) = (&run.data, &run.mock, &run.http, &run.url);
    let (nats_port, http_port, child) = (run.nats_port, run.http_port, run.child);
    // A second `up` on the same data dir is refused (it would run a second nats-server on the
    // same JetStream store); the first goes on serving.
    let second = Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["up", "--data-dir"])
        .arg(data.path())
        .args(["--nats-port", &free_port().to_string()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream", &mock.url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let refused = clawline_runtime::testing::exits_within(
        second,
        Duration::from_secs(10),
        "a second clawline up on the same data dir",
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--data-dir") && stderr.contains("in use by another process"),
        "{stderr}"
    );
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "echo: hi"
    );
    assert_eq!(stored_steps(nats_port).await, 1);
    wait_rewards(nats_port, 1).await;
    // The batcher holds the step (a window of 8 is not full): through the gateway and the CLI.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats: Value = http
            .get(format!("{url}/v1/datapool/stats"))
            .json_answer()
            .await;
        if stats["channels"]["train"]["steps"] == 1 {
            assert_eq!(stats["channels"]["train"]["consumed_steps"], 0, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "batcher never saw the step: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args([
            "datapool",
            "stats",
            "--nats-url",
            &format!("nats://127.0.0.1:{nats_port}"),
        ])
        .output()
        .unwrap();
    let printed = clawline_runtime::testing::json_of("clawline datapool stats", out);
    assert_eq!(printed["channels"]["train"]["steps"], 1);
    // The history answers SQL at once (live tail) over HTTP.
    let rows = sql(http, http_port, "SELECT count(*) AS n FROM steps").await;
    assert_eq!(rows["rows"][0]["n"], 1, "{rows}");
    stop(child).await;
    assert!(
        async_nats_client_fails(nats_port).await,
        "nats-server still running after stop"
    );
    assert!(
        data.path().join("nats/js").is_dir(),
        "JetStream store under the data dir"
    );

    let mut child = up(data.path(), nats_port, http_port, &mock.url);
    wait_ready(http, url, &mut child).await;
    assert_eq!(
        stored_steps(nats_port).await,
        1,
        "the first run's step is still there"
    );
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "again"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stored_steps(nats_port).await, 2);
    // The scorer resumed: the new step is scored, the old one not again.
    wait_rewards(nats_port, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rm_rewards(nats_port).await, 2);
    stop(child).await;
}

/// The answer of `POST /sql` on the `clawline up` serving on `http_port`.
async fn sql(http: &reqwest::Client, http_port: u16, query: &'static str) -> Value {
    http.post(format!("http://127.0.0.1:{}/sql", sql_port_for(http_port)))
        .body(query)
        .json_answer()
        .await
}

async fn async_nats_client_fails(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        clawline_nats::async_nats::connect(format!("nats://127.0.0.1:{port}")),
    )
    .await
    .map(|r| r.is_err())
    .unwrap_or(true)
}

#[test]
fn a_bad_engine_is_a_clear_cli_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["up", "--engine", "gpu=tgi:http://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--engine") && stderr.contains("KIND"),
        "{stderr}"
    );
}

/// Without `--upstream`, `up` creates a model, serves it with the built-in policy server and runs
/// the trainer and broadcaster: an answer through the gateway names the version that produced it.
#[tokio::test]
async fn clawline_up_without_an_engine_serves_and_learns_with_the_built_in_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, trainer, broadcaster) = (free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args([
            "--nats-port",
            &free_port().to_string(),
            "--listen",
            &addr(http_port),
        ])
        .args([
            "--reward-listen",
            &addr(free_port()),
            "--batcher-listen",
            &addr(free_port()),
        ])
        .args([
            "--sql-listen",
            &addr(free_port()),
            "--policy-listen",
            &addr(free_port()),
        ])
        .args([
            "--trainer-listen",
            &addr(trainer),
            "--broadcaster-listen",
            &addr(broadcaster),
        ])
        .args(["--warm-start-steps", "0", "--device", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http_port}");
    wait_ready(&http, &url, &mut up).await;
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-clawline-policy-version"], "0");
    // The gateway counts a Messages prompt with the served model's own tokenizer: exactly the
    // prompt tokens the policy server reports for the same call.
    let call = json!({"model": "m", "max_tokens": 4, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi there"}]});
    let post = |path: &'static str, body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let answered = post("/v1/messages", call.clone()).await;
    let counted = post("/v1/messages/count_tokens", call).await;
    assert_eq!(
        counted["input_tokens"], answered["usage"]["input_tokens"],
        "{counted} vs {answered}"
    );
    for port in [trainer, broadcaster] {
        let status: Value = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .json_answer()
            .await;
        assert!(status.is_object(), "{status}");
    }
    assert!(dir.path().join("model/config.json").is_file());
    assert!(dir.path().join("batcher.toml").is_file());
    stop(up).await;
}

#[test]
fn history_commands_name_the_bad_file_or_flag() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clawline"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&[
        "import",
        "/nonexistent/logs.jsonl",
        "--channel",
        "x",
        "--nats-url",
        "nats://127.0.0.1:1",
    ]);
    assert!(
        err.contains("--nats-url") || err.contains("/nonexistent/logs.jsonl"),
        "{err}"
    );
    let err = run(&["replay", "--sql", "SELECT step_id FROM steps"]);
    assert!(err.contains("--channel"), "{err}");
    let err = run(&["sql", "SELECT 1", "--format", "parquet", "--archive-only"]);
    assert!(err.contains("--output"), "{err}");
    let err = run(&[
        "import",
        "x.jsonl",
        "--channel",
        "x",
        "--tokenizer",
        "/nonexistent/tok",
    ]);
    assert!(err.contains("--tokenizer /nonexistent/tok"), "{err}");
}
