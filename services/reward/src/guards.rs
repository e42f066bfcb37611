//! Reward-hacking guards: what the `repetition` and `degenerate` rules and the tool-call rule's
//! markup check look for in an answer's text. A policy trained on a reward model finds the text
//! that model likes and says it again ("happy to help, happy to help, …"), or drifts into markup
//! and bytes no answer should hold; these give such answers a negative reward of their own.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

/// How much of an answer repeats itself.
pub struct Repetition {
    /// Word n-grams, and how many repeat an earlier one of the same answer.
    pub ngrams: usize,
    pub repeated_ngrams: usize,
    /// Sentences (split at `.`, `!`, `?` and line ends), and how many repeat an earlier one.
    pub sentences: usize,
    pub repeated_sentences: usize,
}

impl Repetition {
    /// The larger of the repeated fractions of n-grams and of sentences, in [0, 1).
    pub fn fraction(&self, count_sentences: bool) -> f64 {
        let part = |r: usize, n: usize| if n == 0 { 0.0 } else { r as f64 / n as f64 };
        let ngrams = part(self.repeated_ngrams, self.ngrams);
        if count_sentences {
            ngrams.max(part(self.repeated_sentences, self.sentences))
        } else {
            ngrams
        }
    }

    pub fn details(&self, ngram: usize) -> Value {
        json!({
            "ngram": ngram,
            "ngrams": self.ngrams,
            "repeated_ngrams": self.repeated_ngrams,
            "sentences": self.sentences,
            "repeated_sentences": self.repeated_sentences,
        })
    }
}

/// Words, lowercased, without the punctuation around them ("Help," and "help" are one word).
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Counts the `ngram`-word sequences and sentences of `text` that repeat an earlier one.
pub fn repetition(text: &str, ngram: usize) -> Repetition {
    let words = words(text);
    let mut seen = HashSet::new();
    let (mut ngrams, mut repeated_ngrams) = (0, 0);
    for gram in words.windows(ngram.max(1)) {
        ngrams += 1;
        if !seen.insert(gram) {
            repeated_ngrams += 1;
        }
    }
    let mut seen = HashSet::new();
    let (mut sentences, mut repeated_sentences) = (0, 0);
    for sentence in text.split(['.', '!', '?', '\n']) {
        let sentence = self::words(sentence).join(" ");
        if sentence.is_empty() {
            continue;
        }
        sentences += 1;
        if !seen.insert(sentence) {
            repeated_sentences += 1;
        }
    }
    Repetition {
        ngrams,
        repeated_ngrams,
        sentences,
        repeated_sentences,
    }
}

/// Special-token markup as chat templates write it: `<|im_start|>`, `<|eot_id|>`, DeepSeek's
/// `<｜end▁of▁sentence｜>`.
static SPECIAL_MARKUP: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used, reason = "a constant pattern")]
    Regex::new(r"<[|｜][^<>\s|｜]{1,64}[|｜]>").unwrap()
});

/// What no answer should hold: special-token markup, control characters other than `\n`, `\t`
/// and `\r`, U+FFFD (bytes that were not valid UTF-8). `None` for a clean answer.
pub fn degenerate(text: &str) -> Option<Value> {
    let markup = SPECIAL_MARKUP.find(text).map(|m| m.as_str());
    let control = text
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'));
    let replacement = text.contains('\u{FFFD}');
    if markup.is_none() && control.is_none() && !replacement {
        return None;
    }
    let mut found = Vec::new();
    if markup.is_some() {
        found.push("special_token_markup");
    }
    if control.is_some() {
        found.push("control_character");
    }
    if replacement {
        found.push("replacement_character");
    }
    Some(json!({
        "found": found,
        "markup": markup,
        "control": control.map(|c| format!("U+{:04X}", u32::from(c))),
    }))
}

/// Tool-call markup of the common chat templates (Hermes/Qwen, Llama 3, Mistral, Kimi,
/// DeepSeek). In an answer's text it is a call the engine did not parse.
pub const TOOL_CALL_MARKUP: [&str; 10] = [
    "<tool_call>",
    "</tool_call>",
    "<|tool_call|>",
    "<tool_calls>",
    "<function_call>",
    "<function=",
    "<|python_tag|>",
    "[TOOL_CALLS]",
    "<|tool_calls_section_begin|>",
    "<｜tool▁calls▁begin｜>",
];

/// The first tool-call markup in `text`.
pub fn tool_call_markup(text: &str) -> Option<&'static str> {
    TOOL_CALL_MARKUP
        .iter()
        .filter_map(|m| text.find(m).map(|at| (at, *m)))
        .min()
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_phrases_and_sentences_are_counted() {
        let r = repetition("Happy to help, happy to help, happy to help!", 3);
        // 9 words, 7 trigrams, the last 4 repeat the first 3.
        assert_eq!((r.ngrams, r.repeated_ngrams), (7, 4));
        let r = repetition("Yes. Yes. Yes. No.", 3);
        assert_eq!((r.sentences, r.repeated_sentences), (4, 2));
        assert_eq!(r.fraction(true), 0.5);
        assert_eq!(r.fraction(false), 0.0, "4 words, no trigram repeats");
        let r = repetition("The answer is 42 because 6 times 7 is 42.", 3);
        assert_eq!(r.fraction(true), 0.0);
    }

    #[test]
    fn markup_control_characters_and_broken_bytes_are_degenerate() {
        assert!(degenerate("Sure, here it is.\n\tDone.").is_none());
        assert!(degenerate("a <b>|</b> table | x |").is_none());
        let found = |t: &str| degenerate(t).unwrap()["found"].clone();
        assert_eq!(found("ok<|im_start|>user"), json!(["special_token_markup"]));
        assert_eq!(
            found("end<｜end▁of▁sentence｜>"),
            json!(["special_token_markup"])
        );
        assert_eq!(found("ding\u{7}"), json!(["control_character"]));
        assert_eq!(found("caf\u{FFFD}"), json!(["replacement_character"]));
        assert_eq!(
            tool_call_markup("x <tool_call>{\"name\": 1}</tool_call>"),
            Some("<tool_call>")
        );
        assert_eq!(tool_call_markup("a plain answer"), None);
    }
}
