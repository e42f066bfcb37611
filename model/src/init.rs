//! `clawline model init DIR`: a fresh tiny model with its own tokenizer, no download. The
//! tokenizer is a byte-level BPE trained by the `tokenizers` crate on the bundled corpus
//! (`data/model/corpus.txt`, from `scripts/make_corpus.py`); the chat template is ChatML. The
//! directory is a Hugging Face model dir: `config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json` — transformers, vLLM and clawline's gateway read it as they read any.

use std::path::Path;

use anyhow::Context as _;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

use crate::config::{EosTokens, LlamaConfig};
use crate::weights::{CONFIG_FILE, Loaded};

/// The text the tokenizer is trained on.
pub const CORPUS: &str = include_str!("../../data/model/corpus.txt");

pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// ChatML, as Qwen's instruct models use it.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub vocab_size: usize,
    pub seed: i64,
    /// Replace a model already in the directory.
    pub force: bool,
    /// Next-token training steps on the corpus conversations (16 each), so the model answers a
    /// chat request in kind instead of with noise.
    pub warm_start_steps: usize,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            vocab_size: 2048,
            seed: 0,
            force: false,
            warm_start_steps: 0,
        }
    }
}

/// Writes a fresh model and tokenizer into `dir`; returns the model's config.
pub fn init(dir: &Path, options: &InitOptions) -> anyhow::Result<LlamaConfig> {
    anyhow::ensure!(
        options.vocab_size >= 300,
        "--vocab-size {}: at least 300 (256 bytes, the special tokens and some merges)",
        options.vocab_size
    );
    if dir.join(CONFIG_FILE).exists() && !options.force {
        anyhow::bail!(
            "{}: already holds a model (use --force to replace it)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tokenizer = train_tokenizer(options.vocab_size)?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .with_context(|| format!("{t} missing from the trained vocabulary"))
    };
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "bos_token": null,
        "add_bos_token": false,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": false,
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&tokenizer_config)?,
    )?;
    let mut config = LlamaConfig::tiny(tokenizer.get_vocab_size(true));
    config.eos_token_id = Some(EosTokens::Many(vec![id(IM_END)?, id(END_OF_TEXT)?]));
    let model = Loaded::fresh(&config, tch::Device::Cpu, options.seed)?;
    if options.warm_start_steps > 0 {
        warm_start(&model, &tokenizer, options.warm_start_steps)?;
    }
    model.save(dir)?;
    // What transformers' `generate` and vLLM read for stopping (a directory without it stops
    // only at `eos_token_id` of config.json in some tools).
    let generation = serde_json::json!({
        "eos_token_id": [id(IM_END)?, id(END_OF_TEXT)?],
        "do_sample": true,
        "temperature": 1.0,
    });
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::to_vec_pretty(&generation)?,
    )?;
    Ok(config)
}

/// Mean negative log-likelihood per token of `lines` under `model` (the warm start's loss).
pub fn corpus_nll(model: &Loaded, lines: &[Vec<u32>]) -> f64 {
    let (sum, n) = lines
        .iter()
        .filter(|l| l.len() >= 2)
        .map(|l| model.model.completion_logprobs(&l[..1], &l[1..]))
        .fold((0.0, 0usize), |(s, n), lp| {
            (
                s - lp.iter().map(|&x| f64::from(x)).sum::<f64>(),
                n + lp.len(),
            )
        });
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The corpus as conversations: each `User:`/`Question:` line and the `Assistant:`/`Answer:`
/// line after it, rendered with the chat template the server applies (ChatML), so a warm-started
/// model answers a chat request the way the corpus does.
pub fn chat_examples() -> Vec<String> {
    let lines: Vec<&str> = CORPUS.lines().collect();
    lines
        .windows(2)
        .filter_map(|pair| {
            let ask = pair[0]
                .strip_prefix("User: ")
                .or_else(|| pair[0].strip_prefix("Question: "))?;
            let reply = pair[1]
                .strip_prefix("Assistant: ")
                .or_else(|| pair[1].strip_prefix("Answer: "))?;
            Some(format!(
                "{IM_START}user\n{ask}{IM_END}\n{IM_START}assistant\n{reply}{IM_END}\n"
            ))
        })
        .collect()
}

/// Trains `model` to continue the corpus conversations, `steps` batches of 16 in corpus order.
fn warm_start(model: &Loaded, tokenizer: &Tokenizer, steps: usize) -> anyhow::Result<()> {
    use crate::optim::Optimizer as _;
    let limit = model.model.config().max_position_embeddings;
    let lines: Vec<Vec<i64>> = chat_examples()
        .iter()
        .filter_map(|l| tokenizer.encode(l.as_str(), false).ok())
        .map(|e| {
            e.get_ids()
                .iter()
                .take(limit)
                .map(|&t| i64::from(t))
                .collect::<Vec<_>>()
        })
        .filter(|ids| ids.len() >= 2)
        .collect();
    anyhow::ensure!(!lines.is_empty(), "the corpus has no conversations");
    let mut opt = crate::optim::AdamW::new(3e-3);
    for step in 0..steps {
        let batch: Vec<&Vec<i64>> = (0..16)
            .map(|k| &lines[(step * 16 + k) % lines.len()])
            .collect();
        let t = batch.iter().map(|l| l.len()).max().unwrap_or(2);
        let mut ids = vec![0i64; batch.len() * t];
        let mut mask = vec![false; batch.len() * t];
        for (row, l) in batch.iter().enumerate() {
            for (j, &id) in l.iter().enumerate() {
                ids[row * t + j] = id;
                mask[row * t + j] = true;
            }
        }
        let shape = [batch.len() as i64, t as i64];
        let ids = tch::Tensor::from_slice(&ids).view(shape);
        let mask = tch::Tensor::from_slice(&mask).view(shape);
        opt.zero_grad(&model.vs);
        let lp = model.model.token_logprobs(&ids, &mask);
        let tokens = mask
            .narrow(1, 1, t as i64 - 1)
            .to_kind(tch::Kind::Float)
            .sum(tch::Kind::Float);
        let loss = -lp.sum(tch::Kind::Float) / tokens;
        loss.backward();
        opt.step(&model.vs, 1.0);
    }
    Ok(())
}

/// A byte-level BPE of `vocab_size` tokens (special tokens first) trained on the corpus.
pub fn train_tokenizer(vocab_size: usize) -> anyhow::Result<Tokenizer> {
    let specials: Vec<AddedToken> = [END_OF_TEXT, IM_START, IM_END]
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, true,
    ))))
    .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
    .build()
    .map_err(|e| anyhow::anyhow!("building the tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, CORPUS.lines())
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    Ok(Tokenizer::from(tokenizer))
}
