//! Real agents, installed from the npm registry by `scripts/install-agents.sh` and run unchanged
//! against the gateway, in front of the vLLM-faithful mock engine scripted to call one of the agent's
//! own tools once: Claude Code (`-p`, Anthropic Messages, base URL from `ANTHROPIC_BASE_URL`) and
//! Codex CLI (`exec`, OpenAI Responses, a custom model provider), and OpenClaw (`agent --local`, a
//! custom provider on each of its three wire APIs). Each runs the tool for real, sends
//! its result back, answers, and is then told it was wrong; the whole exchange must be one trajectory
//! with the tool call, its result, engine tokens, the agent's own session id and the correction
//! following the answer it corrects.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clawline_schemas::StepRecorded;
use common::*;

fn agents_dir() -> PathBuf {
    installed("agents/node_modules/.bin")
}

/// A directory `scripts/install-agents.sh` made, under the clawline cache.
fn installed(under_cache: &str) -> PathBuf {
    let cache = std::env::var_os("CLAWLINE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/clawline")
        });
    let dir = cache.join(under_cache);
    assert!(
        dir.exists(),
        "{} is missing: run scripts/install-agents.sh (the README's test command does)",
        dir.display()
    );
    dir
}

fn harness_calling(tool: &str, args: &str) -> Options {
    Options {
        mock: clawline_mock_vllm::MockConfig {
            tool_parser: true,
            call_tool: Some((tool.into(), args.into())),
            ..Default::default()
        },
        ..Options::default()
    }
}

/// A working directory with one file for the agent to find, and an empty home.
fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(work.join("notes.txt"), "buy milk\n").unwrap();
    (dir, work, home)
}

async fn run_agent(mut cmd: tokio::process::Command, what: &str) -> String {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 180 s"))
        .unwrap();
    String::from_utf8_lossy(&clawline_runtime::testing::stdout_of(what, output)).into_owned()
}

/// The agent's task as the gateway captured it: one trajectory, a call of `tool` whose result
/// (holding `result`) went back to the engine, then the correction.
fn assert_one_trajectory_with_tool_round_trip(steps: &[StepRecorded], tool: &str, result: &str) {
    assert_round_trip_with_tokens(steps, tool, result, TokenSource::Engine);
}

/// As [`assert_one_trajectory_with_tool_round_trip`], with every step's tokens from `source`.
fn assert_round_trip_with_tokens(
    steps: &[StepRecorded],
    tool: &str,
    result: &str,
    source: TokenSource,
) {
    assert!(steps.len() >= 3, "call, answer, correction: {steps:#?}");
    let uid = &steps[0].trajectory_uid;
    assert!(
        steps.iter().all(|s| &s.trajectory_uid == uid),
        "one trajectory: {:?}",
        steps
            .iter()
            .map(|s| (&s.trajectory_uid, s.step_index))
            .collect::<Vec<_>>()
    );
    assert!(steps.iter().all(|s| s.token_source == source));
    let call = steps
        .iter()
        .find(|s| {
            s.response_tool_calls
                .first()
                .is_some_and(|c| c.name == tool)
        })
        .unwrap_or_else(|| panic!("no step called {tool}"));
    // Agents may rename tool-call ids when they send them back (OpenClaw does): the result is the
    // tool message of a later step that holds what the tool produced.
    let later = &steps[usize::try_from(call.step_index).unwrap() + 1..];
    assert!(
        later
            .iter()
            .flat_map(|s| &s.messages)
            .any(|m| m.role == "tool" && m.content.as_deref().unwrap_or("").contains(result)),
        "the tool really ran and its result went back to the engine: {later:#?}"
    );
    let last = steps.last().unwrap();
    let before = &steps[steps.len() - 2];
    assert_eq!(
        last.previous_step_id.as_deref(),
        Some(before.envelope.event_id.as_str()),
        "the correction follows the answer it corrects (implicit feedback)"
    );
    assert!(
        last.messages
            .iter()
            .any(|m| m.role == "user" && m.content.as_deref().unwrap_or("").contains("wrong")),
        "the correction is in the last step"
    );
}

