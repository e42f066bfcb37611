//! What identifies a point in a conversation: a hash of the messages as the model saw them, blind
//! to what agents rewrite when they send their history back.

use sha2::{Digest, Sha256};

pub type Fingerprint = [u8; 32];

/// How OpenClaw's internal-context message begins: a user message it adds to every call and never
/// keeps in its history. It trails chat-completions and Anthropic calls, but sits in the middle of
/// a Responses call's input (before the tool calls and results of that turn), so it is recognized
/// by what it says, wherever it is.
const OPENCLAW_CONTEXT: &str = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>";

/// A message an agent sends with a call but does not keep in the history it sends back.
fn is_transient(message: &serde_json::Value) -> bool {
    message.get("role").and_then(|r| r.as_str()) == Some("user")
        && crate::chat::content_text(message.get("content"))
            .trim_start()
            .starts_with(OPENCLAW_CONTEXT)
}

/// A chained hash of the messages as the model saw them: role, text and tool calls (not ids or
/// formatting details that clients rewrite when they send history back, nor messages agents send
/// but do not keep). System messages are left out: agents rebuild their system prompt for each
/// call (OpenClaw's differs between a user's turn and a heartbeat), and what identifies a point in a
/// conversation is what was said in it. A user message carrying one of `wake` (a background turn's
/// marker) counts as "a wake" whatever its text: OpenClaw sends its heartbeat prompt but keeps
/// `[timestamp] [OpenClaw heartbeat poll]` in its history.
pub fn fingerprint(
    tenant: &str,
    messages: &[serde_json::Value],
    answer: Option<&serde_json::Value>,
    wake: &[String],
) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    for message in messages
        .iter()
        .filter(|m| !is_transient(m) && !is_system(m))
        .chain(answer)
    {
        hasher.update([0xff]);
        if is_wake(message, wake) {
            hasher.update(b"user\0\x01wake");
            continue;
        }
        canonical_message(message, &mut hasher);
    }
    hasher.finalize().into()
}

fn is_system(message: &serde_json::Value) -> bool {
    matches!(
        message.get("role").and_then(|r| r.as_str()),
        Some("system" | "developer")
    )
}

fn is_wake(message: &serde_json::Value, wake: &[String]) -> bool {
    if wake.is_empty() || message.get("role").and_then(|r| r.as_str()) != Some("user") {
        return false;
    }
    let text = crate::chat::content_text(message.get("content"));
    wake.iter().any(|m| text.contains(m.as_str()))
}

fn canonical_message(message: &serde_json::Value, hasher: &mut Sha256) {
    let field = |name: &str| message.get(name).and_then(|v| v.as_str()).unwrap_or("");
    hasher.update(field("role").as_bytes());
    hasher.update([0]);
    hasher.update(
        crate::chat::content_text(message.get("content"))
            .trim()
            .as_bytes(),
    );
    hasher.update([0]);
    if let Some(calls) = message.get("tool_calls").and_then(|c| c.as_array()) {
        for call in calls {
            let function = call.get("function");
            let part = |name: &str| {
                function
                    .and_then(|f| f.get(name))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
            };
            hasher.update(part("name").as_bytes());
            hasher.update([1]);
            // Agents re-serialize arguments (`{"path":"a"}` for the engine's `{"path": "a"}`).
            let arguments = part("arguments");
            // Keys sorted: JSON objects keep their order, and an agent may reorder them.
            match serde_json::from_str::<serde_json::Value>(arguments) {
                Ok(parsed) => sorted_json(&parsed, hasher),
                Err(_) => hasher.update(arguments.as_bytes()),
            }
            hasher.update([2]);
        }
    }
    // Tool-call ids are left out: agents rename them (OpenClaw, where ids collide).
}

/// `value` as JSON with every object's keys in sorted order.
fn sorted_json(value: &serde_json::Value, hasher: &mut Sha256) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for k in keys {
                hasher.update(serde_json::Value::from(k.as_str()).to_string().as_bytes());
                hasher.update(b":");
                sorted_json(&map[k], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        serde_json::Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                sorted_json(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// OpenClaw on the Responses API: the context message sits before the turn's tool call and
    /// result, and the next turn's history leaves it out.
    #[test]
    fn a_context_message_anywhere_is_not_part_of_the_history() {
        let context = json!({"role": "user", "content": [{"type": "text", "text": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nConversation data"}]});
        let call = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]});
        let user = json!({"role": "user", "content": "[Thu 2026-12-03 13:03 UTC] Read notes.txt"});
        let with = [user.clone(), context, call.clone()];
        let without = [user.clone(), call];
        assert_eq!(
            fingerprint("t", &with, None, &[]),
            fingerprint("t", &without, None, &[])
        );
        // A user message that merely mentions the marker later is the user's.
        let quoted =
            json!({"role": "user", "content": "what is <<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>?"});
        assert_ne!(
            fingerprint("t", &[user.clone(), quoted], None, &[]),
            fingerprint("t", &[user], None, &[])
        );
    }

    /// An agent that re-serializes a tool call's arguments with other spacing or key order is
    /// still in the same conversation; other values are not.
    #[test]
    fn arguments_match_whatever_their_spacing_and_key_order() {
        let call = |args: &str| json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": args}}]});
        let print = |args: &str| fingerprint("t", &[call(args)], None, &[]);
        let engine = print(r#"{"path": "a.txt", "lines": {"from": 1, "to": 9}}"#);
        assert_eq!(
            engine,
            print(r#"{"lines":{"to":9,"from":1},"path":"a.txt"}"#)
        );
        assert_ne!(
            engine,
            print(r#"{"path": "b.txt", "lines": {"from": 1, "to": 9}}"#)
        );
    }
}
