//! Engines that restart come back with their base weights (or without the adapter): every
//! `--check-engines-secs` the broadcaster asks each engine whether it still serves the serving
//! version and activates it again where not, reporting `WeightsActivated` with reason `restore`.

use clawline_nats::{publish_event, subjects};
use clawline_schemas::{Envelope, WeightsActivated, new_event_id, now_ms};

use crate::engine;
use crate::service::Broadcaster;

impl Broadcaster {
    pub(crate) async fn restore_engines(&mut self) {
        let Some(event) = self.published.get(&self.serving).cloned() else {
            return; // The base model serves: an engine restarts into it by itself.
        };
        let dir = match self.versions.materialise(&self.js, &event).await {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(version = event.version, error = %e, "checking engines: the serving version is not at hand");
                return;
            }
        };
        for e in self.engines.clone() {
            match engine::serves(&self.http, &e, event.version, event.format, &dir).await {
                Ok(Some(false)) => {}
                Ok(_) => continue,
                Err(err) => {
                    tracing::debug!(engine = %e.name, error = %format!("{err:#}"), "engine not answering; checked again later");
                    continue;
                }
            }
            tracing::warn!(engine = %e.name, version = event.version, "engine lost the serving version (restarted?); activating it again");
            let started = now_ms();
            let outcome = engine::activate(
                &self.http,
                &e,
                event.version,
                event.format,
                &dir,
                &event.sha256,
            )
            .await;
            if let Err(err) = outcome {
                tracing::warn!(engine = %e.name, version = event.version, error = %format!("{err:#}"), "restoring the serving version failed; retrying later");
                self.count(&e.name, "restore_failed");
                continue;
            }
            let activated = WeightsActivated {
                envelope: Envelope::new(new_event_id("wac"), &self.producer),
                version: event.version,
                engine: e.name.clone(),
                sha256: event.sha256.clone(),
                reason: "restore".into(),
                seconds: (now_ms() - started).max(0) as f64 / 1000.0,
                canary: None,
            };
            if let Err(err) =
                publish_event(&self.js, subjects::WEIGHTS_ACTIVATED.into(), &activated).await
            {
                tracing::warn!(engine = %e.name, error = %err, "reporting a restored engine");
            }
            self.count(&e.name, "restored");
        }
    }
}
