//! The canary's two JSONL sets: evaluation prompts (answered by sampling) and reference answers
//! (scored teacher-forced). Errors name the line; the caller names the flag and file.

use anyhow::Context as _;
use serde_json::{Value, json};

/// The prompts a canary answers when no `--canary-prompts` file is given.
pub const BUNDLED_PROMPTS: &str = include_str!("../../../../data/prompts/eval.jsonl");

/// The reference answers when no `--canary-references` file is given (`scripts/make_reference.py`
/// selects them from the corpus the built-in tiny model is warm-started on).
pub const BUNDLED_REFERENCES: &str = include_str!("../../../../data/prompts/reference.jsonl");

/// A prompt and the answer a version that still speaks well finds likely.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub messages: Vec<Value>,
    pub answer: String,
}

/// Non-empty, non-comment lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn messages(line: usize, v: &Value) -> anyhow::Result<Vec<Value>> {
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .with_context(|| format!("line {line}: no \"messages\" array"))?;
    for m in messages {
        anyhow::ensure!(
            m.get("role").and_then(Value::as_str).is_some()
                && m.get("content").and_then(Value::as_str).is_some(),
            "line {line}: every message needs a string \"role\" and \"content\""
        );
    }
    Ok(messages.clone())
}

/// `text`: JSONL, each line `{"messages": [...]}` or a plain string (one user turn).
pub fn parse_prompts(text: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let mut prompts = Vec::new();
    for (n, line) in lines(text) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("line {n}: not JSON"))?;
        prompts.push(match &v {
            Value::String(s) => vec![json!({"role": "user", "content": s})],
            Value::Object(o) => o
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .with_context(|| format!("line {n}: no \"messages\" array"))?,
            _ => anyhow::bail!("line {n}: expected a string or {{\"messages\": [...]}}"),
        });
    }
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    Ok(prompts)
}

/// `text`: JSONL, each line `{"messages": [...], "reference": "the assistant's answer"}`.
pub fn parse_references(text: &str) -> anyhow::Result<Vec<Reference>> {
    let mut references = Vec::new();
    for (n, line) in lines(text) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("line {n}: not JSON"))?;
        anyhow::ensure!(
            v.is_object(),
            "line {n}: expected {{\"messages\": [...], \"reference\": \"...\"}}"
        );
        let answer = v
            .get("reference")
            .and_then(Value::as_str)
            .filter(|a| !a.trim().is_empty())
            .with_context(|| format!("line {n}: no \"reference\" answer (a non-empty string)"))?;
        references.push(Reference {
            messages: messages(n, &v)?,
            answer: answer.to_string(),
        });
    }
    anyhow::ensure!(!references.is_empty(), "no reference answers");
    Ok(references)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_sets_parse() {
        assert_eq!(parse_prompts(BUNDLED_PROMPTS).unwrap().len(), 8);
        let refs = parse_references(BUNDLED_REFERENCES).unwrap();
        assert_eq!(refs.len(), 28);
        assert!(refs.iter().any(|r| r.answer.starts_with("Sorry")));
        assert!(refs.iter().any(|r| r.answer.contains("The answer is")));
    }

    #[test]
    fn a_malformed_reference_names_its_line() {
        let ok = r#"{"messages": [{"role": "user", "content": "Hi"}], "reference": "Hello!"}"#;
        let cases = [
            (format!("{ok}\n\n{{not json"), "line 3: not JSON"),
            (
                format!("# c\n{ok}\n{{\"messages\": [], \"reference\": \"a\"}}"),
                "line 3: no \"messages\"",
            ),
            (
                format!("{ok}\n{{\"messages\": [{{\"role\": \"user\", \"content\": \"x\"}}]}}"),
                "line 2: no \"reference\"",
            ),
            (
                r#"{"messages": [{"role": "user"}], "reference": "a"}"#.to_string(),
                "line 1: every message",
            ),
            ("[1]".to_string(), "line 1: expected"),
            ("# only a comment".to_string(), "no reference answers"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_references(&text).unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
