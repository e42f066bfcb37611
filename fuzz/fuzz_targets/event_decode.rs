//! Event decoding on arbitrary bytes, as every consumer decodes what it reads from JetStream: each
//! event type in turn. A message that is not a valid event must be an error, never a panic.
#![no_main]

use clawline_nats::decode_message;
use clawline_schemas::{
    BatchFormed, FeedbackReceived, RewardAssigned, StepRecorded, TrajectoryCompleted,
    TrajectoryRegistered, WeightsActivated, WeightsPublished, WeightsRejected,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_message::<StepRecorded>(data);
    let _ = decode_message::<TrajectoryRegistered>(data);
    let _ = decode_message::<TrajectoryCompleted>(data);
    let _ = decode_message::<FeedbackReceived>(data);
    let _ = decode_message::<RewardAssigned>(data);
    let _ = decode_message::<BatchFormed>(data);
    let _ = decode_message::<WeightsPublished>(data);
    let _ = decode_message::<WeightsActivated>(data);
    let _ = decode_message::<WeightsRejected>(data);
});
