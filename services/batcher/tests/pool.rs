#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
//! The DataPool's rules, event by event (the pool is pure: time is passed in).

use clawline_batcher::config::{Fallback, FileConfig, OnIdle, StalePolicy, ZeroVariance};
use clawline_batcher::pool::Pool;
use clawline_schemas::*;

mod common;
use common::{drain, step};

const T0: i64 = 1_800_000_000_000;

/// A reward given when its step was recorded.
fn reward(step: &StepRecorded, source: &str, value: f64) -> RewardAssigned {
    common::reward(step, source, value, step.envelope.event_time)
}

fn completed(traj: &str, prompt: &str, at: i64) -> TrajectoryCompleted {
    TrajectoryCompleted {
        envelope: Envelope::new(TrajectoryCompleted::id_for("acme", traj), "test").at(at),
        tenant: "acme".into(),
        channel: "train".into(),
        trajectory_uid: traj.into(),
        prompt_uid: Some(prompt.into()),
        ..Default::default()
    }
}

/// A one-step trajectory with a reward-model score, completed at `at`.
fn add_rewarded(pool: &mut Pool, traj: &str, prompt: &str, value: f64, at: i64) -> StepRecorded {
    let s = step(traj, prompt, 0, at);
    pool.add_step(s.clone());
    pool.add_reward(&reward(&s, "rm:x@1", value));
    pool.add_completion(&completed(traj, prompt, at));
    s
}

fn dropped(pool: &Pool, reason: &str) -> u64 {
    pool.stats(i64::MAX / 2)["train"]
        .dropped
        .get(reason)
        .copied()
        .unwrap_or(0)
}

fn window(batch_size: usize) -> FileConfig {
    let mut cfg = FileConfig::default();
    cfg.defaults.batch_size = batch_size;
    cfg
}

fn prompt_mode(group_size: usize) -> FileConfig {
    let mut cfg = FileConfig::default();
    cfg.defaults.mode = GroupMode::Prompt;
    cfg.defaults.group_size = group_size;
    cfg.defaults.batch_size = 1;
    cfg
}

#[test]
fn window_batches_carry_what_the_trainer_needs() {
    let mut pool = Pool::new(window(2), "test");
    let a = add_rewarded(&mut pool, "a", "p", 1.0, T0);
    let b = add_rewarded(&mut pool, "b", "p", 0.0, T0 + 1);
    let batches = drain(&mut pool, T0 + 10);
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.mode, GroupMode::Window);
    assert_eq!(
        batch.envelope.event_id,
        BatchFormed::id_for([a.envelope.event_id.as_str(), b.envelope.event_id.as_str()])
    );
    let s = &batch.steps[0];
    assert_eq!(s.step_id, a.envelope.event_id, "completion order");
    assert_eq!(
        (s.prompt_ids.clone(), s.response_ids.clone()),
        (vec![1, 2, 3], vec![4, 5])
    );
    assert_eq!(s.old_logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(s.reward, 1.0);
    assert_eq!(s.rewards, vec![("rm:x@1".to_string(), 1.0)]);
    assert_eq!(s.reward_ids.len(), 1);
    assert_eq!(s.policy_version, Some(1));
    // The running baseline starts at the first reward, then moves toward each new one.
    assert_eq!(batch.steps[0].advantage, 0.0);
    assert_eq!(batch.steps[1].advantage, -1.0);
    assert_eq!(pool.stats(i64::MAX / 2)["train"].consumed_steps, 2);
    assert!(
        drain(&mut pool, T0 + 20).is_empty(),
        "nothing is batched twice"
    );
}

