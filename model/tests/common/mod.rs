//! A model small enough for many tests a second.
#![allow(dead_code)]

use clawline_model::LlamaConfig;

/// 2 layers, hidden 32, 4 heads over 2 key/value heads.
pub fn tiny(vocab: usize, positions: usize) -> LlamaConfig {
    let mut c = LlamaConfig::tiny(vocab);
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = Some(2);
    c.max_position_embeddings = positions;
    c
}

/// The `__metadata__` `format` of a safetensors file, read with Hugging Face's `safetensors`.
#[allow(dead_code, reason = "not every test binary checks it")]
pub fn safetensors_format(path: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    metadata.metadata().as_ref()?.get("format").cloned()
}
