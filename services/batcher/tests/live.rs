#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! Live traffic from plain clients: steps that train one by one (no `complete_trajectory`), late
//! feedback, and what the DataPool says a step waits for. The pool is pure: time is passed in.

use clawline_batcher::config::{FileConfig, LateMode, Readiness};
use clawline_batcher::pool::Pool;
use clawline_schemas::*;

mod common;
use common::{drain, reward, step};

const T0: i64 = 1_800_000_000_000;
const SEC: i64 = 1000;

/// A turn of a conversation the gateway grouped itself (a plain OpenAI client).
fn turn(traj: &str, index: u32, at: i64, implicit: bool) -> StepRecorded {
    StepRecorded {
        response_ids: vec![4, 5 + index],
        implicit_trajectory: implicit,
        ..step(traj, "p", index, at)
    }
}

fn ids(batches: &[BatchFormed]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.steps.iter().map(|s| s.step_id.clone()))
        .collect()
}

fn one_by_one() -> FileConfig {
    let mut cfg = FileConfig::default();
    cfg.defaults.batch_size = 1;
    cfg
}

#[test]
fn a_plain_clients_steps_train_without_the_conversation_ending() {
    let mut pool = Pool::new(one_by_one(), "test");
    let s0 = turn("chat", 0, T0, true);
    let s1 = turn("chat", 1, T0 + 5 * SEC, true);
    pool.add_step(s0.clone());
    pool.add_reward(&reward(&s0, "rm:x@1", 0.5, T0 + 10));
    assert!(
        drain(&mut pool, T0 + SEC).is_empty(),
        "no reaction yet: it waits"
    );
    // The user's thumbs-up: the step is ready at once; no complete_trajectory ever comes.
    pool.add_reward(&reward(&s0, "feedback:explicit", 1.0, T0 + 2 * SEC));
    let batches = drain(&mut pool, T0 + 2 * SEC);
    assert_eq!(ids(&batches), vec![s0.envelope.event_id.clone()]);
    let step = &batches[0].steps[0];
    assert_eq!(step.reward, 0.5 + 2.0, "rm weight 1 + explicit weight 2");
    assert!(!step.truncated && !step.late);

    // The next turn gets no reaction: it trains with its reward-model score after the wait.
    pool.add_step(s1.clone());
    pool.add_reward(&reward(&s1, "rm:x@1", 0.7, T0 + 5 * SEC));
    assert!(drain(&mut pool, T0 + 34 * SEC).is_empty());
    let batches = drain(&mut pool, T0 + 35 * SEC);
    assert_eq!(ids(&batches), vec![s1.envelope.event_id.clone()]);
    assert_eq!(batches[0].steps[0].rewards, vec![("rm:x@1".into(), 0.7)]);
    assert_eq!(pool.stats(T0 + 35 * SEC)["train"].consumed_steps, 2);
}

#[test]
fn later_turns_never_hold_earlier_ones_back_nor_the_reverse() {
    let mut pool = Pool::new(one_by_one(), "test");
    let s0 = turn("chat", 0, T0, true);
    let s1 = turn("chat", 1, T0 + SEC, true);
    pool.add_step(s0.clone());
    pool.add_step(s1.clone());
    pool.add_reward(&reward(&s0, "rm:x@1", 0.5, T0));
    pool.add_reward(&reward(&s1, "rm:x@1", 0.5, T0 + SEC));
    // The user reacts to the second answer; the first still waits for its reaction.
    pool.add_reward(&reward(&s1, "feedback:explicit", -1.0, T0 + 2 * SEC));
    assert_eq!(
        ids(&drain(&mut pool, T0 + 3 * SEC)),
        vec![s1.envelope.event_id.clone()]
    );
    // The next user turn reads as implicit feedback on the first answer: ready too.
    pool.add_reward(&reward(&s0, "feedback:implicit", 0.2, T0 + 4 * SEC));
    assert_eq!(
        ids(&drain(&mut pool, T0 + 4 * SEC)),
        vec![s0.envelope.event_id.clone()]
    );
}

