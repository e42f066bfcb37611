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

/// The value of one series in a text exposition such as [`Metrics::render`] writes: `series` is
/// the name with its labels as rendered, e.g. `clawline_trainer_batches_total{outcome="rejected"}`.
/// For readers of a service's `/metrics` (tests, benchmarks).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// `/healthz`, and `/metrics` rendering `metrics`: the routes every service's admin port has.
pub fn admin_routes(metrics: Option<Metrics>) -> axum::Router {
    use axum::routing::get;
    let router = axum::Router::new().route("/healthz", get(|| async { "ok" }));
    match metrics {
        Some(m) => router.route(
            "/metrics",
            get(move || {
                let text = m.render();
                async move { text }
            }),
        ),
        None => router,
    }
}

/// A GET handler answering the current value of `shared` as JSON (a service's `/stats`).
pub fn json_snapshot<T>(shared: Arc<Mutex<T>>) -> axum::routing::MethodRouter
where
    T: Clone + Default + serde::Serialize + Send + 'static,
{
    axum::routing::get(move || {
        let value = shared.lock().map(|s| s.clone()).unwrap_or_default();
        async move { axum::Json(value) }
    })
}

impl crate::TaskSet {
    /// Serves a service's admin edge on `listener`: `/healthz`, `/metrics` from `registry`, and
    /// `GET /status` as the JSON of the returned cell, which the service keeps current.
    pub fn serve_status<T>(
        &mut self,
        listener: tokio::net::TcpListener,
        registry: Metrics,
    ) -> Arc<Mutex<T>>
    where
        T: Clone + Default + serde::Serialize + Send + 'static,
    {
        let status = Arc::new(Mutex::new(T::default()));
        self.serve(
            listener,
            admin_routes(Some(registry)).route("/status", json_snapshot(status.clone())),
        );
        status
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;

    #[test]
    fn a_sample_is_read_back_by_its_series_and_labels() {
        let metrics = Metrics::new("clawline_test");
        let calls = Family::<Vec<(String, String)>, Counter>::default();
        metrics.register("calls", "Calls by outcome", calls.clone());
        calls
            .get_or_create(&vec![("outcome".into(), "ok".into())])
            .inc_by(3);
        calls
            .get_or_create(&vec![("outcome".into(), "failed".into())])
            .inc();
        let text = metrics.render();
        assert_eq!(
            sample(&text, r#"clawline_test_calls_total{outcome="ok"}"#),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"clawline_test_calls_total{outcome="failed"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "clawline_test_calls_total"),
            None,
            "only whole series"
        );
    }
}
