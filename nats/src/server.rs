//! A local `nats-server` child process with JetStream on disk: what `clawline up` starts on one
//! machine, and what the test harness starts per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where to find the binary, in order: `NATS_SERVER_BIN`, the project's setup cache, `PATH`.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(ServerError::NotFound(format!(
                "NATS_SERVER_BIN={} is not a file",
                bin.display()
            )))
        };
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/clawline/nats/bin/nats-server");
        if cached.is_file() {
            return Ok(cached);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(ServerError::NotFound(
        "nats-server not found: run scripts/setup.sh (installs v2.15.1 into ~/.cache/clawline/nats), \
         or set NATS_SERVER_BIN"
            .to_string(),
    ))
}

/// A loopback port free right now, for a child process (a nats-server, a clawline service) to bind
/// later. Taken below the kernel's ephemeral range (32768 and up on Linux): a port from `bind(0)`
/// is released before the child binds it, and in between any `bind(0)` or outgoing connection
/// could be handed the same port (a CI run lost `clawline up` to that). Ports here are only ever
/// chosen on purpose.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
        let port = 20_000 + (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u16 % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    NotFound(String),
    #[error("starting nats-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("nats-server did not come up within {timeout:?}; its log:\n{log}")]
    Timeout { timeout: Duration, log: String },
}

/// How to start a local server.
#[derive(Debug, Clone)]
pub struct LocalServerConfig {
    /// Working dir: the config file, the ports file, the log and (by default) the JetStream store.
    pub dir: PathBuf,
    /// JetStream store; `dir/js` when `None`.
    pub store_dir: Option<PathBuf>,
    pub host: String,
    /// Client port; `None` lets the OS choose (read back from the ports file).
    pub port: Option<u16>,
    /// Largest message the server accepts (events carry whole conversations).
    pub max_payload: usize,
    /// fsync every write (`sync_interval: always`): an acked event survives power loss, at a cost.
    pub sync_always: bool,
    /// Join a cluster (JetStream replicated by Raft across its servers).
    pub cluster: Option<ClusterConfig>,
    /// Config text appended as is (an `authorization` or `tls` block, say).
    pub extra: String,
}

/// A server's place in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name, the same on every server.
    pub name: String,
    /// This server's name, unique in the cluster (JetStream's Raft groups know servers by it).
    pub server_name: String,
    /// Where this server listens for routes from the others.
    pub listen: String,
    /// The other servers' route addresses (`host:port`).
    pub routes: Vec<String>,
}

impl LocalServerConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            store_dir: None,
            host: "127.0.0.1".to_string(),
            port: None,
            max_payload: 8 * 1024 * 1024,
            sync_always: false,
            cluster: None,
            extra: String::new(),
        }
    }
}

/// A running nats-server; killed and reaped on drop.
pub struct LocalServer {
    config: LocalServerConfig,
    child: Option<Child>,
    port: u16,
}

impl LocalServer {
    /// Starts the server and waits until it accepts connections.
    pub fn start(config: LocalServerConfig) -> Result<Self, ServerError> {
        let mut server = Self {
            config,
            child: None,
            port: 0,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let bin = find_binary()?;
        let dir = &self.config.dir;
        std::fs::create_dir_all(dir)?;
        let store = self
            .config
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.join("js"));
        std::fs::create_dir_all(&store)?;
        let port = self.config.port.map(i32::from).unwrap_or(-1);
        let conf = format!(
            "listen: \"{host}:{port}\"\nmax_payload: {max}\nlog_file: \"{log}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n{sync}}}\n",
            host = self.config.host,
            max = self.config.max_payload,
            log = self.log_path().display(),
            store = store.display(),
            sync = if self.config.sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            },
        );
        let conf = conf + &cluster_conf(self.config.cluster.as_ref()) + &self.config.extra;
        let conf_path = dir.join("nats-server.conf");
        std::fs::write(&conf_path, conf)?;
        let ports_dir = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        self.port = self.wait_for_port(&ports_dir.join(format!("nats-server_{pid}.ports")))?;
        Ok(())
    }

    fn wait_for_port(&mut self, ports_file: &Path) -> Result<u16, ServerError> {
        let timeout = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(port) = std::fs::read_to_string(ports_file)
                .ok()
                .and_then(|text| parse_client_port(&text))
            {
                return Ok(port);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_status)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ServerError::Timeout {
            timeout,
            log: self.log(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.config.host, self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.config.dir.join("nats-server.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: an acked write must survive this) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server to shut down cleanly (SIGTERM) and waits up to 10 s before killing it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Starts it again on the same port with the same store, as after a crash.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.config.port = Some(self.port);
        self.spawn()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cluster_conf(cluster: Option<&ClusterConfig>) -> String {
    let Some(c) = cluster else {
        return String::new();
    };
    let routes: Vec<String> = c
        .routes
        .iter()
        .map(|r| format!("\"nats-route://{r}\""))
        .collect();
    format!(
        "server_name: \"{}\"\ncluster {{\n  name: \"{}\"\n  listen: \"{}\"\n  routes: [{}]\n}}\n",
        c.server_name,
        c.name,
        c.listen,
        routes.join(", ")
    )
}

fn parse_client_port(text: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let urls = value.get("nats").or_else(|| value.get("client"))?;
    let url = urls.as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_client_port_from_a_ports_file() {
        let text = r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":[]}"#;
        assert_eq!(super::parse_client_port(text), Some(41234));
        assert_eq!(super::parse_client_port("{}"), None);
    }
}