#[test]
fn named_trajectories_keep_claw_r1_semantics_unless_configured() {
    // A client that names its trajectory (header or Claw-R1 path) completes it: whole-trajectory
    // readiness, as before.
    let mut pool = Pool::new(one_by_one(), "test");
    let s = turn("named", 0, T0, false);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    pool.add_reward(&reward(&s, "feedback:explicit", 1.0, T0));
    assert!(drain(&mut pool, T0 + 60 * SEC).is_empty());
    let why = pool.explain(&s.envelope.event_id, T0 + 60 * SEC);
    assert_eq!(why.state, "waiting");
    assert_eq!(why.readiness, Some("trajectory"));
    assert!(
        why.waits_for[0].starts_with("trajectory completion"),
        "{why:?}"
    );
    pool.add_completion(&TrajectoryCompleted {
        envelope: Envelope::new(TrajectoryCompleted::id_for("acme", "named"), "test")
            .at(T0 + 61 * SEC),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: "named".into(),
        ..Default::default()
    });
    assert_eq!(
        ids(&drain(&mut pool, T0 + 61 * SEC)),
        vec![s.envelope.event_id]
    );

    // `readiness = "step"` makes every step of a channel train on its own.
    let mut cfg = one_by_one();
    cfg.defaults.readiness = Readiness::Step;
    let mut pool = Pool::new(cfg, "test");
    let s = turn("named", 0, T0, false);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    pool.add_reward(&reward(&s, "feedback:explicit", 1.0, T0));
    assert_eq!(ids(&drain(&mut pool, T0 + SEC)), vec![s.envelope.event_id]);
}

#[test]
fn a_step_without_its_required_rewards_falls_back_after_the_deadline() {
    let mut pool = Pool::new(one_by_one(), "test");
    let s = turn("chat", 0, T0, true);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "feedback:explicit", 1.0, T0 + SEC));
    let why = pool.explain(&s.envelope.event_id, T0 + 2 * SEC);
    assert!(why.waits_for[0].starts_with("reward rm:*"), "{why:?}");
    assert_eq!(pool.stats(T0 + 2 * SEC)["train"].waiting.rewards, 1);
    assert!(drain(&mut pool, T0 + 29 * SEC).is_empty());
    // Reacted at once, so the deadline (30 s) counts from the answer.
    let batches = drain(&mut pool, T0 + 30 * SEC);
    assert_eq!(ids(&batches), vec![s.envelope.event_id]);
    assert_eq!(pool.stats(T0 + 30 * SEC)["train"].deadline_fallbacks, 1);
}

#[test]
fn feedback_after_training_trains_as_its_own_sample_once() {
    let mut pool = Pool::new(one_by_one(), "test");
    let s = turn("chat", 0, T0, true);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    let first = drain(&mut pool, T0 + 31 * SEC);
    assert_eq!(ids(&first), vec![s.envelope.event_id.clone()]);

    // The user rates the answer ten minutes later.
    let late = reward(&s, "feedback:explicit", -1.0, T0 + 600 * SEC);
    pool.add_reward(&late);
    let why = pool.explain(&s.envelope.event_id, T0 + 600 * SEC);
    assert_eq!(why.state, "done");
    let second = drain(&mut pool, T0 + 600 * SEC);
    assert_eq!(second.len(), 1);
    let sample = &second[0].steps[0];
    assert!(sample.late);
    assert_eq!(sample.step_id, s.envelope.event_id);
    assert_eq!(sample.response_ids, vec![4, 5], "the same tokens");
    assert_eq!(sample.rewards, vec![("feedback:explicit".into(), -1.0)]);
    assert_eq!(sample.reward_ids, vec![late.envelope.event_id.clone()]);
    assert_ne!(second[0].envelope.event_id, first[0].envelope.event_id);
    let stats = &pool.stats(T0 + 600 * SEC)["train"];
    assert_eq!((stats.late_feedback.trained, stats.consumed_steps), (1, 1));

    // Redelivered, the same feedback trains nothing more.
    pool.add_reward(&late);
    assert!(drain(&mut pool, T0 + 700 * SEC).is_empty());

    // A restarted batcher reads BATCHES, then the streams again: nothing trains twice.
    let mut restarted = Pool::new(one_by_one(), "test");
    for b in first.iter().chain(&second) {
        restarted.replay_batch(b);
    }
    restarted.add_step(s.clone());
    restarted.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    restarted.add_reward(&late);
    assert!(drain(&mut restarted, T0 + 800 * SEC).is_empty());
    assert_eq!(restarted.stats(T0)["train"].late_feedback.trained, 1);
}

