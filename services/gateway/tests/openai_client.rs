//! The official `openai` Python package, a client nobody here wrote, works against the gateway
//! unchanged (plain, streamed, tools, models, errors), and what it saw is what was recorded.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

use clawline_runtime::testing::python;

#[tokio::test]
async fn the_official_openai_client_works_unchanged() {
    // An engine with a tool-call parser (vLLM's `--enable-auto-tool-choice --tool-call-parser`).
    let h = Harness::with(Options {
        mock: clawline_mock_vllm::MockConfig {
            tool_parser: true,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_client.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .env("GATEWAY_BASE_URL", format!("{}/v1", h.url))
        .output()
        .await
        .expect("running python");
    let seen = clawline_runtime::testing::json_of("openai client", output);
    assert_eq!(seen["plain"], "echo: hello from the openai client");
    assert_eq!(seen["streamed"], "echo: now stream it");
    assert!(
        seen["stream_usage"].as_u64().unwrap() > 0,
        "usage chunk passed through"
    );
    assert_eq!(
        seen["tool_call"],
        json!({"name": "lookup", "arguments": {"query": "find it"}})
    );
    assert_eq!(seen["models"], json!(["mock-model"]));
    assert_eq!(seen["bad_request"], 400);

    let steps = h.steps().await;
    assert_eq!(steps.len(), 3, "three answered calls");
    assert_eq!(steps[0].response_text, seen["plain"].as_str().unwrap());
    assert_eq!(steps[1].response_text, seen["streamed"].as_str().unwrap());
    assert!(steps[1].stream);
    assert_eq!(
        steps[1].trajectory_uid, steps[0].trajectory_uid,
        "the client's history continued the session"
    );
    assert_eq!(steps[1].step_index, 1);
    assert_eq!(steps[2].response_tool_calls[0].name, "lookup");
    assert!(steps.iter().all(|s| s.token_source == TokenSource::Engine));
}
