use std::time::Duration;

use anyhow::Context as _;

use crate::NatsArgs;

/// Connects to NATS. With `wait == false` the client is returned at once and keeps trying in the
/// background (the gateway must serve while NATS is down); otherwise the first connect must succeed.
pub async fn connect_nats(
    args: &NatsArgs,
    name: &str,
    wait: bool,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                async_nats::Event::Connected => tracing::info!("nats connected"),
                other => tracing::debug!(event = %other, "nats event"),
            }
        });
    if !wait {
        options = options.retry_on_initial_connect();
    }
    options
        .connect(&args.url)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.url))
}
