//! One Prometheus registry per service, rendered in the text exposition format on `/metrics`.

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// A registry whose metric names all start with `prefix_`.
    pub fn new(prefix: &str) -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::with_prefix(prefix))),
        }
    }

    /// Registers a metric; call while building the service, before serving.
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
