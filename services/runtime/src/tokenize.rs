//! Chat templates and tokenizers from a Hugging Face model dir (feature `tokenizer`). The gateway
//! uses it as a fallback when an engine returns no token ids: render the model's chat template
//! (HF `tokenizer_config.json`, minijinja) and tokenize with the model's `tokenizer.json`.

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
        let template = match config.get("chat_template") {
            Some(Value::String(t)) => t.clone(),
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
        minijinja_contrib::add_to_environment(&mut env);
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
        Ok(template.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
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
