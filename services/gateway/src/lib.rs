//! clawline-gateway — the front door: OpenAI- and Claw-R1-compatible HTTP in front of the serving
//! engines. Publishes `StepRecorded` for every answered call and `TrajectoryRegistered`,
//! `TrajectoryCompleted` and `FeedbackReceived` for the trajectory endpoints (stream `STEPS`,
//! `TRAJECTORIES`); reads the KV `state` key `policy.version`.
//!
//! A step is acked by JetStream before its response completes; when NATS is down it is spooled and
//! drained later, so capture never fails a request and never loses a step. Must not score, batch or
//! train: that is what the consumers of its events do.

pub mod auth;
pub mod background;
pub mod capture;
pub mod chat;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod identity;
pub mod leases;
pub mod protocols;
mod service;
pub mod sessions;
pub mod settings;
mod state;
pub mod token_in;
pub mod upstream;

pub use service::{build, run, serve};
pub use settings::{Args, ServingArgs, Settings};
pub use state::{AppState, GatewayMetrics, PolicyVersion};