#[test]
fn a_step_waits_for_its_trajectory_and_its_required_rewards() {
    let mut pool = Pool::new(window(1), "test");
    let s = step("a", "p", 0, T0);
    pool.add_step(s.clone());
    assert!(
        drain(&mut pool, T0 + 1000).is_empty(),
        "trajectory not complete"
    );
    pool.add_completion(&completed("a", "p", T0 + 1000));
    assert!(
        drain(&mut pool, T0 + 2000).is_empty(),
        "required rm reward missing"
    );
    pool.add_reward(&reward(&s, "rm:x@1", 0.7));
    assert_eq!(drain(&mut pool, T0 + 3000).len(), 1);
}

#[test]
fn past_the_deadline_the_fallback_decides() {
    for fallback in [Fallback::UseAvailable, Fallback::Drop] {
        let mut cfg = window(1);
        cfg.rewards.fallback = fallback;
        cfg.rewards.deadline_secs = 30;
        let mut pool = Pool::new(cfg, "test");
        let s = step("a", "p", 0, T0);
        pool.add_step(s.clone());
        pool.add_reward(&reward(&s, "rule:len", -0.5));
        pool.add_completion(&completed("a", "p", T0));
        assert!(drain(&mut pool, T0 + 29_000).is_empty());
        let batches = drain(&mut pool, T0 + 30_000);
        match fallback {
            Fallback::UseAvailable => {
                assert_eq!(batches[0].steps[0].reward, -0.5);
                assert_eq!(pool.stats(i64::MAX / 2)["train"].deadline_fallbacks, 1);
            }
            Fallback::Drop => {
                assert!(batches.is_empty());
                assert_eq!(dropped(&pool, "missing_reward"), 1);
            }
        }
    }
}

#[test]
fn sparse_feedback_is_compared_with_earlier_feedback_not_with_steps_without_it() {
    // The reward model scores every answer alike; one user in two gives feedback, a thumbs-up
    // every time. Nothing tells these answers apart, so none may be pushed up or down.
    let mut pool = Pool::new(window(6), "test");
    for i in 0..6 {
        let s = add_rewarded(&mut pool, &format!("t{i}"), "p", 0.5, T0 + i);
        if i % 2 == 0 {
            pool.add_reward(&reward(&s, "feedback:explicit", 1.0));
        }
    }
    let batches = drain(&mut pool, T0 + 10);
    let rewards: Vec<f64> = batches[0].steps.iter().map(|s| s.reward).collect();
    assert_eq!(
        rewards,
        [2.5, 0.5, 2.5, 0.5, 2.5, 0.5],
        "weight 2 for feedback"
    );
    let advantages: Vec<f64> = batches[0].steps.iter().map(|s| s.advantage).collect();
    assert_eq!(advantages, [0.0; 6]);
    // A thumbs-down is news: 2 × (−1 − 1); the reward model's score is as usual.
    let s = add_rewarded(&mut pool, "t6", "p", 0.5, T0 + 20);
    pool.add_reward(&reward(&s, "feedback:explicit", -1.0));
    assert!(drain(&mut pool, T0 + 30).is_empty(), "a batch of one waits");
    let batches = drain(&mut pool, T0 + 100_000);
    assert_eq!(batches[0].steps[0].advantage, -4.0);
}

#[test]
fn sources_combine_by_weight_and_trajectory_rewards_reach_every_step() {
    let mut pool = Pool::new(window(2), "test");
    let s0 = step("a", "p", 0, T0);
    let s1 = step("a", "p", 1, T0);
    for s in [&s0, &s1] {
        pool.add_step(s.clone());
        pool.add_reward(&reward(s, "rm:x@1", 0.5));
    }
    pool.add_reward(&reward(&s0, "feedback:explicit", -1.0));
    pool.add_reward(&reward(&s0, "unlisted:thing", 100.0));
    pool.add_reward(&RewardAssigned {
        envelope: Envelope {
            event_id: "rwd_t".into(),
            ..Default::default()
        },
        tenant: "acme".into(),
        trajectory_uid: "a".into(),
        scope: RewardScope::Trajectory,
        source: "client".into(),
        value: 1.0,
        ..Default::default()
    });
    pool.add_completion(&completed("a", "p", T0));
    let b = &drain(&mut pool, T0 + 10)[0];
    // rm 1.0×0.5 + explicit 2.0×(−1) + client 1.0×1 (+ unlisted 0×100)
    assert_eq!(b.steps[0].reward, 0.5 - 2.0 + 1.0);
    assert_eq!(b.steps[1].reward, 0.5 + 1.0);
}

