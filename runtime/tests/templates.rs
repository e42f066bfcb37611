//! Chat templates render as transformers' `apply_chat_template` renders them: the real templates
//! of Qwen3, Llama 3.2 and Mistral Nemo and two of our own, each saved with a small tokenizer by
//! transformers 5 (`chat_template.jinja` beside `tokenizer_config.json`), rendered to text and
//! ids by `scripts/make-template-fixtures.sh` (transformers pinned in
//! scripts/requirements-templates.txt) and committed.
//!
//! Each conversation is also sent the way OpenAI clients write it (content `null` beside tool
//! calls, text as a list of parts, tool-call arguments as a JSON string, the template variables as
//! request fields), which vLLM turns into what transformers was given; the text must not change.
#![cfg(feature = "tokenizer")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use clawline_runtime::tokenize::{ChatTokenizer, TemplateArgs};
use serde_json::{Map, Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates")
}

struct Case {
    template: String,
    name: String,
    want: Value,
}

fn cases() -> Vec<(ChatTokenizer, Vec<Case>)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("index.json")).unwrap()).unwrap();
    let names: Vec<String> = serde_json::from_value(index["templates"].clone()).unwrap();
    assert_eq!(names.len(), 5, "{names:?}");
    names
        .into_iter()
        .map(|template| {
            let dir = fixtures().join(&template);
            assert!(dir.join("chat_template.jinja").is_file());
            let tok = ChatTokenizer::load(&dir).unwrap_or_else(|e| panic!("{template}: {e}"));
            let expected: Map<String, Value> =
                serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
            let cases = expected
                .into_iter()
                .map(|(name, want)| Case {
                    template: template.clone(),
                    name,
                    want,
                })
                .collect();
            (tok, cases)
        })
        .collect()
}

fn args(kwargs: &Value) -> TemplateArgs {
    kwargs
        .as_object()
        .unwrap()
        .iter()
        .fold(TemplateArgs::default(), |args, (k, v)| {
            args.with(k, v.clone())
        })
}

#[test]
fn real_chat_templates_render_what_apply_chat_template_renders() {
    for (tok, cases) in cases() {
        for case in cases {
            let (label, want) = (format!("{}/{}", case.template, case.name), &case.want);
            if case.name == "completion_prompt" {
                // A text prompt for /v1/completions: the tokenizer's BOS where it adds one.
                let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
                let text = want["text"].as_str().unwrap();
                assert_eq!(tok.encode_prompt(text).unwrap(), ids, "{label}");
                continue;
            }
            let messages = want["messages"].as_array().unwrap();
            let tools = Some(&want["tools"]).filter(|t| !t.is_null());
            let args = args(&want["kwargs"]);
            let text = tok
                .render_with(messages, tools, &args)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(text, want["text"].as_str().unwrap(), "{label}");
            let ids: Vec<u32> = serde_json::from_value(want["ids"].clone()).unwrap();
            assert_eq!(
                tok.encode_chat_with(messages, tools, &args).unwrap(),
                ids,
                "{label}"
            );
        }
    }
}

/// The conversation as the OpenAI SDK's users send it to vLLM.
fn as_openai_clients_send_it(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for c in calls {
                    let args = c["function"]["arguments"].to_string();
                    c["function"]["arguments"] = args.into();
                }
                if m["content"] == "" {
                    m["content"] = Value::Null;
                }
            } else if m["role"] == "user" {
                m["content"] = json!([{"type": "text", "text": m["content"]}]);
            }
            m
        })
        .collect()
}

