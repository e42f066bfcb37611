#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The policy server over real HTTP with real libtorch: vLLM-shaped answers whose logprobs the
//! trainer's recomputation reproduces, streaming, hot swaps under load, refusals.

mod common;

use std::time::Duration;

use clawline_model::weights::Loaded;
use clawline_runtime::tokenize::ChatTokenizer;
use common::*;
use serde_json::{Value, json};
use tch::Device;

#[tokio::test]
async fn answers_carry_token_ids_and_logprobs_the_trainer_recomputes() {
    let dir = model_dir(1);
    let server = start(dir.path(), &[]).await;
    let (status, version, body) =
        post(&format!("{}/v1/chat/completions", server.url), chat(12, 5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version.as_deref(), Some("0"));
    let tok = ChatTokenizer::load(dir.path()).unwrap();
    let messages = body_messages();
    let prompt = ids(&body["prompt_token_ids"]);
    assert_eq!(prompt, tok.encode_chat(&messages, None).unwrap());
    // An answer the client prefilled is continued inside the assistant's turn, as vLLM does.
    let mut prefilled = chat(12, 5);
    prefilled["messages"] = json!([
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"},
    ]);
    prefilled["continue_final_message"] = true.into();
    prefilled["add_generation_prompt"] = false.into();
    let (status, _, continued) =
        post(&format!("{}/v1/chat/completions", server.url), prefilled).await;
    assert_eq!(status, 200, "{continued}");
    let text = tok.decode(&ids(&continued["prompt_token_ids"])).unwrap();
    assert!(text.ends_with("assistant\nThe colour is"), "{text:?}");
    let choice = &body["choices"][0];
    let completion = ids(&choice["token_ids"]);
    assert_eq!(body["usage"]["completion_tokens"], completion.len());
    let served = served_logprobs(choice);
    assert_eq!(served.len(), completion.len());

    // The trainer's recomputation: the same weights, prompt + completion in one forward pass.
    let model = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let lp = model.model.completion_logprobs(&prompt, &completion);
    assert_eq!(lp.len(), served.len());
    for (k, (a, b)) in served.iter().zip(&lp).enumerate() {
        assert!(
            (a - b).abs() < 1e-4,
            "token {k}: served {a}, recomputed {b}"
        );
    }

    // Completions with a token-id prompt: the same tokens for the same seed.
    let (status, _, body) = post(
        &format!("{}/v1/completions", server.url),
        json!({"prompt": prompt, "max_tokens": 12, "seed": 5, "return_token_ids": true, "logprobs": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["choices"][0]["token_ids"]), completion);
    assert_eq!(body["object"], "text_completion");

    // A stop string ends the answer before it: the text is cut there, finish_reason is stop.
    let mut greedy = chat(24, 1);
    greedy["temperature"] = json!(0.0);
    greedy["ignore_eos"] = json!(true);
    let (_, _, full) = post(
        &format!("{}/v1/chat/completions", server.url),
        greedy.clone(),
    )
    .await;
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    assert!(chars.len() >= 8, "{text:?}");
    let (from, to) = (chars[4].0, chars[7].0);
    let stop = &text[from..to];
    greedy["stop"] = json!([stop]);
    let (_, _, cut) = post(&format!("{}/v1/chat/completions", server.url), greedy).await;
    let choice = &cut["choices"][0];
    assert_eq!(choice["finish_reason"], "stop", "{cut}");
    assert_eq!(
        choice["message"]["content"],
        text[..text.find(stop).unwrap()]
    );

    // vLLM's ignore_eos: exactly max_tokens, whatever the model samples.
    for seed in 0..5 {
        let mut long = chat(40, seed);
        long["ignore_eos"] = json!(true);
        let (_, _, body) = post(&format!("{}/v1/chat/completions", server.url), long).await;
        assert_eq!(body["usage"]["completion_tokens"], 40, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
}

fn body_messages() -> Vec<Value> {
    chat(1, 1)["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_stream_gives_the_same_tokens_and_text_as_a_whole_answer() {
    let dir = model_dir(2);
    let server = start(dir.path(), &[]).await;
    let url = format!("{}/v1/chat/completions", server.url);
    let (_, _, whole) = post(&url, chat(16, 9)).await;
    let mut streamed = chat(16, 9);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = reqwest::Client::new()
        .post(&url)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-clawline-policy-version"], "0");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["prompt_token_ids"], whole["prompt_token_ids"]);
    let mut content = String::new();
    let mut token_ids = Vec::new();
    let mut finish = Value::Null;
    for c in &chunks {
        if let Some(choice) = c["choices"].get(0) {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if let Some(ids) = choice.get("token_ids") {
                token_ids.extend(self::ids(ids));
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
    }
    let w = &whole["choices"][0];
    assert_eq!(content, w["message"]["content"].as_str().unwrap());
    assert_eq!(token_ids, ids(&w["token_ids"]));
    assert_eq!(finish, w["finish_reason"]);
    assert_eq!(chunks.last().unwrap()["usage"], whole["usage"]);
}

#[tokio::test]
async fn a_weight_swap_under_concurrent_requests_fails_none() {
    let (first, second) = (model_dir(3), model_dir(4));
    let server = start(first.path(), &["--max-batch", "4"]).await;
    let url = format!("{}/v1/chat/completions", server.url);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let (url, answered) = (url.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            // Requests back to back until this client is served by the new weights.
            let mut seen = Vec::new();
            for i in 0..5000u64 {
                let (status, version, body) = post(&url, chat(8, c * 10_000 + i)).await;
                assert_eq!(status, 200, "{body}");
                let version = version.unwrap();
                let done = version == "1";
                seen.push(version);
                if seen.len() == 1 {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                if done {
                    break;
                }
            }
            seen
        }));
    }
    // Swap once every client has been answered by the first weights and keeps sending.
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _, swapped) = post(
        &format!("{}/admin/weights", server.url),
        json!({"path": second.path(), "version": "1"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    assert_eq!(swapped, json!({"version": "1", "previous": "0"}));
    for c in clients {
        let seen = c.await.unwrap();
        // Every client had requests answered before and after the swap, none failed.
        assert_eq!(seen.first().map(String::as_str), Some("0"), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("1"), "{seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "versions never go back: {seen:?}"
        );
    }
    let (_, version, _) = post(&url, chat(4, 1)).await;
    assert_eq!(version.as_deref(), Some("1"));
    // Greedy answers now come from the second model's weights.
    let mut greedy = chat(6, 1);
    greedy["temperature"] = json!(0.0);
    let (_, _, served) = post(&url, greedy).await;
    let model = Loaded::load(second.path(), Device::Cpu).unwrap();
    let direct = clawline_model::generate(
        &model.model,
        &[clawline_model::Request {
            prompt: ids(&served["prompt_token_ids"]),
            sampling: clawline_model::Sampling {
                temperature: 0.0,
                max_tokens: 6,
                stop_ids: model.model.config().eos_ids(),
                ..Default::default()
            },
        }],
    )
    .unwrap();
    assert_eq!(ids(&served["choices"][0]["token_ids"]), direct[0].tokens);
}

#[tokio::test]
async fn bad_weights_and_bad_requests_are_refused_and_serving_goes_on() {
    let dir = model_dir(5);
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "admin-key ops admin\nuser-key acme\n").unwrap();
    let server = start(dir.path(), &["--api-keys", keys.to_str().unwrap()]).await;
    let admin = |key: &'static str, body: Value| {
        let url = format!("{}/admin/weights", server.url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let weights = dir.path().join("model.safetensors");
    let (status, body) = admin("user-key", json!({"path": weights, "version": "9"})).await;
    assert_eq!(status, 403, "{body}");
    let torn = dir.path().join("torn.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 3]).unwrap();
    let (status, body) = admin("admin-key", json!({"path": torn, "version": "2"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still serving 0"),
        "{body}"
    );
    let (status, body) = admin(
        "admin-key",
        json!({"path": weights, "version": "3", "sha256": "00".repeat(32)}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sha256"),
        "{body}"
    );

    let url = format!("{}/v1/chat/completions", server.url);
    for (bad, param) in [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": "x"}),
            "chat_template_kwargs",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "continue_final_message": true}),
            "continue_final_message",
        ),
    ] {
        let (status, _, body) = post(&url, bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], param);
    }
    let (status, version, _) = post(&url, chat(4, 1)).await;
    assert_eq!((status, version.as_deref()), (200, Some("0")));
    let models: Value = reqwest::get(format!("{}/v1/models", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["version"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_decoded_together_carry_the_logprobs_the_trainer_recomputes() {
    let dir = model_dir(2);
    let server = start(dir.path(), &[]).await;
    let model = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let questions = [
        "Hi",
        "Can you help me with a recipe?",
        "Hi, I am Ana. I am going to the library today. Any advice?",
        "Ben has 4 apples and gets 3 more. How many apples does Ben have now?",
    ];
    // Sent at once, so the engine decodes them in one left-padded batch.
    let answers = futures::future::join_all(questions.iter().enumerate().map(|(i, q)| {
        let url = format!("{}/v1/chat/completions", server.url);
        let body = json!({"messages": [{"role": "user", "content": q}], "max_tokens": 16,
            "temperature": 1.0, "seed": i, "logprobs": true, "return_token_ids": true});
        async move { post(&url, body).await }
    }))
    .await;
    for (q, (status, _, body)) in questions.iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        let prompt = ids(&body["prompt_token_ids"]);
        let choice = &body["choices"][0];
        let completion = ids(&choice["token_ids"]);
        let served = served_logprobs(choice);
        let lp = model.model.completion_logprobs(&prompt, &completion);
        for (k, (a, b)) in served.iter().zip(&lp).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{q:?} token {k}: served {a}, recomputed {b}"
            );
        }
    }
}
