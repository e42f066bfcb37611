#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The policy server over real HTTP with real libtorch: vLLM-shaped answers whose logprobs the
//! trainer's recomputation reproduces, streaming, hot swaps under load, refusals.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use clawline_model::init::{InitOptions, init};
use clawline_model::weights::Loaded;
use clawline_runtime::CancellationToken;
use clawline_runtime::tokenize::ChatTokenizer;
use serde_json::{Value, json};
use tch::Device;

struct Server {
    url: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn model_dir(seed: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        &InitOptions {
            vocab_size: 512,
            seed,
            force: false,
            warm_start_steps: 0,
        },
    )
    .unwrap();
    dir
}

async fn start(model: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "clawline-policy",
        "--model",
        model.to_str().unwrap(),
        "--listen",
        &listen,
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let config = clawline_policy::Config::try_parse_from(args).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(clawline_policy::run(config, stop.clone()));
    let url = format!("http://{listen}");
    for _ in 0..200 {
        if reqwest::get(format!("{url}/healthz")).await.is_ok() {
            return Server { url, stop };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("policy server did not start");
}

async fn post(url: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let version = r
        .headers()
        .get("x-clawline-policy-version")
        .map(|v| v.to_str().unwrap().to_string());
    (status, version, r.json().await.unwrap())
}

fn chat(max_tokens: u64, seed: u64) -> Value {
    json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Ana has 3 apples. How many now?"}],
        "max_tokens": max_tokens, "seed": seed, "temperature": 1.0,
        "logprobs": true, "return_token_ids": true,
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

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
    let choice = &body["choices"][0];
    let completion = ids(&choice["token_ids"]);
    assert_eq!(body["usage"]["completion_tokens"], completion.len());
    let served: Vec<f32> = choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logprob"].as_f64().unwrap() as f32)
        .collect();
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

#[tokio::test]
async fn a_peft_lora_adapter_is_applied_to_the_served_base_and_swapped_in() {
    let dir = model_dir(6);
    let adapter_dir = tempfile::tempdir().unwrap();
    {
        let base = Loaded::load(dir.path(), Device::Cpu).unwrap();
        let adapted = Loaded::adapt(base, &clawline_model::LoraConfig::default(), 7).unwrap();
        // Give B values (a fresh adapter is a no-op), deterministically.
        tch::no_grad(|| {
            for (name, mut t) in adapted.trainable().variables() {
                if name.contains("lora_B") {
                    let n = t.numel() as i64;
                    let v =
                        (tch::Tensor::arange(n, (tch::Kind::Float, Device::Cpu)) * 0.7).sin() * 0.3;
                    t.copy_(&v.view_as(&t));
                }
            }
        });
        adapted.save_adapter(adapter_dir.path(), "tiny").unwrap();
    }
    let server = start(dir.path(), &[]).await;
    let url = format!("{}/v1/chat/completions", server.url);
    let mut greedy = chat(8, 1);
    greedy["temperature"] = json!(0.0);
    greedy["ignore_eos"] = json!(true);
    let (_, _, before) = post(&url, greedy.clone()).await;
    let (status, _, swapped) = post(
        &format!("{}/admin/weights", server.url),
        json!({"path": adapter_dir.path(), "version": "lora-1"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    let (_, version, after) = post(&url, greedy).await;
    assert_eq!(version.as_deref(), Some("lora-1"));
    let mut local = Loaded::load_with_adapter(dir.path(), adapter_dir.path(), Device::Cpu).unwrap();
    local.model.merge_lora();
    let served = &after["choices"][0];
    let prompt = ids(&after["prompt_token_ids"]);
    let tokens = ids(&served["token_ids"]);
    let expected = local.model.completion_logprobs(&prompt, &tokens);
    for (c, e) in served["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected)
    {
        assert!((c["logprob"].as_f64().unwrap() as f32 - e).abs() < 1e-4);
    }
    assert_ne!(
        before["choices"][0]["logprobs"], served["logprobs"],
        "the adapter changed the policy"
    );

    // In bf16 (`--dtype bfloat16`, the default on CUDA) the adapter stays beside the bf16 base,
    // as PEFT applies it, and the served logprobs are that model's.
    let server = start(dir.path(), &["--dtype", "bfloat16"]).await;
    let (status, _, swapped) = post(
        &format!("{}/admin/weights", server.url),
        json!({"path": adapter_dir.path(), "version": "lora-1"}),
    )
    .await;
    assert_eq!(status, 200, "{swapped}");
    let mut greedy = chat(8, 1);
    greedy["temperature"] = json!(0.0);
    greedy["ignore_eos"] = json!(true);
    let (_, _, after) = post(&format!("{}/v1/chat/completions", server.url), greedy).await;
    let served = &after["choices"][0];
    let tokens = ids(&served["token_ids"]);
    let bf16 = Loaded::load_with_adapter_in(
        dir.path(),
        adapter_dir.path(),
        Device::Cpu,
        tch::Kind::BFloat16,
    )
    .unwrap();
    let (in_bf16, in_f32) = (
        bf16.model.completion_logprobs(&prompt, &tokens),
        local.model.completion_logprobs(&prompt, &tokens),
    );
    let gap = |want: &[f32]| -> f32 {
        served["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want)
            .map(|(c, e)| (c["logprob"].as_f64().unwrap() as f32 - e).abs())
            .fold(0.0, f32::max)
    };
    // Measured: 5e-7 from the bf16 recomputation, 0.01 from the f32 one.
    assert!(gap(&in_bf16) < 2e-3, "{} {after}", gap(&in_bf16));
    assert!(gap(&in_f32) > 2e-3, "the server computed in f32: {after}");
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
        let served: Vec<f32> = choice["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["logprob"].as_f64().unwrap() as f32)
            .collect();
        let lp = model.model.completion_logprobs(&prompt, &completion);
        for (k, (a, b)) in served.iter().zip(&lp).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{q:?} token {k}: served {a}, recomputed {b}"
            );
        }
    }
}
