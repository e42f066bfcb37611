//! Interaction → served update: for each step a user's request produced, the time from its
//! capture to the first response served by weights that trained on it. The demo follows the
//! batches (which step went into which batch) and `WeightsPublished` (which batches a version
//! learned from); versions build on each other, so a step's update is served by the first response
//! stamped with that version or a later one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clawline_schemas::{BatchFormed, WeightsPublished};
use futures::StreamExt as _;
use serde::Serialize;

/// Which batch each step went into, and the first version that learned from each batch.
#[derive(Debug, Default, Clone)]
pub struct Lineage {
    batch_of_step: HashMap<String, String>,
    version_of_batch: HashMap<String, u64>,
}

impl Lineage {
    /// Follows `clawline.batches.>` and `WeightsPublished` until the client closes.
    pub async fn follow(client: &async_nats::Client) -> anyhow::Result<Arc<Mutex<Self>>> {
        let lineage: Arc<Mutex<Self>> = Arc::default();
        let mut batches = client
            .subscribe(format!("{}.>", clawline_nats::subjects::BATCHES_PREFIX))
            .await?;
        let mut published = client
            .subscribe(clawline_nats::subjects::WEIGHTS_PUBLISHED)
            .await?;
        let l = lineage.clone();
        tokio::spawn(async move {
            while let Some(m) = batches.next().await {
                if let Ok(b) = clawline_nats::decode_message::<BatchFormed>(&m.payload)
                    && let Ok(mut l) = l.lock()
                {
                    for s in b.steps {
                        l.batch_of_step
                            .insert(s.step_id, b.envelope.event_id.clone());
                    }
                }
            }
        });
        let l = lineage.clone();
        tokio::spawn(async move {
            while let Some(m) = published.next().await {
                if let Ok(w) = clawline_nats::decode_message::<WeightsPublished>(&m.payload)
                    && let Ok(mut l) = l.lock()
                {
                    for b in w.batch_ids {
                        l.version_of_batch.entry(b).or_insert(w.version);
                    }
                }
            }
        });
        Ok(lineage)
    }

    /// The first version whose weights learned from `step`.
    fn version(&self, step: &str) -> Option<u64> {
        self.version_of_batch
            .get(self.batch_of_step.get(step)?)
            .copied()
    }
}

/// One answered request: its step, the version that served it, and when it was answered
/// (seconds since the demo started).
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub step_id: &'a str,
    pub version: u64,
    pub at: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Steps whose update reached a user before the demo ended.
    pub steps: usize,
    /// Steps that trained a version no request was served by before the end, and steps not yet
    /// in a published version.
    pub pending: usize,
    pub median_s: f64,
    pub p90_s: f64,
    pub max_s: f64,
}

/// Capture → served-update times of every step in `calls`.
pub fn latency(calls: &[Served], lineage: &Lineage) -> Option<Latency> {
    let mut by_version: Vec<(u64, f64)> = calls.iter().map(|c| (c.version, c.at)).collect();
    // first[i]: the earliest answer served by version ≥ by_version[i].0.
    by_version.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut first = vec![f64::INFINITY; by_version.len()];
    let mut best = f64::INFINITY;
    for i in (0..by_version.len()).rev() {
        best = best.min(by_version[i].1);
        first[i] = best;
    }
    let mut times = Vec::new();
    let mut pending = 0;
    for c in calls {
        let served = lineage.version(c.step_id).and_then(|v| {
            let i = by_version.partition_point(|(w, _)| *w < v);
            first.get(i).copied().filter(|t| t.is_finite())
        });
        match served {
            Some(t) => times.push((t - c.at).max(0.0)),
            None => pending += 1,
        }
    }
    if times.is_empty() {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Some(Latency {
        steps: times.len(),
        pending,
        median_s: at(0.5),
        p90_s: at(0.9),
        max_s: at(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_served_by_the_first_answer_from_a_version_that_learned_it() {
        let mut lineage = Lineage::default();
        for (step, batch) in [("a", "b1"), ("b", "b1"), ("c", "b2"), ("d", "b3")] {
            lineage.batch_of_step.insert(step.into(), batch.into());
        }
        lineage.version_of_batch.insert("b1".into(), 1);
        lineage.version_of_batch.insert("b2".into(), 2);
        let calls = [
            Served {
                step_id: "a",
                version: 0,
                at: 1.0,
            },
            Served {
                step_id: "b",
                version: 0,
                at: 2.0,
            },
            Served {
                step_id: "c",
                version: 0,
                at: 3.0,
            },
            // v2 answers before any v1 answer arrives: it learned b1 too.
            Served {
                step_id: "d",
                version: 2,
                at: 7.0,
            },
            Served {
                step_id: "e",
                version: 1,
                at: 8.0,
            },
        ];
        let l = latency(&calls, &lineage).unwrap();
        // a: 7 − 1, b: 7 − 2, c: 7 − 3; d's batch is in no version, e in no batch.
        assert_eq!(
            l,
            Latency {
                steps: 3,
                pending: 2,
                median_s: 5.0,
                p90_s: 6.0,
                max_s: 6.0
            }
        );
    }
}
