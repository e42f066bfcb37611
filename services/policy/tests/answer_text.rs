#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! What an answer's text may hold and where it ends, with real libtorch and the real tokenizer of
//! `clawline model init`. The models here answer a fixed token sequence: every layer's weights are
//! zero, so the last hidden state is the current token's embedding, and the embeddings and
//! `lm_head` form a bigram table (`chain[k]` → `chain[k + 1]`), decoded greedily.

mod common;

use clawline_model::init::{IM_END, IM_START, InitOptions, init};
use clawline_model::{LlamaConfig, Loaded};
use clawline_runtime::CancellationToken;
use clawline_runtime::tokenize::ChatTokenizer;
use common::{Server, config, ids, start};
use serde_json::{Value, json};
use tch::Device;

const QUESTION: &str = "Say something.";

fn messages() -> Value {
    json!([{"role": "user", "content": QUESTION}])
}

/// The token of one byte in the byte-level vocabulary (GPT-2's byte → character table).
fn byte_token(tok: &ChatTokenizer, byte: u8) -> u32 {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let c = if printable(byte) {
        char::from(byte)
    } else {
        let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
        char::from_u32(256 + rank).unwrap()
    };
    tok.token_id(&c.to_string()).unwrap()
}

/// A model dir (`init`'s tokenizer and template) whose greedy answer to [`QUESTION`] is `answer`
/// (ids, each at most once), then `<|endoftext|>` when the answer does not stop before.
fn scripted(answer: impl Fn(&ChatTokenizer) -> Vec<u32>) -> (tempfile::TempDir, Vec<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        vocab_size: 512,
        ..InitOptions::default()
    };
    init(dir.path(), &options).unwrap();
    let tok = ChatTokenizer::load(dir.path()).unwrap();
    let answer = answer(&tok);
    let prompt = tok
        .encode_chat(messages().as_array().unwrap(), None)
        .unwrap();
    let mut chain = vec![*prompt.last().unwrap()];
    chain.extend(&answer);
    let mut config = LlamaConfig::load(&dir.path().join("config.json")).unwrap();
    config.tie_word_embeddings = false;
    let model = Loaded::fresh(&config, Device::Cpu, 0).unwrap();
    let hidden = config.hidden_size as i64;
    let end = i64::from(tok.token_id("<|endoftext|>").unwrap());
    tch::no_grad(|| {
        let mut vars = model.vs.variables();
        for t in vars.values_mut() {
            let _ = t.zero_();
        }
        let _ = vars.get_mut("model.norm.weight").unwrap().fill_(1.0);
        let embed = vars.get_mut("model.embed_tokens.weight").unwrap();
        // Tokens outside the chain share the last dimension, which leads to <|endoftext|>.
        let _ = embed.narrow(1, hidden - 1, 1).fill_(1.0);
        for (k, &id) in chain.iter().enumerate() {
            let mut row = embed.get(i64::from(id));
            let _ = row.zero_();
            let _ = row.get(k as i64).fill_(1.0);
        }
        let head = vars.get_mut("lm_head.weight").unwrap();
        for (k, pair) in chain.windows(2).enumerate() {
            let _ = head.get(i64::from(pair[1])).get(k as i64).fill_(1.0);
        }
        let _ = head.get(end).get(hidden - 1).fill_(1.0);
    });
    model.save(dir.path()).unwrap();
    (dir, answer)
}

struct Answer {
    text: String,
    ids: Vec<u32>,
    finish: String,
    /// The streamed text pieces (one whole piece for an answer that is not streamed).
    pieces: Vec<String>,
}

/// The answer to [`QUESTION`] from `/v1/chat/completions` or `/v1/completions`, whole or streamed.
async fn ask(server: &Server, chat: bool, stream: bool, extra: Value) -> Answer {
    let (path, mut body) = if chat {
        ("chat/completions", json!({"messages": messages()}))
    } else {
        let tok_prompt = {
            let r = reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", server.url))
                .json(&json!({"messages": messages(), "max_tokens": 1, "return_token_ids": true}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["prompt_token_ids"].clone()
        };
        ("completions", json!({"prompt": tok_prompt}))
    };
    body["temperature"] = json!(0.0);
    body["max_tokens"] = json!(16);
    body["return_token_ids"] = json!(true);
    body["logprobs"] = json!(true);
    body["stream"] = json!(stream);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/{path}", server.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text_of = |choice: &Value| -> String {
        let t = if chat {
            choice
                .pointer("/delta/content")
                .or_else(|| choice.pointer("/message/content"))
        } else {
            choice.get("text")
        };
        t.and_then(Value::as_str).unwrap_or_default().to_string()
    };
    if !stream {
        let v: Value = r.json().await.unwrap();
        let choice = &v["choices"][0];
        let logprobs = if chat {
            choice["logprobs"]["content"].as_array().unwrap().len()
        } else {
            choice["logprobs"]["token_logprobs"]
                .as_array()
                .unwrap()
                .len()
        };
        let ids = ids(&choice["token_ids"]);
        assert_eq!(logprobs, ids.len(), "a logprob for every generated token");
        let text = text_of(choice);
        return Answer {
            pieces: vec![text.clone()],
            text,
            ids,
            finish: choice["finish_reason"].as_str().unwrap().to_string(),
        };
    }
    let sse = r.text().await.unwrap();
    let mut answer = Answer {
        text: String::new(),
        ids: Vec::new(),
        finish: String::new(),
        pieces: Vec::new(),
    };
    for event in sse.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if event == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(event).unwrap();
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let piece = text_of(choice);
        answer.text.push_str(&piece);
        answer.pieces.push(piece);
        if let Some(t) = choice.get("token_ids") {
            answer.ids.extend(ids(t));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            answer.finish = f.to_string();
        }
    }
    answer
}

