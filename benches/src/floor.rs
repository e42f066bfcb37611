//! The floor under the gateway's added latency: one JetStream publish of a real captured step,
//! awaited until acked, one at a time — what the gateway must do before it answers.

use std::time::Instant;

use async_nats::HeaderMap;

pub struct Floor {
    pub publishes: usize,
    pub event_bytes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Floor {
    pub fn render(&self) -> String {
        format!(
            "## The floor: one JetStream ack\n\n{} publishes of a step the gateway captured in this run ({} B), one at a \
             time, each awaited until JetStream acked it (file storage), on the same nats-server: **p50 {:.3} ms, p99 {:.3} ms**. \
             The gateway cannot answer before this ack (a step is acked before its response completes), so it is part of every \
             added latency above, on top of the extra HTTP hop and the engine producing token ids and logprobs.\n",
            self.publishes, self.event_bytes, self.p50_ms, self.p99_ms
        )
    }
}

/// Publishes `payload` `n` times to `subject` (each with its own `Nats-Msg-Id`), one at a time.
pub async fn ack_floor(
    nats_url: &str,
    subject: &str,
    payload: bytes::Bytes,
    n: usize,
) -> anyhow::Result<Floor> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("floor-{i}").as_str());
        let started = Instant::now();
        js.publish_with_headers(subject.to_string(), headers, payload.clone())
            .await?
            .await?;
        // The first tenth warms up.
        if i >= n / 10 {
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Floor {
        publishes: ms.len(),
        event_bytes: payload.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}
