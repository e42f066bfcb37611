//! What identifies a point in a conversation: a hash of the messages as the model saw them, blind
//! to what agents rewrite when they send their history back.

use sha2::{Digest, Sha256};

pub type Fingerprint = [u8; 32];

/// A chained hash of the messages as the model saw them: role, text and tool calls (not ids or
/// formatting details that clients rewrite when they send history back).
pub fn fingerprint(
    tenant: &str,
    messages: &[serde_json::Value],
    answer: Option<&serde_json::Value>,
) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    for message in messages.iter().chain(answer) {
        hasher.update([0xff]);
        canonical_message(message, &mut hasher);
    }
    hasher.finalize().into()
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
            match serde_json::from_str::<serde_json::Value>(arguments) {
                Ok(parsed) => hasher.update(parsed.to_string().as_bytes()),
                Err(_) => hasher.update(arguments.as_bytes()),
            }
            hasher.update([2]);
        }
    }
    // Tool-call ids are left out: agents rename them (OpenClaw, where ids collide).
}