#[test]
fn requests_as_openai_clients_send_them_render_the_same() {
    for (tok, cases) in cases() {
        for case in cases.iter().filter(|c| c.name != "completion_prompt") {
            let label = format!("{}/{}", case.template, case.name);
            let want = &case.want;
            let mut request = Map::new();
            request.insert(
                "messages".into(),
                as_openai_clients_send_it(want["messages"].as_array().unwrap()).into(),
            );
            // Request fields vLLM reads itself; the rest as `chat_template_kwargs`.
            let mut kwargs = want["kwargs"].as_object().unwrap().clone();
            for field in ["add_generation_prompt", "continue_final_message"] {
                if let Some(v) = kwargs.remove(field) {
                    request.insert(field.into(), v);
                }
            }
            request.insert("chat_template_kwargs".into(), kwargs.into());
            let args = TemplateArgs::of_request(&request).unwrap();
            let tools = Some(&want["tools"]).filter(|t| !t.is_null());
            let messages = request["messages"].as_array().unwrap();
            assert_eq!(
                tok.render_with(messages, tools, &args)
                    .unwrap_or_else(|e| panic!("{label}: {e}")),
                want["text"].as_str().unwrap(),
                "{label}"
            );
        }
    }
}

#[test]
fn a_developer_message_is_a_system_message_where_the_template_has_no_developer_role() {
    for (tok, cases) in cases() {
        let plain = cases.iter().find(|c| c.name == "plain").unwrap();
        let mut messages = plain.want["messages"].as_array().unwrap().clone();
        messages[0]["role"] = "developer".into();
        assert_eq!(
            tok.render_with(&messages, None, &args(&plain.want["kwargs"]))
                .unwrap(),
            plain.want["text"].as_str().unwrap(),
            "{}",
            plain.template
        );
    }
}

#[test]
fn llama_templates_get_todays_date_from_strftime_now() {
    let dir = fixtures().join("meta-llama-Llama-3.2-3B-Instruct");
    let tok = ChatTokenizer::load(&dir).unwrap();
    let before = today();
    let text = tok
        .render(&[json!({"role": "user", "content": "Hi"})], None)
        .unwrap();
    let after = today();
    assert!(
        text.contains(&format!("Today Date: {before}\n"))
            || text.contains(&format!("Today Date: {after}\n")),
        "{text}"
    );
}

fn today() -> String {
    let format = time::macros::format_description!("[day] [month repr:short] [year]");
    time::OffsetDateTime::now_utc().format(&format).unwrap()
}

#[test]
fn bad_template_fields_are_refused_by_name() {
    for (request, field) in [
        (
            json!({"chat_template_kwargs": "enable_thinking"}),
            "chat_template_kwargs",
        ),
        (
            json!({"add_generation_prompt": "yes"}),
            "add_generation_prompt",
        ),
        (
            json!({"continue_final_message": true}),
            "continue_final_message",
        ),
        (json!({"documents": {"a": 1}}), "documents"),
    ] {
        let err = TemplateArgs::of_request(request.as_object().unwrap()).unwrap_err();
        assert_eq!(err.field, field, "{request}");
    }
    // `continue_final_message` with the generation prompt turned off is fine.
    let ok = json!({"continue_final_message": true, "add_generation_prompt": false});
    TemplateArgs::of_request(ok.as_object().unwrap()).unwrap();
}

/// vLLM's reading of the request: `reasoning_effort: "none"` turns Qwen3's thinking off as
/// `enable_thinking: false` does, and the request's own `add_generation_prompt` wins over the
/// same name in `chat_template_kwargs`.
#[test]
fn request_fields_set_template_variables_as_vllm_sets_them() {
    let dir = fixtures().join("Qwen-Qwen3-0.6B");
    let tok = ChatTokenizer::load(&dir).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let off = &expected["thinking_off"];
    let messages = off["messages"].as_array().unwrap();
    let render = |request: Value| {
        let args = TemplateArgs::of_request(request.as_object().unwrap()).unwrap();
        tok.render_with(messages, None, &args).unwrap()
    };
    assert_eq!(render(json!({"reasoning_effort": "none"})), off["text"]);
    assert_eq!(
        render(json!({"reasoning_effort": "high"})),
        expected["plain"]["text"]
    );
    assert_eq!(
        render(
            json!({"chat_template_kwargs": {"add_generation_prompt": false, "enable_thinking": false}})
        ),
        off["text"],
    );
}
