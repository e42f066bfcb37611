//! Test support (feature `testing`): where the tests' Python lives.

use std::path::PathBuf;

/// The Python of the test venv `scripts/setup.sh` makes (`CLAWLINE_PYTHON` overrides it);
/// panics with the fix when it is missing.
pub fn python() -> PathBuf {
    let path = std::env::var_os("CLAWLINE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/clawline/venv/bin/python"))
        })
        .expect("HOME or CLAWLINE_PYTHON");
    assert!(
        path.is_file(),
        "{} missing: run scripts/setup.sh (it creates the test venv)",
        path.display()
    );
    path
}
