//! Readiness: which trajectories are complete and rewarded (or past their deadlines), and how
//! ready ones become queued units — single trajectories (window) or prompt groups.

use std::collections::BTreeMap;

use clawline_schemas::GroupMode;

use super::{Name, Pool, ReadyStep, ReadyTraj, RewardRef, StepEntry, Traj, TrajKey, Unit, secs_ms};
use crate::config::{
    ChannelConfig, Fallback, OnIdle, Readiness, StalePolicy, ZeroVariance, matches,
};

/// The reward sources that are a user's reaction to an answer.
pub(super) const REACTION: &str = "feedback:*";

/// Whether a step stands on its own once its inputs are in: what a step of this trajectory needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepNeed {
    Ready,
    /// Its required rewards (`rewards.required`).
    Rewards,
    /// The user's reaction, until the given time (ms).
    Reaction(i64),
}

impl Pool {
    /// Whether `t`'s steps train one by one rather than with their whole trajectory.
    pub(super) fn per_step(&self, t: &Traj) -> bool {
        let cfg = self.cfg.channel(&t.channel);
        cfg.mode == GroupMode::Window
            && match cfg.readiness {
                Readiness::Step => true,
                Readiness::Trajectory => false,
                Readiness::Auto => t.implicit,
            }
    }

    /// What a step that trains on its own still needs at `now_ms`. Past the reaction wait plus
    /// the reward deadline it is ready with whatever arrived (the fallback decides).
    pub(super) fn step_need(&self, t: &Traj, s: &StepEntry, now_ms: i64) -> StepNeed {
        let cfg = self.cfg.channel(&t.channel);
        let react_until = s.at.saturating_add(secs_ms(cfg.reaction_wait_secs));
        let reacted = has_source(s, &t.rewards, REACTION);
        let required = &self.cfg.rewards.required;
        let rewarded = required.iter().all(|p| has_source(s, &t.rewards, p));
        let waited = now_ms >= react_until;
        if rewarded && (reacted || waited) {
            return StepNeed::Ready;
        }
        let since = if reacted { s.at } else { react_until };
        if now_ms - since >= secs_ms(self.cfg.rewards.deadline_secs) {
            return StepNeed::Ready;
        }
        if rewarded {
            StepNeed::Reaction(react_until)
        } else {
            StepNeed::Rewards
        }
    }

    /// Steps that train on their own and are ready go to their channel queue, in the order they
    /// were recorded (then trajectory, step), whatever later or earlier turns still wait for.
    fn advance_steps(&mut self, now_ms: i64) {
        let mut due: Vec<(i64, TrajKey, u32, u32)> = Vec::new();
        for (key, t) in &self.trajs {
            if t.steps.is_empty() || !self.per_step(t) {
                continue;
            }
            for s in &t.steps {
                if self.step_need(t, s, now_ms) == StepNeed::Ready {
                    due.push((s.at, key.clone(), s.step_index, s.choice_index));
                }
            }
        }
        due.sort_unstable_by(|a, b| (a.0, &a.1.1, a.2, a.3).cmp(&(b.0, &b.1.1, b.2, b.3)));
        for (at, key, index, choice) in due {
            let Some(t) = self.trajs.get_mut(&key) else {
                continue;
            };
            let Some(pos) = t
                .steps
                .iter()
                .position(|s| (s.step_index, s.choice_index) == (index, choice))
            else {
                continue;
            };
            let entry = t.steps.remove(pos);
            let (channel, prompt_uid, rewards) =
                (t.channel.clone(), t.prompt_uid.clone(), t.rewards.clone());
            self.make_ready(
                key,
                channel,
                prompt_uid,
                &rewards,
                vec![entry],
                (at, false),
                now_ms,
            );
        }
    }

    /// Moves what became ready (or timed out) by `now_ms` into the channel queues.
    pub fn tick(&mut self, now_ms: i64) {
        self.advance_steps(now_ms);
        let idle_ms = secs_ms(self.cfg.completion.idle_timeout_secs);
        // A conversation whose steps trained one by one is forgotten once it ended and holds
        // nothing more.
        let finished: Vec<TrajKey> = self
            .trajs
            .iter()
            .filter(|(_, t)| {
                t.steps.is_empty()
                    && (t.completed.is_some() || now_ms - t.last_event_ms >= idle_ms)
                    && self.per_step(t)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            self.trajs.remove(&key);
        }
        // Only completed or idle trajectories can move; they go in completion order (then uid),
        // so the same events always queue in the same order.
        let mut due: Vec<(i64, Name, TrajKey)> = self
            .trajs
            .iter()
            .filter(|(_, t)| !self.per_step(t))
            .filter_map(|(key, t)| match t.completed {
                Some((at, _)) => Some((at, key.1.clone(), key.clone())),
                None if now_ms - t.last_event_ms >= idle_ms => {
                    Some((i64::MAX, key.1.clone(), key.clone()))
                }
                None => None,
            })
            .collect();
        due.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, _, key) in due {
            self.advance(key, now_ms);
        }
        self.check_groups(now_ms);
        self.enforce_queue_limits();
    }

