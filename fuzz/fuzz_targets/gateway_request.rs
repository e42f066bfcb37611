//! The gateway's request path on arbitrary bytes: a chat completion body as the gateway parses
//! and checks it (JSON, `messages`, the exact-token extension), and the same bytes as an engine's
//! answer, whole and as stream chunks. Must never panic; bad input is an `ApiError`.
#![no_main]

use clawline_gateway::chat::{
    Answer, content_text, request_exact_tokens, strip_unrequested, to_message, validate_messages,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut request) = clawline_gateway::http::parse_json::<Map<String, Value>>(data) {
        if let Ok(messages) = validate_messages(&request) {
            for m in messages {
                let _ = to_message(m);
                let _ = content_text(m.get("content"));
            }
        }
        let wants = request_exact_tokens(&mut request, true);
        let mut answer = Value::Object(request);
        let _ = Answer::from_response(&answer);
        let mut streamed = Answer::default();
        streamed.push_chunk(&answer);
        streamed.finish_stream();
        strip_unrequested(&mut answer, wants);
    }
});
