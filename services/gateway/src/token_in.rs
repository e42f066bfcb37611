//! Token-in mode (`--token-in`): the gateway renders the chat template with the model's tokenizer,
//! calls the engine's `/v1/completions` with the prompt's token ids, and parses tool calls out of the
//! answer itself (Hermes `<tool_call>{"name", "arguments"}</tool_call>` blocks, the format of Qwen's
//! and Hermes' templates), as Claw-R1's own gateway does. The step's ids are what the engine
//! consumed and produced, by construction; the engine needs no tool-call parser, and the model name
//! an agent hard-codes never reaches it. The engine's answer is turned back into a chat completion,
//! so everything after (capture, protocols, streams) is the same as in the default mode.

use serde_json::{Map, Value, json};

/// Chat-completions fields that mean the same in a text completion.
const SHARED: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "max_tokens",
    "user",
    "stream",
    "stream_options",
];

/// The `/v1/completions` request for a chat request whose prompt renders to `prompt_ids`.
/// `max_tokens` defaults to `default_max` (the engine's own default, 16 on vLLM, would cut the
/// answer). Streamed when the chat request is (`StreamParser` turns the chunks back into chat).
pub fn completion_request(
    chat: &Map<String, Value>,
    prompt_ids: &[u32],
    default_max: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    for key in SHARED {
        if let Some(v) = chat.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).into(), v.clone());
        }
    }
    if let Some(v) = chat.get("max_completion_tokens").filter(|v| !v.is_null()) {
        out.entry("max_tokens").or_insert(v.clone());
    }
    out.entry("max_tokens").or_insert(json!(default_max));
    out.insert("prompt".into(), json!(prompt_ids));
    out.insert("logprobs".into(), json!(0));
    out.insert("return_token_ids".into(), json!(true));
    // The template already holds the special tokens; the engine must not add a BOS of its own.
    out.insert("add_special_tokens".into(), json!(false));
    out.insert("skip_special_tokens".into(), json!(true));
    out
}

/// One Hermes tool call from the text between `<tool_call>` and `</tool_call>`.
fn parse_call(inner: &str, index: usize, id_seed: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(inner.trim()).ok()?;
    let name = v.get("name")?.as_str()?;
    let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "{}".into(),
    };
    Some(json!({
        "id": format!("call_{id_seed}_{index}"),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }))
}

/// Splits an answer into its text and its Hermes tool calls. A block that is not a valid call
/// stays in the text, as vLLM's Hermes parser leaves it.
pub fn split_tool_calls(text: &str, id_seed: &str) -> (String, Vec<Value>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        // An unclosed last block (the answer stopped on `</tool_call>` or ran out) still counts.
        let (inner, next) = match after.find(CLOSE) {
            Some(end) => (&after[..end], &after[end + CLOSE.len()..]),
            None => (after, ""),
        };
        match parse_call(inner, calls.len(), id_seed) {
            Some(call) => {
                content.push_str(&rest[..start]);
                calls.push(call);
            }
            None => content.push_str(&rest[..start + OPEN.len() + inner.len()]),
        }
        rest = next;
    }
    content.push_str(rest);
    let content = if calls.is_empty() {
        content
    } else {
        content.trim().to_string()
    };
    (content, calls)
}

/// The chat completion for the engine's text completion: parsed tool calls, the engine's ids
/// (`prompt_token_ids`, each choice's `token_ids`) and sampled-token logprobs in chat's shape.
pub fn chat_completion(completion: &Value, prompt_ids: &[u32], id_seed: &str) -> Value {
    let choices: Vec<Value> = completion
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let text = c.get("text").and_then(Value::as_str).unwrap_or("");
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let (content, calls) = split_tool_calls(text, &format!("{id_seed}{index}"));
            let mut message = json!({"role": "assistant", "content": if calls.is_empty() || !content.is_empty() { json!(content) } else { Value::Null }});
            let mut finish = c.get("finish_reason").cloned().unwrap_or(Value::Null);
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
                if finish == json!("stop") {
                    finish = json!("tool_calls");
                }
            }
            json!({
                "index": index, "message": message, "finish_reason": finish,
                "logprobs": chat_logprobs(c), "token_ids": c.get("token_ids").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "id": completion.get("id").cloned().unwrap_or(json!("chatcmpl-token-in")),
        "object": "chat.completion",
        "created": completion.get("created").cloned().unwrap_or(json!(0)),
        "model": completion.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
        "usage": completion.get("usage").cloned().unwrap_or(Value::Null),
        "prompt_token_ids": prompt_ids,
    })
}

