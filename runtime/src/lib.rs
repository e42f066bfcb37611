//! clawline-runtime — the small shared base of every service.
//!
//! Owns: the HTTP edge (OpenAI-style errors, API-key callers, rate limits, capped bodies), the
//! clap arg groups every binary has (`NatsArgs`, `LogArgs`), `init_tracing`, the shutdown token
//! wired to Ctrl-C / SIGTERM, binding a service's listener, the task spawner that takes the
//! service down when any task dies, the Prometheus registry, and connecting to NATS. Must not
//! know about any one service.

pub mod alloc;
mod args;
mod dir_lock;
pub mod http;
pub mod keys;
pub mod limits;
mod listen;
mod metrics;
mod nats;
mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tokenizer")]
pub mod tokenize;
mod tracing_init;

pub use args::{DEFAULT_NATS_URL, LogArgs, LogFormat, NatsArgs, NatsAuth};
pub use dir_lock::{DirLock, lock_dir};
pub use listen::{bind, bind_loopback, bind_sync, serve_main};
pub use metrics::{Metrics, admin_routes, json_snapshot, sample};
pub use nats::{connect_nats, start_nats, watch_policy_version, watch_state_key};
pub use shutdown::{Shutdown, TaskSet};
pub use tracing_init::init_tracing;

pub use prometheus_client;
pub use tokio_util::sync::CancellationToken;
