//! Agents that speak other protocols than chat completions, through the gateway to an engine that
//! speaks only chat completions (the vLLM-faithful mock, tool parser on): each driven by the official
//! client package of its protocol, none of it written here, and each captured as steps with exact
//! engine tokens, sessions and tool round trips.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

use clawline_runtime::testing::Answer as _;
use clawline_runtime::testing::{json_of, python};

async fn run_client(h: &Harness, script: &str, base_url: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .env("GATEWAY_BASE_URL", base_url)
        .output()
        .await
        .expect("running python");
    let _ = h;
    json_of(script.display(), output)
}

fn with_tool_parser() -> Options {
    Options {
        mock: clawline_mock_vllm::MockConfig {
            tool_parser: true,
            ..Default::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn the_official_anthropic_client_works_through_messages() {
    let h = Harness::with(with_tool_parser()).await;
    let seen = run_client(&h, "anthropic_client.py", &h.url).await;

    assert_eq!(seen["plain"], "echo: hello from the anthropic client");
    assert_eq!(seen["plain_stop"], "end_turn");
    assert_eq!(
        seen["plain_model"], "claude-sonnet-4-5",
        "the model the client named"
    );
    assert!(seen["plain_usage"][0].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(seen["streamed"], "echo: now stream it");
    assert!(
        seen["streamed_deltas"].as_u64().unwrap() >= 2,
        "text arrived in pieces: {seen}"
    );
    assert_eq!(seen["streamed_stop"], "end_turn");
    assert!(
        seen["streamed_usage"].as_u64().unwrap() > 0,
        "usage at the stream's end"
    );
    assert_eq!(
        seen["tool_use"],
        json!({"name": "read_file", "input": {"query": "read notes.txt"}, "stop": "tool_use"})
    );
    assert_eq!(
        seen["after_tool"], "echo: buy milk",
        "the tool result reached the engine"
    );
    assert_eq!(seen["bad_request"], json!([400, "invalid_request_error"]));

    let steps = h.steps().await;
    assert_eq!(steps.len(), 5, "five answered calls: {steps:#?}");
    assert!(steps.iter().all(|s| s.token_source == TokenSource::Engine));
    assert_eq!(
        seen["count_tokens"],
        steps[0].prompt_ids.len(),
        "count_tokens counts the prompt the engine got"
    );
    // The engine saw the system prompt first, as the chat template renders it.
    assert_eq!(steps[0].messages[0].role, "system");
    assert_eq!(
        steps[0].messages[0].content.as_deref(),
        Some("You are terse.")
    );
    assert_eq!(
        steps[1].trajectory_uid, steps[0].trajectory_uid,
        "history continued the session"
    );
    assert_eq!(steps[1].step_index, 1);
    assert!(steps[1].stream);
    let task = &steps[2..];
    assert!(
        task.iter()
            .all(|s| s.trajectory_uid == task[0].trajectory_uid)
    );
    assert_ne!(task[0].trajectory_uid, steps[0].trajectory_uid);
    assert_eq!(
        task.iter().map(|s| s.step_index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(task[0].response_tool_calls[0].name, "read_file");
    let tool_message = task[1].messages.iter().find(|m| m.role == "tool").unwrap();
    assert_eq!(tool_message.content.as_deref(), Some("buy milk"));
    assert_eq!(
        tool_message.tool_call_id.as_deref(),
        Some(task[0].response_tool_calls[0].id.as_str())
    );
    assert_eq!(
        task[2].previous_step_id.as_deref(),
        Some(task[1].envelope.event_id.as_str()),
        "the correction follows the answer it corrects (implicit feedback)"
    );
}

/// An engine that speaks Anthropic Messages itself (`--engine-speaks messages`, as SGLang and
/// Anthropic's API do): the same client script, every call forwarded as it is, captured from the
/// engine's own answers, whole and streamed.
#[tokio::test]
async fn messages_go_as_they_are_to_an_engine_that_speaks_them() {
    let h = Harness::with(Options {
        mock: clawline_mock_vllm::MockConfig {
            messages: true,
            api_key: Some("k-engine".into()),
            ..Default::default()
        },
        extra_args: [
            "--engine-speaks",
            "messages",
            "--upstream-api-key",
            "k-engine",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    })
    .await;
    let seen = run_client(&h, "anthropic_client.py", &h.url).await;

    assert_eq!(h.mock.chat_requests(), 0, "no call was translated");
    let sent = h.mock.stats.last_headers.lock().unwrap().clone();
    assert_eq!(sent["x-api-key"], "k-engine");
    assert!(sent.contains_key("anthropic-version"), "{sent:?}");
    assert_eq!(seen["plain"], "echo: hello from the anthropic client");
    assert_eq!(
        seen["plain_model"], "mock-model",
        "the engine's own answer (the model name policy named its model)"
    );
    assert_eq!(seen["streamed"], "echo: now stream it");
    assert!(seen["streamed_deltas"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["streamed_stop"], "end_turn");
    assert_eq!(
        seen["tool_use"],
        json!({"name": "read_file", "input": {"query": "read notes.txt"}, "stop": "tool_use"})
    );
    assert_eq!(seen["after_tool"], "echo: buy milk");
    assert_eq!(seen["bad_request"], json!([400, "invalid_request_error"]));
    assert_eq!(
        seen["count_tokens"],
        json!([404, "not_found_error"]),
        "the engine answers count_tokens itself (this one does not serve it)"
    );

    let steps = h.steps().await;
    assert_eq!(steps.len(), 5, "five answered calls: {steps:#?}");
    assert_eq!(
        steps[0].response_text,
        "echo: hello from the anthropic client"
    );
    assert_eq!(steps[1].response_text, "echo: now stream it");
    assert!(steps[1].stream);
    // No ids over this protocol: the gateway's tokenizer gives the step its tokens.
    assert!(
        steps
            .iter()
            .all(|s| s.token_source == TokenSource::Retokenized)
    );
    assert!(steps.iter().all(|s| !s.response_ids.is_empty()));
    assert_eq!(
        steps[0].messages[0].content.as_deref(),
        Some("You are terse.")
    );
    assert_eq!(steps[1].trajectory_uid, steps[0].trajectory_uid);
    let task = &steps[2..];
    assert!(
        task.iter()
            .all(|s| s.trajectory_uid == task[0].trajectory_uid)
    );
    assert_ne!(task[0].trajectory_uid, steps[0].trajectory_uid);
    let call = &task[0].response_tool_calls[0];
    assert_eq!(call.name, "read_file");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"query": "read notes.txt"})
    );
    let tool_message = task[1].messages.iter().find(|m| m.role == "tool").unwrap();
    assert_eq!(tool_message.tool_call_id.as_deref(), Some(call.id.as_str()));
    assert_eq!(
        task[2].previous_step_id.as_deref(),
        Some(task[1].envelope.event_id.as_str()),
        "the correction follows the answer it corrects (implicit feedback)"
    );
}

/// What `responses_client.py` must have seen, translated or not: the answers, the stream's events,
/// `previous_response_id` named in the answer, retrieval, the tool round trip, and `unstored` as
/// the status of continuing a response kept nowhere.
fn responses_client_saw(seen: &Value, unstored: u64, why: &str) {
    assert_eq!(seen["plain"], "echo: hello from the responses client");
    assert_eq!(seen["plain_status"], "completed");
    assert!(seen["plain_usage"].as_u64().unwrap() > 0);
    assert_eq!(seen["streamed"], "echo: now stream it");
    assert_eq!(seen["streamed_final"], "echo: now stream it");
    assert_eq!(
        seen["streamed_previous"], true,
        "the answer names the client's previous_response_id"
    );
    for event in [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ] {
        assert!(
            seen["events"].as_array().unwrap().contains(&json!(event)),
            "{event} missing: {seen}"
        );
    }
    assert_eq!(seen["retrieved"], "echo: now stream it");
    assert_eq!(
        seen["call"],
        json!({"name": "exec_command", "arguments": {"query": "list the files"}})
    );
    assert_eq!(seen["after_call"], "echo: notes.txt");
    assert_eq!(seen["unstored"], unstored, "{why}");
    assert_eq!(seen["deleted"], 404);
}

#[tokio::test]
async fn the_official_openai_client_works_through_responses_and_completions() {
    let h = Harness::with(with_tool_parser()).await;
    let seen = run_client(&h, "responses_client.py", &format!("{}/v1", h.url)).await;

    responses_client_saw(&seen, 400, "store=false keeps nothing to continue");

    assert_eq!(seen["completion"], "echo completion");
    assert_eq!(
        seen["completion_logprobs"],
        Value::Null,
        "not asked for, not shown"
    );
    assert_eq!(seen["completion_batch"], 400);

    let mut steps = h.steps().await;
    assert_eq!(steps.len(), 6, "six answered calls: {steps:#?}");
    assert!(steps.iter().all(|s| s.token_source == TokenSource::Engine));
    let completion = steps.pop().unwrap();
    assert_eq!(completion.prompt_text.as_deref(), Some("Once upon a time"));
    assert!(completion.messages.is_empty());
    assert_eq!(completion.response_text, "echo completion");
    assert!(!completion.prompt_ids.is_empty() && !completion.response_ids.is_empty());
    assert_eq!(
        completion.response_logprobs.as_ref().map(Vec::len),
        Some(completion.response_ids.len()),
        "behaviour logprobs captured though the client did not ask"
    );
    // previous_response_id: the engine saw the stored conversation, and it is one trajectory.
    let roles: Vec<&str> = steps[1].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(steps[1].trajectory_uid, steps[0].trajectory_uid);
    assert_eq!(steps[1].step_index, 1);
    assert!(steps[1].stream);
    // Codex CLI's way (whole input each turn, store=false) is one trajectory too.
    let task = &steps[2..];
    assert!(
        task.iter()
            .all(|s| s.trajectory_uid == task[0].trajectory_uid)
    );
    assert_eq!(task[0].response_tool_calls[0].name, "exec_command");
    assert_eq!(
        task[0]
            .tools_json
            .as_deref()
            .map(|t| t.contains("web_search")),
        Some(false)
    );
    assert_eq!(
        task[2].previous_step_id.as_deref(),
        Some(task[1].envelope.event_id.as_str()),
        "the correction follows the answer it corrects"
    );
}

/// An engine that speaks Responses itself (`--engine-speaks responses`, as vLLM's OpenAI server
/// does): the same client script, every call forwarded to the engine's `/v1/responses`. The
/// engine keeps no responses (vLLM's default), so `previous_response_id` works only because the
/// gateway sends the conversation it kept as the whole input, and names the client's id again in
/// the answer.
#[tokio::test]
async fn responses_go_to_an_engine_that_speaks_them_and_keep_their_state_here() {
    let h = Harness::with(Options {
        mock: clawline_mock_vllm::MockConfig {
            responses: true,
            tool_parser: true,
            ..Default::default()
        },
        extra_args: ["--engine-speaks", "responses"].map(String::from).to_vec(),
        ..Options::default()
    })
    .await;
    let seen = run_client(&h, "responses_client.py", &format!("{}/v1", h.url)).await;

    assert_eq!(h.mock.chat_requests(), 0, "no call was translated");
    responses_client_saw(
        &seen,
        404,
        "an id the gateway did not keep goes to the engine, which does not know it either",
    );

    // The engine got the first turn's items and the new input, not an id it cannot resolve.
    let steps = h.steps().await;
    assert_eq!(steps.len(), 6, "six answered calls: {steps:#?}");
    let responses = &steps[..5];
    assert!(
        responses
            .iter()
            .all(|s| s.token_source == TokenSource::Retokenized && !s.response_ids.is_empty())
    );
    assert_eq!(
        responses[0].response_text,
        "echo: hello from the responses client"
    );
    let roles: Vec<&str> = responses[1]
        .messages
        .iter()
        .map(|m| m.role.as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(responses[1].trajectory_uid, responses[0].trajectory_uid);
    assert!(responses[1].stream);
    let task = &responses[2..];
    assert!(
        task.iter()
            .all(|s| s.trajectory_uid == task[0].trajectory_uid)
    );
    let call = &task[0].response_tool_calls[0];
    assert_eq!(call.name, "exec_command");
    let tool_message = task[1].messages.iter().find(|m| m.role == "tool").unwrap();
    assert_eq!(tool_message.tool_call_id.as_deref(), Some(call.id.as_str()));
    assert_eq!(
        task[2].previous_step_id.as_deref(),
        Some(task[1].envelope.event_id.as_str()),
        "the correction follows the answer it corrects"
    );
}

#[tokio::test]
async fn stored_responses_survive_a_gateway_restart() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "m", "instructions": "Be brief.", "input": "first question"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    // Kept in KV `responses` (in the background, right after the answer).
    let kv = h.js().await.get_key_value("responses").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kv.get(&id).await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never reached KV"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let h = h.restart_gateway().await;
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "m", "input": "second question", "previous_response_id": id}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let steps = h.steps().await;
    let roles: Vec<&str> = steps[1].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user"],
        "the stored turn came back from KV"
    );
    assert_eq!(
        steps[1].messages[0].content.as_deref(),
        Some("first question")
    );
    let got: Value = h
        .http
        .get(format!("{}/v1/responses/{id}", h.url))
        .json_answer()
        .await;
    assert_eq!(got["output"], first["output"]);
}

/// An Anthropic client that prefills the answer (a final assistant turn, e.g. `{` to get JSON)
/// gets the model's continuation of it: the engine renders the prompt ending inside that turn.
#[tokio::test]
async fn a_prefilled_anthropic_answer_is_continued() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [
                {"role": "user", "content": "Your answer as JSON?"},
                {"role": "assistant", "content": [{"type": "text", "text": "{\"answer\":"}]},
            ]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "assistant", "{body}");
    let step = &h.steps().await[0];
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(&tokenizer_dir()).unwrap();
    let prompt = tok.decode(&step.prompt_ids).unwrap();
    assert!(
        prompt.ends_with("<|im_start|>assistant\n{\"answer\":"),
        "{prompt:?}"
    );
}
