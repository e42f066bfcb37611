//! The per-test harness: a real nats-server on a free loopback port with a temp store, the
//! production topology applied, killed and reaped on drop.

use std::time::Duration;

use async_nats::jetstream;

use crate::server::{LocalServer, LocalServerConfig, free_port};
use crate::{TopologyOptions, ensure_topology};

pub struct NatsServer {
    server: LocalServer,
    // Dropped after the server, so the store outlives the process.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server and applies `ensure_topology`. Panics with a fix-it message when the binary
    /// is missing; prints the server log when it does not come up.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("clawline-nats-")
            .tempdir()
            .expect("creating a temp dir for nats-server");
        let server = LocalServer::start(LocalServerConfig::new(dir.path()))
            .unwrap_or_else(|e| panic!("{e}"));
        let this = Self { server, _dir: dir };
        let js = this.jetstream().await;
        ensure_topology(&js, &TopologyOptions::default())
            .await
            .unwrap_or_else(|e| panic!("ensure_topology: {e}\nserver log:\n{}", this.log()));
        this
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// A fresh client connection.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to {}: {e}\nserver log:\n{}",
                    self.url(),
                    self.log()
                )
            })
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }

    /// SIGKILL the server (as a crash would).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Start it again on the same port and store.
    pub fn restart(&mut self) {
        self.server
            .restart()
            .unwrap_or_else(|e| panic!("restarting nats-server: {e}"));
    }
}

/// A cluster of real nats-servers on loopback (JetStream on, R3 topology applied): what several
/// hosts run, on one machine.
pub struct NatsCluster {
    servers: Vec<LocalServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other and applies `ensure_topology` with `n` replicas
    /// once JetStream has elected its meta leader.
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("clawline-cluster-")
            .tempdir()
            .expect("creating a temp dir for the cluster");
        let routes: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let servers = (0..n)
            .map(|i| {
                let mut config = LocalServerConfig::new(dir.path().join(format!("n{i}")));
                config.port = Some(free_port());
                config.cluster = Some(crate::server::ClusterConfig {
                    name: "clawline".into(),
                    server_name: format!("n{i}"),
                    listen: routes[i].clone(),
                    routes: routes
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, r)| r.clone())
                        .collect(),
                });
                LocalServer::start(config).unwrap_or_else(|e| panic!("node n{i}: {e}"))
            })
            .collect();
        let this = Self { servers, _dir: dir };
        let js = this.jetstream().await;
        let options = TopologyOptions {
            replicas: n,
            ..Default::default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match ensure_topology(&js, &options).await {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("ensure_topology on the cluster: {e}\n{}", this.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        this
    }

    /// Every node's client URL, comma-separated (what `--nats-url` takes).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(LocalServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn node_url(&self, i: usize) -> String {
        self.servers[i].url()
    }

    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- n{i} ---\n{}", s.log()))
            .collect()
    }

    /// A client that knows every node.
    pub async fn client(&self) -> async_nats::Client {
        let addrs: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.url().parse().expect("a server URL"))
            .collect();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .unwrap_or_else(|e| panic!("connecting to the cluster: {e}\n{}", self.logs()))
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Start node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.servers[i]
            .restart()
            .unwrap_or_else(|e| panic!("restarting n{i}: {e}"));
    }
}

/// How many messages `stream` holds.
pub async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("stream info").state.messages
}

/// Every event of `stream` on a subject starting with `subject_prefix` (`""`: all), decoded as
/// `E`; one that does not decode fails the test.
pub async fn read_events<E: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    stream: &str,
    subject_prefix: &str,
) -> Vec<E> {
    let mut s = js.get_stream(stream).await.expect("stream");
    let info = s.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence.max(1)..=info.state.last_sequence {
        let Ok(msg) = s.get_raw_message(seq).await else {
            continue;
        };
        if msg.subject.starts_with(subject_prefix) {
            out.push(clawline_schemas::decode(&msg.payload).expect("a decodable event"));
        }
    }
    out
}
