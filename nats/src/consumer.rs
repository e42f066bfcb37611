//! Durable pull consumers: how every service reads a stream so that a restart resumes where it
//! stopped. Acks are explicit and sent only after the consumer's own output is acked; a message that
//! keeps failing is redelivered at most `max_deliver` times.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};

/// How a service reads one stream.
#[derive(Debug, Clone)]
pub struct DurableSpec {
    /// The stream, e.g. [`crate::streams::STEPS`].
    pub stream: &'static str,
    /// The durable consumer's name; services sharing it share the work.
    pub durable: String,
    /// Subjects to read; empty reads the whole stream.
    pub filter_subjects: Vec<String>,
    /// How long a delivered message may stay unacked before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries before JetStream gives up on a message (poison messages end here).
    pub max_deliver: i64,
    /// Unacked messages in flight at once.
    pub max_ack_pending: i64,
}

impl DurableSpec {
    pub fn new(stream: &'static str, durable: impl Into<String>) -> Self {
        Self {
            stream,
            durable: durable.into(),
            filter_subjects: Vec::new(),
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            max_ack_pending: 1024,
        }
    }

    pub fn filter(mut self, subjects: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.filter_subjects = subjects.into_iter().map(Into::into).collect();
        self
    }
}

fn pull_config(spec: &DurableSpec, deliver_policy: DeliverPolicy) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subjects: spec.filter_subjects.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    }
}

/// Creates the durable consumer, or binds to it when it exists.
pub async fn durable_consumer(
    js: &jetstream::Context,
    spec: &DurableSpec,
) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
    let stream = js.get_stream(spec.stream).await?;
    let config = pull_config(spec, DeliverPolicy::All);
    Ok(stream.get_or_create_consumer(&spec.durable, config).await?)
}

/// Replaces the durable consumer with one that starts after stream sequence `after`: for a
/// service whose own checkpoint, not the consumer's ack floor, says what it has processed (the
/// trainer). Deliveries the previous process held unacked come again at once instead of after
/// their ack wait.
pub async fn durable_consumer_after(
    js: &jetstream::Context,
    spec: &DurableSpec,
    after: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
    let stream = js.get_stream(spec.stream).await?;
    if stream.consumer_info(&spec.durable).await.is_ok() {
        stream.delete_consumer(&spec.durable).await?;
    }
    let config = pull_config(
        spec,
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
    );
    Ok(stream.create_consumer(config).await?)
}

/// How long a reader of a stream may hear nothing before it asks whether the stream holds more
/// than it read. An ephemeral (ordered) consumer lives on one server; when that server dies the
/// client only notices after two missed heartbeats (about a minute), so readers that follow a
/// stream with one check [`last_sequence`] after this long and re-create their consumer.
pub const STALL_CHECK: Duration = Duration::from_secs(5);

/// The sequence of the last message in `stream` (only those on `subject`, when given); 0 when
/// there is none.
pub async fn last_sequence(
    js: &jetstream::Context,
    stream: &str,
    subject: Option<&str>,
) -> Result<u64, async_nats::Error> {
    let mut s = js.get_stream(stream).await?;
    match subject {
        None => Ok(s.info().await?.state.last_sequence),
        Some(subject) => match s.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(0)
            }
            Err(e) => Err(e.into()),
        },
    }
}
