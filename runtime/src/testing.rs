//! Test support (feature `testing`): where the tests' Python lives.

use std::path::PathBuf;

/// The Python of the test venv `scripts/setup.sh --test` makes (`CLAWLINE_PYTHON` overrides it);
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
        "{} missing: run scripts/setup.sh --test (it creates the test venv)",
        path.display()
    );
    path
}

/// Waits (polling, so the test's runtime keeps running) for `child` to exit within `within` and
/// returns its output; a child still running then is killed and the test fails, rather than hangs.
pub async fn exits_within(
    mut child: std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> std::process::Output {
    let deadline = std::time::Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: still running after {within:?}");
            }
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    child.wait_with_output().expect("output of an exited child")
}

/// The stdout of a finished command (`what` names it in the failure); the test fails with the
/// command's stdout and stderr unless it exited 0.
pub fn stdout_of(what: impl std::fmt::Display, output: std::process::Output) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// [`stdout_of`], which must be one JSON value.
pub fn json_of(what: impl std::fmt::Display, output: std::process::Output) -> serde_json::Value {
    let stdout = stdout_of(&what, output);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// A test's HTTP call read to its end: `http.get(url).json_answer().await`. Whatever the status
/// (the test asserts on the body); a call that gets no answer, or a body that is not JSON, fails
/// the test with what it got.
pub trait Answer {
    fn json_answer(self) -> impl std::future::Future<Output = serde_json::Value> + Send;
    fn text_answer(self) -> impl std::future::Future<Output = String> + Send;
}

impl Answer for reqwest::RequestBuilder {
    async fn json_answer(self) -> serde_json::Value {
        let text = self.text_answer().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    async fn text_answer(self) -> String {
        let response = self
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer: {e}"));
        response
            .text()
            .await
            .unwrap_or_else(|e| panic!("the answer broke off: {e}"))
    }
}
