//! Token-in mode (`--token-in`): the gateway renders the chat template with the model's tokenizer,
//! calls the engine's `/v1/completions` with the prompt's ids and parses Hermes tool calls itself, as
//! Claw-R1's own gateway does. The engine here has no tool-call parser (vLLM's default), so a chat
//! request with `tools` sent to it as chat would be refused; in token-in mode it works, and the step's
//! ids are exactly what the engine consumed and produced.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use common::*;
use serde_json::{Value, json};

const CALL: &str =
    "<tool_call>\n{\"name\": \"lookup\", \"arguments\": {\"query\": \"weather\"}}\n</tool_call>";

fn token_in(reply: &str) -> Options {
    Options {
        mock: clawline_mock_vllm::MockConfig {
            reply: Some(reply.into()),
            ..Default::default()
        },
        extra_args: vec!["--token-in".into()],
        ..Options::default()
    }
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])
}

#[tokio::test]
async fn token_in_mode_parses_tool_calls_and_records_the_engines_ids() {
    let h = Harness::with(token_in(CALL)).await;
    let messages = json!([{"role": "user", "content": "what is the weather?"}]);
    // Claw-R1's GSM8K agent hard-codes model "default"; no engine serves that name.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "default", "messages": messages, "tools": tools()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"query\":\"weather\"}"
    );
    assert!(
        body.get("prompt_token_ids").is_none(),
        "not asked for, not shown"
    );
    let stats = &h.mock.stats;
    assert_eq!(
        stats
            .completion_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        h.mock.chat_requests(),
        0,
        "nothing went to the engine's chat endpoint"
    );

    let steps = h.steps().await;
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    assert_eq!(step.token_source, TokenSource::Engine);
    let messages: Vec<Value> = serde_json::from_value(messages).unwrap();
    assert_eq!(
        step.prompt_ids,
        h.mock.prompt_ids(&messages, Some(&tools())),
        "the prompt rendered with the model's template, as the engine consumed it"
    );
    assert_eq!(step.response_ids, reply_ids(CALL));
    assert_eq!(
        step.response_logprobs.as_ref().map(Vec::len),
        Some(step.response_ids.len())
    );
    assert_eq!(step.response_tool_calls[0].name, "lookup");
}

/// The chunks of an SSE body, without `[DONE]`.
fn sse_chunks(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn token_in_streams_as_the_engine_generates_and_records_the_same_step() {
    let h = Harness::with(token_in("It is sunny today.")).await;
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "default", "messages": [{"role": "user", "content": "weather?"}], "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let chunks = sse_chunks(&text);
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(pieces.len() > 3, "streamed as generated: {pieces:?}");
    assert_eq!(pieces.concat(), "It is sunny today.");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let step = &h.steps().await[0];
    assert_eq!(step.response_text, "It is sunny today.");
    assert_eq!(step.token_source, TokenSource::Engine);
    assert_eq!(step.response_ids, reply_ids("It is sunny today."));
    assert_eq!(
        step.response_logprobs.as_ref().map(Vec::len),
        Some(step.response_ids.len())
    );

    // A tool call streams as one delta once it is complete; the step is the whole answer's.
    let h = Harness::with(token_in(&format!("Let me check.{CALL}"))).await;
    let messages = json!([{"role": "user", "content": "what is the weather?"}]);
    let body = json!({"model": "default", "messages": messages, "tools": tools(), "stream": true});
    let text = h
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse_chunks(&text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Let me check.", "no markup reaches the client");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0][0]["function"]["name"], "lookup");
    assert_eq!(
        calls[0][0]["function"]["arguments"],
        "{\"query\":\"weather\"}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    let step = &h.steps().await[0];
    assert_eq!(
        step.response_ids,
        reply_ids(&format!("Let me check.{CALL}"))
    );
    assert_eq!(step.response_tool_calls[0].name, "lookup");
    let messages: Vec<Value> = serde_json::from_value(messages).unwrap();
    assert_eq!(
        step.prompt_ids,
        h.mock.prompt_ids(&messages, Some(&tools()))
    );
}

/// An answer the client prefilled (`continue_final_message`, vLLM's request field) is continued,
/// not answered anew: the step's prompt ends inside the assistant's turn, whether the gateway
/// renders the template (token-in mode, or the engine gave no ids) or the engine does.
#[tokio::test]
async fn a_prefilled_answer_is_continued_and_recorded_as_the_engine_saw_it() {
    let tok = clawline_runtime::tokenize::ChatTokenizer::load(&tokenizer_dir()).unwrap();
    let messages = json!([
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Sure, the colour is"},
    ]);
    let body = json!({
        "model": "default", "messages": messages,
        "continue_final_message": true, "add_generation_prompt": false,
    });
    let engine_renders = Options {
        mock: clawline_mock_vllm::MockConfig {
            reply: Some(" blue.".into()),
            ..Default::default()
        },
        ..Options::default()
    };
    let engine_gives_no_ids = Options {
        mock: clawline_mock_vllm::MockConfig {
            reply: Some(" blue.".into()),
            token_ids: false,
            ..Default::default()
        },
        ..Options::default()
    };
    let mut prompts = Vec::new();
    for (mode, options) in [
        ("token-in", token_in(" blue.")),
        ("engine", engine_renders),
        ("no ids", engine_gives_no_ids),
    ] {
        let h = Harness::with(options).await;
        let r = h.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(r.status(), 200, "{mode}: {}", r.text().await.unwrap());
        let step = &h.steps().await[0];
        let source = match mode {
            "no ids" => TokenSource::Retokenized,
            _ => TokenSource::Engine,
        };
        assert_eq!(step.token_source, source, "{mode}");
        let prompt = tok.decode(&step.prompt_ids).unwrap();
        assert!(
            prompt.ends_with("<|im_start|>assistant\nSure, the colour is"),
            "{mode}: {prompt:?}"
        );
        prompts.push(step.prompt_ids.clone());

        // Both at once is refused by name, as vLLM refuses it.
        let mut both = body.clone();
        both["add_generation_prompt"] = true.into();
        let r = h.post("/v1/chat/completions", both).await;
        assert_eq!(r.status(), 400, "{mode}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["param"], "continue_final_message", "{mode}");
    }
    assert!(prompts.windows(2).all(|w| w[0] == w[1]), "{prompts:?}");
}
