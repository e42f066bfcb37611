//! The services as child processes, started from the release binaries beside this one, each
//! logging to its own file; `kill9` is SIGKILL, as a crash.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use clawline_nats::server::free_port;

pub struct Proc {
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, bin: &str, args: &[&str], common: &[String], dir: &Path) -> Self {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if bin != "clawline-mock-vllm" {
            all.extend(common.iter().cloned());
        }
        if bin != "clawline-mock-vllm" && bin != "clawline-history" {
            all.extend(["--log-level".to_string(), "warn".to_string()]);
        }
        Self {
            name: name.into(),
            bin: here.join(bin),
            args: all,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn wait_ready(http: &reqwest::Client, url: &str, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} not ready in {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
