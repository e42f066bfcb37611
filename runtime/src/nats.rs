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
    let mut options = args
        .options(name)
        .await?
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
        .connect(args.servers()?)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.url))
}

/// A service's NATS start-up: connect (the first connect must succeed) and create or update the
/// topology, so every stream, consumer and bucket it uses exists before it reads or writes.
pub async fn start_nats(
    args: &NatsArgs,
    name: &str,
) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
    let client = connect_nats(args, name, true).await?;
    let js = async_nats::jetstream::new(client.clone());
    clawline_nats::ensure_topology(&js, &args.topology())
        .await
        .with_context(|| format!("creating the topology on {}", args.url))?;
    Ok((client, js))
}

/// Follows KV `state`/`policy.version` until `shutdown`, calling `on_version` with each version
/// (the current one first), and re-opening the watch after NATS outages. A value that is not a
/// number is logged and skipped.
pub async fn watch_policy_version(
    js: async_nats::jetstream::Context,
    shutdown: tokio_util::sync::CancellationToken,
    mut on_version: impl FnMut(u64) + Send,
) -> anyhow::Result<()> {
    watch_state_key(
        js,
        clawline_nats::buckets::POLICY_VERSION_KEY,
        shutdown,
        move |value| match std::str::from_utf8(value)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(version) => on_version(version),
            None if value.is_empty() => {}
            None => tracing::warn!(?value, "policy.version is not a number; ignored"),
        },
    )
    .await
}

/// Follows one key of KV `state` until `shutdown`, calling `on_value` with each value (the
/// current one first), and re-opening the watch after NATS outages.
pub async fn watch_state_key(
    js: async_nats::jetstream::Context,
    key: &str,
    shutdown: tokio_util::sync::CancellationToken,
    mut on_value: impl FnMut(&[u8]) + Send,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    loop {
        let attempt = async {
            let kv = js.get_key_value(clawline_nats::buckets::STATE).await?;
            let mut watch = kv.watch_with_history(key).await?;
            while let Some(entry) = watch.next().await {
                on_value(&entry?.value);
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = attempt => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, key, "KV watch ended; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
