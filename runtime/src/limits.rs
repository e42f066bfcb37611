//! Per-key request rate limits: a token bucket per API key, refilled at the key's rate (its own
//! `rate=N` or the service default) and holding one second's worth, so a key may burst that much.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::keys::Caller;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    default: Option<f64>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `default`: requests per second for keys without their own `rate=`; `None`: unlimited.
    pub fn new(default: Option<f64>) -> Self {
        Self {
            default: default.filter(|r| *r > 0.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `caller`'s bucket, or says how long until one is allowed.
    pub fn check(&self, caller: &Caller) -> Result<(), Duration> {
        let Some(rate) = caller.rate.or(self.default) else {
            return Ok(());
        };
        let capacity = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(caller.key_id.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(key: &str, rate: Option<f64>) -> Caller {
        Caller {
            tenant: "t".into(),
            admin: false,
            key_id: key.into(),
            rate,
            max_body: None,
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_keys_do_not_share() {
        let limiter = RateLimiter::new(Some(3.0));
        let a = caller("key#1", None);
        for _ in 0..3 {
            assert!(limiter.check(&a).is_ok());
        }
        let wait = limiter.check(&a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        assert!(
            limiter.check(&caller("key#2", None)).is_ok(),
            "another key has its own bucket"
        );
        let own = caller("key#3", Some(1.0));
        assert!(limiter.check(&own).is_ok());
        assert!(
            limiter.check(&own).is_err(),
            "the key's own rate=1 wins over the default"
        );
        assert!(RateLimiter::new(None).check(&a).is_ok());
    }
}
