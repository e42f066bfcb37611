//! `clawline import` on an arbitrary line: JSON, the OpenAI message shape, and (with the bundled
//! tokenizer) the chat template rendered over whatever messages and tools the line holds. A bad
//! line must come back as a reason, never a panic.
#![no_main]

use std::sync::OnceLock;

use clawline_runtime::tokenize::ChatTokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static ChatTokenizer {
    static TOKENIZER: OnceLock<ChatTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tokenizer");
        ChatTokenizer::load(&dir).expect("the bundled tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = clawline_history::import::import_line(line, "train", "fuzz", None, "fuzz");
    let _ = clawline_history::import::import_line(line, "train", "fuzz", Some(tokenizer()), "fuzz");
});