/// A completion choice's logprobs (`tokens`, `token_logprobs`) in chat's shape.
fn chat_logprobs(choice: &Value) -> Value {
    let tokens = choice.pointer("/logprobs/tokens").and_then(Value::as_array);
    choice
        .pointer("/logprobs/token_logprobs")
        .and_then(Value::as_array)
        .map(|lps| {
            let content: Vec<Value> = lps
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let token = tokens.and_then(|t| t.get(i)).cloned().unwrap_or(json!(""));
                    json!({"token": token, "logprob": l, "top_logprobs": []})
                })
                .collect();
            json!({"content": content})
        })
        .unwrap_or(Value::Null)
}

/// The engine's streamed text completion turned into chat-completion chunks as it arrives. Text is
/// content until a `<tool_call>` opens; the call goes out whole, as one `tool_calls` delta, once
/// `</tool_call>` closes it (or the answer ends); text that may be the start of the tag waits for
/// the next chunk. Every chunk keeps the engine's token ids and logprobs, so the step is the same
/// as from a whole answer; a call that is not valid JSON stays text, as in `split_tool_calls`.
pub struct StreamParser {
    prompt_ids: Vec<u32>,
    id_seed: String,
    first: bool,
    choices: std::collections::BTreeMap<u64, Parsing>,
}

#[derive(Default)]
struct Parsing {
    pending: String,
    in_call: bool,
    calls: usize,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl Parsing {
    /// Releases what is decided: content, and complete calls. `last`: nothing more will come.
    fn advance(&mut self, last: bool, id_seed: &str) -> (String, Vec<Value>) {
        let (mut content, mut calls) = (String::new(), Vec::new());
        loop {
            if !self.in_call {
                if let Some(i) = self.pending.find(OPEN) {
                    content.push_str(&self.pending[..i]);
                    self.pending.drain(..i + OPEN.len());
                    self.in_call = true;
                    continue;
                }
                // The longest end of the text that could still become `<tool_call>` waits.
                let keep = if last {
                    0
                } else {
                    (1..OPEN.len())
                        .rev()
                        .find(|&k| self.pending.ends_with(&OPEN[..k]))
                        .unwrap_or(0)
                };
                let cut = self.pending.len() - keep;
                content.push_str(&self.pending[..cut]);
                self.pending.drain(..cut);
                return (content, calls);
            }
            let inner = match self.pending.find(CLOSE) {
                Some(j) => {
                    let inner = self.pending[..j].to_string();
                    self.pending.drain(..j + CLOSE.len());
                    inner
                }
                // An unclosed last call still counts.
                None if last => std::mem::take(&mut self.pending),
                None => return (content, calls),
            };
            self.in_call = false;
            match parse_call(&inner, self.calls, id_seed) {
                Some(mut call) => {
                    call["index"] = json!(self.calls);
                    self.calls += 1;
                    calls.push(call);
                }
                None => {
                    content.push_str(OPEN);
                    content.push_str(&inner);
                }
            }
        }
    }
}

impl StreamParser {
    pub fn new(prompt_ids: Vec<u32>, id_seed: &str) -> Self {
        Self {
            prompt_ids,
            id_seed: id_seed.to_string(),
            first: true,
            choices: std::collections::BTreeMap::new(),
        }
    }

