//! A side running as a server, and waiting for a quiet machine.

use super::*;

/// A side started with `--serve`; closing its stdin ends it.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) name: &'static str,
}

impl Server {
    pub(crate) fn start(mut command: Command, name: &'static str) -> anyhow::Result<Self> {
        let mut child = command
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut server = Self {
            child,
            stdin,
            stdout,
            name,
        };
        let ready = server.line()?;
        if ready["ready"] != true {
            bail!("{name}: expected the ready line, got {ready}");
        }
        Ok(server)
    }

    pub(crate) fn line(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("{} side exited", self.name);
            }
            // Anything else a library prints to stdout is not ours.
            if line.starts_with('{') {
                return serde_json::from_str(&line)
                    .with_context(|| format!("{} side printed {line}", self.name));
            }
        }
    }

    pub(crate) fn turn(&mut self, start: usize, count: usize) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{start} {count}")?;
        stdin.flush()?;
        self.line()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Machine busy cores over `window`.
pub(crate) fn busy_cores(window: Duration) -> f64 {
    let (before, _) = cpu_seconds();
    std::thread::sleep(window);
    let (after, _) = cpu_seconds();
    (after - before) / window.as_secs_f64()
}

/// Waits until processes use at most `max_cores` of the machine (this one only sleeps), or until
/// `limit` has passed.
pub(crate) fn wait_quiet(max_cores: f64, limit: Duration) {
    let until = Instant::now() + limit;
    let mut said = false;
    loop {
        let busy = busy_cores(Duration::from_millis(500));
        if busy <= max_cores {
            return;
        }
        if Instant::now() > until {
            eprintln!("the machine stayed busy ({busy:.2} cores); running anyway");
            return;
        }
        if !said {
            eprintln!("waiting for a quiet machine ({busy:.2} cores busy)");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
