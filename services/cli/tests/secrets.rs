//! Secrets never reach the logs: `clawline up` at debug level, against a NATS server that demands
//! a password, with API keys, a request with a wrong key and one with the right key. Neither the
//! NATS password, nor any key — right or wrong — appears in anything it printed.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clawline_mock_vllm::{MockConfig, MockVllm};
use clawline_nats::server::{LocalServer, LocalServerConfig};
use serde_json::json;

const NATS_PASSWORD: &str = "pw-sekret-4711";
const API_KEY: &str = "sk-sekret-0001";
const WRONG_KEY: &str = "sk-wrong-0002";

#[tokio::test]
async fn no_password_or_key_is_ever_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LocalServerConfig::new(dir.path().join("nats"));
    config.extra = format!(
        "authorization {{\n  users = [{{user: \"clawline\", password: \"{NATS_PASSWORD}\"}}]\n}}\n"
    );
    let nats = LocalServer::start(config).unwrap();
    let mock = MockVllm::start(MockConfig::default()).await.unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{API_KEY} acme admin\n")).unwrap();
    let (out, err) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let listen = addr();
    let mut up = Command::new(env!("CARGO_BIN_EXE_clawline"))
        .args(["--log-level", "debug", "up", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--nats-url", &nats.url(), "--upstream", &mock.url])
        .args(["--listen", &listen, "--api-keys", keys.to_str().unwrap()])
        .args(["--reward-listen", &addr(), "--batcher-listen", &addr()])
        .args(["--sql-listen", &addr()])
        .env("CLAWLINE_NATS_USER", "clawline")
        .env("CLAWLINE_NATS_PASSWORD", NATS_PASSWORD)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_ready(&http, &url).await {
        assert!(
            up.try_wait().unwrap().is_none(),
            "clawline up exited: {}",
            std::fs::read_to_string(&err).unwrap()
        );
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let wrong = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(WRONG_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(up.wait().unwrap().success());

    let logs = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    assert!(
        logs.contains("DEBUG"),
        "debug logging was on: {}",
        &logs[..logs.len().min(500)]
    );
    for secret in [NATS_PASSWORD, API_KEY, WRONG_KEY] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}
