//! Every key of a `config.json` accounted for. transformers 5's layout (`rope_parameters`,
//! `dtype`) is turned into the 4.x one `LlamaConfig` reads; keys that do not change what the
//! model computes (bookkeeping, generation defaults) are dropped by name; any other key this
//! implementation does not read for the config's `model_type` is an error naming it. A key
//! dropped silently would be a silently different model.

use serde_json::{Map, Value};

/// Read by `LlamaConfig` for every family.
const COMMON: &[&str] = &[
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "torch_dtype",
];

/// Read for one family only.
fn family_keys(model_type: &str) -> &'static [&'static str] {
    match model_type {
        "llama" => &["attention_bias", "mlp_bias"],
        "mistral" => &["sliding_window"],
        "qwen2" | "qwen3" => &[
            "attention_bias",
            "sliding_window",
            "use_sliding_window",
            "max_window_layers",
            "layer_types",
        ],
        _ => &[],
    }
}

/// Keys that do not change the forward pass or the training step: bookkeeping, the tokenizer's
/// pad id, and generation defaults older configs carry.
const INERT: &[&str] = &[
    "_name_or_path",
    "transformers_version",
    "initializer_range",
    "use_cache",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "task_specific_params",
    "tokenizer_class",
    "prefix",
    "is_decoder",
    "is_encoder_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "cross_attention_hidden_size",
    "chunk_size_feed_forward",
    "pruned_heads",
    "_attn_implementation_autoset",
    // transformers ≥ 4.45 ignores it (older releases sliced the MLP into this many pieces,
    // which only reorders float additions).
    "pretraining_tp",
    // Generation defaults (older configs; `generation_config.json` holds them now).
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// Dropout rates: inert at 0; anything else would train a model this implementation does not
/// compute (it applies no dropout).
const ZERO_ONLY: &[&str] = &["attention_dropout", "hidden_dropout", "mlp_dropout"];

/// `map` with transformers 5's layout turned into 4.x's and the inert keys dropped; an error
/// names every key left that `model_type` does not read.
pub fn normalize(mut map: Map<String, Value>) -> anyhow::Result<Map<String, Value>> {
    if let Some(params) = map.remove("rope_parameters") {
        rope_parameters(&mut map, params)?;
    }
    if let Some(dtype) = map.remove("dtype") {
        map.entry("torch_dtype").or_insert(dtype);
    }
    // `rope_scaling: {"rope_type": "default"}` (or null) is no scaling.
    if let Some(scaling) = map.get("rope_scaling") {
        let default = scaling.is_null()
            || scaling.as_object().is_some_and(|o| {
                o.len() == 1
                    && o.get("rope_type")
                        .or_else(|| o.get("type"))
                        .is_some_and(|t| t == "default")
            });
        if default {
            map.remove("rope_scaling");
        }
    }
    for key in ZERO_ONLY {
        if let Some(v) = map.remove(*key) {
            anyhow::ensure!(
                v.is_null() || v.as_f64() == Some(0.0),
                "{key} = {v}: dropout is not implemented (it must be 0)"
            );
        }
    }
    for key in INERT {
        map.remove(*key);
    }
    let model_type = map
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama")
        .to_string();
    let family = family_keys(&model_type);
    let read = |k: &str| COMMON.contains(&k) || family.contains(&k);
    // A key set to null, or one this family does not read set to false, switches nothing on.
    let off = |k: &str, v: &Value| v.is_null() || (*v == Value::Bool(false) && !read(k));
    let unknown: Vec<&String> = map
        .iter()
        .filter(|(k, v)| !(read(k) || off(k, v)))
        .map(|(k, _)| k)
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "{} not understood for model_type {model_type:?} (the model would be computed without {})",
        unknown
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if unknown.len() == 1 { "it" } else { "them" }
    );
    map.retain(|k, v| !off(k, v));
    Ok(map)
}

/// transformers 5: `rope_parameters` holds `rope_theta`, `rope_type` and the scaling's own keys.
fn rope_parameters(map: &mut Map<String, Value>, params: Value) -> anyhow::Result<()> {
    let Value::Object(mut params) = params else {
        anyhow::ensure!(params.is_null(), "rope_parameters is not an object");
        return Ok(());
    };
    if params.values().all(Value::is_object) && !params.is_empty() {
        anyhow::bail!(
            "rope_parameters per layer type ({}) is not supported",
            params.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(theta) = params.remove("rope_theta") {
        if let Some(top) = map.get("rope_theta") {
            anyhow::ensure!(
                top == &theta,
                "rope_theta {top} and rope_parameters.rope_theta {theta} disagree"
            );
        }
        map.insert("rope_theta".into(), theta);
    }
    if let Some(partial) = params.remove("partial_rotary_factor") {
        anyhow::ensure!(
            partial.as_f64() == Some(1.0),
            "rope_parameters.partial_rotary_factor = {partial} is not supported (1 only)"
        );
    }
    let kind = params
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if kind == "default" {
        params.remove("rope_type");
        anyhow::ensure!(
            params.is_empty(),
            "rope_parameters: {} with rope_type \"default\"",
            params.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    if let Some(old) = map.get("rope_scaling").filter(|v| !v.is_null()) {
        anyhow::ensure!(
            old == &Value::Object(params.clone()),
            "rope_scaling and rope_parameters disagree"
        );
    }
    map.insert("rope_scaling".into(), Value::Object(params));
    Ok(())
}
