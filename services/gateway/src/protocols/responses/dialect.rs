//! A Responses answer from the engine's chat completion: output items, whole or as stream events.

use std::collections::HashMap;

use axum::body::Bytes;
use serde_json::{Map, Value, json};

use super::super::{Dialect, NULL, arguments_value, first_choice, opening, sse_event, usage_of};
use super::store::{ResponseStore, Stored};
use super::{CUSTOM_INPUT, custom_tools};
use crate::chat::{call_parts, content_text, reasoning_of};
use crate::http::steps::CallContext;

#[derive(Debug, Clone)]
enum ItemKind {
    Message {
        text: String,
    },
    Reasoning {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    kind: ItemKind,
}

/// Translates one call's answer into a Responses object, whole or as events, and stores it.
pub struct ResponsesDialect {
    id: String,
    created_at: u64,
    echo: Map<String, Value>,
    custom: Vec<String>,
    store: Option<std::sync::Arc<ResponseStore>>,
    previous: Option<String>,
    input: Vec<Value>,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    open: Option<usize>,
    /// Output item of each streamed tool-call slot.
    slots: HashMap<usize, usize>,
    finish: Option<String>,
    usage: (u64, u64),
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

impl ResponsesDialect {
    /// `store`: where to keep the answer (`None` when the request said `store: false`).
    pub fn new(
        request: &Map<String, Value>,
        input: Vec<Value>,
        store: Option<std::sync::Arc<ResponseStore>>,
    ) -> Self {
        let mut echo = Map::new();
        for key in [
            "instructions",
            "max_output_tokens",
            "metadata",
            "model",
            "parallel_tool_calls",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
            "text",
            "reasoning",
            "user",
        ] {
            echo.insert(key.into(), request.get(key).cloned().unwrap_or(Value::Null));
        }
        Self {
            id: new_id("resp"),
            created_at: clawline_schemas::now_ms().max(0) as u64 / 1000,
            echo,
            custom: custom_tools(request),
            previous: request
                .get("previous_response_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            store,
            input,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open: None,
            slots: HashMap::new(),
            finish: None,
            usage: (0, 0),
        }
    }

    fn event(&mut self, name: &str, mut data: Value) -> Bytes {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        sse_event(name, &data)
    }

    fn item_json(&self, item: &Item, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match &item.kind {
            ItemKind::Message { text } => {
                json!({"type": "message", "id": item.id, "status": status, "role": "assistant",
                "content": if done { json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]) } else { json!([]) }})
            }
            ItemKind::Reasoning { text } => {
                json!({"type": "reasoning", "id": item.id, "summary": [],
                "content": if done { json!([{"type": "reasoning_text", "text": text}]) } else { json!([]) }})
            }
            ItemKind::Call {
                call_id,
                name,
                arguments,
            } if self.custom.contains(name) => {
                let input = arguments_value(arguments)
                    .get(CUSTOM_INPUT)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| arguments.clone());
                json!({"type": "custom_tool_call", "id": item.id, "call_id": call_id, "name": name, "input": if done { input } else { String::new() }, "status": status})
            }
            ItemKind::Call {
                call_id,
                name,
                arguments,
            } => json!({"type": "function_call", "id": item.id, "call_id": call_id, "name": name,
                "arguments": if done { arguments.as_str() } else { "" }, "status": status}),
        }
    }

    fn response(&self, status: &str) -> Value {
        let done = status != "in_progress";
        let output: Vec<Value> = if done {
            self.items.iter().map(|i| self.item_json(i, true)).collect()
        } else {
            Vec::new()
        };
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "error": null, "incomplete_details": null, "output": output,
            "previous_response_id": self.previous, "store": self.store.is_some(), "truncation": "disabled",
            "usage": if done { json!({"input_tokens": self.usage.0, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage.1, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage.0 + self.usage.1}) } else { Value::Null },
        });
        if status == "incomplete" {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        if let Some(o) = r.as_object_mut() {
            for (k, v) in &self.echo {
                o.insert(k.clone(), v.clone());
            }
            if o.get("tools").is_none_or(Value::is_null) {
                o.insert("tools".into(), json!([]));
            }
            if o.get("tool_choice").is_none_or(Value::is_null) {
                o.insert("tool_choice".into(), json!("auto"));
            }
            if o.get("text").is_none_or(Value::is_null) {
                o.insert("text".into(), json!({"format": {"type": "text"}}));
            }
        }
        r
    }

    fn status(&self) -> &'static str {
        if self.finish.as_deref() == Some("length") {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// Keeps the finished response for `previous_response_id` and `GET`, when asked to.
    fn keep(&self, ctx: &CallContext, response: &Value) {
        let Some(store) = &self.store else {
            return;
        };
        let mut messages = self.input.clone();
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match &i.kind {
                ItemKind::Message { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let calls: Vec<Value> = self.items.iter().filter_map(|i| match &i.kind {
            ItemKind::Call { call_id, name, arguments } => Some(json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})),
            _ => None,
        }).collect();
        let mut answer = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            answer["tool_calls"] = Value::Array(calls);
        }
        messages.push(answer);
        store.insert(
            self.id.clone(),
            Stored {
                tenant: ctx.caller.tenant.clone(),
                previous: self.previous.clone(),
                messages,
                response: response.clone(),
                items: Vec::new(),
            },
        );
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let item = self.items[index].clone();
        match &item.kind {
            ItemKind::Message { text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                out.push(self.event("response.output_text.done", json!({"item_id": item.id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})));
                out.push(self.event("response.content_part.done", json!({"item_id": item.id, "output_index": index, "content_index": 0, "part": part})));
            }
            ItemKind::Reasoning { text } => {
                out.push(self.event("response.reasoning_text.done", json!({"item_id": item.id, "output_index": index, "content_index": 0, "text": text})));
            }
            ItemKind::Call {
                name, arguments, ..
            } if self.custom.contains(name) => {
                let input = self.item_json(&item, true)["input"].clone();
                let _ = arguments;
                out.push(self.event(
                    "response.custom_tool_call_input.done",
                    json!({"item_id": item.id, "output_index": index, "input": input}),
                ));
            }
            ItemKind::Call { arguments, .. } => {
                out.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": item.id, "output_index": index, "arguments": arguments}),
                ));
            }
        }
        let done = self.item_json(&item, true);
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        ));
    }

    /// Opens a new output item (closing the open one), announcing it.
    fn open_item(&mut self, kind: ItemKind, prefix: &str, out: &mut Vec<Bytes>) -> usize {
        self.close(out);
        let item = Item {
            id: new_id(prefix),
            kind,
        };
        let index = self.items.len();
        self.items.push(item.clone());
        self.open = Some(index);
        let added = self.item_json(&item, false);
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        ));
        if matches!(item.kind, ItemKind::Message { .. }) {
            out.push(self.event(
                "response.content_part.added",
                json!({"item_id": item.id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ));
        }
        index
    }

    fn open_is(&self, is: impl Fn(&ItemKind) -> bool) -> Option<usize> {
        self.open.filter(|&i| is(&self.items[i].kind))
    }
}

