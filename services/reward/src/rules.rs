//! Rule rewards: ground-truth match, regex match / penalty, length penalty, tool-call validity,
//! and the reward-hacking guards (repetition, degenerate text; see [`crate::guards`]).
//! Each configured rule is its own source `rule:<name>`, versioned by a hash of its configuration,
//! and gives at most one reward per step (none when it does not apply, e.g. no ground truth).

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::guards;
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
    /// are a JSON object matching the tool's parameter schema, else `invalid`. Tool-call markup
    /// left in the answer's text (`<tool_call>`, `[TOOL_CALLS]`, … that the engine did not parse
    /// into a call) is a broken call: `invalid`, with or without parsed calls.
    ToolCall {
        #[serde(default = "one")]
        valid: f64,
        #[serde(default = "minus_one")]
        invalid: f64,
    },
    /// `-penalty × f` for an answer with words, where `f` is the fraction of its `ngram`-word
    /// sequences that repeat an earlier one of the same answer, or (with `sentences`) the
    /// fraction of its sentences that repeat an earlier one, whichever is larger; 0 without
    /// repetition.
    Repetition {
        #[serde(default = "default_ngram")]
        ngram: usize,
        #[serde(default = "one")]
        penalty: f64,
        #[serde(default = "yes")]
        sentences: bool,
    },
    /// `on_match` for an answer holding special-token markup (`<|im_start|>`), a control
    /// character other than `\n`, `\t`, `\r`, or U+FFFD; else `on_miss`.
    Degenerate {
        #[serde(default = "minus_one")]
        on_match: f64,
        #[serde(default)]
        on_miss: f64,
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
fn default_ngram() -> usize {
    3
}
fn yes() -> bool {
    true
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

/// The defaults when the TOML names no rules: ground truth and tool calls fire where they apply;
/// the guards score every answer with words (0 when it is clean), so a policy cannot learn to
/// please the reward model with repetition or markup.
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
        RuleConfig {
            name: "repetition".into(),
            kind: RuleKind::Repetition {
                ngram: default_ngram(),
                penalty: 1.0,
                sentences: true,
            },
        },
        RuleConfig {
            name: "degenerate".into(),
            kind: RuleKind::Degenerate {
                on_match: -1.0,
                on_miss: 0.0,
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
            RuleKind::Repetition { ngram: 0, .. } => {
                anyhow::bail!("rule `{}`: ngram must be at least 1", config.name)
            }
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
                // verl-style rows (Claw-R1's GSM8K) keep it under `reward_model`.
                let metadata = input.metadata?;
                let value = metadata.get(field).or_else(|| {
                    metadata
                        .get("reward_model")
                        .and_then(|r| r.get(field.as_str()))
                })?;
                let expected = match value {
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
                let markup = guards::tool_call_markup(input.response);
                if input.tool_calls.is_empty() && markup.is_none() {
                    return None;
                }
                let mut problems = check_tool_calls(input.tools_json, &input.tool_calls);
                if let Some(markup) = markup {
                    problems.push(format!(
                        "tool-call markup `{markup}` in the answer text, not parsed into a call"
                    ));
                }
                Some(Verdict {
                    value: if problems.is_empty() {
                        *valid
                    } else {
                        *invalid
                    },
                    details: json!({"calls": input.tool_calls.len(), "problems": problems}),
                })
            }
            RuleKind::Repetition {
                ngram,
                penalty,
                sentences,
            } => {
                if guards::words(input.response).is_empty() {
                    return None;
                }
                let r = guards::repetition(input.response, *ngram);
                let fraction = r.fraction(*sentences);
                Some(Verdict {
                    value: if fraction > 0.0 {
                        -penalty * fraction
                    } else {
                        0.0
                    },
                    details: r.details(*ngram),
                })
            }
            RuleKind::Degenerate { on_match, on_miss } => {
                if input.response.is_empty() {
                    return None;
                }
                Some(match guards::degenerate(input.response) {
                    Some(details) => Verdict {
                        value: *on_match,
                        details,
                    },
                    None => Verdict {
                        value: *on_miss,
                        details: json!({"found": []}),
                    },
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

    #[test]
    fn the_ground_truth_is_found_where_verl_rows_keep_it() {
        let rule = Rule::compile(&default_rules().remove(0)).expect("rule");
        let judge = |metadata: serde_json::Value| {
            rule.evaluate(&RuleInput {
                response: "48 + 24 = 72\n#### 72",
                response_tokens: None,
                metadata: Some(&metadata),
                tools_json: None,
                tool_calls: Vec::new(),
            })
            .map(|v| v.value)
        };
        assert_eq!(judge(serde_json::json!({"ground_truth": "72"})), Some(1.0));
        assert_eq!(
            judge(serde_json::json!({"reward_model": {"ground_truth": "72", "style": "rule"}})),
            Some(1.0)
        );
        assert_eq!(
            judge(serde_json::json!({"reward_model": {"ground_truth": "71"}})),
            Some(0.0)
        );
        assert_eq!(judge(serde_json::json!({"data_source": "gsm8k"})), None);
    }
}