    /// One completed (or idle) trajectory: queued when ready, dropped when abandoned.
    fn advance(&mut self, key: TrajKey, now_ms: i64) {
        let deadline_ms = secs_ms(self.cfg.rewards.deadline_secs);
        let Some(t) = self.trajs.get_mut(&key) else {
            return;
        };
        if t.completed.is_none() {
            match self.cfg.completion.on_idle {
                OnIdle::Truncate => t.completed = Some((now_ms, true)),
                OnIdle::Abandon => {
                    let t = self.trajs.remove(&key).expect("present");
                    for s in &t.steps {
                        self.step_home.remove(&s.fp);
                        self.drop_step(&t.channel, s.fp, "abandoned");
                    }
                    return;
                }
            }
        }
        let Some((at, truncated)) = t.completed else {
            return;
        };
        let past_deadline = now_ms - at >= deadline_ms;
        let has_last = t
            .expected_last
            .is_none_or(|last| t.steps.iter().any(|s| s.step_index >= last));
        let required = &self.cfg.rewards.required;
        let rewarded = |s: &StepEntry| required.iter().all(|p| has_source(s, &t.rewards, p));
        if !past_deadline && (!has_last || !t.steps.iter().all(rewarded)) {
            return;
        }
        let t = self.trajs.remove(&key).expect("present");
        let t = *t;
        self.make_ready(
            key,
            t.channel,
            t.prompt_uid,
            &t.rewards,
            t.steps,
            (at, truncated),
            now_ms,
        );
    }

