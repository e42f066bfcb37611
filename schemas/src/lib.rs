//! clawline-schemas — every event that crosses JetStream, and its wire codec.
//!
//! Owns: the event and payload types (serde), the msgpack codec (named fields, so an optional field
//! added later never breaks an old reader), and stable event ids. Must not do I/O or depend on tokio:
//! every service and every tool links it.
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
                &self.event_id
            }
        }
    };
}
pub(crate) use impl_event;
