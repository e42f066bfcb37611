//! Chat templates and tokenizers from a Hugging Face model dir (feature `tokenizer`). The gateway
//! uses it as a fallback when an engine returns no token ids: render the model's chat template
//! (HF `chat_template.jinja` or `tokenizer_config.json`, minijinja) and tokenize with the model's
//! `tokenizer.json`. Rendering follows transformers' `apply_chat_template`: `trim_blocks` and
//! `lstrip_blocks`, its `tojson` (Python's `json.dumps`: no HTML escaping, `", "` and `": "`,
//! `indent`), and, as vLLM does before rendering, tool-call `arguments` given as a JSON string are
//! passed to the template as the object they encode.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};
use serde_json::Value;

pub struct ChatTokenizer {
    tokenizer: tokenizers::Tokenizer,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("reading {path}: {message}")]
    Load { path: String, message: String },
    #[error("{path} has no chat_template")]
    NoTemplate { path: String },
    #[error("chat template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("tokenizing: {0}")]
    Encode(String),
}

fn special_token(config: &Value, name: &str) -> String {
    match config.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTokenizer {
    /// Loads `dir/tokenizer.json` and the chat template from `dir/tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| TokenizerError::Load {
                path: tok_path.display().to_string(),
                message: e.to_string(),
            })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let load_err = |message: String| TokenizerError::Load {
            path: cfg_path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| load_err(e.to_string()))?;
        let config: Value = serde_json::from_str(&text).map_err(|e| load_err(e.to_string()))?;
        // transformers ≥ 4.47 saves the template beside the config, and reads it first.
        let jinja_path = dir.join("chat_template.jinja");
        let jinja = match std::fs::read_to_string(&jinja_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(TokenizerError::Load {
                    path: jinja_path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        let template = match jinja
            .map(Value::String)
            .or_else(|| config.get("chat_template").cloned())
        {
            Some(Value::String(t)) => t,
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| TokenizerError::NoTemplate {
                    path: cfg_path.display().to_string(),
                })?,
            _ => {
                return Err(TokenizerError::NoTemplate {
                    path: cfg_path.display().to_string(),
                });
            }
        };
        let mut env = Environment::new();
        // As transformers' `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        minijinja_contrib::add_to_environment(&mut env);
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", template)?;
        Ok(Self {
            tokenizer,
            env,
            bos_token: special_token(&config, "bos_token"),
            eos_token: special_token(&config, "eos_token"),
        })
    }

    /// The prompt text the engine would have seen for these messages.
    pub fn render(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
    ) -> Result<String, TokenizerError> {
        let template = self.env.get_template("chat")?;
        let messages: Vec<Value> = messages.iter().map(arguments_as_objects).collect();
        Ok(template.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
            tools => minijinja::Value::from(minijinja::value::Serde(tools.filter(|t| !t.is_null()))),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })?)
    }

    /// Token ids of already-rendered text (special tokens in the text are recognised, none added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Token ids of a text prompt as transformers and vLLM tokenize one (`add_special_tokens`:
    /// the tokenizer's post-processor adds what it adds, e.g. Llama 3's BOS).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Text of `ids` as an answer shows it: added tokens marked special (`<|im_end|>`, …) left
    /// out. Bytes of a character split across tokens decode to U+FFFD until it is complete.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The added tokens marked special (end of turn, role markers, …) and their ids, by id.
    pub fn special_tokens(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = self
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        out.sort();
        out
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of a token (e.g. the end-of-sequence token an engine appends).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The end-of-sequence token from `tokenizer_config.json`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Prompt ids for a chat request.
    pub fn encode_chat(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode(&self.render(messages, tools)?)
    }
}

/// `message` with each tool call's `function.arguments` that is a JSON string encoding an object
/// replaced by that object (vLLM does this before rendering; templates write `arguments | tojson`
/// or iterate over them).
fn arguments_as_objects(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for call in calls {
            if let Some(args) = call.pointer_mut("/function/arguments")
                && let Some(text) = args.as_str()
                && let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(text)
            {
                *args = parsed;
            }
        }
    }
    message
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(minijinja::Value::from_safe_string(out))
}

/// Writes `v` as Python's `json.dumps` does (`ensure_ascii=False`; separators `", "`/`": "`, or
/// `","` and newlines with `indent`).
fn python_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                python_string(k, out);
                out.push_str(": ");
                python_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        Value::String(s) => python_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Python writes it with `ensure_ascii=False`: only `"`, `\\` and control
/// characters escaped.
fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
