//! The DataPool: state derived from the event log, and the rules that turn it into batches.
//! Pure (no I/O, time passed in), so a replay of the same events gives the same decisions.
//!
//! Life of a step: it arrives (`add_step`), collects rewards (`add_reward`), its trajectory
//! completes (an event, a last step, or the idle timeout), and at a `tick` it becomes ready once
//! the required rewards are there (or the deadline passed). Ready trajectories go to their channel:
//! window mode queues them as they are; prompt mode groups `group_size` trajectories of a prompt.
//! `next_batch` forms a batch from the queue's head without removing it; `commit` removes it once
//! JetStream acked the batch, so a failed publish loses nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use clawline_schemas::{
    BatchFormed, BatchGroup, BatchStep, GroupMode, RewardAssigned, RewardScope, SCHEMA_VERSION,
    StepRecorded, TokenSource, TrajectoryCompleted,
};
use serde::Serialize;

use crate::config::{Fallback, FileConfig, OnIdle, StalePolicy, ZeroVariance, matches};

type TrajKey = (String, String);

#[derive(Debug, Clone)]
struct RewardRef {
    id: String,
    source: String,
    value: f64,
}

#[derive(Debug, Clone)]
struct StepEntry {
    id: String,
    step_index: u32,
    token_source: TokenSource,
    prompt_ids: Vec<u32>,
    response_ids: Vec<u32>,
    logprobs: Option<Vec<f32>>,
    policy_version: Option<u64>,
    rewards: Vec<RewardRef>,
}

#[derive(Debug)]
struct Traj {
    tenant: String,
    uid: String,
    channel: String,
    prompt_uid: String,
    steps: BTreeMap<(u32, u32), StepEntry>,
    rewards: Vec<RewardRef>,
    /// Completion time (event time, ms) and whether it ended by idle timeout.
    completed: Option<(i64, bool)>,
    /// The last step index the completion named; readiness waits for it (up to the deadline).
    expected_last: Option<u32>,
    last_event_ms: i64,
}

/// A trajectory whose steps are ready, with their combined rewards.
#[derive(Debug, Clone)]
struct ReadyTraj {
    tenant: String,
    uid: String,
    prompt_uid: String,
    truncated: bool,
    order: (i64, String),
    steps: Vec<ReadyStep>,
}

#[derive(Debug, Clone)]
struct ReadyStep {
    entry: StepEntry,
    reward: f64,
    rewards: Vec<(String, f64)>,
    staleness: u64,
    importance_cap: Option<f64>,
}

/// What a channel queues: one trajectory (window mode) or one prompt group.
#[derive(Debug, Clone)]
struct Unit {
    tenant: String,
    key: String,
    trajs: Vec<ReadyTraj>,
    /// Prompt mode: per-trajectory advantage and the group's mean and std.
    advantages: Vec<f64>,
    mean: f64,
    std: f64,
    ready_ms: i64,
}

impl Unit {
    fn steps(&self) -> usize {
        self.trajs.iter().map(|t| t.steps.len()).sum()
    }
}

#[derive(Debug, Default)]
struct Forming {
    trajs: Vec<ReadyTraj>,
    first_ms: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    mean: f64,
    var: f64,
    seen: bool,
}

/// Counters of one channel, reported by `get_statistics`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChannelStats {
    pub steps: u64,
    pub trajectories: u64,
    pub open_trajectories: u64,
    /// Ready units (window: trajectories, prompt: groups) waiting for a batch.
    pub ready_groups: u64,
    pub queued_steps: u64,
    /// Prompt mode: groups still short of `group_size`.
    pub forming_groups: u64,
    pub consumed_steps: u64,
    pub batches: u64,
    /// Steps dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    pub deadline_fallbacks: u64,
}

#[derive(Default)]
struct Channel {
    queue: VecDeque<Unit>,
    forming: BTreeMap<TrajKey, Forming>,
    stats: ChannelStats,
}

/// A batch formed but not yet committed.
pub struct Proposed {
    pub batch: BatchFormed,
    units: usize,
    /// Steps taken from the unit after the whole ones (window mode splits a trajectory).
    partial_steps: usize,
}

pub struct Pool {
    cfg: FileConfig,
    producer: String,
    trajs: HashMap<TrajKey, Traj>,
    step_home: HashMap<String, TrajKey>,
    orphan_step_rewards: HashMap<String, Vec<RewardRef>>,
    orphan_traj_rewards: HashMap<TrajKey, Vec<RewardRef>>,
    /// Step ids already batched or dropped: later events about them are ignored.
    done: HashSet<String>,
    channels: BTreeMap<String, Channel>,
    baselines: HashMap<(String, String), Baseline>,
    policy_version: Option<u64>,
}

