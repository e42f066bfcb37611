#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The archive on S3-compatible storage: a real S3 server (s3s-fs, installed by
//! `scripts/setup.sh --test`) on a temporary directory, the archiver process writing to
//! `s3://bucket/prefix`, and SQL reading it back through `object_store`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawline_history::{ArchiveRoot, Scope, SqlConfig, SqlEngine};
use clawline_nats::testing::NatsServer;
use common::*;
use serde_json::json;

const KEY: &str = "clawline-test";
const SECRET: &str = "clawline-test-secret";

/// An s3s-fs server on a free loopback port, killed on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    fn start(bucket: &str) -> Self {
        let bin = std::env::var_os("S3S_FS_BIN").map_or_else(
            || {
                let cache = std::env::var_os("CLAWLINE_CACHE").map_or_else(
                    || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/clawline"),
                    PathBuf::from,
                );
                cache.join("s3s/bin/s3s-fs")
            },
            PathBuf::from,
        );
        assert!(
            bin.exists(),
            "{} missing: run scripts/setup.sh --test",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(bucket)).unwrap();
        let port = clawline_nats::server::free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// `object_store`'s S3 settings for this server; the archiver process gets them as `AWS_*`.
    fn options(&self) -> [(&'static str, String); 5] {
        [
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", KEY.into()),
            ("aws_secret_access_key", SECRET.into()),
            ("aws_region", "us-east-1".into()),
        ]
    }

    fn root(&self, url: &str) -> ArchiveRoot {
        let options = self.options();
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ArchiveRoot::s3(url, &options).unwrap()
    }

    fn archiver(&self, nats: &NatsServer, url: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_clawline-history"))
            .args(["archive", "--nats-url", &nats.url(), "--archive-dir", url])
            .args(["--roll-rows", "200", "--roll-secs", "1"])
            .envs(self.options().map(|(k, v)| (k.to_uppercase(), v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

async fn wait_checkpoint(root: &ArchiveRoot, stream: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let at = clawline_history::archive::read_checkpoint(root, stream)
            .await
            .unwrap()
            .last_seq;
        if at >= at_least {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {at} < {at_least} on {root}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_archive_on_s3_resumes_after_kill_9_and_answers_sql() {
    let s3 = S3Server::start("history");
    let url = "s3://history/clawline/archive";
    let root = s3.root(url);
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    publish_steps(&js, "acme", 0..2000).await;

    let mut first = s3.archiver(&nats, url);
    wait_checkpoint(&root, "STEPS", 400).await;
    first.kill().unwrap(); // SIGKILL, mid-stream
    first.wait().unwrap();
    publish_steps(&js, "acme", 2000..2500).await;
    let mut second = s3.archiver(&nats, url);
    wait_checkpoint(&root, "STEPS", 2500).await;
    second.kill().unwrap();
    second.wait().unwrap();

    // The objects are in the bucket (s3s-fs keeps them as files under its directory).
    let files = root.list("steps").await.unwrap();
    assert!(
        files.iter().any(|f| f.ends_with(".parquet")),
        "no Parquet objects: {files:?}"
    );
    assert!(
        s3.dir
            .path()
            .join("history/clawline/archive/_checkpoints/STEPS.json")
            .exists()
    );

    let sql = SqlEngine::new(
        SqlConfig {
            root: root.clone(),
            ..Default::default()
        },
        Some(js.clone()),
    );
    let rows = query_json(
        &sql,
        "SELECT count(*) AS n, count(DISTINCT step_id) AS ids, min(stream_seq) AS lo, max(stream_seq) AS hi FROM steps",
        &Scope::All,
    )
    .await;
    assert_eq!(
        rows[0],
        json!({"n": 2500, "ids": 2500, "lo": 1, "hi": 2500})
    );
    // Archive only: the same rows come from the objects alone.
    let archived = SqlEngine::new(
        SqlConfig {
            root,
            ..Default::default()
        },
        None,
    );
    let rows = query_json(&archived, "SELECT count(*) AS n FROM steps", &Scope::All).await;
    assert_eq!(rows[0], json!({"n": 2500}));
}

#[test]
fn an_unsupported_archive_location_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_clawline-history"))
        .args(["archive", "--archive-dir", "ftp://host/archive"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--archive-dir") && err.contains("unsupported archive location"),
        "{err}"
    );
}
