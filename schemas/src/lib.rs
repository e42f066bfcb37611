//! clawline-schemas — every event that crosses JetStream, and its wire codec.
//!
//! Owns: the event and payload types (serde), the msgpack codec (named fields, so an optional field
//! added later never breaks an old reader), and stable event ids. Must not do I/O or depend on tokio:
//! every service and every tool links it.
//!
//! Every event opens with the same [`Envelope`] (id, time, producer, schema version), flattened
//! into it: on the wire those are the event's own first fields.
//!
//! Evolution is additive: new fields are `Option` or `#[serde(default)]`, and no event denies unknown
//! fields. Golden fixtures in `tests/fixtures/` pin the encoding.

mod batch;
mod codec;
mod feedback;
mod ids;
mod reward;
mod step;
mod trajectory;
mod weights;

pub use batch::{BatchFormed, BatchGroup, BatchStep, GroupMode};
pub use codec::{CodecError, decode, encode};
pub use feedback::{FeedbackKind, FeedbackReceived, ImplicitSignal, Thumbs};
pub use ids::{derived_id, new_event_id, now_ms};
pub use reward::{RewardAssigned, RewardScope};
pub use step::{Message, StepForBatching, StepRecorded, StepSource, TokenSource, ToolCall};
pub use trajectory::{CompletionReason, TrajectoryCompleted, TrajectoryRegistered};
pub use weights::{
    CanaryQuality, CanaryResult, DegenerateShares, LoraAdapter, TrainingMetrics, TrainingSummary,
    WeightsActivated, WeightsFormat, WeightsPublished, WeightsRejected,
};

/// The schema version every event written by this build carries.
pub const SCHEMA_VERSION: u16 = 1;

/// The fields every event opens with. Flattened (`#[serde(flatten)]`) into each event, so the
/// encoding is the event's own fields, as the golden fixtures pin it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Envelope {
    /// The stable id: the `Nats-Msg-Id`, so publishing it twice stores it once. Each event type
    /// says how its id is made (derived from what it is about, or new).
    pub event_id: String,
    /// Unix epoch milliseconds when it was made.
    pub event_time: i64,
    /// The writer, e.g. `clawline-gateway/0.1.0`.
    pub producer: String,
    pub schema_version: u16,
}

impl Envelope {
    /// A new event's envelope: made now by `producer`, in this build's [`SCHEMA_VERSION`].
    pub fn new(event_id: String, producer: &str) -> Self {
        Self {
            event_id,
            event_time: now_ms(),
            producer: producer.to_string(),
            schema_version: SCHEMA_VERSION,
        }
    }

    /// The same envelope stamped `event_time` (Unix ms) instead of now: for an event that keeps
    /// the time something happened, such as a test's fixed history.
    pub fn at(mut self, event_time: i64) -> Self {
        self.event_time = event_time;
        self
    }
}

/// What every event has: a stable id (the `Nats-Msg-Id`, so JetStream drops duplicates) and a kind.
pub trait Event: serde::Serialize + serde::de::DeserializeOwned {
    /// Short lowercase name of the event type, e.g. `step_recorded`.
    const KIND: &'static str;

    /// The stable id of this event; publishing the same id twice stores it once.
    fn event_id(&self) -> &str;
}

macro_rules! impl_event {
    ($ty:ty, $kind:literal) => {
        impl $crate::Event for $ty {
            const KIND: &'static str = $kind;
            fn event_id(&self) -> &str {
                &self.envelope.event_id
            }
        }
    };
}
pub(crate) use impl_event;
