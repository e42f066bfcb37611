//! Rule rewards: ground-truth match, regex match / penalty, length penalty, tool-call validity.
//! Each configured rule is its own source `rule:<name>`, versioned by a hash of its configuration,
//! and gives at most one reward per step (none when it does not apply, e.g. no ground truth).

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::schema::check_tool_calls;

/// One rule as written in the TOML (`[[rules]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RuleConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: RuleKind,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleKind {
    /// Compares the answer extracted from the response with `metadata.<field>`.
    GroundTruth {
        #[serde(default = "default_gt_field")]
        field: String,
        #[serde(default)]
        extract: Extract,
        #[serde(default = "one")]
        correct: f64,
        #[serde(default)]
        incorrect: f64,
    },
    /// `on_match` when `pattern` matches the response, else `on_miss` (no reward when unset).
    Regex {
        pattern: String,
        #[serde(default = "one")]
        on_match: f64,
        #[serde(default)]
        on_miss: Option<f64>,
    },
    /// `-per_token * (tokens - target)` beyond `target` response tokens, at most `max_penalty`.
    Length {
        target: usize,
        per_token: f64,
        #[serde(default = "one")]
        max_penalty: f64,
    },
    /// For a step with tool calls: `valid` when every call names a declared tool and its arguments
    /// are a JSON object matching the tool's parameter schema, else `invalid`.
    ToolCall {
        #[serde(default = "one")]
        valid: f64,
        #[serde(default = "minus_one")]
        invalid: f64,
    },
}

fn default_gt_field() -> String {
    "ground_truth".into()
}
fn one() -> f64 {
    1.0
}
fn minus_one() -> f64 {
    -1.0
}

/// How the answer is taken from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Extract {
    /// `#### X`, else `\boxed{X}`, else the last number, else the whole text.
    #[default]
    Auto,
    /// GSM8K's `#### X`.
    Gsm8k,
    /// LaTeX `\boxed{X}` (the last one).
    Boxed,
    /// The last number in the text.
    LastNumber,
    /// The whole response, trimmed.
    Exact,
}

/// The defaults when the TOML names no rules: both only fire where they apply.
pub fn default_rules() -> Vec<RuleConfig> {
    vec![
        RuleConfig {
            name: "ground_truth".into(),
            kind: RuleKind::GroundTruth {
                field: default_gt_field(),
                extract: Extract::Auto,
                correct: 1.0,
                incorrect: 0.0,
            },
        },
        RuleConfig {
            name: "tool_call".into(),
            kind: RuleKind::ToolCall {
                valid: 1.0,
                invalid: -1.0,
            },
        },
    ]
}

/// What a rule reads from a step (or from a `/compute_reward` request).
pub struct RuleInput<'a> {
    pub response: &'a str,
    pub response_tokens: Option<usize>,
    pub metadata: Option<&'a Value>,
    /// The request's `tools` array as JSON text.
    pub tools_json: Option<&'a str>,
    /// `(name, arguments JSON text)` of each tool call in the response.
    pub tool_calls: Vec<(&'a str, &'a str)>,
}

/// A compiled rule.
pub struct Rule {
    pub name: String,
    pub source: String,
    pub version: String,
    kind: RuleKind,
    regex: Option<Regex>,
}

/// One rule's verdict.
pub struct Verdict {
    pub value: f64,
    pub details: Value,
}

impl Rule {
    pub fn compile(config: &RuleConfig) -> anyhow::Result<Self> {
        if !clawline_nats::subjects::is_valid_token(&config.name) {
            anyhow::bail!("rule name `{}`: use 1-64 of [A-Za-z0-9_-]", config.name);
        }
        let regex = match &config.kind {
            RuleKind::Regex { pattern, .. } => Some(
                Regex::new(pattern)
                    .map_err(|e| anyhow::anyhow!("rule `{}`: bad pattern: {e}", config.name))?,
            ),
            _ => None,
        };
        let canonical = serde_json::to_string(config)?;
        let digest = crate::short_sha(canonical.as_bytes());
        Ok(Self {
            name: config.name.clone(),
            source: format!("rule:{}", config.name),
            version: digest,
            kind: config.kind.clone(),
            regex,
        })
    }

    /// Whether this is a ground-truth rule (what `/compute_reward` prefers).
    pub fn is_ground_truth(&self) -> bool {
        matches!(self.kind, RuleKind::GroundTruth { .. })
    }

