#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The shape of the code holds, checked rather than remembered: no source file past 500 lines, a
//! service's `main.rs` parses, sets up tracing, binds and runs (at most 30 lines), and no crate
//! builds another crate's settings by parsing its command-line flags (a renamed flag would break
//! the caller at run time, not at compile time).
//!
//! Where the code does not hold the shape yet, the exception is listed below, exactly: the test
//! fails when a new one appears and when a listed one is fixed (so the list only shrinks). The
//! exceptions are issue 21's work.

use std::path::{Path, PathBuf};

/// Services whose `main.rs` is over 30 lines.
const LONG_MAINS: &[&str] = &[];

/// Places that build another crate's settings from flags: (file, crate whose `Args` it parses).
/// None: `clawline up`, benchmarks and tests build each service's typed `Settings`.
const FLAG_PARSING: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file of the workspace's own code (not build outputs, fixtures or vendored trees).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.')
                || matches!(
                    name.as_str(),
                    "target" | "node_modules" | "fixtures" | "data"
                ))
            {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root().canonicalize().unwrap())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn no_source_file_passes_500_lines() {
    let mut files = Vec::new();
    sources(&root().canonicalize().unwrap(), &mut files);
    assert!(files.len() > 100, "{} files found", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 500).then(|| format!("{} ({lines} lines)", relative(f)))
        })
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn a_service_main_only_parses_binds_and_runs() {
    let services = root().join("services");
    let mut long = Vec::new();
    for entry in std::fs::read_dir(&services).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let main = dir.join("src/main.rs");
        // The CLI's main dispatches subcommands; it is not a service.
        if name == "cli" || !main.exists() {
            continue;
        }
        let lines = std::fs::read_to_string(&main).unwrap().lines().count();
        if lines > 30 {
            long.push(name);
        }
    }
    long.sort();
    assert_eq!(
        long, LONG_MAINS,
        "services whose main.rs is over 30 lines (move the wiring into the crate's run)"
    );
}

#[test]
fn no_crate_parses_another_crates_flags() {
    let mut files = Vec::new();
    for dir in ["services", "benches", "tests"] {
        sources(&root().join(dir).canonicalize().unwrap(), &mut files);
    }
    let mut found = Vec::new();
    for file in &files {
        let path = relative(file);
        // A crate's own tests and sources may parse its own flags (`services/<crate>/…`).
        let own = match path.strip_prefix("services/") {
            Some(rest) => rest.split('/').next().unwrap_or("").to_string(),
            None => String::new(),
        };
        let text = std::fs::read_to_string(file).unwrap();
        for flags in ["::Args::", "::Config::"] {
            for (at, _) in text.match_indices(flags) {
                let before = &text[..at];
                let krate = before
                    .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                let after = &text[at + flags.len()..];
                let parses = after.starts_with("parse") || after.starts_with("try_parse");
                if let Some(other) = krate.strip_prefix("clawline_")
                    && parses
                    && other != own
                {
                    found.push((path.clone(), other.to_string()));
                }
            }
        }
    }
    found.sort();
    let mut expected: Vec<(String, String)> = FLAG_PARSING
        .iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "crates building another crate's settings from its flags (use its typed settings)"
    );
}