/// Every way to ask: chat and completions, whole and streamed.
async fn every_way(server: &Server, extra: Value) -> Vec<Answer> {
    let mut out = Vec::new();
    for (chat, stream) in [(true, false), (true, true), (false, false), (false, true)] {
        out.push(ask(server, chat, stream, extra.clone()).await);
    }
    out
}

#[tokio::test]
async fn a_character_split_across_tokens_appears_once_and_broken_bytes_never() {
    // "h", "é" as two byte tokens, "i", a lone lead byte of a 3-byte character, "!", end of turn.
    let (dir, answer) = scripted(|t| {
        let b = |x| byte_token(t, x);
        vec![
            b(b'h'),
            b(0xC3),
            b(0xA9),
            b(b'i'),
            b(0xE2),
            b(b'!'),
            t.token_id(IM_END).unwrap(),
        ]
    });
    let server = start(dir.path(), &[]).await;
    for a in every_way(&server, json!({})).await {
        assert_eq!(a.text, "héi!", "pieces {:?}", a.pieces);
        assert!(
            a.pieces.iter().all(|p| !p.contains('\u{FFFD}')),
            "{:?}",
            a.pieces
        );
        assert_eq!(a.ids, answer, "token ids stay exact");
        assert_eq!(a.finish, "stop");
    }
}

#[tokio::test]
async fn control_characters_and_bytes_that_never_complete_are_not_in_the_text() {
    // "a", BEL (0x07), "b", then two bytes of a 3-byte character that never completes.
    let (dir, answer) = scripted(|t| {
        let b = |x| byte_token(t, x);
        vec![
            b(b'a'),
            b(0x07),
            b(b'b'),
            b(0xE2),
            b(0x82),
            t.token_id(IM_END).unwrap(),
        ]
    });
    let server = start(dir.path(), &[]).await;
    for a in every_way(&server, json!({})).await {
        assert_eq!(a.text, "ab", "pieces {:?}", a.pieces);
        assert_eq!(a.ids, answer);
        assert_eq!(a.finish, "stop");
    }
}

#[tokio::test]
async fn a_special_token_mid_answer_ends_it_and_is_never_text() {
    let (dir, answer) = scripted(|t| {
        let b = |x| byte_token(t, x);
        vec![
            b(b'o'),
            b(b'k'),
            t.token_id(IM_START).unwrap(),
            b(b'x'),
            b(b'y'),
            t.token_id(IM_END).unwrap(),
        ]
    });
    let server = start(dir.path(), &[]).await;
    for a in every_way(&server, json!({})).await {
        assert_eq!(a.text, "ok");
        assert_eq!(
            a.ids,
            answer[..3],
            "the token that ended it is in token_ids"
        );
        assert_eq!(a.finish, "stop");
    }
    // ignore_eos: the answer runs to max_tokens, special tokens stay out of its text.
    for a in every_way(&server, json!({"ignore_eos": true, "max_tokens": 6})).await {
        assert_eq!(a.text, "okxy", "pieces {:?}", a.pieces);
        assert_eq!(a.ids, answer);
        assert_eq!(a.finish, "length");
    }
}

#[tokio::test]
async fn generation_config_eos_token_id_ends_the_answer() {
    let (dir, answer) = scripted(|t| {
        let b = |x| byte_token(t, x);
        vec![
            b(b'o'),
            b(b'k'),
            b(b'.'),
            b(b'x'),
            t.token_id(IM_END).unwrap(),
        ]
    });
    let period = answer[2];
    let generation_config = dir.path().join("generation_config.json");
    std::fs::write(
        &generation_config,
        json!({"eos_token_id": [period]}).to_string(),
    )
    .unwrap();
    let server = start(dir.path(), &[]).await;
    for a in every_way(&server, json!({})).await {
        assert_eq!(a.text, "ok");
        assert_eq!(a.ids, answer[..3]);
        assert_eq!(a.finish, "stop");
    }
    drop(server);
    // A malformed file stops the server at start, naming the file and the key.
    std::fs::write(&generation_config, r#"{"eos_token_id": "."}"#).unwrap();
    let listener = clawline_runtime::bind_loopback().await.unwrap();
    let err = clawline_policy::run(config(dir.path(), &[]), listener, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("eos_token_id"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_never_sends_text_a_stop_string_later_takes_back() {
    let (dir, _) = scripted(|t| {
        let b = |x| byte_token(t, x);
        vec![
            b(b'a'),
            b(b'b'),
            b(b'c'),
            b(b'd'),
            b(b'e'),
            t.token_id(IM_END).unwrap(),
        ]
    });
    let server = start(dir.path(), &[]).await;
    for a in every_way(&server, json!({"stop": ["cd"]})).await {
        assert_eq!(a.text, "ab", "pieces {:?}", a.pieces);
        assert_eq!(a.finish, "stop");
    }
}