#[test]
fn prompt_groups_normalise_advantages_and_do_not_block_each_other() {
    let mut cfg = prompt_mode(3);
    cfg.defaults.normalize = true;
    let mut pool = Pool::new(cfg, "test");
    // Prompt "stuck" has one trajectory and will wait; prompt "p" fills up and goes out.
    add_rewarded(&mut pool, "s1", "stuck", 0.3, T0);
    for (i, v) in [1.0, 0.0, 0.5].iter().enumerate() {
        add_rewarded(&mut pool, &format!("p{i}"), "p", *v, T0 + 1 + i as i64);
    }
    let batches = drain(&mut pool, T0 + 100);
    assert_eq!(
        batches.len(),
        1,
        "the full group goes out; the stuck one does not hold it back"
    );
    let b = &batches[0];
    assert_eq!(b.mode, GroupMode::Prompt);
    assert_eq!(b.groups[0].key, "p");
    assert_eq!(b.groups[0].trajectories, 3);
    let adv: Vec<f64> = b.steps.iter().map(|s| s.advantage).collect();
    assert!((adv.iter().sum::<f64>()).abs() < 1e-9, "centred: {adv:?}");
    assert!(
        (adv[0] - 1.2247).abs() < 1e-3,
        "normalised by the group std: {adv:?}"
    );
    assert_eq!(pool.stats(i64::MAX / 2)["train"].forming_groups, 1);
}

#[test]
fn zero_variance_groups_are_dropped_or_kept_as_configured() {
    for policy in [ZeroVariance::Drop, ZeroVariance::Keep] {
        let mut cfg = prompt_mode(2);
        cfg.defaults.zero_variance = policy;
        let mut pool = Pool::new(cfg, "test");
        add_rewarded(&mut pool, "a", "p", 1.0, T0);
        add_rewarded(&mut pool, "b", "p", 1.0, T0);
        let batches = drain(&mut pool, T0 + 10);
        match policy {
            ZeroVariance::Drop => {
                assert!(batches.is_empty());
                assert_eq!(dropped(&pool, "zero_variance"), 2);
            }
            ZeroVariance::Keep => {
                assert!(batches[0].steps.iter().all(|s| s.advantage == 0.0));
            }
        }
    }
}

#[test]
fn a_group_that_never_fills_times_out() {
    let mut cfg = prompt_mode(4);
    cfg.defaults.group_timeout_secs = 60;
    let mut pool = Pool::new(cfg, "test");
    add_rewarded(&mut pool, "a", "p", 1.0, T0);
    drain(&mut pool, T0);
    assert!(drain(&mut pool, T0 + 61_000).is_empty());
    assert_eq!(dropped(&pool, "group_timeout"), 1);
}

#[test]
fn idle_trajectories_are_truncated_or_abandoned() {
    for on_idle in [OnIdle::Truncate, OnIdle::Abandon] {
        let mut cfg = window(1);
        cfg.completion.idle_timeout_secs = 600;
        cfg.completion.on_idle = on_idle;
        let mut pool = Pool::new(cfg, "test");
        let s = step("a", "p", 0, T0);
        pool.add_step(s.clone());
        pool.add_reward(&reward(&s, "rm:x@1", 0.5));
        assert!(drain(&mut pool, T0 + 599_000).is_empty());
        let batches = drain(&mut pool, T0 + 600_000);
        match on_idle {
            OnIdle::Truncate => assert!(batches[0].steps[0].truncated),
            OnIdle::Abandon => {
                assert!(batches.is_empty());
                assert_eq!(dropped(&pool, "abandoned"), 1);
            }
        }
    }
}

