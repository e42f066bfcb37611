//! Helpers shared by the pool tests.

use clawline_batcher::pool::Pool;
use clawline_schemas::BatchFormed;

/// Ticks the pool at `now` and forms (and commits) every batch that is due.
pub fn drain(pool: &mut Pool, now: i64) -> Vec<BatchFormed> {
    pool.tick(now);
    let mut out = Vec::new();
    for ch in pool.channels_with_work() {
        while let Some(p) = pool.next_batch(&ch, now) {
            out.push(p.batch.clone());
            pool.commit(&p);
        }
    }
    out
}