/// The agent's own session id (a header it sends) is kept with the trajectory.
fn assert_agent_session(steps: &[StepRecorded]) {
    assert!(
        steps[0]
            .metadata
            .as_ref()
            .and_then(|m| m["agent_session"].as_str())
            .is_some_and(|id| !id.is_empty()),
        "the agent's own session id is kept: {:?}",
        steps[0].metadata
    );
}

fn claude(bin: &Path, work: &Path, home: &Path, url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin.join("claude"));
    cmd.current_dir(work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("TERM", "dumb")
        .env("ANTHROPIC_BASE_URL", url)
        .env("ANTHROPIC_API_KEY", "unused-without-a-key-file")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_unchanged_through_the_gateway() {
    claude_code_through(false).await;
}

/// The same task with the engine speaking Anthropic Messages itself (`--engine-speaks messages`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_unchanged_against_an_engine_that_speaks_messages() {
    claude_code_through(true).await;
}

async fn claude_code_through(native: bool) {
    let bin = agents_dir();
    let mut options = harness_calling(
        "Bash",
        r#"{"command": "ls", "description": "List the files"}"#,
    );
    if native {
        options.mock.messages = true;
        options.extra_args = ["--engine-speaks", "messages"].map(String::from).to_vec();
    }
    let h = Harness::with(options).await;
    let (_dir, work, home) = workspace();
    let mut first = claude(&bin, &work, &home, &h.url);
    first.args(["-p", "list the files here", "--allowedTools", "Bash"]);
    let out = run_agent(first, "claude -p").await;
    assert!(out.contains("notes.txt"), "the agent's answer: {out}");
    let mut again = claude(&bin, &work, &home, &h.url);
    again.args([
        "-p",
        "--continue",
        "No, that is wrong. Try again.",
        "--allowedTools",
        "Bash",
    ]);
    run_agent(again, "claude -p --continue").await;

    let steps = h.steps().await;
    if native {
        assert_eq!(h.mock.chat_requests(), 0, "no call was translated");
        assert_round_trip_with_tokens(&steps, "Bash", "notes.txt", TokenSource::Retokenized);
    } else {
        assert_one_trajectory_with_tool_round_trip(&steps, "Bash", "notes.txt");
    }
    assert_agent_session(&steps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_runs_unchanged_through_the_gateway() {
    codex_through(false).await;
}

/// The same task with the engine speaking Responses itself (`--engine-speaks responses`): Codex's
/// requests reach the engine's `/v1/responses` as Codex sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_runs_unchanged_against_an_engine_that_speaks_responses() {
    codex_through(true).await;
}

async fn codex_through(native: bool) {
    let bin = agents_dir();
    let mut options = harness_calling("exec_command", r#"{"cmd": "ls"}"#);
    if native {
        options.mock.responses = true;
        options.extra_args = ["--engine-speaks", "responses"].map(String::from).to_vec();
    }
    let h = Harness::with(options).await;
    let (dir, work, home) = workspace();
    let codex_home = dir.path().join("codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"clawline\"\n\n[model_providers.clawline]\nname = \"clawline\"\n\
             base_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"CLAWLINE_API_KEY\"\n\n\
             [analytics]\nenabled = false\n\n[features]\nplugins = false\nremote_plugin = false\napps = false\n",
            h.url
        ),
    )
    .unwrap();
    let codex = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(bin.join("codex"));
        cmd.current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &home)
            .env("TERM", "dumb")
            .env("CODEX_HOME", &codex_home)
            .env("CLAWLINE_API_KEY", "unused-without-a-key-file")
            .args([
                "exec",
                "--skip-git-repo-check",
                "--sandbox",
                "danger-full-access",
            ])
            .args(args);
        cmd
    };
    let out = run_agent(codex(&["list the files here"]), "codex exec").await;
    assert!(out.contains("notes.txt"), "the agent's answer: {out}");
    run_agent(
        codex(&["resume", "--last", "No, that is wrong. Try again."]),
        "codex exec resume",
    )
    .await;

    let steps = h.steps().await;
    if native {
        assert_eq!(h.mock.chat_requests(), 0, "no call was translated");
        assert_round_trip_with_tokens(
            &steps,
            "exec_command",
            "notes.txt",
            TokenSource::Retokenized,
        );
    } else {
        assert_one_trajectory_with_tool_round_trip(&steps, "exec_command", "notes.txt");
    }
    assert_agent_session(&steps);
}

