//! Where an answer ends, and what its text may hold.
//!
//! **Where an answer ends.** Generation stops at the chat template's end of turn: the
//! `eos_token` of `tokenizer_config.json`, `eos_token_id` of `config.json` and of
//! `generation_config.json` (a number or a list), and the well-known end-of-turn tokens
//! ([`END_OF_TURN`]) the vocabulary has. It also stops at **every other added token marked
//! special** (`<|im_start|>`, a `<s>`, …), with finish reason `stop`: such a token in the middle of
//! an answer means the model has left the assistant's turn (the next thing it writes would be
//! another role's message, or noise), so the answer ends there rather than running on to
//! `max_tokens` with markup the client would have to strip. As for an end-of-sequence token, the
//! token that ended the answer is in `token_ids` and the logprobs, never in the text. With
//! `ignore_eos` nothing stops the answer early, and special tokens are left out of its text.
//!
//! **What the text may hold.** Never an added token marked special, never a control character
//! other than `\n`, `\t` and `\r`, never U+FFFD from a character whose bytes are split across
//! tokens: the bytes of an incomplete character are held back until a later token completes it,
//! and bytes that never complete are dropped. Token ids and logprobs are untouched: they are
//! every generated token, as the model chose them.

use std::path::Path;

use clawline_model::LlamaConfig;
use clawline_runtime::tokenize::ChatTokenizer;
use serde_json::Value;

/// End-of-turn tokens of the common chat templates (ChatML, Llama 3, GPT-2, Llama 2, Phi-3).
pub const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "</s>",
    "<|end|>",
];

/// The ids that end an answer (see the module docs), sorted.
pub fn stop_ids(
    dir: &Path,
    config: &LlamaConfig,
    tokenizer: &ChatTokenizer,
) -> anyhow::Result<Vec<u32>> {
    let mut ids = config.eos_ids();
    ids.extend(generation_config_eos(dir)?);
    let named = std::iter::once(tokenizer.eos_token())
        .chain(END_OF_TURN)
        .filter(|t| !t.is_empty());
    ids.extend(named.filter_map(|t| tokenizer.token_id(t)));
    ids.extend(tokenizer.special_tokens().into_iter().map(|(id, _)| id));
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// `eos_token_id` of `dir/generation_config.json` (none when the file or the key is absent).
fn generation_config_eos(dir: &Path) -> anyhow::Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let bad = |why: String| anyhow::anyhow!("{}: {why}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let wrong = || bad("eos_token_id must be a token id or a list of token ids".into());
    match json.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(|v| id(v).ok_or_else(wrong)).collect(),
        Some(v) => Ok(vec![id(v).ok_or_else(wrong)?]),
    }
}

/// The text an answer may show: no control characters but `\n`, `\t`, `\r`, no U+FFFD.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\u{FFFD}' && (!c.is_control() || matches!(c, '\n' | '\t' | '\r')))
        .collect()
}

/// An answer's text as its tokens arrive: decoded from the whole prefix each time, complete
/// characters only, cleaned, cut at a stop string, and handed out piece by piece.
#[derive(Default)]
pub struct AnswerText {
    /// The answer's ids that are text (special tokens excluded).
    ids: Vec<u32>,
    /// The clean text of `ids`, up to the last complete character (cut at a stop string).
    clean: String,
    /// Bytes of `clean` already handed out.
    sent: usize,
}

impl AnswerText {
    /// Adds a text token; returns true when a stop string now ends the answer (the text is cut
    /// before it).
    pub fn push(&mut self, tokenizer: &ChatTokenizer, id: u32, stops: &[String]) -> bool {
        self.ids.push(id);
        let full = tokenizer.decode_text(&self.ids).unwrap_or_default();
        // A trailing U+FFFD is a character whose remaining bytes may come with the next token.
        let mut text = clean(full.trim_end_matches('\u{FFFD}'));
        let cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
        if let Some(cut) = cut {
            text.truncate(cut);
        }
        // What was handed out stays (byte-level decoding of a longer prefix always starts with
        // it; a decoder that rewrites earlier text waits until it agrees again).
        if text.starts_with(&self.clean[..self.sent]) {
            self.clean = text;
        }
        cut.is_some()
    }

    /// The text not handed out yet, except its last `hold` characters (where a stop string may
    /// still begin); `hold` 0 hands out everything (the answer is over).
    pub fn take(&mut self, hold: usize) -> String {
        let end = if hold == 0 {
            self.clean.len()
        } else {
            self.clean
                .char_indices()
                .rev()
                .take(hold)
                .last()
                .map_or(self.clean.len(), |(i, _)| i)
        };
        let end = end.max(self.sent);
        let piece = self.clean[self.sent..end].to_string();
        self.sent = end;
        piece
    }

    /// The text handed out so far.
    pub fn sent(&self) -> &str {
        &self.clean[..self.sent]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_replacement_characters_are_removed() {
        assert_eq!(
            clean("a\u{7}b\u{FFFD}c\n\td\r\u{1b}[0m\u{85}"),
            "abc\n\td\r[0m"
        );
    }
}
