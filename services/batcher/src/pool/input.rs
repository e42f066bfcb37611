//! What the pool takes in: the step fields it reads, and the fingerprints it keys steps by.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use clawline_schemas::{StepRecorded, TokenSource};
use serde::Deserialize;

/// A step id's 128-bit fingerprint: the key of the step maps (a collision is ~2⁻⁶⁴ likely even
/// after billions of steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Fp(u128);

impl Fp {
    pub(super) fn of(id: &str) -> Self {
        let half = |salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            h.write_u8(salt);
            id.hash(&mut h);
            h.finish()
        };
        Self((u128::from(half(1)) << 64) | u128::from(half(2)))
    }
}

/// Fingerprints are already uniformly mixed: hashing one is taking its low bits.
#[derive(Default)]
pub(super) struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub(super) type FpMap<V> = HashMap<Fp, V, BuildHasherDefault<FpHasher>>;
pub(super) type FpSet = HashSet<Fp, BuildHasherDefault<FpHasher>>;

/// What the pool reads from a `StepRecorded` (the rest of the event is not decoded).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StepIn {
    pub event_id: String,
    pub event_time: i64,
    pub tenant: String,
    pub channel: String,
    pub trajectory_uid: String,
    pub prompt_uid: String,
    pub step_index: u32,
    #[serde(default)]
    pub choice_index: u32,
    #[serde(default)]
    pub is_last: bool,
    #[serde(default)]
    pub implicit_trajectory: bool,
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub policy_version: Option<u64>,
    #[serde(default)]
    pub token_source: TokenSource,
    #[serde(default)]
    pub prompt_ids: Vec<u32>,
    #[serde(default)]
    pub response_ids: Vec<u32>,
    #[serde(default)]
    pub response_logprobs: Option<Vec<f32>>,
}

impl From<StepRecorded> for StepIn {
    fn from(s: StepRecorded) -> Self {
        Self {
            event_id: s.event_id,
            event_time: s.event_time,
            tenant: s.tenant,
            channel: s.channel,
            trajectory_uid: s.trajectory_uid,
            prompt_uid: s.prompt_uid,
            step_index: s.step_index,
            choice_index: s.choice_index,
            is_last: s.is_last,
            implicit_trajectory: s.implicit_trajectory,
            background: s.background,
            policy_version: s.policy_version,
            token_source: s.token_source,
            prompt_ids: s.prompt_ids,
            response_ids: s.response_ids,
            response_logprobs: s.response_logprobs,
        }
    }
}