#[test]
fn feedback_while_its_step_waits_in_the_queue_is_not_lost() {
    let mut cfg = FileConfig::default();
    cfg.defaults.batch_size = 2;
    let mut pool = Pool::new(cfg, "test");
    let a = turn("a", 0, T0, true);
    let b = turn("b", 0, T0 + SEC, true);
    pool.add_step(a.clone());
    pool.add_reward(&reward(&a, "rm:x@1", 0.5, T0));
    assert!(
        drain(&mut pool, T0 + 31 * SEC).is_empty(),
        "queued, batch not full"
    );
    assert_eq!(
        pool.explain(&a.envelope.event_id, T0 + 31 * SEC).state,
        "queued"
    );
    // The thumbs-up arrives while the step sits in the queue.
    pool.add_reward(&reward(&a, "feedback:explicit", 1.0, T0 + 32 * SEC));
    pool.add_step(b.clone());
    pool.add_reward(&reward(&b, "rm:x@1", 0.5, T0 + SEC));
    pool.add_reward(&reward(&b, "feedback:explicit", 1.0, T0 + 33 * SEC));
    let batches = drain(&mut pool, T0 + 33 * SEC);
    assert_eq!(
        ids(&batches),
        vec![a.envelope.event_id.clone(), b.envelope.event_id.clone()]
    );
    // The late thumbs-up waits for a partner (batch_size 2), then trains.
    let later = drain(&mut pool, T0 + 200 * SEC);
    assert_eq!(later.len(), 1, "flushed after flush_after_secs");
    assert!(later[0].steps[0].late);
    assert_eq!(later[0].steps[0].step_id, a.envelope.event_id);
}

#[test]
fn report_mode_counts_late_feedback_and_trains_nothing() {
    let mut cfg = one_by_one();
    cfg.late_feedback.mode = LateMode::Report;
    let mut pool = Pool::new(cfg, "test");
    let s = turn("chat", 0, T0, true);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    assert_eq!(drain(&mut pool, T0 + 31 * SEC).len(), 1);
    pool.add_reward(&reward(&s, "feedback:explicit", 1.0, T0 + 40 * SEC));
    assert!(drain(&mut pool, T0 + 500 * SEC).is_empty());
    let late = &pool.stats(T0)["train"].late_feedback;
    assert_eq!((late.trained, late.too_late), (0, 1));
}

#[test]
fn explain_names_what_a_held_step_waits_for() {
    let mut pool = Pool::new(one_by_one(), "test");
    let s = turn("chat", 0, T0, true);
    assert_eq!(pool.explain(&s.envelope.event_id, T0).state, "unknown");
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", 0.5, T0));
    let why = pool.explain(&s.envelope.event_id, T0 + SEC);
    assert_eq!((why.state, why.readiness), ("waiting", Some("step")));
    assert!(
        why.waits_for[0].starts_with("the user's reaction")
            && why.waits_for[0].contains("2027-01-15T08:00:30Z"),
        "{why:?}"
    );
    assert_eq!(why.rewards[0].source, "rm:x@1");
    let waiting = &pool.stats(T0 + SEC)["train"].waiting;
    assert_eq!(
        (waiting.reaction, waiting.rewards, waiting.completion),
        (1, 0, 0)
    );
    drain(&mut pool, T0 + 30 * SEC);
    assert_eq!(
        pool.explain(&s.envelope.event_id, T0 + 30 * SEC).state,
        "done"
    );
}

#[test]
fn background_turns_are_kept_out_of_training_unless_the_channel_asks() {
    // An agent's heartbeat between two user turns: the user's turns train, the heartbeat does
    // not, and it holds neither back.
    let mut pool = Pool::new(one_by_one(), "test");
    let (s0, s2) = (
        turn("agent", 0, T0, true),
        turn("agent", 2, T0 + 2 * SEC, true),
    );
    let heartbeat = StepRecorded {
        background: true,
        ..turn("agent", 1, T0 + SEC, true)
    };
    for step in [&s0, &heartbeat, &s2] {
        pool.add_step(step.clone());
        pool.add_reward(&reward(step, "rm:x@1", 0.5, step.envelope.event_time));
        pool.add_reward(&reward(
            step,
            "feedback:explicit",
            1.0,
            step.envelope.event_time,
        ));
    }
    let batches = drain(&mut pool, T0 + 60 * SEC);
    let mut trained = ids(&batches);
    trained.sort();
    let mut users = vec![s0.envelope.event_id.clone(), s2.envelope.event_id.clone()];
    users.sort();
    assert_eq!(trained, users);
    let stats = &pool.stats(T0 + 60 * SEC)["train"];
    assert_eq!(stats.dropped.get("background"), Some(&1), "{stats:?}");
    assert_eq!(
        pool.explain(&heartbeat.envelope.event_id, T0 + 60 * SEC)
            .state,
        "done"
    );

    // A channel that wants them trains them like any step.
    let mut cfg = one_by_one();
    cfg.defaults.train_background = true;
    let mut pool = Pool::new(cfg, "test");
    pool.add_step(heartbeat.clone());
    pool.add_reward(&reward(&heartbeat, "rm:x@1", 0.5, T0 + SEC));
    pool.add_reward(&reward(&heartbeat, "feedback:explicit", 1.0, T0 + SEC));
    assert_eq!(
        ids(&drain(&mut pool, T0 + 60 * SEC)),
        vec![heartbeat.envelope.event_id.clone()]
    );
}