impl Pool {
    pub fn new(cfg: FileConfig, producer: impl Into<String>) -> Self {
        Self {
            cfg,
            producer: producer.into(),
            trajs: HashMap::new(),
            step_home: HashMap::new(),
            orphan_step_rewards: HashMap::new(),
            orphan_traj_rewards: HashMap::new(),
            done: HashSet::new(),
            channels: BTreeMap::new(),
            baselines: HashMap::new(),
            policy_version: None,
        }
    }

    pub fn config(&self) -> &FileConfig {
        &self.cfg
    }

    pub fn set_policy_version(&mut self, version: u64) {
        self.policy_version = Some(version);
    }

    pub fn policy_version(&self) -> Option<u64> {
        self.policy_version
    }

    fn channel(&mut self, name: &str) -> &mut Channel {
        self.channels.entry(name.to_string()).or_default()
    }

    fn drop_step(&mut self, channel: &str, step_id: &str, reason: &str) {
        if self.done.insert(step_id.to_string()) {
            *self
                .channel(channel)
                .stats
                .dropped
                .entry(reason.to_string())
                .or_default() += 1;
        }
    }

    fn traj_entry(
        &mut self,
        tenant: &str,
        uid: &str,
        channel: &str,
        prompt_uid: &str,
        at: i64,
    ) -> &mut Traj {
        let key = (tenant.to_string(), uid.to_string());
        if !self.trajs.contains_key(&key) {
            self.channels
                .entry(channel.to_string())
                .or_default()
                .stats
                .trajectories += 1;
            let rewards = self.orphan_traj_rewards.remove(&key).unwrap_or_default();
            self.trajs.insert(
                key.clone(),
                Traj {
                    tenant: tenant.to_string(),
                    uid: uid.to_string(),
                    channel: channel.to_string(),
                    prompt_uid: prompt_uid.to_string(),
                    steps: BTreeMap::new(),
                    rewards,
                    completed: None,
                    expected_last: None,
                    last_event_ms: at,
                },
            );
        }
        let t = self.trajs.get_mut(&key).expect("inserted above");
        t.last_event_ms = t.last_event_ms.max(at);
        t
    }

    pub fn add_step(&mut self, step: StepRecorded) {
        if self.done.contains(&step.event_id) || self.step_home.contains_key(&step.event_id) {
            return;
        }
        self.channel(&step.channel).stats.steps += 1;
        if step.response_ids.is_empty() || step.token_source == TokenSource::Untokenized {
            // Nothing a trainer can use; its trajectory goes on without it.
            self.drop_step(&step.channel, &step.event_id, "untokenized");
            self.traj_entry(
                &step.tenant,
                &step.trajectory_uid,
                &step.channel,
                &step.prompt_uid,
                step.event_time,
            );
            return;
        }
        let rewards = self
            .orphan_step_rewards
            .remove(&step.event_id)
            .unwrap_or_default();
        let key = (step.tenant.clone(), step.trajectory_uid.clone());
        self.step_home.insert(step.event_id.clone(), key);
        let is_last = step.is_last;
        let (index, event_time) = (step.step_index, step.event_time);
        let t = self.traj_entry(
            &step.tenant,
            &step.trajectory_uid,
            &step.channel,
            &step.prompt_uid,
            event_time,
        );
        t.steps.insert(
            (step.step_index, step.choice_index),
            StepEntry {
                id: step.event_id,
                step_index: step.step_index,
                token_source: step.token_source,
                prompt_ids: step.prompt_ids,
                response_ids: step.response_ids,
                logprobs: step.response_logprobs,
                policy_version: step.policy_version,
                rewards,
            },
        );
        if is_last && t.completed.is_none() {
            t.completed = Some((event_time, false));
            t.expected_last = Some(index);
        }
    }

    pub fn add_completion(&mut self, done: &TrajectoryCompleted) {
        let prompt = done.prompt_uid.clone().unwrap_or_default();
        let t = self.traj_entry(
            &done.tenant,
            &done.trajectory_uid,
            &done.channel,
            &prompt,
            done.event_time,
        );
        if t.prompt_uid.is_empty() {
            t.prompt_uid = prompt;
        }
        if t.completed.is_none() {
            t.completed = Some((done.event_time, false));
        }
        if done.last_step_index.is_some() {
            t.expected_last = done.last_step_index;
        }
    }

