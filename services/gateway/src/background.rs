//! Turns no user asked for: an agent waking itself (OpenClaw's heartbeat every 30 minutes) or a
//! client saying so. Their steps are recorded with `background: true`: kept in the history, never
//! read as the user's reaction to the answer before them, and left out of training by the batcher
//! unless a channel asks for them (`train_background`).

use axum::http::HeaderMap;
use serde_json::Value;

use crate::chat::content_text;
use crate::error::ApiError;

/// `x-clawline-background: true` marks a call as background, `false` as a user's whatever its
/// text says.
pub const BACKGROUND_HEADER: &str = "x-clawline-background";

/// What the built-in markers are found in: the user message that starts an agent's self-woken
/// turn. OpenClaw sends its heartbeat prompt as that message (its default prompt; a custom
/// `heartbeat.prompt` needs its own `--background-marker`).
pub const BUILTIN_MARKERS: &[&str] = &[
    // OpenClaw 2026.9 and later.
    "Follow the heartbeat monitor scratch context when provided.",
    // OpenClaw before 2026.9 (and the prompt its documentation and templates quote).
    "Read HEARTBEAT.md if it exists",
    // What OpenClaw keeps in its transcript for its internal wakes, should one be sent as a turn.
    "[OpenClaw heartbeat poll]",
    "[OpenClaw cron wake]",
    "[OpenClaw exec completion]",
    "[OpenClaw session event]",
    // Claude Code asking the model to summarize the conversation before it compacts it
    // (`/compact`, auto-compact): the summary is the agent's, not an answer to the user.
    "Your task is to create a detailed summary of the",
    // OpenClaw asking for its compaction summary (first, update, and a turn too large to keep).
    "The messages above are a conversation to summarize.",
    "The messages above are NEW conversation messages to incorporate into the existing summary",
    "This is the PREFIX of a turn that was too large to keep.",
];

/// The markers in force: the built-in ones plus `extra`, or none at all when `extra` holds `none`.
pub fn markers(extra: &[String]) -> Vec<String> {
    if extra.iter().any(|m| m.trim() == "none") {
        return Vec::new();
    }
    BUILTIN_MARKERS
        .iter()
        .map(|m| m.to_string())
        .chain(extra.iter().filter(|m| !m.trim().is_empty()).cloned())
        .collect()
}

/// Whether this call is a background turn: the client's header when it sends one, else whether
/// the user message(s) that started the current turn carry a marker. In an agent's tool loop the
/// turn's last messages are tool results; the turn is still the one its user message started.
pub fn is_background(
    markers: &[String],
    headers: &HeaderMap,
    messages: &[Value],
) -> Result<bool, ApiError> {
    if let Some(value) = headers.get(BACKGROUND_HEADER) {
        let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
        return match text.as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(ApiError::bad_param(
                BACKGROUND_HEADER,
                format!("{BACKGROUND_HEADER} must be true or false, not {text:?}"),
            )),
        };
    }
    if markers.is_empty() {
        return Ok(false);
    }
    Ok(turn_user_texts(messages)
        .iter()
        .any(|text| markers.iter().any(|m| text.contains(m.as_str()))))
}

/// The texts of the run of user messages that started the current turn (several where an agent
/// adds a context message after the user's own).
fn turn_user_texts(messages: &[Value]) -> Vec<String> {
    let is_user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
    let Some(last) = messages.iter().rposition(is_user) else {
        return Vec::new();
    };
    messages[..=last]
        .iter()
        .rev()
        .take_while(|m| is_user(m))
        .map(|m| content_text(m.get("content")))
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn builtin() -> Vec<String> {
        markers(&[])
    }

    #[test]
    fn a_heartbeat_turn_is_background_through_its_tool_loop() {
        let heartbeat = json!({"role": "user", "content": "Follow the heartbeat monitor scratch context when provided. Recurring tasks are automations. If nothing needs attention, reply HEARTBEAT_OK.\nCurrent time: Thursday"});
        let context =
            json!({"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nruntime"});
        let earlier = [
            json!({"role": "system", "content": "You are OpenClaw."}),
            json!({"role": "user", "content": "[Thu 2026-12-03 06:22 UTC] What is on my list?"}),
            json!({"role": "assistant", "content": "Milk."}),
        ];
        let mut call = earlier.to_vec();
        call.extend([heartbeat, context]);
        assert!(is_background(&builtin(), &HeaderMap::new(), &call).unwrap());
        call.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]}));
        call.push(json!({"role": "tool", "tool_call_id": "c1", "content": "- check the notes"}));
        assert!(is_background(&builtin(), &HeaderMap::new(), &call).unwrap());
        // The user's next turn, with the heartbeat in its history, is the user's.
        call.push(json!({"role": "assistant", "content": "HEARTBEAT_OK"}));
        call.push(
            json!({"role": "user", "content": "[Thu 2026-12-03 07:01 UTC] Thanks. Anything new?"}),
        );
        assert!(!is_background(&builtin(), &HeaderMap::new(), &call).unwrap());
        assert!(!is_background(&builtin(), &HeaderMap::new(), &earlier).unwrap());
    }

    #[test]
    fn the_header_wins_and_a_bad_one_is_refused() {
        let user = [
            json!({"role": "user", "content": "Read HEARTBEAT.md if it exists (workspace context)."}),
        ];
        let mut headers = HeaderMap::new();
        headers.insert(BACKGROUND_HEADER, HeaderValue::from_static("false"));
        assert!(!is_background(&builtin(), &headers, &user).unwrap());
        headers.insert(BACKGROUND_HEADER, HeaderValue::from_static("TRUE"));
        assert!(is_background(&builtin(), &headers, &[]).unwrap());
        headers.insert(BACKGROUND_HEADER, HeaderValue::from_static("maybe"));
        assert!(is_background(&builtin(), &headers, &user).is_err());
    }

    #[test]
    fn markers_add_to_the_built_in_ones_or_none_turns_them_off() {
        let own = vec!["[cron]".to_string()];
        let call = [
            json!({"role": "user", "content": [{"type": "text", "text": "[cron] nightly digest"}]}),
        ];
        assert!(!is_background(&builtin(), &HeaderMap::new(), &call).unwrap());
        assert!(is_background(&markers(&own), &HeaderMap::new(), &call).unwrap());
        assert_eq!(markers(&own).len(), BUILTIN_MARKERS.len() + 1);
        let heartbeat = [json!({"role": "user", "content": "Read HEARTBEAT.md if it exists."})];
        assert!(!is_background(&markers(&["none".into()]), &HeaderMap::new(), &heartbeat).unwrap());
    }
}
