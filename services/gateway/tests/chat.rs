//! Chat completions through the gateway: answered as the engine answered, recorded with exact tokens.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use clawline_mock_vllm::MockConfig;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_chat_completion_is_answered_and_recorded_with_the_engines_exact_tokens() {
    let h = Harness::start().await;
    let body = json!({
        "model": "mock-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus two?"}],
        "temperature": 0.3,
        "seed": 7,
        "my_vendor_field": {"keep": ["me", 1]},
    });
    let response = h.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(response.status(), 200);
    let trajectory = response.headers()["x-clawline-trajectory"]
        .to_str()
        .unwrap()
        .to_string();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: What is two plus two?"
    );
    // The gateway asked for ids and logprobs; the client did not, so it does not see them.
    assert!(answer.get("prompt_token_ids").is_none(), "{answer}");
    assert!(answer["choices"][0].get("token_ids").is_none());
    assert!(answer["choices"][0]["logprobs"].is_null());

    // Every field the client sent reached the engine untouched.
    let seen = h.mock.stats.last_request.lock().unwrap().clone().unwrap();
    for field in [
        "temperature",
        "seed",
        "my_vendor_field",
        "messages",
        "model",
    ] {
        assert_eq!(seen[field], body[field], "{field} changed on the way");
    }

    let steps = h.steps().await;
    assert_eq!(
        steps.len(),
        1,
        "one step per call, acked before the response"
    );
    let step = &steps[0];
    assert_eq!(step.trajectory_uid, trajectory);
    assert_eq!(step.step_index, 0);
    assert_eq!(step.channel, "train");
    assert_eq!(step.tenant, "default");
    assert_eq!(step.token_source, TokenSource::Engine);
    let messages = body["messages"].as_array().unwrap().clone();
    assert_eq!(step.prompt_ids, h.mock.prompt_ids(&messages, None));
    assert_eq!(step.response_ids, reply_ids("echo: What is two plus two?"));
    let logprobs = step.response_logprobs.as_ref().expect("behaviour logprobs");
    assert_eq!(logprobs.len(), step.response_ids.len());
    assert!(logprobs.iter().all(|l| *l < 0.0));
    assert_eq!(step.response_text, "echo: What is two plus two?");
    assert_eq!(step.messages.len(), 2);
    assert_eq!(
        step.messages[1].content.as_deref(),
        Some("What is two plus two?")
    );
    assert_eq!(step.upstream_model.as_deref(), Some("mock-model"));
    assert_eq!(step.finish_reason.as_deref(), Some("stop"));
    let params: Value = serde_json::from_str(step.request_params_json.as_deref().unwrap()).unwrap();
    assert_eq!(params["temperature"], 0.3);
    assert!(step.latency_ms.is_some() && !step.stream);
}

#[tokio::test]
async fn a_client_that_asks_for_logprobs_and_token_ids_gets_them() {
    let h = Harness::start().await;
    let mut body = chat_body("hello");
    body["logprobs"] = json!(true);
    body["return_token_ids"] = json!(true);
    let answer: Value = h
        .post("/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert!(answer["prompt_token_ids"].is_array());
    assert_eq!(
        answer["choices"][0]["token_ids"],
        json!(reply_ids("echo: hello"))
    );
    assert!(answer["choices"][0]["logprobs"]["content"].is_array());
}

#[tokio::test]
async fn a_stream_is_forwarded_as_it_arrives_and_the_step_is_acked_before_done() {
    let mock = MockConfig {
        token_delay: Duration::from_millis(30),
        ..Default::default()
    };
    let h = Harness::with(Options {
        mock,
        ..Default::default()
    })
    .await;
    let mut body = chat_body("tell me a story about the sea");
    body["stream"] = json!(true);
    let mut response = h.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    // The first chunk reaches the client while the engine is still generating: nothing is recorded
    // yet, so the gateway cannot have buffered the answer to the end.
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert_eq!(stream_count(&h.js().await, "STEPS").await, 0);

    let mut rest = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
        if String::from_utf8_lossy(&rest).contains("[DONE]") {
            // By [DONE] the step is stored.
            assert_eq!(stream_count(&h.js().await, "STEPS").await, 1);
        }
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let mut content = String::new();
    for event in text
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
    {
        if event == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(
            chunk.get("prompt_token_ids").is_none()
                && chunk["choices"][0].get("token_ids").is_none()
        );
        content.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert_eq!(content, "echo: tell me a story about the sea");

    let steps = h.steps().await;
    assert_eq!(steps.len(), 1);
    assert!(steps[0].stream);
    assert_eq!(steps[0].response_text, content);
    assert_eq!(steps[0].token_source, TokenSource::Engine);
    assert_eq!(steps[0].response_ids, reply_ids(&content));
    assert_eq!(
        steps[0].response_logprobs.as_ref().map(Vec::len),
        Some(steps[0].response_ids.len())
    );
    assert!(steps[0].ttft_ms.unwrap() <= steps[0].latency_ms.unwrap());
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}])
}