#[test]
fn stale_steps_are_dropped_or_capped() {
    for policy in [StalePolicy::Drop, StalePolicy::Cap] {
        let mut cfg = window(1);
        cfg.staleness.max_lag = 2;
        cfg.staleness.policy = policy;
        let mut pool = Pool::new(cfg, "test");
        pool.set_policy_version(4); // steps are from version 1: lag 3
        add_rewarded(&mut pool, "a", "p", 1.0, T0);
        let batches = drain(&mut pool, T0 + 10);
        match policy {
            StalePolicy::Drop => {
                assert!(batches.is_empty());
                assert_eq!(dropped(&pool, "stale"), 1);
            }
            StalePolicy::Cap => {
                assert_eq!(batches[0].steps[0].staleness, 3);
                assert_eq!(batches[0].steps[0].importance_cap, Some(2.0));
                assert_eq!(batches[0].policy_version, Some(4));
            }
        }
    }
}

#[test]
fn a_full_queue_drops_its_oldest_groups_and_counts_them() {
    let mut cfg = window(100); // batches never fill
    cfg.defaults.flush_after_secs = 3600;
    cfg.max_queue_size = 3;
    let mut pool = Pool::new(cfg, "test");
    for i in 0..5 {
        add_rewarded(&mut pool, &format!("t{i}"), "p", 1.0, T0 + i);
    }
    assert!(drain(&mut pool, T0 + 10).is_empty());
    assert_eq!(dropped(&pool, "queue_full"), 2);
    let stats = &pool.stats(i64::MAX / 2)["train"];
    assert_eq!(stats.ready_groups, 3);
    // The partial batch is flushed after `flush_after_secs`, with the newest three.
    let b = drain(&mut pool, T0 + 3_600_100);
    assert_eq!(b[0].steps.len(), 3);
    assert_eq!(b[0].steps[0].trajectory_uid, "t2");
}

#[test]
fn untokenized_steps_are_dropped_with_a_reason() {
    let mut pool = Pool::new(window(1), "test");
    let mut s = step("a", "p", 0, T0);
    s.token_source = TokenSource::Untokenized;
    s.response_ids.clear();
    pool.add_step(s);
    assert_eq!(dropped(&pool, "untokenized"), 1);
}

#[test]
fn the_same_events_in_a_new_pool_form_the_same_batches_and_consumed_steps_stay_consumed() {
    let events = |pool: &mut Pool| {
        for i in 0..10 {
            add_rewarded(
                pool,
                &format!("t{i}"),
                "p",
                f64::from(i) / 10.0,
                T0 + i64::from(i),
            );
        }
    };
    let mut first = Pool::new(window(4), "test");
    events(&mut first);
    let a = drain(&mut first, T0 + 100);
    assert_eq!(a.len(), 2, "two full batches of 4; 2 steps wait");

    // A restart: the stored batches are replayed first, then all the events again.
    let mut second = Pool::new(window(4), "test");
    for b in &a {
        second.replay_batch(b);
    }
    events(&mut second);
    second.tick(T0 + 100);
    assert!(
        second.next_batch("train", T0 + 100).is_none(),
        "only 2 unconsumed steps"
    );
    // The running baseline was restored from the replayed batches: the same next batch.
    let mut more_first = first;
    let mut more_second = second;
    for pool in [&mut more_first, &mut more_second] {
        for i in 10..12 {
            add_rewarded(pool, &format!("t{i}"), "p", 0.5, T0 + 200 + i);
        }
    }
    let x = drain(&mut more_first, T0 + 300);
    let y = drain(&mut more_second, T0 + 300);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].envelope.event_id, y[0].envelope.event_id);
    let adv = |b: &BatchFormed| b.steps.iter().map(|s| s.advantage).collect::<Vec<_>>();
    assert_eq!(adv(&x[0]), adv(&y[0]));
}
