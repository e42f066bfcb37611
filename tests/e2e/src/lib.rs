//! clawline-e2e — scenarios that span services, run against real nats-server processes: the
//! gateway in front of the built-in policy server (`tests/policy_behind_gateway.rs`) and of the
//! reward scorer (`tests/reward_behind_gateway.rs`), and a
//! three-node NATS cluster losing a node while gateways, reward scorers and the batcher run
//! (`tests/cluster.rs`); the learning loop — trainer, broadcaster, canary and policy server —
//! publishing, gating, activating and restoring versions (`tests/broadcaster.rs`, `canary.rs`,
//! `restore.rs`). A service's own tests use only that service (and the test engine).