impl Dialect for ResponsesDialect {
    fn whole(&mut self, completion: &Value, ctx: &CallContext) -> Value {
        let choice = first_choice(completion).unwrap_or(&NULL);
        let message = choice.get("message").unwrap_or(&NULL);
        if let Some(r) = reasoning_of(message) {
            self.items.push(Item {
                id: new_id("rs"),
                kind: ItemKind::Reasoning {
                    text: r.to_string(),
                },
            });
        }
        let text = content_text(message.get("content"));
        if !text.is_empty() {
            self.items.push(Item {
                id: new_id("msg"),
                kind: ItemKind::Message { text },
            });
        }
        for call in call_parts(message) {
            self.items.push(Item {
                id: new_id("fc"),
                kind: ItemKind::Call {
                    call_id: call.id.to_string(),
                    name: call.name.to_string(),
                    arguments: call.arguments.to_string(),
                },
            });
        }
        self.finish = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.usage = usage_of(completion).unwrap_or((0, 0));
        let response = self.response(self.status());
        self.keep(ctx, &response);
        response
    }

    fn chunk(&mut self, chunk: &Value, _ctx: &CallContext) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            let r = self.response("in_progress");
            out.push(self.event("response.created", json!({"response": r})));
            out.push(self.event("response.in_progress", json!({"response": r})));
        }
        if let Some(usage) = usage_of(chunk) {
            self.usage = usage;
        }
        let Some(choice) = first_choice(chunk) else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&NULL);
        if let Some(r) = reasoning_of(delta) {
            let index = match self.open_is(|k| matches!(k, ItemKind::Reasoning { .. })) {
                Some(i) => i,
                None => self.open_item(
                    ItemKind::Reasoning {
                        text: String::new(),
                    },
                    "rs",
                    &mut out,
                ),
            };
            if let ItemKind::Reasoning { text } = &mut self.items[index].kind {
                text.push_str(r);
            }
            let id = self.items[index].id.clone();
            out.push(self.event(
                "response.reasoning_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": r}),
            ));
        }
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = match self.open_is(|k| matches!(k, ItemKind::Message { .. })) {
                Some(i) => i,
                None => self.open_item(
                    ItemKind::Message {
                        text: String::new(),
                    },
                    "msg",
                    &mut out,
                ),
            };
            if let ItemKind::Message { text } = &mut self.items[index].kind {
                text.push_str(t);
            }
            let id = self.items[index].id.clone();
            out.push(self.event("response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []})));
        }
        for call in call_parts(delta) {
            let index = match self.slots.get(&call.slot) {
                Some(&i) => i,
                None => {
                    let kind = ItemKind::Call {
                        call_id: call.id.to_string(),
                        name: call.name.to_string(),
                        arguments: String::new(),
                    };
                    let i = self.open_item(kind, "fc", &mut out);
                    self.slots.insert(call.slot, i);
                    i
                }
            };
            let args = call.arguments;
            let custom = match &mut self.items[index].kind {
                ItemKind::Call {
                    arguments, name, ..
                } => {
                    arguments.push_str(args);
                    self.custom.contains(name)
                }
                _ => false,
            };
            // A custom tool's input is the string inside the JSON arguments: sent whole when done.
            if !args.is_empty() && !custom {
                let id = self.items[index].id.clone();
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": args}),
                ));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
        out
    }

    fn finish(&mut self, ctx: &CallContext) -> Vec<Bytes> {
        let mut out = opening(self, self.started, ctx);
        self.close(&mut out);
        let status = self.status();
        let response = self.response(status);
        self.keep(ctx, &response);
        let name = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        out.push(self.event(name, json!({"response": response})));
        out
    }

    fn stream_error(&mut self, message: &str) -> Bytes {
        self.event(
            "error",
            json!({"code": "upstream_error", "message": message, "param": null}),
        )
    }
}
