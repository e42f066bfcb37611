//! What the pool takes in: the step fields it reads, and the fingerprints it keys steps by.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

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

/// What the pool reads from a `StepRecorded` (the schema's partial view of it).
pub use clawline_schemas::StepForBatching as StepIn;
