//! Helpers shared by the pool tests.

use clawline_batcher::pool::Pool;
use clawline_schemas::{BatchFormed, Envelope, RewardAssigned, StepRecorded, TokenSource};

/// A captured step of tenant `acme`, channel `train`, with engine tokens and logprobs.
pub fn step(traj: &str, prompt: &str, index: u32, at: i64) -> StepRecorded {
    StepRecorded {
        envelope: Envelope::new(StepRecorded::id_for("acme", traj, index, 0), "test").at(at),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: traj.into(),
        prompt_uid: prompt.into(),
        step_index: index,
        token_source: TokenSource::Engine,
        prompt_ids: vec![1, 2, 3],
        response_ids: vec![4, 5],
        response_logprobs: Some(vec![-0.1, -0.2]),
        policy_version: Some(1),
        ..Default::default()
    }
}

/// A reward of `source` for `step`, given at `at` (its id depends on `at`: two are two rewards).
pub fn reward(step: &StepRecorded, source: &str, value: f64, at: i64) -> RewardAssigned {
    RewardAssigned {
        envelope: Envelope::new(
            RewardAssigned::id_for(&step.envelope.event_id, source, &at.to_string()),
            "test",
        )
        .at(at),
        tenant: step.tenant.clone(),
        channel: Some(step.channel.clone()),
        trajectory_uid: step.trajectory_uid.clone(),
        step_id: Some(step.envelope.event_id.clone()),
        source: source.into(),
        value,
        caused_by: step.envelope.event_id.clone(),
        ..Default::default()
    }
}

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
