//! The trust region every update and every version stays inside.
//!
//! Per update: after the optimizer step, the KL from the serving (behaviour) policy — the
//! logprobs the batch's steps carry — to the updated policy is measured on the batch's response
//! tokens (k3 estimator). Above `--max-kl-serving` the update is undone (weights and AdamW state
//! bit for bit as before it), the learning rate halves (down to 1/256 of `--lr`) and the batch is
//! acked as used; after 4 updates in bound in a row the rate doubles again, up to `--lr`.
//!
//! Per version: before a version is published, the KL from the new weights to the base model is
//! measured on the last batch's response positions (the exact divergence over the vocabulary).
//! Above `--max-kl-base`, or with a drift from the base (cross-entropy to the base minus its
//! entropy, the canary's measure of broken language) above `--max-drift-base`, the version is not
//! published, the trainer returns to the serving version (`realign::reset_to_serving`) and the
//! learning rate halves as after an undone update.
//!
//! The backoff state is integers kept in the checkpoint's `state.json`, so a restarted trainer
//! makes the same decision on the same batch.

use serde::{Deserialize, Serialize};

/// Halvings of the learning rate at most: the floor is `--lr` / 2^MAX_LEVEL.
pub const MAX_LEVEL: u32 = 8;
/// Updates in bound in a row that undo one halving.
pub const RECOVER_AFTER: u32 = 4;

/// The bounds (0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bounds {
    pub max_kl_serving: f64,
    pub max_kl_base: f64,
    pub max_drift_base: f64,
}

/// Whether `kl` is over `bound` (0 = off). NaN (a diverged update) is over any bound.
pub fn over(kl: f64, bound: f64) -> bool {
    bound > 0.0 && (kl.is_nan() || kl > bound)
}

/// Where the learning rate stands after the backoffs so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Backoff {
    /// Halvings in force: the learning rate is `--lr` / 2^level.
    pub level: u32,
    /// Updates in bound since the last halving or recovery.
    pub streak: u32,
    /// Updates undone since the first start.
    pub total: u64,
}

impl Backoff {
    pub fn lr_scale(&self) -> f64 {
        0.5f64.powi(self.level as i32)
    }

    /// An update went over the bound and was undone.
    pub fn exceeded(&mut self) {
        self.level = (self.level + 1).min(MAX_LEVEL);
        self.streak = 0;
        self.total += 1;
    }

    /// An update stayed in bound.
    pub fn within(&mut self) {
        if self.level == 0 {
            return;
        }
        self.streak += 1;
        if self.streak >= RECOVER_AFTER {
            self.level -= 1;
            self.streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_to_a_floor_and_climbs_back_after_updates_in_bound() {
        let mut b = Backoff::default();
        b.exceeded();
        assert_eq!((b.lr_scale(), b.total), (0.5, 1));
        for _ in 0..20 {
            b.exceeded();
        }
        assert_eq!(b.lr_scale(), 1.0 / 256.0);
        b.within();
        b.within();
        b.within();
        assert_eq!(b.level, MAX_LEVEL);
        b.within();
        assert_eq!(b.level, MAX_LEVEL - 1);
        for _ in 0..(RECOVER_AFTER * MAX_LEVEL) {
            b.within();
        }
        assert_eq!((b.lr_scale(), b.total), (1.0, 21));
    }
}
