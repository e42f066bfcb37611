//! Following a stream: every message from a sequence on, in order, through NATS restarts and
//! cluster leader changes. The batcher follows STEPS, REWARDS and completions with it; the archiver
//! follows every stream into Parquet.
//!
//! An ordered consumer lives on one server; when that server goes away the client notices only
//! after missed heartbeats. So a follower that hears nothing for [`STALL_CHECK`] asks the stream
//! where it stands and re-creates its consumer from the next unread sequence when the stream holds
//! more. Errors while reading are logged and retried; only a refused stream (see
//! [`Follower::check_stream`]) ends the following.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::StreamExt;
use tokio::time::Instant;

use crate::{STALL_CHECK, last_sequence};

/// One message as the follower hands it over.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub seq: u64,
    pub subject: async_nats::Subject,
    pub payload: bytes::Bytes,
}

/// Why a follower stopped: the stream it found is not one it may read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

type Check = Box<dyn Fn(&jetstream::stream::Info) -> Result<(), String> + Send + Sync>;
type Messages = futures::stream::ReadyChunks<jetstream::consumer::pull::Ordered>;

/// Most messages taken from the consumer at once (what has arrived, not waited for).
const CHUNK: usize = 256;
/// Wait between attempts to (re)create the consumer.
const RETRY: Duration = Duration::from_millis(500);

pub struct Follower {
    js: jetstream::Context,
    stream: String,
    filter: Option<String>,
    next: u64,
    messages: Option<Messages>,
    /// Delivered by the consumer, not yet handed over (a caller asked for fewer).
    pending: VecDeque<Delivered>,
    heard: Instant,
    info: Option<jetstream::stream::Info>,
    check: Option<Check>,
}

impl Follower {
    /// Follows `stream` (only `filter`'s subject, when given) from sequence `from` on.
    pub fn new(
        js: jetstream::Context,
        stream: impl Into<String>,
        filter: Option<&str>,
        from: u64,
    ) -> Self {
        Self {
            js,
            stream: stream.into(),
            filter: filter.map(str::to_string),
            next: from.max(1),
            messages: None,
            pending: VecDeque::new(),
            heard: Instant::now(),
            info: None,
            check: None,
        }
    }

    /// Checks the stream each time the follower (re)connects to it; an `Err` ends the following
    /// with that message (e.g. a stream of another deployment, whose sequences mean other events).
    pub fn check_stream(
        mut self,
        check: impl Fn(&jetstream::stream::Info) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    /// The stream as it was when the follower last connected to it.
    pub fn info(&self) -> Option<&jetstream::stream::Info> {
        self.info.as_ref()
    }

    /// The sequence the follower reads next (one past the last it handed over).
    pub fn next_sequence(&self) -> u64 {
        self.pending.front().map_or(self.next, |d| d.seq)
    }

    /// The messages that have arrived, at most `max` (at least one when any arrives within
    /// `wait`); empty when `wait` passes with none. Cancel-safe: a dropped call loses nothing.
    pub async fn next_chunk(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivered>, Refused> {
        let deadline = Instant::now() + wait;
        loop {
            if !self.pending.is_empty() {
                let n = max.max(1).min(self.pending.len());
                return Ok(self.pending.drain(..n).collect());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let Some(messages) = self.messages.as_mut() else {
                match self.connect().await {
                    Ok(messages) => {
                        self.messages = Some(messages);
                        self.heard = Instant::now();
                    }
                    Err(Connect::Refused(why)) => return Err(Refused(why)),
                    Err(Connect::Failed(err)) => {
                        tracing::warn!(stream = %self.stream, error = %err, "cannot read the stream; retrying");
                        tokio::time::sleep_until(deadline.min(Instant::now() + RETRY)).await;
                    }
                }
                continue;
            };
            let stall = self.heard + STALL_CHECK;
            match tokio::time::timeout_at(deadline.min(stall), messages.next()).await {
                Ok(Some(chunk)) => {
                    self.heard = Instant::now();
                    for message in chunk {
                        match message {
                            Ok(m) => {
                                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(self.next);
                                self.next = seq + 1;
                                self.pending.push_back(Delivered {
                                    seq,
                                    subject: m.subject.clone(),
                                    payload: m.payload.clone(),
                                });
                            }
                            Err(err) => {
                                tracing::warn!(stream = %self.stream, error = %err, "stream error; re-reading");
                                self.messages = None;
                                break;
                            }
                        }
                    }
                }
                Ok(None) => self.messages = None,
                Err(_) if Instant::now() >= stall => {
                    self.heard = Instant::now();
                    // Quiet while the stream holds more: the consumer's server is gone.
                    if let Ok(last) =
                        last_sequence(&self.js, &self.stream, self.filter.as_deref()).await
                        && last >= self.next
                    {
                        tracing::warn!(stream = %self.stream, last, read = self.next - 1,
                            "nothing delivered for {STALL_CHECK:?} while the stream holds more; re-reading");
                        self.messages = None;
                    }
                }
                Err(_) => {}
            }
        }
    }

    async fn connect(&mut self) -> Result<Messages, Connect> {
        let stream = self.js.get_stream(&self.stream).await.map_err(failed)?;
        let info = stream.cached_info().clone();
        if let Some(check) = &self.check {
            check(&info).map_err(Connect::Refused)?;
        }
        self.info = Some(info);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.next,
                },
                filter_subjects: self.filter.iter().cloned().collect(),
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        let messages = consumer.messages().await.map_err(failed)?;
        Ok(messages.ready_chunks(CHUNK))
    }
}

enum Connect {
    Refused(String),
    Failed(async_nats::Error),
}

fn failed(err: impl Into<async_nats::Error>) -> Connect {
    Connect::Failed(err.into())
}