    /// The reward, or `None` when the rule does not apply to this input.
    pub fn evaluate(&self, input: &RuleInput<'_>) -> Option<Verdict> {
        match &self.kind {
            RuleKind::GroundTruth {
                field,
                extract,
                correct,
                incorrect,
            } => {
                let expected = match input.metadata?.get(field)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Null => return None,
                    other => other.to_string(),
                };
                // Ground truths are often GSM8K solutions themselves: compare their final answer.
                let expected = extract_answer(&expected, Extract::Auto).unwrap_or(expected);
                let extracted = extract_answer(input.response, *extract);
                let ok = extracted
                    .as_deref()
                    .is_some_and(|got| answers_equal(got, &expected));
                Some(Verdict {
                    value: if ok { *correct } else { *incorrect },
                    details: json!({"extracted": extracted, "expected": expected}),
                })
            }
            RuleKind::Regex {
                on_match, on_miss, ..
            } => {
                let regex = self.regex.as_ref()?;
                let found = regex.find(input.response);
                let value = if found.is_some() {
                    *on_match
                } else {
                    (*on_miss)?
                };
                Some(Verdict {
                    value,
                    details: json!({"matched": found.map(|m| m.as_str())}),
                })
            }
            RuleKind::Length {
                target,
                per_token,
                max_penalty,
            } => {
                let (tokens, unit) = match input.response_tokens {
                    Some(n) => (n, "tokens"),
                    None => (input.response.split_whitespace().count(), "words"),
                };
                let over = tokens.saturating_sub(*target) as f64;
                Some(Verdict {
                    value: -(over * per_token).min(*max_penalty),
                    details: json!({"length": tokens, "unit": unit, "target": target}),
                })
            }
            RuleKind::ToolCall { valid, invalid } => {
                if input.tool_calls.is_empty() {
                    return None;
                }
                let problems = check_tool_calls(input.tools_json, &input.tool_calls);
                Some(Verdict {
                    value: if problems.is_empty() {
                        *valid
                    } else {
                        *invalid
                    },
                    details: json!({"calls": input.tool_calls.len(), "problems": problems}),
                })
            }
        }
    }
}

/// The answer in `text` under `how`.
pub fn extract_answer(text: &str, how: Extract) -> Option<String> {
    let gsm8k = || {
        let at = text.rfind("####")?;
        let rest = text[at + 4..].trim();
        let line = rest.lines().next().unwrap_or("").trim();
        (!line.is_empty()).then(|| line.to_string())
    };
    let boxed = || {
        let at = text.rfind("\\boxed{")?;
        let body = &text[at + 7..];
        let mut depth = 1usize;
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(body[..i].trim().to_string());
                    }
                }
                _ => {}
            }
        }
        None
    };
    let last_number = || last_number(text);
    match how {
        Extract::Gsm8k => gsm8k(),
        Extract::Boxed => boxed(),
        Extract::LastNumber => last_number(),
        Extract::Exact => Some(text.trim().to_string()),
        Extract::Auto => gsm8k()
            .or_else(boxed)
            .or_else(last_number)
            .or_else(|| Some(text.trim().to_string())),
    }
}

fn last_number(text: &str) -> Option<String> {
    static NUMBER: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        #[allow(clippy::unwrap_used, reason = "a constant pattern")]
        Regex::new(r"-?\$?\d[\d,]*(?:\.\d+)?").unwrap()
    });
    NUMBER
        .find_iter(text)
        .last()
        .map(|m| m.as_str().to_string())
}

/// Numbers compare as numbers (`1,000` = `1000.0` = `$1000`); anything else case- and
/// space-insensitively.
pub fn answers_equal(got: &str, expected: &str) -> bool {
    let number = |s: &str| {
        let cleaned: String = s
            .trim()
            .trim_end_matches('.')
            .chars()
            .filter(|c| !matches!(c, ',' | '$' | ' '))
            .collect();
        cleaned.parse::<f64>().ok()
    };
    match (number(got), number(expected)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        _ => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(got) == norm(expected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_extracted_the_usual_ways() {
        let text = "She has 3 + 4 = 7 apples.\n#### 7";
        assert_eq!(extract_answer(text, Extract::Gsm8k).as_deref(), Some("7"));
        assert_eq!(
            extract_answer(r"so \boxed{\frac{1}{2}} it is", Extract::Boxed).as_deref(),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(
            extract_answer("first 12 then 1,250.5 dollars", Extract::LastNumber).as_deref(),
            Some("1,250.5")
        );
        assert_eq!(extract_answer("no digits", Extract::Gsm8k), None);
        assert_eq!(
            extract_answer("answer: 42", Extract::Auto).as_deref(),
            Some("42")
        );
        assert!(answers_equal("$1,000", "1000.0"));
        assert!(answers_equal(" Paris ", "paris"));
        assert!(!answers_equal("41", "42"));
    }
}
