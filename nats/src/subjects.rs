//! Every subject clawline publishes on. Each constant's doc: producer → consumers, payload.

/// Prefix of step subjects; the full subject is `clawline.steps.<channel>`.
/// gateway → reward, batcher, archiver; `StepRecorded`.
pub const STEPS_PREFIX: &str = "clawline.steps";
/// gateway → reward, batcher, archiver; `TrajectoryRegistered`.
pub const TRAJECTORY_REGISTERED: &str = "clawline.trajectories.registered";
/// gateway → batcher, archiver; `TrajectoryCompleted`.
pub const TRAJECTORY_COMPLETED: &str = "clawline.trajectories.completed";
/// gateway → reward, archiver; `FeedbackReceived`.
pub const FEEDBACK: &str = "clawline.trajectories.feedback";
/// Prefix of reward subjects, `clawline.rewards.<kind>`. reward → batcher, archiver; `RewardAssigned`.
pub const REWARDS_PREFIX: &str = "clawline.rewards";
/// Prefix of batch subjects, `clawline.batches.<channel>`. batcher → trainer, archiver; `BatchFormed`.
pub const BATCHES_PREFIX: &str = "clawline.batches";
/// trainer → broadcaster, archiver; `WeightsPublished`.
pub const WEIGHTS_PUBLISHED: &str = "clawline.weights.published";
/// broadcaster → archiver, dashboard; `WeightsActivated`.
pub const WEIGHTS_ACTIVATED: &str = "clawline.weights.activated";
/// broadcaster → archiver, dashboard; `WeightsRejected`.
pub const WEIGHTS_REJECTED: &str = "clawline.weights.rejected";
/// `clawline weights activate|rollback|list` → broadcaster (core NATS request/reply, JSON; outside
/// `clawline.weights.>` so the WEIGHTS stream does not store the requests).
pub const WEIGHTS_CONTROL: &str = "clawline.control.weights";
/// trainer → dashboard (core NATS, not stored); training metrics per step.
pub const TRAINING_METRICS: &str = "clawline.metrics.training";
/// Request subject (core NATS request/reply, queue group `reward`) answered by the reward scorer:
/// Claw-R1's `POST /compute_reward`, forwarded by the gateway. JSON in, JSON out.
pub const REWARD_COMPUTE: &str = "clawline.reward.compute";
/// Request subject answered by the batcher with DataPool statistics.
pub const DATAPOOL_STATS: &str = "clawline.datapool.stats";
/// Request subject (core NATS request/reply, JSON) answered by the batcher: where one step not yet
/// batched stands. Request `{"step_id": "stp_…"}`; reply `{"step_id", "state": "waiting" |
/// "queued" | "done" | "unknown", "channel", "trajectory_uid", "waits_for": [sentences],
/// "rewards": [{"source", "value"}]}` ("done": batched or dropped; "unknown": never seen).
/// Asked by the explainer (`clawline explain`, the SQL service's `/explain`).
pub const DATAPOOL_EXPLAIN: &str = "clawline.datapool.explain";
/// Request subject (core NATS request/reply, JSON, queue group `explain`) answered by the SQL
/// service (`clawline-history serve`): "why isn't it learning?". Request `{"step_id": "stp_…" |
/// null, "tenant": "acme" | null}` — a step id asks for that step's timeline, none for the system
/// diagnosis; a tenant sees only its own steps (null: every tenant, for admin keys). Reply
/// `{"status": <HTTP status>, "body": <explanation | diagnosis | {"error": {…}}>}`. Asked by the
/// gateway for `GET /v1/explain/{step_id}` and `GET /v1/diagnosis`, which has no SQL engine.
pub const EXPLAIN: &str = "clawline.explain";

/// The step subject of a channel.
pub fn steps(channel: &str) -> String {
    format!("{STEPS_PREFIX}.{channel}")
}

/// The reward subject of a source kind (`rm`, `rule`, `feedback`, `client`).
pub fn rewards(kind: &str) -> String {
    format!("{REWARDS_PREFIX}.{kind}")
}

/// The batch subject of a channel.
pub fn batches(channel: &str) -> String {
    format!("{BATCHES_PREFIX}.{channel}")
}

/// Whether `name` can be one subject token: a channel or tenant name that goes into a subject.
/// 1–64 characters of `[A-Za-z0-9_-]`, so no `.`, `*`, `>` or whitespace can split or widen it.
pub fn is_valid_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_that_would_widen_a_subject_are_refused() {
        assert!(is_valid_token("train"));
        assert!(is_valid_token("val-2_x"));
        for bad in ["", "a.b", "*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(!is_valid_token(bad), "{bad:?} accepted");
        }
    }
}
