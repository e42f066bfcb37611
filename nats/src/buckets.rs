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

pub fn weights(opts: &TopologyOptions) -> object_store::Config {
    object_store::Config {
        bucket: WEIGHTS_OBJECTS.to_string(),
        description: Some("clawline weight versions (safetensors)".to_string()),
        storage: StorageType::File,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}
