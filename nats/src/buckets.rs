//! The object store for weights and the KV bucket for shared state.

use async_nats::jetstream::{kv, object_store, stream::StorageType};

use crate::TopologyOptions;

/// Object store holding published weight files (safetensors), named by version.
pub const WEIGHTS_OBJECTS: &str = "weights";
/// KV bucket of small shared state.
pub const STATE: &str = "state";
/// Key in [`STATE`]: the policy version every engine serves (set by the broadcaster, read by the
/// gateway to stamp steps and by the batcher to measure staleness). Value: decimal text.
pub const POLICY_VERSION_KEY: &str = "policy.version";
/// Key in [`STATE`]: the model name requests must carry for the serving version, when an engine
/// serves it under its own name (a LoRA adapter on vLLM / SGLang); empty when unchanged. Set by the
/// broadcaster, read by the gateway.
pub const POLICY_MODEL_KEY: &str = "policy.model";
/// KV bucket of step-index leases for trajectories whose uid a client chose (the
/// `x-clawline-trajectory` header): key `lse_<hash of tenant and uid>`, value the end (exclusive,
/// decimal text) of the last block of step indexes a gateway took for it. A gateway that restarts,
/// forgets an idle trajectory or runs beside others continues after that end, so no step id is
/// ever taken twice.
pub const TRAJECTORIES: &str = "trajectories";
/// How long a lease outlives the trajectory's last new block.
pub const TRAJECTORY_LEASE_AGE: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

pub fn state(opts: &TopologyOptions) -> kv::Config {
    kv::Config {
        bucket: STATE.to_string(),
        description: "clawline shared state (policy.version, …)".to_string(),
        history: 16,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}

pub fn trajectories(opts: &TopologyOptions) -> kv::Config {
    kv::Config {
        bucket: TRAJECTORIES.to_string(),
        description: "step-index leases of client-named trajectories".to_string(),
        history: 1,
        max_age: TRAJECTORY_LEASE_AGE,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}

/// KV bucket of the Responses-API answers the gateway keeps (`store`, the default): one key per
/// response id, its tenant, the response it continues, the conversation it added and the response
/// object, so `previous_response_id` works across gateway restarts and between gateways.
pub const RESPONSES: &str = "responses";
/// How long a stored response can be continued or retrieved (OpenAI keeps them 30 days).
pub const RESPONSE_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub fn responses(opts: &TopologyOptions) -> kv::Config {
    kv::Config {
        bucket: RESPONSES.to_string(),
        description: "Responses-API answers kept for previous_response_id".to_string(),
        history: 1,
        max_age: RESPONSE_AGE,
        storage: StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}

pub fn weights(opts: &TopologyOptions) -> object_store::Config {
    object_store::Config {
        bucket: WEIGHTS_OBJECTS.to_string(),
        description: Some("clawline weight versions (safetensors)".to_string()),
        storage: StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}
