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
];

/// The `/v1/completions` request for a chat request whose prompt renders to `prompt_ids`.
/// `max_tokens` defaults to `default_max` (the engine's own default, 16 on vLLM, would cut the
/// answer). Always whole, not streamed: tool calls are parsed from the complete text.
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
            let tokens = c.pointer("/logprobs/tokens").and_then(Value::as_array);
            let logprobs = c
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
                .unwrap_or(Value::Null);
            json!({
                "index": index, "message": message, "finish_reason": finish,
                "logprobs": logprobs, "token_ids": c.get("token_ids").cloned().unwrap_or(Value::Null),
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