/// OpenClaw with a custom provider on `api`, two turns of one session: read a file, then the
/// correction. Its internal-context message comes with every call (in the middle of the input on
/// the Responses API) and must not split the trajectory.
async fn openclaw_on(api: &str) {
    openclaw_through(api, false).await;
}

/// As [`openclaw_on`], with the engine speaking `api`'s protocol itself (`--engine-speaks`).
async fn openclaw_through(api: &str, native: bool) {
    let dir = installed("agents/openclaw/node_modules");
    let path = format!(
        "{}:{}:{}",
        dir.join(".bin").display(),
        dir.join("node/bin").display(),
        std::env::var("PATH").unwrap()
    );
    const ANSWER: &str = "The file says: buy milk.";
    let h = Harness::with(Options {
        mock: clawline_mock_vllm::MockConfig {
            tool_parser: true,
            call_tool: Some(("read".into(), r#"{"path": "notes.txt"}"#.into())),
            // A real model does not repeat OpenClaw's context message back (the echo would).
            reply: Some(ANSWER.into()),
            messages: native && api == "anthropic-messages",
            responses: native && api == "openai-responses",
            ..Default::default()
        },
        extra_args: match (native, api) {
            (false, _) => Vec::new(),
            (true, "anthropic-messages") => vec!["--engine-speaks".into(), "messages".into()],
            (true, _) => vec!["--engine-speaks".into(), "responses".into()],
        },
        ..Options::default()
    })
    .await;
    let (_dir, work, home) = workspace();
    let base_url = match api {
        "anthropic-messages" => h.url.clone(), // its SDK adds /v1
        _ => format!("{}/v1", h.url),
    };
    std::fs::create_dir_all(home.join(".openclaw")).unwrap();
    let config = serde_json::json!({
        "agents": {"defaults": {"workspace": work, "model": {"primary": "clawline/any"}, "skipBootstrap": true}},
        "models": {"mode": "replace", "providers": {"clawline": {
            "baseUrl": base_url, "apiKey": "unused-without-a-key-file", "api": api,
            "models": [{"id": "any", "name": "any", "reasoning": false, "input": ["text"],
                "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                "contextWindow": 128000, "maxTokens": 4096}]}}},
    });
    std::fs::write(home.join(".openclaw/openclaw.json"), config.to_string()).unwrap();
    for message in [
        "Read the file notes.txt in the workspace and tell me what it says.",
        "No, that is wrong. Try again.",
    ] {
        let mut cmd = tokio::process::Command::new(dir.join(".bin/openclaw"));
        cmd.current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .env("OPENCLAW_SKIP_CHANNELS", "1")
            .env("OPENCLAW_SKIP_CRON", "1")
            .args([
                "agent",
                "--local",
                "--session-id",
                "clawline-test",
                "--json",
            ])
            .args(["--timeout", "170", "--message", message]);
        let out = run_agent(cmd, &format!("openclaw agent ({api})")).await;
        assert!(out.contains(ANSWER), "the agent's answer ({api}): {out}");
    }
    if native {
        assert_eq!(h.mock.chat_requests(), 0, "no call was translated");
        let source = TokenSource::Retokenized;
        assert_round_trip_with_tokens(&h.steps().await, "read", "buy milk", source);
    } else {
        assert_one_trajectory_with_tool_round_trip(&h.steps().await, "read", "buy milk");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_runs_unchanged_on_chat_completions() {
    openclaw_on("openai-completions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_runs_unchanged_on_responses() {
    openclaw_on("openai-responses").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_runs_unchanged_on_anthropic_messages() {
    openclaw_on("anthropic-messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_runs_unchanged_on_engines_that_speak_its_protocols() {
    openclaw_through("openai-responses", true).await;
    openclaw_through("anthropic-messages", true).await;
}
