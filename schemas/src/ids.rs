//! Event ids: random (ULID) where every occurrence is a new fact, derived (a hash of what identifies
//! the fact) where a retry or a replay must produce the same id so JetStream drops the duplicate.

use sha2::{Digest, Sha256};

/// A fresh, time-ordered id: `<prefix>_<ulid>`.
pub fn new_event_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A deterministic id: `<prefix>_<first 32 hex of sha256(parts joined by NUL)>`.
///
/// The same parts always give the same id, so a fact published twice is stored once.
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("{prefix}_{}", hex::encode(&digest[..16]))
}

/// Milliseconds since the Unix epoch, the unit of every `event_time`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_separate_their_parts() {
        assert_eq!(
            derived_id("stp", &["a", "b"]),
            derived_id("stp", &["a", "b"])
        );
        assert_ne!(
            derived_id("stp", &["ab", ""]),
            derived_id("stp", &["a", "b"])
        );
        assert_eq!(derived_id("stp", &["x"]).len(), "stp_".len() + 32);
    }

    #[test]
    fn new_ids_are_unique() {
        assert_ne!(new_event_id("trj"), new_event_id("trj"));
    }
}
