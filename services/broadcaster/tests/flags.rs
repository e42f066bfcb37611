#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The broadcaster's flags: a bad canary file or limit stops it at start, named.

use std::path::Path;

use clap::Parser as _;
use clawline_model::init::{InitOptions, init};
use clawline_runtime::CancellationToken;

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        &InitOptions {
            vocab_size: 512,
            seed: 0,
            force: false,
            warm_start_steps: 0,
        },
    )
    .unwrap();
    dir
}

/// The broadcaster's error for `flags` (it fails before connecting to NATS).
async fn start_error(model: &Path, flags: &[&str]) -> String {
    let work = tempfile::tempdir().unwrap();
    let mut args = vec![
        "clawline-broadcaster",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--base-model",
        model.to_str().unwrap(),
        "--work-dir",
        work.path().to_str().unwrap(),
        "--engine",
        "policy=clawline:http://127.0.0.1:1",
        "--canary",
    ];
    args.extend_from_slice(flags);
    let config = clawline_broadcaster::Args::try_parse_from(args)
        .unwrap()
        .settings();
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let err = clawline_broadcaster::run(config, listener, CancellationToken::new())
        .await
        .unwrap_err();
    format!("{err:#}")
}

#[tokio::test]
async fn bad_canary_flags_are_named_with_the_file_and_line() {
    let model = model_dir();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let err = start_error(
        model.path(),
        &["--canary-references", missing.to_str().unwrap()],
    )
    .await;
    assert!(
        err.contains(&format!("--canary-references {}", missing.display())),
        "{err}"
    );
    let bad = dir.path().join("refs.jsonl");
    std::fs::write(
        &bad,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"reference\": \"Hello!\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n",
    )
    .unwrap();
    let err = start_error(
        model.path(),
        &["--canary-references", bad.to_str().unwrap()],
    )
    .await;
    assert!(
        err.contains(&format!("--canary-references {}", bad.display()))
            && err.contains("line 2: no \"reference\""),
        "{err}"
    );
    let err = start_error(model.path(), &["--canary-max-kl=-1"]).await;
    assert!(err.contains("--canary-max-kl must be at least 0"), "{err}");
}
