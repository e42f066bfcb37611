//! The per-test harness: a real nats-server on a free loopback port with a temp store, the
//! production topology applied, killed and reaped on drop.

use std::time::Duration;

use async_nats::jetstream;

use crate::server::{LocalServer, LocalServerConfig};
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
