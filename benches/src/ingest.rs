//! `/submit_steps` ingestion against raw async-nats publishes of events of the same size.

use std::{path::Path, time::Instant};

use clawline_runtime::tokenize::ChatTokenizer;

use clawline_schemas::{Envelope, StepRecorded, StepSource, TokenSource};
use serde_json::json;

pub struct Result {
    pub steps: usize,
    pub event_bytes: usize,
    pub raw_per_s: f64,
    pub gateway_per_s: f64,
    pub batch: usize,
    pub clients: usize,
}

impl Result {
    pub fn render(&self) -> String {
        format!(
            "## `/submit_steps` ingestion\n\n{} white-box steps (512 prompt ids, 128 response ids with logprobs; {} B as an event), \
             {} steps a request from {} concurrent clients, against the same number of raw async-nats JetStream publishes of \
             same-size events (the text the gateway decodes from the ids included) in batches of {} with acks \
             awaited per batch (what the gateway itself does).\n\n\
             | path | steps/s |\n|---|---|\n| raw async-nats publish | {:.0} |\n| clawline `/submit_steps` | {:.0} |\n\n\
             **Ratio:** {:.0} % of raw publish.\n",
            self.steps,
            self.event_bytes,
            self.batch,
            self.clients,
            self.batch,
            self.raw_per_s,
            self.gateway_per_s,
            100.0 * self.gateway_per_s / self.raw_per_s
        )
    }
}

/// Every bench step's ids and logprobs: 512 prompt ids, 128 response ids with one logprob each.
fn prompt_ids() -> Vec<u32> {
    (0..512).map(|i| (i * 7) % 30000).collect()
}

fn response_ids() -> Vec<u32> {
    (0..128).map(|i| (i * 13) % 30000).collect()
}

fn logprobs() -> Vec<f32> {
    (0..128).map(|i| -0.01 * (i % 50) as f32).collect()
}

fn step_json(trajectory: &str, index: u32) -> serde_json::Value {
    json!({
        "prompt_ids": prompt_ids(), "response_ids": response_ids(), "rollout_log_probs": logprobs(),
        "reward": 1.0, "trajectory_uid": trajectory, "prompt_uid": "bench", "step_index": index,
    })
}

/// The texts the gateway stores beside a submitted step's ids (decoded with its tokenizer), so
/// the raw events are the size of the gateway's.
#[derive(Clone, Default)]
struct Texts {
    prompt: Option<String>,
    response: String,
}

fn step_event(trajectory: &str, index: u32, texts: &Texts) -> StepRecorded {
    StepRecorded {
        envelope: Envelope::new(
            StepRecorded::id_for("default", trajectory, index, 0),
            "clawline-gateway/0.1.0",
        ),
        tenant: "default".into(),
        channel: "bench".into(),
        trajectory_uid: trajectory.into(),
        prompt_uid: "bench".into(),
        step_index: index,
        source: StepSource::Submitted,
        token_source: TokenSource::Client,
        prompt_ids: prompt_ids(),
        response_ids: response_ids(),
        response_logprobs: Some(logprobs()),
        reward: Some(1.0),
        prompt_text: texts.prompt.clone(),
        response_text: texts.response.clone(),
        ..Default::default()
    }
}

/// `tokenizer`: the directory the gateway was started with (`--tokenizer`), if any.
pub async fn compare(
    nats_url: &str,
    gateway: &str,
    tokenizer: Option<&Path>,
) -> anyhow::Result<Result> {
    const STEPS: usize = 20_000;
    const BATCH: usize = 100;
    const CLIENTS: usize = 4;

    let texts = match tokenizer {
        Some(dir) => {
            let tok = ChatTokenizer::load(dir)?;
            Texts {
                prompt: tok.decode(&prompt_ids()).ok(),
                response: tok.decode_text(&response_ids())?,
            }
        }
        None => Texts::default(),
    };

    // Raw: the same events published straight to JetStream by CLIENTS publishers.
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let event_bytes = clawline_schemas::encode(&step_event("raw-x", 0, &texts))?.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let js = js.clone();
        let texts = texts.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..STEPS / CLIENTS / BATCH {
                let mut acks = Vec::with_capacity(BATCH);
                for i in 0..BATCH {
                    let event = step_event(&format!("raw-{c}-{b}"), i as u32, &texts);
                    let payload = clawline_schemas::encode(&event)?;
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", event.envelope.event_id.as_str());
                    acks.push(
                        js.publish_with_headers("clawline.steps.bench", headers, payload.into())
                            .await?,
                    );
                }
                for ack in futures::future::join_all(
                    acks.into_iter().map(std::future::IntoFuture::into_future),
                )
                .await
                {
                    ack?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let raw_per_s = STEPS as f64 / started.elapsed().as_secs_f64();

    // Gateway: the same number of steps through /submit_steps.
    let http = reqwest::Client::new();
    // Bodies are serialized before the clock starts: the client's JSON work is not the gateway's.
    let bodies: Vec<bytes::Bytes> = (0..STEPS / BATCH)
        .map(|b| {
            let body = json!({"steps": (0..BATCH).map(|i| step_json(&format!("gw-{b}"), i as u32)).collect::<Vec<_>>()});
            bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let http = http.clone();
        let mine: Vec<bytes::Bytes> = bodies.iter().skip(c).step_by(CLIENTS).cloned().collect();
        let url = format!("{gateway}/submit_steps?channel=bench");
        tasks.push(tokio::spawn(async move {
            for body in mine {
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "submit_steps: {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let gateway_per_s = STEPS as f64 / started.elapsed().as_secs_f64();
    Ok(Result {
        steps: STEPS,
        event_bytes,
        raw_per_s,
        gateway_per_s,
        batch: BATCH,
        clients: CLIENTS,
    })
}
