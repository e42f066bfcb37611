//! Streaming answers: the engine's SSE chunks are forwarded as they arrive (re-encoded only when
//! extensions the client did not ask for must go, or translated into another protocol's events),
//! the answer is collected, and the step is acked before `[DONE]` (or the protocol's closing events).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use clawline_runtime::prometheus_client::metrics::gauge::Gauge;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Reply, add_call_headers};
use crate::AppState;
use crate::chat::{Answer, Wants, strip_unrequested};
use crate::http::steps::{CallContext, record_call};
use crate::token_in::StreamParser;

/// Counts a chat call in `in_flight` until dropped (a stream's lives in its pump task), so a hung
/// or timed-out call that left anything behind would show.
pub(super) struct InFlight(Gauge);

impl InFlight {
    pub(super) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The engine's stream as the client asked for it; `token_in`: the engine streams a text
/// completion (token-in mode), turned into chat chunks first.
pub(super) fn stream_response(
    state: AppState,
    ctx: CallContext,
    upstream: reqwest::Response,
    (wants, reply): (Wants, Reply),
    token_in: Option<StreamParser>,
    in_flight: InFlight,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let mut headers = HeaderMap::new();
    add_call_headers(&mut headers, &ctx);
    tokio::spawn(async move {
        pump(state, ctx, upstream, (wants, reply, token_in), tx).await;
        drop(in_flight);
    });
    let mut response = Response::new(axum::body::Body::from_stream(ReceiverStream::new(rx)));
    let h = response.headers_mut();
    h.extend(headers);
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// Position just past the first complete SSE event in `buf`.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One SSE event of the engine's text completion as a chat chunk event (`[DONE]`, comments and
/// what is not JSON unchanged).
fn as_chat_event(parser: &mut StreamParser, raw: Vec<u8>) -> Vec<u8> {
    match event_data(&raw).and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
        Some(completion) => format!("data: {}\n\n", parser.chunk(&completion)).into_bytes(),
        None => raw,
    }
}

/// The data of one SSE event (its `data:` lines joined), if it has any.
fn event_data(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

enum Event {
    Done,
    Forward(Vec<Bytes>),
}

/// Reads one SSE event: `[DONE]`, or the bytes to forward (re-encoded only when extensions had to
/// be removed, translated for another protocol).
fn process_event(
    raw: Vec<u8>,
    answer: &mut Answer,
    wants: Wants,
    reply: &mut Reply,
    ctx: &CallContext,
) -> Event {
    if let Reply::Native(native) = reply {
        // The engine's own protocol: every event goes on as it is; the closing one once the step
        // is recorded.
        let event = event_data(&raw).and_then(|d| serde_json::from_str::<Value>(&d).ok());
        let Some(mut event) = event else {
            return Event::Forward(vec![Bytes::from(raw)]);
        };
        if let Some(chunk) = native.chunk(&event) {
            answer.push_chunk(&chunk);
        }
        let raw = if native.restore(&mut event) {
            let name = event
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message");
            Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
        } else {
            Bytes::from(raw)
        };
        if native.is_closing(&event) {
            native.closing = Some(raw);
            return Event::Done;
        }
        return Event::Forward(vec![raw]);
    }
    let Some(data) = event_data(&raw) else {
        return match reply {
            Reply::Chat | Reply::Completions => Event::Forward(vec![Bytes::from(raw)]),
            // Comments and keep-alives of the engine's stream mean nothing in another protocol.
            Reply::Translated(_) | Reply::Native(_) => Event::Forward(Vec::new()),
        };
    };
    if data.trim() == "[DONE]" {
        return Event::Done;
    }
    match serde_json::from_str::<Value>(&data) {
        Ok(mut chunk) => {
            answer.push_chunk(&chunk);
            match reply {
                Reply::Translated(dialect) => Event::Forward(dialect.chunk(&chunk, ctx)),
                Reply::Chat | Reply::Completions if strip_unrequested(&mut chunk, wants) => {
                    Event::Forward(vec![Bytes::from(format!("data: {chunk}\n\n"))])
                }
                Reply::Chat | Reply::Completions | Reply::Native(_) => {
                    Event::Forward(vec![Bytes::from(raw)])
                }
            }
        }
        Err(_) => match reply {
            Reply::Chat | Reply::Completions | Reply::Native(_) => {
                Event::Forward(vec![Bytes::from(raw)])
            }
            Reply::Translated(_) => Event::Forward(Vec::new()),
        },
    }
}

fn error_event(reply: &mut Reply, message: &str) -> Bytes {
    match reply {
        Reply::Chat | Reply::Completions => {
            let body = crate::error::error_body(message, "upstream_error", None, None);
            Bytes::from(format!("data: {body}\n\n"))
        }
        Reply::Translated(dialect) => dialect.stream_error(message),
        Reply::Native(native) => native.stream_error(message),
    }
}

/// Forwards the engine's stream to the client as it arrives, collecting the answer; records the step
/// and only then sends `[DONE]`.
async fn pump(
    state: AppState,
    mut ctx: CallContext,
    upstream: reqwest::Response,
    (wants, mut reply, mut token_in): (Wants, Reply, Option<StreamParser>),
    tx: mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
) {
    let mut chunks = upstream.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut answer = Answer::default();
    let mut done = false;
    'read: loop {
        let next = tokio::time::timeout(state.config.upstream_timeout, chunks.next()).await;
        let bytes = match next {
            Ok(Some(Ok(bytes))) => bytes,
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                tracing::warn!(request_id = %ctx.request_id, error = %err, "upstream stream broke; step not recorded");
                let _ = tx
                    .send(Ok(error_event(
                        &mut reply,
                        &format!("the upstream stream broke: {err}"),
                    )))
                    .await;
                return;
            }
            Err(_) => {
                tracing::warn!(request_id = %ctx.request_id, "upstream stream stalled; step not recorded");
                let message = format!(
                    "the upstream sent nothing for {:?}",
                    state.config.upstream_timeout
                );
                let _ = tx.send(Ok(error_event(&mut reply, &message))).await;
                return;
            }
        };
        if ctx.ttft.is_none() {
            ctx.ttft = Some(ctx.started.elapsed());
        }
        buf.extend_from_slice(&bytes);
        while let Some(end) = event_end(&buf) {
            let mut raw: Vec<u8> = buf.drain(..end).collect();
            if let Some(parser) = token_in.as_mut() {
                raw = as_chat_event(parser, raw);
            }
            match process_event(raw, &mut answer, wants, &mut reply, &ctx) {
                Event::Done => {
                    done = true;
                    break 'read;
                }
                Event::Forward(events) => {
                    for out in events {
                        if tx.send(Ok(out)).await.is_err() {
                            state.metrics.streams_abandoned.inc();
                            tracing::info!(request_id = %ctx.request_id, "client left the stream; step not recorded");
                            return;
                        }
                    }
                }
            }
        }
    }
    state
        .metrics
        .upstream_seconds
        .observe(ctx.started.elapsed().as_secs_f64());
    answer.finish_stream();
    record_call(&state, &mut ctx, &answer).await;
    match &mut reply {
        Reply::Chat | Reply::Completions if done => {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
        Reply::Chat | Reply::Completions => {}
        Reply::Native(native) => {
            native.finished(&ctx, None);
            if let Some(closing) = native.closing.take() {
                let _ = tx.send(Ok(closing)).await;
            }
        }
        // Another protocol's stream ends with its own closing events, once the step is recorded.
        Reply::Translated(dialect) => {
            for out in dialect.finish(&ctx) {
                if tx.send(Ok(out)).await.is_err() {
                    break;
                }
            }
        }
    }
}
