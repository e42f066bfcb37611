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
