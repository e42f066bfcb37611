#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! `model init`: a fresh model dir that the gateway's tokenizer code (HF `tokenizer.json` and chat
//! template) and the model loader read like any Hugging Face model, reproducibly from a seed.

use clawline_model::init::{InitOptions, init};
use clawline_model::weights::Loaded;
use clawline_model::{Finish, Request, Sampling, generate};
use clawline_runtime::tokenize::ChatTokenizer;
use serde_json::json;
use tch::Device;

fn options(seed: i64) -> InitOptions {
    InitOptions {
        vocab_size: 512,
        seed,
        force: false,
        warm_start_steps: 0,
    }
}

#[test]
fn init_writes_a_model_dir_that_hf_tooling_and_the_loader_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path(), &options(7)).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let generation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        generation["eos_token_id"],
        serde_json::json!(config.eos_ids()),
        "generation stops where the config says"
    );
    let tok = ChatTokenizer::load(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), config.vocab_size);
    assert_eq!(tok.eos_token(), "<|im_end|>");
    let messages = [json!({"role": "user", "content": "Ana has 3 apples. How many now?"})];
    let text = tok.render(&messages, None).unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nAna has 3 apples. How many now?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode_chat(&messages, None).unwrap();
    let start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(ids[0], start, "special tokens are single ids");
    assert_eq!(
        tok.decode(&ids).unwrap(),
        text,
        "decoding gives the text back"
    );
    let words = tok.encode("The answer is 42.").unwrap();
    assert!(
        words.len() < 12,
        "merges learned from the corpus: {words:?}"
    );

    let model = Loaded::load(dir.path(), Device::Cpu).unwrap();
    let eos = config.eos_ids();
    assert!(eos.contains(&tok.token_id("<|im_end|>").unwrap()));
    let out = generate(
        &model.model,
        &[Request {
            prompt: ids,
            sampling: Sampling {
                max_tokens: 8,
                stop_ids: eos,
                seed: Some(1),
                ..Default::default()
            },
        }],
    )
    .unwrap();
    assert!(out[0].tokens.len() == 8 || out[0].finish == Finish::Stop);
    assert!(tok.decode(&out[0].tokens).is_ok());
}

#[test]
fn init_is_reproducible_and_refuses_to_overwrite_without_force() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    init(a.path(), &options(3)).unwrap();
    init(b.path(), &options(3)).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let err = init(a.path(), &options(4)).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    let mut force = options(4);
    force.force = true;
    init(a.path(), &force).unwrap();
    assert_ne!(
        std::fs::read(a.path().join("model.safetensors")).unwrap(),
        std::fs::read(b.path().join("model.safetensors")).unwrap(),
        "another seed, other weights"
    );
    let mut small = options(1);
    small.vocab_size = 100;
    let err = init(tempfile::tempdir().unwrap().path(), &small)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--vocab-size"), "{err}");
}

#[test]
fn a_warm_start_makes_the_corpus_conversations_likelier() {
    let (cold, warm) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    init(cold.path(), &options(5)).unwrap();
    let mut o = options(5);
    o.warm_start_steps = 30;
    init(warm.path(), &o).unwrap();
    let tok = ChatTokenizer::load(cold.path()).unwrap();
    let lines: Vec<Vec<u32>> = clawline_model::init::chat_examples()
        .iter()
        .take(40)
        .map(|l| tok.encode(l).unwrap())
        .collect();
    let nll = |dir: &std::path::Path| {
        clawline_model::init::corpus_nll(&Loaded::load(dir, Device::Cpu).unwrap(), &lines)
    };
    let (before, after) = (nll(cold.path()), nll(warm.path()));
    assert!(
        after < before - 1.0,
        "nats per token: {before:.2} → {after:.2}"
    );
}