    /// The chat chunk for one chunk of the engine's text completion.
    pub fn chunk(&mut self, completion: &Value) -> Value {
        let mut choices = Vec::new();
        for c in completion
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finish = c.get("finish_reason").filter(|f| !f.is_null()).cloned();
            let state = self.choices.entry(index).or_default();
            state
                .pending
                .push_str(c.get("text").and_then(Value::as_str).unwrap_or(""));
            let seed = format!("{}{index}", self.id_seed);
            let (content, calls) = state.advance(finish.is_some(), &seed);
            let mut delta = serde_json::Map::new();
            if self.first {
                delta.insert("role".into(), json!("assistant"));
            }
            if !content.is_empty() || self.first {
                delta.insert("content".into(), json!(content));
            }
            if !calls.is_empty() {
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let finish = match finish {
                Some(f) if f == "stop" && state.calls > 0 => json!("tool_calls"),
                Some(f) => f,
                None => Value::Null,
            };
            choices.push(json!({
                "index": index, "delta": delta, "finish_reason": finish,
                "logprobs": chat_logprobs(c), "token_ids": c.get("token_ids").cloned().unwrap_or(Value::Null),
            }));
        }
        let mut chunk = json!({
            "id": completion.get("id").cloned().unwrap_or(json!("chatcmpl-token-in")),
            "object": "chat.completion.chunk",
            "created": completion.get("created").cloned().unwrap_or(json!(0)),
            "model": completion.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        });
        if let Some(usage) = completion.get("usage").filter(|u| !u.is_null()) {
            chunk["usage"] = usage.clone();
        }
        if self.first && !chunk["choices"].as_array().is_none_or(Vec::is_empty) {
            chunk["prompt_token_ids"] = json!(self.prompt_ids);
            self.first = false;
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_calls_are_parsed_and_broken_ones_stay_text() {
        let (text, calls) = split_tool_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.txt\"}}\n</tool_call>\n<tool_call>{\"name\": \"ls\", \"arguments\": {}}",
            "x",
        );
        assert_eq!(text, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "read");
        assert_eq!(calls[0]["function"]["arguments"], "{\"path\":\"a.txt\"}");
        assert_eq!(
            calls[1]["function"]["name"], "ls",
            "an unclosed last call counts"
        );
        let (text, calls) = split_tool_calls("<tool_call>not json</tool_call> ok", "x");
        assert!(calls.is_empty());
        assert_eq!(text, "<tool_call>not json ok");
    }

    #[test]
    fn a_streamed_completion_becomes_chat_chunks_with_calls_whole_and_ids_kept() {
        let mut parser = StreamParser::new(vec![1, 2], "s");
        let pieces = [
            "Let me look.",
            " <tool",
            "_call>{\"name\": \"read\", ",
            "\"arguments\": {\"path\": \"a\"}}</tool_call>",
            " <to",
            "day",
        ];
        let mut out = Vec::new();
        for (k, text) in pieces.iter().enumerate() {
            out.push(parser.chunk(
                &json!({"choices": [{"index": 0, "text": text, "token_ids": [k],
                "logprobs": {"tokens": [text], "token_logprobs": [-0.5]}, "finish_reason": null}]}),
            ));
        }
        out.push(parser.chunk(&json!({"choices": [{"index": 0, "text": "", "token_ids": [9], "finish_reason": "stop"}]})));
        let content: Vec<&str> = out
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap_or(""))
            .collect();
        // "<tool" waits for the next piece; "<to" + "day" is text after all.
        assert_eq!(content, ["Let me look.", " ", "", "", " ", "<today", ""]);
        assert_eq!(out[0]["prompt_token_ids"], json!([1, 2]));
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(out[1].get("prompt_token_ids").is_none());
        let call = &out[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"]["name"], "read");
        assert_eq!(call["function"]["arguments"], "{\"path\":\"a\"}");
        assert_eq!(out[6]["choices"][0]["finish_reason"], "tool_calls");
        for (k, c) in out.iter().enumerate().take(6) {
            assert_eq!(
                c["choices"][0]["token_ids"],
                json!([k]),
                "ids of every piece"
            );
            assert_eq!(c["choices"][0]["logprobs"]["content"][0]["logprob"], -0.5);
        }
        // The same answer whole: the same call.
        let (_, calls) = split_tool_calls(&pieces.concat(), "s0");
        assert_eq!(calls[0]["function"], call["function"]);
        assert_eq!(calls[0]["id"], call["id"]);
    }

    #[test]
    fn a_completion_becomes_a_chat_completion_with_the_engines_ids() {
        let completion = json!({"id": "cmpl-1", "model": "m", "choices": [{"index": 0,
            "text": "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>", "finish_reason": "stop",
            "token_ids": [5, 6], "logprobs": {"token_logprobs": [-0.5, -0.25]}}]});
        let chat = chat_completion(&completion, &[1, 2, 3], "s");
        assert_eq!(chat["prompt_token_ids"], json!([1, 2, 3]));
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(choice["token_ids"], json!([5, 6]));
        assert_eq!(choice["logprobs"]["content"][1]["logprob"], -0.25);
        let req: Map<String, Value> = serde_json::from_value(
            json!({"model": "default", "messages": [], "tools": [], "temperature": 0.2}),
        )
        .expect("map");
        let body = completion_request(&req, &[1, 2, 3], 512);
        assert_eq!(body["prompt"], json!([1, 2, 3]));
        assert_eq!(body["max_tokens"], 512);
        assert!(body.get("messages").is_none() && body.get("tools").is_none());
    }
}