    pub fn add_reward(&mut self, r: &RewardAssigned) {
        let reward = RewardRef {
            id: r.event_id.clone(),
            source: r.source.clone(),
            value: r.value,
        };
        if !r.value.is_finite() {
            return;
        }
        match (r.scope, &r.step_id) {
            (RewardScope::Step, Some(step_id)) => {
                if self.done.contains(step_id) {
                    return;
                }
                let home = self.step_home.get(step_id).cloned();
                let entry = home.and_then(|key| {
                    self.trajs
                        .get_mut(&key)?
                        .steps
                        .values_mut()
                        .find(|s| &s.id == step_id)
                });
                match entry {
                    Some(e) => push_unique(&mut e.rewards, reward),
                    None => push_unique(
                        self.orphan_step_rewards.entry(step_id.clone()).or_default(),
                        reward,
                    ),
                }
            }
            _ => {
                let key = (r.tenant.clone(), r.trajectory_uid.clone());
                match self.trajs.get_mut(&key) {
                    Some(t) => push_unique(&mut t.rewards, reward),
                    None => push_unique(self.orphan_traj_rewards.entry(key).or_default(), reward),
                }
            }
        }
    }

    /// A batch read back from BATCHES at start: its steps are consumed, and window baselines move
    /// exactly as they did when it was formed.
    pub fn replay_batch(&mut self, batch: &BatchFormed) {
        for s in &batch.steps {
            self.done.insert(s.step_id.clone());
            if let Some(key) = self.step_home.remove(&s.step_id)
                && let Some(t) = self.trajs.get_mut(&key)
            {
                t.steps.retain(|_, e| e.id != s.step_id);
            }
            if batch.mode == GroupMode::Window {
                let decay = self.cfg.channel(&batch.channel).baseline_decay;
                update_baseline(
                    self.baselines
                        .entry((s.tenant.clone(), batch.channel.clone()))
                        .or_default(),
                    s.reward,
                    decay,
                );
            }
        }
        let stats = &mut self.channel(&batch.channel).stats;
        stats.consumed_steps += batch.steps.len() as u64;
        stats.batches += 1;
    }

    /// Moves what became ready (or timed out) by `now_ms` into the channel queues.
    pub fn tick(&mut self, now_ms: i64) {
        let idle_ms = secs_ms(self.cfg.completion.idle_timeout_secs);
        let deadline_ms = secs_ms(self.cfg.rewards.deadline_secs);
        let mut keys: Vec<TrajKey> = self.trajs.keys().cloned().collect();
        keys.sort_by_key(|k| {
            let t = &self.trajs[k];
            (t.completed.map_or(i64::MAX, |c| c.0), k.1.clone())
        });
        for key in keys {
            let Some(t) = self.trajs.get_mut(&key) else {
                continue;
            };
            if t.completed.is_none() && now_ms - t.last_event_ms >= idle_ms {
                match self.cfg.completion.on_idle {
                    OnIdle::Truncate => t.completed = Some((now_ms, true)),
                    OnIdle::Abandon => {
                        let t = self.trajs.remove(&key).expect("present");
                        self.forget_traj(&t, "abandoned");
                        continue;
                    }
                }
            }
            let Some((at, truncated)) = t.completed else {
                continue;
            };
            let past_deadline = now_ms - at >= deadline_ms;
            let has_last = t
                .expected_last
                .is_none_or(|last| t.steps.keys().any(|(i, _)| *i >= last));
            let missing: Vec<String> = t
                .steps
                .values()
                .filter(|s| {
                    !self
                        .cfg
                        .rewards
                        .required
                        .iter()
                        .all(|p| has_source(s, &t.rewards, p))
                })
                .map(|s| s.id.clone())
                .collect();
            if !past_deadline && (!missing.is_empty() || !has_last) {
                continue;
            }
            let t = self.trajs.remove(&key).expect("present");
            for id in &missing {
                match self.cfg.rewards.fallback {
                    Fallback::UseAvailable => {
                        self.channel(&t.channel).stats.deadline_fallbacks += 1
                    }
                    Fallback::Drop => self.drop_step(&t.channel, id, "missing_reward"),
                }
            }
            self.make_ready(t, truncated, now_ms);
        }
        self.check_groups(now_ms);
        self.enforce_queue_limits();
    }

    fn forget_traj(&mut self, t: &Traj, reason: &str) {
        for s in t.steps.values() {
            self.step_home.remove(&s.id);
            self.drop_step(&t.channel, &s.id, reason);
        }
    }

