//! Chat templates and tokenizers from a Hugging Face model dir (feature `tokenizer`). The gateway
//! uses it as a fallback when an engine returns no token ids: render the model's chat template
//! (HF `chat_template.jinja` or `tokenizer_config.json`, minijinja) and tokenize with the model's
//! `tokenizer.json`. Rendering follows transformers' `apply_chat_template`: `trim_blocks` and
//! `lstrip_blocks`, its `tojson` (Python's `json.dumps`: no HTML escaping, `", "` and `": "`,
//! `indent`), `strftime_now`; and what vLLM does before rendering: message content in the format
//! the template reads ([`ContentFormat`]), tool-call `arguments` given as a JSON string passed as
//! the object they encode, and the request's template variables ([`TemplateArgs`]).

mod jinja;

use std::path::Path;

use minijinja::Environment;
use serde_json::{Map, Value};

pub use jinja::ContentFormat;

pub struct ChatTokenizer {
    tokenizer: tokenizers::Tokenizer,
    env: Environment<'static>,
    content_format: ContentFormat,
    /// Whether the template has a `developer` role (else developer messages become system ones).
    knows_developer: bool,
    /// The special tokens transformers hands every template (`bos_token`, `eos_token`, …).
    special_tokens: Map<String, Value>,
    eos_token: String,
}

/// The template variables of a chat request beyond its messages and tools, as vLLM reads them.
#[derive(Clone, Debug, Default)]
pub struct TemplateArgs(Map<String, Value>);

impl TemplateArgs {
    /// The variables a chat-completions request sets, in vLLM's order: its `chat_template_kwargs`
    /// (`null` and `"auto"` values left out), then the request's own fields over them:
    /// `add_generation_prompt` (default true), `continue_final_message` (default false),
    /// `documents`, and `reasoning_effort` (which also sets `enable_thinking`, to whether the
    /// effort is not `"none"`, unless the kwargs set it). An error names a field of the wrong type.
    pub fn of_request(request: &Map<String, Value>) -> Result<Self, TemplateArgsError> {
        let wrong = |field, message| Err(TemplateArgsError { field, message });
        let mut vars = Map::new();
        match request.get("chat_template_kwargs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(kwargs)) => vars.extend(
                kwargs
                    .iter()
                    .filter(|(_, v)| !v.is_null() && v.as_str() != Some("auto"))
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
            Some(_) => return wrong("chat_template_kwargs", "an object is required"),
        }
        for (field, default) in [
            ("add_generation_prompt", true),
            ("continue_final_message", false),
        ] {
            let value = match request.get(field) {
                None | Some(Value::Null) => default,
                Some(Value::Bool(b)) => *b,
                Some(_) => return wrong(field, "a boolean is required"),
            };
            vars.insert(field.into(), Value::Bool(value));
        }
        match request.get("documents") {
            None | Some(Value::Null) => {}
            Some(docs @ Value::Array(_)) => {
                vars.insert("documents".into(), docs.clone());
            }
            Some(_) => return wrong("documents", "an array is required"),
        }
        match request.get("reasoning_effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(effort)) => {
                if !vars.contains_key("enable_thinking") {
                    vars.insert("enable_thinking".into(), Value::Bool(effort != "none"));
                }
                vars.insert("reasoning_effort".into(), effort.clone().into());
            }
            Some(_) => return wrong("reasoning_effort", "a string is required"),
        }
        let flag = |name: &str| vars.get(name).and_then(Value::as_bool);
        if flag("continue_final_message") == Some(true)
            && flag("add_generation_prompt") == Some(true)
        {
            return wrong(
                "continue_final_message",
                "cannot be true together with add_generation_prompt (set it to false)",
            );
        }
        Ok(Self(vars))
    }

    /// Variables set by name (e.g. `enable_thinking`), as `chat_template_kwargs` would.
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.0.insert(name.into(), value);
        self
    }

    fn continues_final_message(&self) -> bool {
        self.0
            .get("continue_final_message")
            .and_then(Value::as_bool)
            == Some(true)
    }
}

/// A request field [`TemplateArgs::of_request`] cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TemplateArgsError {
    pub field: &'static str,
    pub message: &'static str,
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
    #[error("continue_final_message: the chat template does not write the final message's content")]
    Continue,
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
        let content_format = ContentFormat::of(&template);
        let knows_developer =
            template.contains("\"developer\"") || template.contains("'developer'");
        let env = jinja::environment(template)?;
        let special_tokens = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .into_iter()
            .filter_map(|name| {
                let token = special_token(&config, name);
                (!token.is_empty()).then(|| (name.to_string(), Value::String(token)))
            })
            .collect();
        Ok(Self {
            tokenizer,
            env,
            content_format,
            knows_developer,
            special_tokens,
            eos_token: special_token(&config, "eos_token"),
        })
    }

    /// The prompt text the engine would have seen for these messages.
    pub fn render(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
    ) -> Result<String, TokenizerError> {
        self.render_with(messages, tools, &TemplateArgs::default())
    }

    /// The prompt text for these messages with a request's template variables, as vLLM renders
    /// it: `add_generation_prompt` unless the request turns it off, and with
    /// `continue_final_message` the text cut after the last message's content, as transformers
    /// cuts it (an answer prefilled by the client goes on from there).
    pub fn render_with(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        args: &TemplateArgs,
    ) -> Result<String, TokenizerError> {
        let template = self.env.get_template("chat")?;
        let messages = jinja::conversation(self.content_format, self.knows_developer, messages);
        // Only a continued final message is read after rendering.
        let last = args
            .continues_final_message()
            .then(|| messages.last().cloned())
            .flatten();
        let mut vars = self.special_tokens.clone();
        vars.insert("messages".into(), Value::Array(messages));
        vars.insert(
            "tools".into(),
            tools
                .filter(|t| !t.is_null())
                .map_or(Value::Null, jinja::tools),
        );
        vars.insert("add_generation_prompt".into(), Value::Bool(true));
        vars.extend(args.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        let text = template.render(minijinja::Value::from(minijinja::value::Serde(&vars)))?;
        if args.continues_final_message() {
            return cut_after_final_message(text, last.as_ref());
        }
        Ok(text)
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

    /// Prompt ids for a chat request with its template variables.
    pub fn encode_chat_with(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        args: &TemplateArgs,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode(&self.render_with(messages, tools, args)?)
    }

    /// How this tokenizer's template reads message content.
    pub fn content_format(&self) -> ContentFormat {
        self.content_format
    }
}

/// `text` up to the end of the final message's content, as transformers'
/// `continue_final_message` cuts it: at the content's last occurrence, keeping the content's
/// trailing whitespace only where the template kept it.
fn cut_after_final_message(
    mut text: String,
    last: Option<&Value>,
) -> Result<String, TokenizerError> {
    let content = match last.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .last()
            .and_then(|p| p.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    };
    let stripped = content.trim();
    let Some(at) = text.rfind(stripped) else {
        return Err(TokenizerError::Continue);
    };
    let kept = content.trim_start();
    let end = if text[at..].starts_with(kept) && kept.len() + at <= text.len() {
        at + kept.len()
    } else {
        at + stripped.len()
    };
    text.truncate(end);
    Ok(text)
}