#[tokio::test]
async fn tool_calls_come_back_to_the_client_and_into_the_step_streamed_or_not() {
    // An engine started with a tool-call parser; without one, vLLM refuses `tools` with 400, and
    // the client gets that answer as it is.
    let strict = Harness::start().await;
    let mut body = chat_body("weather in Paris?");
    body["tools"] = weather_tool();
    let refused = strict.post("/v1/chat/completions", body).await;
    assert_eq!(refused.status(), 400);
    let err: Value = refused.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tool-call-parser"),
        "{err}"
    );
    assert_eq!(
        strict.steps().await.len(),
        0,
        "a refused call is not a step"
    );
    let h = Harness::with(Options {
        mock: MockConfig {
            tool_parser: true,
            ..MockConfig::default()
        },
        ..Options::default()
    })
    .await;
    for stream in [false, true] {
        let mut body = chat_body("weather in Paris?");
        body["tools"] = weather_tool();
        body["stream"] = json!(stream);
        let response = h.post("/v1/chat/completions", body).await;
        assert_eq!(response.status(), 200);
        if stream {
            let (chunks, done) = read_sse(response).await;
            assert!(done);
            let calls: Vec<&Value> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
                .collect();
            assert_eq!(calls[0][0]["function"]["name"], "get_weather");
        } else {
            let answer: Value = response.json().await.unwrap();
            let call = &answer["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "get_weather");
            assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        }
    }
    let steps = h.steps().await;
    assert_eq!(steps.len(), 2);
    for step in &steps {
        assert_eq!(step.response_tool_calls.len(), 1);
        assert_eq!(step.response_tool_calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&step.response_tool_calls[0].arguments).unwrap();
        assert_eq!(args, json!({"query": "weather in Paris?"}));
        assert_eq!(step.finish_reason.as_deref(), Some("tool_calls"));
        assert!(step.tools_json.as_deref().unwrap().contains("get_weather"));
        assert_eq!(step.token_source, TokenSource::Engine);
    }
    assert_eq!(
        steps[0].response_ids, steps[1].response_ids,
        "stream and whole give the same ids"
    );
}

#[tokio::test]
async fn each_choice_of_an_n_request_is_its_own_step() {
    let h = Harness::start().await;
    let mut body = chat_body("pick a number");
    body["n"] = json!(3);
    let answer: Value = h
        .post("/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 3);
    let steps = h.steps().await;
    assert_eq!(steps.len(), 3);
    let mut choices: Vec<u32> = steps.iter().map(|s| s.choice_index).collect();
    choices.sort();
    assert_eq!(choices, vec![0, 1, 2]);
    assert!(
        steps
            .iter()
            .all(|s| s.step_index == 0 && s.trajectory_uid == steps[0].trajectory_uid)
    );
    let ids: std::collections::HashSet<_> =
        steps.iter().map(|s| s.envelope.event_id.clone()).collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn an_engine_without_token_ids_falls_back_to_the_chat_template_and_tokenizer() {
    let mock = MockConfig {
        token_ids: false,
        ..Default::default()
    };
    let h = Harness::with(Options {
        mock,
        ..Default::default()
    })
    .await;
    let body = chat_body("what is the answer?");
    let response = h.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(
        response.status(),
        200,
        "the refused extension is retried without"
    );
    let steps = h.steps().await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].token_source, TokenSource::Retokenized);
    // The template rendering matches what the engine itself tokenized.
    let messages = body["messages"].as_array().unwrap().clone();
    assert_eq!(steps[0].prompt_ids, h.mock.prompt_ids(&messages, None));
    assert_eq!(
        steps[0].response_ids,
        reply_ids("echo: what is the answer?")
    );
    assert!(steps[0].response_logprobs.is_none());
    // Once learned, the gateway stops asking this engine for the extension.
    h.post("/v1/chat/completions", chat_body("again")).await;
    let seen = h.mock.stats.last_request.lock().unwrap().clone().unwrap();
    assert!(seen.get("return_token_ids").is_none());
}

#[tokio::test]
async fn without_ids_or_a_tokenizer_the_step_keeps_its_text_and_says_so() {
    let mock = MockConfig {
        token_ids: false,
        ..Default::default()
    };
    let h = Harness::with(Options {
        mock,
        tokenizer: false,
        ..Default::default()
    })
    .await;
    assert_eq!(
        h.post("/v1/chat/completions", chat_body("hi"))
            .await
            .status(),
        200
    );
    let steps = h.steps().await;
    assert_eq!(steps[0].token_source, TokenSource::Untokenized);
    assert!(steps[0].prompt_ids.is_empty() && steps[0].response_ids.is_empty());
    assert_eq!(steps[0].response_text, "echo: hi");
}

#[tokio::test]
async fn steps_carry_the_policy_version_from_kv_or_the_engines_header() {
    let h = Harness::start().await;
    let kv = h.js().await.get_key_value("state").await.unwrap();
    kv.put("policy.version", "7".into()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.state.policy.get() != Some(7) {
        assert!(
            std::time::Instant::now() < deadline,
            "policy.version not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.post("/v1/chat/completions", chat_body("one")).await;
    h.mock.configure(|c| c.policy_version = Some(9));
    h.post("/v1/chat/completions", chat_body("two")).await;
    let versions: Vec<Option<u64>> = h.steps().await.iter().map(|s| s.policy_version).collect();
    assert_eq!(versions, vec![Some(7), Some(9)]);
}