    /// Steps (a whole trajectory, or one step that trains on its own) become a ready unit.
    /// `order`: (completion or recording time, truncated).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn make_ready(
        &mut self,
        key: TrajKey,
        channel: Name,
        prompt_uid: Name,
        traj_rewards: &[RewardRef],
        entries: Vec<StepEntry>,
        (at, truncated): (i64, bool),
        now_ms: i64,
    ) {
        let mut steps = Vec::with_capacity(entries.len());
        for s in entries {
            let fp = s.fp;
            self.step_home.remove(&fp);
            if self.done.contains(&fp) {
                continue;
            }
            let required = &self.cfg.rewards.required;
            if !required.iter().all(|p| has_source(&s, traj_rewards, p)) {
                match self.cfg.rewards.fallback {
                    Fallback::UseAvailable => self.channel(&channel).stats.deadline_fallbacks += 1,
                    Fallback::Drop => {
                        self.drop_step(&channel, s.fp, "missing_reward");
                        continue;
                    }
                }
            }
            let staleness = match (self.policy_version, s.policy_version) {
                (Some(now), Some(then)) => now.saturating_sub(then),
                _ => 0,
            };
            let mut importance_cap = None;
            if staleness > self.cfg.staleness.max_lag {
                match self.cfg.staleness.policy {
                    StalePolicy::Drop => {
                        self.drop_step(&channel, s.fp, "stale");
                        continue;
                    }
                    StalePolicy::Cap => importance_cap = Some(self.cfg.staleness.importance_cap),
                }
            }
            let (reward, rewards) = Self::combine(&s, traj_rewards);
            self.queued.insert(fp);
            steps.push(ReadyStep {
                entry: s,
                reward,
                rewards,
                staleness,
                importance_cap,
                late: false,
            });
        }
        if steps.is_empty() {
            return;
        }
        let (tenant, uid) = key;
        let ready = ReadyTraj {
            tenant: tenant.clone(),
            uid: uid.clone(),
            prompt_uid: prompt_uid.clone(),
            truncated,
            order: (at, uid),
            steps,
        };
        self.enqueue(&channel, tenant, prompt_uid, ready, now_ms);
    }

    /// A ready trajectory (or step) joins its channel: queued (window) or grouped (prompt).
    pub(super) fn enqueue(
        &mut self,
        channel: &str,
        tenant: Name,
        prompt_uid: Name,
        ready: ReadyTraj,
        now_ms: i64,
    ) {
        match self.cfg.channel(channel).mode {
            GroupMode::Window => {
                let unit = Unit {
                    tenant,
                    key: Name::from("window"),
                    trajs: vec![ready],
                    advantages: Vec::new(),
                    mean: 0.0,
                    std: 0.0,
                    ready_ms: now_ms,
                };
                self.channel(channel).queue.push_back(unit);
            }
            GroupMode::Prompt => {
                let forming = self
                    .channel(channel)
                    .forming
                    .entry((tenant, prompt_uid))
                    .or_default();
                if forming.trajs.is_empty() {
                    forming.first_ms = now_ms;
                }
                forming.trajs.push(ready);
            }
        }
    }

    /// Prompt groups: full ones become units (ready groups go out whatever others wait for);
    /// groups short for too long are dropped.
    fn check_groups(&mut self, now_ms: i64) {
        let names: Vec<Name> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.forming.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let cfg = self.cfg.channel(&name).clone();
            if cfg.mode != GroupMode::Prompt {
                continue;
            }
            let keys: Vec<TrajKey> = self.channels[&name].forming.keys().cloned().collect();
            for key in keys {
                let ch = self.channels.get_mut(&name).expect("channel");
                let forming = ch.forming.get_mut(&key).expect("group");
                if forming.trajs.len() >= cfg.group_size {
                    forming.trajs.sort_by(|a, b| a.order.cmp(&b.order));
                    let members: Vec<ReadyTraj> = forming.trajs.drain(..cfg.group_size).collect();
                    if forming.trajs.is_empty() {
                        ch.forming.remove(&key);
                    } else {
                        forming.first_ms = now_ms;
                    }
                    self.push_group(&name, &cfg, key, members, now_ms);
                } else if now_ms - forming.first_ms >= secs_ms(cfg.group_timeout_secs) {
                    let forming = ch.forming.remove(&key).expect("group");
                    self.drop_trajs(&name, &forming.trajs, "group_timeout");
                }
            }
        }
    }

    fn drop_trajs(&mut self, channel: &str, trajs: &[ReadyTraj], reason: &str) {
        for t in trajs {
            for s in &t.steps {
                self.drop_step(channel, s.entry.fp, reason);
            }
        }
    }

    fn push_group(
        &mut self,
        channel: &str,
        cfg: &ChannelConfig,
        key: TrajKey,
        members: Vec<ReadyTraj>,
        now_ms: i64,
    ) {
        // A trajectory's return is the mean of its steps' combined rewards.
        let returns: Vec<f64> = members
            .iter()
            .map(|t| t.steps.iter().map(|s| s.reward).sum::<f64>() / t.steps.len() as f64)
            .collect();
        let (mean, std) = mean_std(&returns);
        if std < 1e-9 && cfg.zero_variance == ZeroVariance::Drop {
            self.drop_trajs(channel, &members, "zero_variance");
            return;
        }
        let advantages = returns
            .iter()
            .map(|r| {
                let a = r - mean;
                if cfg.normalize { a / (std + 1e-6) } else { a }
            })
            .collect();
        self.channel(channel).queue.push_back(Unit {
            tenant: key.0,
            key: key.1,
            trajs: members,
            advantages,
            mean,
            std,
            ready_ms: now_ms,
        });
    }

    fn enforce_queue_limits(&mut self) {
        let max = self.cfg.max_queue_size;
        let full: Vec<Name> = self
            .channels
            .iter()
            .filter(|(_, c)| c.queue.len() > max)
            .map(|(n, _)| n.clone())
            .collect();
        for name in full {
            while self.channels[&name].queue.len() > max {
                let unit = self
                    .channels
                    .get_mut(&name)
                    .and_then(|c| c.queue.pop_front())
                    .expect("non-empty queue");
                tracing::warn!(channel = %name, group = %unit.key, steps = unit.steps(), "queue full: dropping the oldest ready group");
                self.drop_trajs(&name, &unit.trajs, "queue_full");
            }
        }
    }

    /// Combined reward: Σ weight(source) × mean of that source's values (step and trajectory).
    pub(super) fn combine(step: &StepEntry, traj_rewards: &[RewardRef]) -> (f64, Vec<(Name, f64)>) {
        let mut by_source: BTreeMap<&Name, (f64, f64, u32)> = BTreeMap::new();
        for r in step.rewards.iter().chain(traj_rewards) {
            let e = by_source.entry(&r.source).or_insert((r.weight, 0.0, 0));
            e.1 += r.value;
            e.2 += 1;
        }
        let mut total = 0.0;
        let mut parts = Vec::with_capacity(by_source.len());
        for (source, (weight, sum, n)) in by_source {
            let value = sum / f64::from(n);
            total += weight * value;
            parts.push((source.clone(), value));
        }
        (total, parts)
    }
}

pub(super) fn has_source(step: &StepEntry, traj_rewards: &[RewardRef], pattern: &str) -> bool {
    step.rewards
        .iter()
        .chain(traj_rewards)
        .any(|r| matches(pattern, &r.source))
}

pub(super) fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