    fn make_ready(&mut self, t: Traj, truncated: bool, now_ms: i64) {
        let (at, _) = t.completed.unwrap_or((now_ms, truncated));
        let mut steps = Vec::new();
        for s in t.steps.values() {
            self.step_home.remove(&s.id);
            if self.done.contains(&s.id) {
                continue;
            }
            let staleness = match (self.policy_version, s.policy_version) {
                (Some(now), Some(then)) => now.saturating_sub(then),
                _ => 0,
            };
            let mut importance_cap = None;
            if staleness > self.cfg.staleness.max_lag {
                match self.cfg.staleness.policy {
                    StalePolicy::Drop => {
                        self.drop_step(&t.channel, &s.id, "stale");
                        continue;
                    }
                    StalePolicy::Cap => importance_cap = Some(self.cfg.staleness.importance_cap),
                }
            }
            let (reward, rewards) = self.combine(s, &t.rewards);
            steps.push(ReadyStep {
                entry: s.clone(),
                reward,
                rewards,
                staleness,
                importance_cap,
            });
        }
        if steps.is_empty() {
            return;
        }
        let ready = ReadyTraj {
            tenant: t.tenant.clone(),
            uid: t.uid.clone(),
            prompt_uid: t.prompt_uid.clone(),
            truncated,
            order: (at, t.uid.clone()),
            steps,
        };
        let cfg = self.cfg.channel(&t.channel).clone();
        match cfg.mode {
            GroupMode::Window => {
                let unit = Unit {
                    tenant: ready.tenant.clone(),
                    key: "window".into(),
                    trajs: vec![ready],
                    advantages: Vec::new(),
                    mean: 0.0,
                    std: 0.0,
                    ready_ms: now_ms,
                };
                self.channel(&t.channel).queue.push_back(unit);
            }
            GroupMode::Prompt => {
                let group_key = (t.tenant.clone(), t.prompt_uid.clone());
                let forming = self
                    .channel(&t.channel)
                    .forming
                    .entry(group_key)
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
        let names: Vec<String> = self.channels.keys().cloned().collect();
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
                    for t in forming.trajs {
                        for s in t.steps {
                            self.drop_step(&name, &s.entry.id, "group_timeout");
                        }
                    }
                }
            }
        }
    }

    fn push_group(
        &mut self,
        channel: &str,
        cfg: &crate::config::ChannelConfig,
        key: TrajKey,
        members: Vec<ReadyTraj>,
        now_ms: i64,
    ) {
        // A trajectory's return is the mean of its steps' combined rewards.
        let returns: Vec<f64> = members
            .iter()
            .map(|t| t.steps.iter().map(|s| s.reward).sum::<f64>() / t.steps.len() as f64)
            .collect();
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        if std < 1e-9 && cfg.zero_variance == ZeroVariance::Drop {
            for t in &members {
                for s in &t.steps {
                    self.drop_step(channel, &s.entry.id, "zero_variance");
                }
            }
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
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            while self.channels[&name].queue.len() > max {
                let unit = self
                    .channels
                    .get_mut(&name)
                    .and_then(|c| c.queue.pop_front())
                    .expect("non-empty queue");
                tracing::warn!(channel = %name, group = %unit.key, steps = unit.steps(), "queue full: dropping the oldest ready group");
                for t in unit.trajs {
                    for s in t.steps {
                        self.drop_step(&name, &s.entry.id, "queue_full");
                    }
                }
            }
        }
    }

    /// Combined reward: Σ weight(source) × mean of that source's values (step and trajectory).
    fn combine(&self, step: &StepEntry, traj_rewards: &[RewardRef]) -> (f64, Vec<(String, f64)>) {
        let mut by_source: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
        for r in step.rewards.iter().chain(traj_rewards) {
            let e = by_source.entry(r.source.as_str()).or_default();
            e.0 += r.value;
            e.1 += 1;
        }
        let mut total = 0.0;
        let mut parts = Vec::new();
        for (source, (sum, n)) in by_source {
            let value = sum / f64::from(n);
            total += self.cfg.rewards.weight(source) * value;
            parts.push((source.to_string(), value));
        }
        (total, parts)
    }

    /// The channels with something queued.
    pub fn channels_with_work(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| !c.queue.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The batch the head of `channel`'s queue makes now, if it is due; not removed until `commit`.
    pub fn next_batch(&self, channel: &str, now_ms: i64) -> Option<Proposed> {
        let ch = self.channels.get(channel)?;
        let cfg = self.cfg.channel(channel);
        let oldest = ch.queue.front()?.ready_ms;
        let flush = now_ms - oldest >= secs_ms(cfg.flush_after_secs);
        let mut proposed = match cfg.mode {
            GroupMode::Window => {
                // Enough steps queued for a full batch? (Counts only as far as needed.)
                let mut queued = 0;
                for unit in &ch.queue {
                    queued += unit.steps();
                    if queued >= cfg.batch_size {
                        break;
                    }
                }
                if queued < cfg.batch_size && !flush {
                    return None;
                }
                self.window_batch(
                    channel,
                    ch,
                    cfg.batch_size,
                    cfg.baseline_decay,
                    cfg.normalize,
                )
            }
            GroupMode::Prompt => {
                if ch.queue.len() < cfg.batch_size && !flush {
                    return None;
                }
                self.prompt_batch(channel, ch, cfg.batch_size)
            }
        };
        // Too big for one message: take half as much until it fits (one group at least).
        let mut limit = cfg.batch_size;
        while limit > 1
            && clawline_schemas::encode(&proposed.batch).map_or(0, |b| b.len())
                > self.cfg.max_batch_bytes
        {
            limit /= 2;
            proposed = match cfg.mode {
                GroupMode::Window => {
                    self.window_batch(channel, ch, limit, cfg.baseline_decay, cfg.normalize)
                }
                GroupMode::Prompt => self.prompt_batch(channel, ch, limit),
            };
        }
        Some(proposed)
    }

    fn window_batch(
        &self,
        channel: &str,
        ch: &Channel,
        size: usize,
        decay: f64,
        normalize: bool,
    ) -> Proposed {
        let mut baselines: BTreeMap<String, Baseline> = BTreeMap::new();
        let mut steps = Vec::new();
        let mut groups: Vec<BatchGroup> = Vec::new();
        let mut group_of: BTreeMap<String, u32> = BTreeMap::new();
        let (mut units, mut partial) = (0, 0);
        'outer: for unit in &ch.queue {
            for (i, t) in unit.trajs.iter().enumerate() {
                for (j, s) in t.steps.iter().enumerate() {
                    if steps.len() == size {
                        partial = if i == 0 { j } else { 0 };
                        break 'outer;
                    }
                    let b = baselines.entry(t.tenant.clone()).or_insert_with(|| {
                        self.baselines
                            .get(&(t.tenant.clone(), channel.to_string()))
                            .copied()
                            .unwrap_or_default()
                    });
                    let base = if b.seen { b.mean } else { s.reward };
                    let mut advantage = s.reward - base;
                    if normalize && b.seen {
                        advantage /= b.var.sqrt() + 1e-6;
                    }
                    update_baseline(b, s.reward, decay);
                    let g = *group_of.entry(t.tenant.clone()).or_insert_with(|| {
                        groups.push(BatchGroup {
                            key: "window".into(),
                            tenant: t.tenant.clone(),
                            baseline: base,
                            ..Default::default()
                        });
                        (groups.len() - 1) as u32
                    });
                    steps.push(self.batch_step(t, s, g, advantage));
                }
            }
            units += 1;
        }
        for g in &mut groups {
            let rewards: Vec<f64> = steps
                .iter()
                .filter(|s| s.tenant == g.tenant)
                .map(|s| s.reward)
                .collect();
            let trajs: HashSet<&str> = steps
                .iter()
                .filter(|s| s.tenant == g.tenant)
                .map(|s| s.trajectory_uid.as_str())
                .collect();
            g.steps = rewards.len() as u32;
            g.trajectories = trajs.len() as u32;
            (g.reward_mean, g.reward_std) = mean_std(&rewards);
        }
        Proposed {
            batch: self.batch(channel, GroupMode::Window, groups, steps),
            units,
            partial_steps: partial,
        }
    }

    fn prompt_batch(&self, channel: &str, ch: &Channel, groups_wanted: usize) -> Proposed {
        let mut steps = Vec::new();
        let mut groups = Vec::new();
        for unit in ch.queue.iter().take(groups_wanted) {
            let g = groups.len() as u32;
            groups.push(BatchGroup {
                key: unit.key.clone(),
                tenant: unit.tenant.clone(),
                trajectories: unit.trajs.len() as u32,
                steps: unit.steps() as u32,
                reward_mean: unit.mean,
                reward_std: unit.std,
                baseline: unit.mean,
            });
            for (t, advantage) in unit.trajs.iter().zip(&unit.advantages) {
                for s in &t.steps {
                    steps.push(self.batch_step(t, s, g, *advantage));
                }
            }
        }
        let units = groups.len();
        Proposed {
            batch: self.batch(channel, GroupMode::Prompt, groups, steps),
            units,
            partial_steps: 0,
        }
    }

    fn batch_step(&self, t: &ReadyTraj, s: &ReadyStep, group: u32, advantage: f64) -> BatchStep {
        BatchStep {
            step_id: s.entry.id.clone(),
            tenant: t.tenant.clone(),
            trajectory_uid: t.uid.clone(),
            prompt_uid: t.prompt_uid.clone(),
            step_index: s.entry.step_index,
            group,
            token_source: s.entry.token_source,
            prompt_ids: s.entry.prompt_ids.clone(),
            response_ids: s.entry.response_ids.clone(),
            old_logprobs: s.entry.logprobs.clone(),
            reward: s.reward,
            advantage,
            rewards: s.rewards.clone(),
            reward_ids: s.entry.rewards.iter().map(|r| r.id.clone()).collect(),
            policy_version: s.entry.policy_version,
            staleness: s.staleness,
            importance_cap: s.importance_cap,
            truncated: t.truncated,
        }
    }

    fn batch(
        &self,
        channel: &str,
        mode: GroupMode,
        groups: Vec<BatchGroup>,
        steps: Vec<BatchStep>,
    ) -> BatchFormed {
        BatchFormed {
            event_id: BatchFormed::id_for(steps.iter().map(|s| s.step_id.as_str())),
            event_time: clawline_schemas::now_ms(),
            producer: self.producer.clone(),
            schema_version: SCHEMA_VERSION,
            channel: channel.to_string(),
            mode,
            policy_version: self.policy_version,
            groups,
            steps,
        }
    }

    /// The batch is stored: remove its steps from the queue and count them consumed.
    pub fn commit(&mut self, proposed: &Proposed) {
        let channel = proposed.batch.channel.clone();
        let ch = self.channels.entry(channel.clone()).or_default();
        ch.queue.drain(..proposed.units.min(ch.queue.len()));
        if proposed.partial_steps > 0
            && let Some(unit) = ch.queue.front_mut()
            && let Some(first) = unit.trajs.first_mut()
        {
            first
                .steps
                .drain(..proposed.partial_steps.min(first.steps.len()));
        }
        self.replay_batch(&proposed.batch);
    }

    /// Counters per channel, with the queue and open-trajectory gauges filled in.
    pub fn stats(&self) -> BTreeMap<String, ChannelStats> {
        let mut out: BTreeMap<String, ChannelStats> = self
            .channels
            .iter()
            .map(|(name, c)| {
                let mut s = c.stats.clone();
                s.ready_groups = c.queue.len() as u64;
                s.queued_steps = c.queue.iter().map(|u| u.steps() as u64).sum();
                s.forming_groups = c.forming.len() as u64;
                (name.clone(), s)
            })
            .collect();
        for t in self.trajs.values() {
            out.entry(t.channel.clone()).or_default().open_trajectories += 1;
        }
        out
    }

    /// Steps held in memory (open trajectories, forming groups and queues).
    pub fn held_steps(&self) -> usize {
        let open: usize = self.trajs.values().map(|t| t.steps.len()).sum();
        let queued: usize = self
            .channels
            .values()
            .map(|c| {
                c.queue.iter().map(Unit::steps).sum::<usize>()
                    + c.forming
                        .values()
                        .map(|f| f.trajs.iter().map(|t| t.steps.len()).sum::<usize>())
                        .sum::<usize>()
            })
            .sum();
        open + queued
    }
}

fn has_source(step: &StepEntry, traj_rewards: &[RewardRef], pattern: &str) -> bool {
    step.rewards
        .iter()
        .chain(traj_rewards)
        .any(|r| matches(pattern, &r.source))
}

fn push_unique(list: &mut Vec<RewardRef>, reward: RewardRef) {
    if !list.iter().any(|r| r.id == reward.id) {
        list.push(reward);
    }
}

fn update_baseline(b: &mut Baseline, reward: f64, decay: f64) {
    if !b.seen {
        *b = Baseline {
            mean: reward,
            var: 0.0,
            seen: true,
        };
        return;
    }
    let diff = reward - b.mean;
    b.mean += (1.0 - decay) * diff;
    b.var = decay * b.var + (1.0 - decay) * diff * diff;
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
