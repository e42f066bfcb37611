//! Subscribing to answer requests (`clawline.reward.compute`, the DataPool's and the SQL service's
//! questions) such that the subscription is in force when the call returns.
//!
//! `Client::flush` only writes the client's buffer; the server may not have processed the `SUB`
//! yet, and a request published on another connection in that window is answered "no responders"
//! (a caller that saw the service up got 503 for its first call). A message the client sends to
//! itself after the `SUB` comes back only after the server has processed everything before it.

use async_nats::{Client, Subscriber};
use futures::StreamExt as _;

/// Subscribes to `subject` (in `queue` when given) and returns once the server has registered it.
pub async fn answer_on(
    client: &Client,
    subject: &'static str,
    queue: Option<&str>,
) -> anyhow::Result<Subscriber> {
    let subscribed = match queue {
        Some(group) => client.queue_subscribe(subject, group.to_string()).await,
        None => client.subscribe(subject).await,
    };
    let requests = subscribed.map_err(|e| anyhow::anyhow!("subscribing to {subject}: {e}"))?;
    round_trip(client)
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {subject}: {e}"))?;
    Ok(requests)
}

/// Returns once the server has processed every command this client sent before the call.
pub async fn round_trip(client: &Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    client.flush().await?;
    match tokio::time::timeout(std::time::Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("the connection closed"),
        Err(_) => anyhow::bail!("the NATS server did not echo within 10 s"),
    }
}
