//! The DataPool: state derived from the event log, and the rules that turn it into batches.
//! Pure (no I/O, time passed in), so a replay of the same events gives the same decisions.
//!
//! Life of a step: it arrives (`add_step`), collects rewards (`add_reward`), its trajectory
//! completes (an event, a last step, or the idle timeout), and at a `tick` it becomes ready once
//! the required rewards are there (or the deadline passed). Ready trajectories go to their channel:
//! window mode queues them as they are; prompt mode groups `group_size` trajectories of a prompt.
//! `next_batch` forms a batch (and its encoded bytes) from the queue's head without removing it;
//! `commit` removes it.
//!
//! Memory: a held step costs its token ids and logprobs plus about 1.1 KB (its record, its
//! trajectory's, their table entries and ids; `benches/results/batcher.md` measures it). Tenant,
//! channel and reward-source names are interned; step ids are looked up by a 128-bit
//! fingerprint; token vectors are stored at their exact length.

mod baseline;
mod explain;
mod form;
mod input;
mod late;
mod ready;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use clawline_schemas::{
    BatchFormed, GroupMode, RewardAssigned, RewardScope, TokenSource, TrajectoryCompleted,
};
use serde::Serialize;

use crate::config::FileConfig;

pub use explain::{Explanation, Waiting};
pub use form::Proposed;
pub use input::StepIn;
use input::{Fp, FpMap, FpSet};
pub use late::LateStats;

/// An interned or shared name (tenant, channel, trajectory uid, reward source).
type Name = Arc<str>;
/// (tenant, trajectory uid)
type TrajKey = (Name, Name);

#[derive(Debug, Clone)]
struct RewardRef {
    id: Box<str>,
    source: Name,
    /// The source's weight in the combined reward (from the config, looked up once).
    weight: f64,
    value: f64,
}

#[derive(Debug)]
struct StepEntry {
    id: Box<str>,
    fp: Fp,
    step_index: u32,
    choice_index: u32,
    token_source: TokenSource,
    prompt_ids: Box<[u32]>,
    response_ids: Box<[u32]>,
    logprobs: Option<Box<[f32]>>,
    policy_version: Option<u64>,
    /// When the step was recorded (event time, ms): the reaction wait counts from here.
    at: i64,
    rewards: Vec<RewardRef>,
}

#[derive(Debug)]
struct Traj {
    channel: Name,
    prompt_uid: Name,
    /// Ordered by (step index, choice index).
    steps: Vec<StepEntry>,
    rewards: Vec<RewardRef>,
    /// Completion time (event time, ms) and whether it ended by idle timeout.
    completed: Option<(i64, bool)>,
    /// The last step index the completion named; readiness waits for it (up to the deadline).
    expected_last: Option<u32>,
    last_event_ms: i64,
    /// A conversation the gateway grouped by its messages (a plain client's): under
    /// `readiness = "auto"` its steps train one by one.
    implicit: bool,
}

/// A trajectory whose steps are ready, with their combined rewards.
#[derive(Debug)]
struct ReadyTraj {
    tenant: Name,
    uid: Name,
    prompt_uid: Name,
    truncated: bool,
    order: (i64, Name),
    steps: Vec<ReadyStep>,
}

#[derive(Debug)]
struct ReadyStep {
    entry: StepEntry,
    reward: f64,
    rewards: Vec<(Name, f64)>,
    staleness: u64,
    importance_cap: Option<f64>,
    /// A late-feedback sample of a step that already trained.
    late: bool,
}

/// What a channel queues: one trajectory (window mode) or one prompt group.
#[derive(Debug)]
struct Unit {
    tenant: Name,
    key: Name,
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
    /// Steps held, by what they wait for.
    pub waiting: Waiting,
    /// Feedback that arrived after its step had trained.
    pub late_feedback: LateStats,
}

#[derive(Default)]
struct Channel {
    queue: VecDeque<Unit>,
    forming: BTreeMap<TrajKey, Forming>,
    stats: ChannelStats,
}

pub struct Pool {
    cfg: FileConfig,
    producer: String,
    names: HashSet<Name>,
    /// Boxed: the table stays small (its growth copies 40-byte entries, not whole trajectories).
    trajs: HashMap<TrajKey, Box<Traj>>,
    step_home: FpMap<TrajKey>,
    orphan_step_rewards: FpMap<Vec<RewardRef>>,
    orphan_traj_rewards: HashMap<TrajKey, Vec<RewardRef>>,
    /// Steps already batched or dropped: later events about them are ignored.
    done: FpSet,
    channels: BTreeMap<Name, Channel>,
    baselines: HashMap<(Name, Name), baseline::WindowBaseline>,
    policy_version: Option<u64>,
    /// Batched steps kept for feedback that comes after their batch.
    recent: late::Recent,
    /// Steps ready and queued, not yet in a committed batch.
    queued: FpSet,
    /// Reactions (and when they came) to queued steps: they train as late samples once the
    /// step's batch is committed.
    queued_feedback: FpMap<Vec<(RewardRef, i64)>>,
}

impl Pool {
    pub fn new(cfg: FileConfig, producer: impl Into<String>) -> Self {
        Self {
            cfg,
            producer: producer.into(),
            names: HashSet::new(),
            trajs: HashMap::new(),
            step_home: FpMap::default(),
            orphan_step_rewards: FpMap::default(),
            orphan_traj_rewards: HashMap::new(),
            done: FpSet::default(),
            channels: BTreeMap::new(),
            baselines: HashMap::new(),
            policy_version: None,
            recent: late::Recent::default(),
            queued: FpSet::default(),
            queued_feedback: FpMap::default(),
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

    /// The shared copy of a name with few distinct values (tenant, channel, reward source).
    fn intern(&mut self, name: &str) -> Name {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Name = Arc::from(name);
        self.names.insert(n.clone());
        n
    }

    fn channel(&mut self, name: &str) -> &mut Channel {
        if !self.channels.contains_key(name) {
            let name = self.intern(name);
            self.channels.insert(name, Channel::default());
        }
        self.channels.get_mut(name).expect("inserted above")
    }

    fn drop_step(&mut self, channel: &str, step: Fp, reason: &str) {
        self.queued.remove(&step);
        self.queued_feedback.remove(&step);
        if self.done.insert(step) {
            let dropped = &mut self.channel(channel).stats.dropped;
            match dropped.get_mut(reason) {
                Some(n) => *n += 1,
                None => {
                    dropped.insert(reason.to_string(), 1);
                }
            }
        }
    }

    fn traj_key(&mut self, tenant: &str, uid: &str) -> TrajKey {
        (self.intern(tenant), Arc::from(uid))
    }

    /// The trajectory of `key`, created (and counted) on its first event.
    fn traj_entry(&mut self, key: TrajKey, channel: &str, prompt_uid: &str, at: i64) -> &mut Traj {
        if !self.trajs.contains_key(&key) {
            let channel = self.intern(channel);
            self.channel(&channel).stats.trajectories += 1;
            let rewards = self.orphan_traj_rewards.remove(&key).unwrap_or_default();
            self.trajs.insert(
                key.clone(),
                Box::new(Traj {
                    channel,
                    prompt_uid: Arc::from(prompt_uid),
                    steps: Vec::new(),
                    rewards,
                    completed: None,
                    expected_last: None,
                    last_event_ms: at,
                    implicit: false,
                }),
            );
        }
        let t = self.trajs.get_mut(&key).expect("inserted above");
        t.last_event_ms = t.last_event_ms.max(at);
        t
    }

    pub fn add_step(&mut self, step: impl Into<StepIn>) {
        let step: StepIn = step.into();
        let fp = Fp::of(&step.event_id);
        if self.done.contains(&fp) || self.step_home.contains_key(&fp) || self.queued.contains(&fp)
        {
            return;
        }
        self.channel(&step.channel).stats.steps += 1;
        let key = self.traj_key(&step.tenant, &step.trajectory_uid);
        if step.response_ids.is_empty() || step.token_source == TokenSource::Untokenized {
            // Nothing a trainer can use; its trajectory goes on without it.
            self.drop_step(&step.channel, fp, "untokenized");
            self.traj_entry(key, &step.channel, &step.prompt_uid, step.event_time);
            return;
        }
        if step.background && !self.cfg.channel(&step.channel).train_background {
            // No user asked for it and no one reacts to it; its trajectory goes on without it.
            self.drop_step(&step.channel, fp, "background");
            self.traj_entry(key, &step.channel, &step.prompt_uid, step.event_time);
            return;
        }
        let rewards = self.orphan_step_rewards.remove(&fp).unwrap_or_default();
        self.step_home.insert(fp, key.clone());
        let entry = StepEntry {
            id: step.event_id.into_boxed_str(),
            fp,
            step_index: step.step_index,
            choice_index: step.choice_index,
            token_source: step.token_source,
            prompt_ids: step.prompt_ids.into_boxed_slice(),
            response_ids: step.response_ids.into_boxed_slice(),
            logprobs: step.response_logprobs.map(Vec::into_boxed_slice),
            policy_version: step.policy_version,
            at: step.event_time,
            rewards,
        };
        let t = self.traj_entry(key, &step.channel, &step.prompt_uid, step.event_time);
        t.implicit |= step.implicit_trajectory;
        let order = (entry.step_index, entry.choice_index);
        let at = t
            .steps
            .partition_point(|s| (s.step_index, s.choice_index) < order);
        if t.steps
            .get(at)
            .is_some_and(|s| (s.step_index, s.choice_index) == order)
        {
            t.steps[at] = entry;
        } else {
            t.steps.insert(at, entry);
        }
        if step.is_last && t.completed.is_none() {
            t.completed = Some((step.event_time, false));
            t.expected_last = Some(step.step_index);
        }
    }

    pub fn add_completion(&mut self, done: &TrajectoryCompleted) {
        let prompt = done.prompt_uid.as_deref().unwrap_or_default();
        let key = self.traj_key(&done.tenant, &done.trajectory_uid);
        let t = self.traj_entry(key, &done.channel, prompt, done.envelope.event_time);
        if t.prompt_uid.is_empty() {
            t.prompt_uid = Arc::from(prompt);
        }
        if t.completed.is_none() {
            t.completed = Some((done.envelope.event_time, false));
        }
        if done.last_step_index.is_some() {
            t.expected_last = done.last_step_index;
        }
    }

    pub fn add_reward(&mut self, r: &RewardAssigned) {
        if !r.value.is_finite() {
            return;
        }
        let reward = RewardRef {
            id: r.envelope.event_id.as_str().into(),
            source: self.intern(&r.source),
            weight: self.cfg.rewards.weight(&r.source),
            value: r.value,
        };
        match (r.scope, &r.step_id) {
            (RewardScope::Step, Some(step_id)) => {
                let fp = Fp::of(step_id);
                if self.done.contains(&fp) {
                    self.late_reward(fp, r, reward);
                    return;
                }
                let entry = self.step_home.get(&fp).and_then(|key| {
                    self.trajs
                        .get_mut(key)?
                        .steps
                        .iter_mut()
                        .find(|s| *s.id == **step_id)
                });
                match entry {
                    Some(e) => push_unique(&mut e.rewards, reward),
                    None if self.queued.contains(&fp) => self
                        .queued_feedback
                        .entry(fp)
                        .or_default()
                        .push((reward, r.envelope.event_time)),
                    None => push_unique(self.orphan_step_rewards.entry(fp).or_default(), reward),
                }
            }
            _ => {
                let key = self.traj_key(&r.tenant, &r.trajectory_uid);
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
        let channel = self.intern(&batch.channel);
        for s in &batch.steps {
            let fp = Fp::of(&s.step_id);
            self.done.insert(fp);
            self.queued.remove(&fp);
            self.remember_batched(&channel, s, batch.envelope.event_time);
            if let Some(key) = self.step_home.remove(&fp)
                && let Some(t) = self.trajs.get_mut(&key)
            {
                t.steps.retain(|e| *e.id != *s.step_id);
            }
            if batch.mode == GroupMode::Window {
                let cfg = self.cfg.channel(&batch.channel);
                let (decay, normalize) = (cfg.baseline_decay, cfg.normalize);
                let tenant = self.intern(&s.tenant);
                let weights = &self.cfg.rewards;
                let baseline = self.baselines.entry((tenant, channel.clone())).or_default();
                // Batches from before per-source rewards were recorded: the combined one.
                let combined = [("", s.reward)];
                let rewards: Vec<(&str, f64)> = if s.rewards.is_empty() {
                    combined.to_vec()
                } else {
                    s.rewards.iter().map(|(k, v)| (k.as_str(), *v)).collect()
                };
                baseline.advantage(rewards, weights, decay, normalize);
            }
        }
        let late = batch.steps.iter().filter(|s| s.late).count() as u64;
        let stats = &mut self.channel(&channel).stats;
        stats.consumed_steps += batch.steps.len() as u64 - late;
        stats.late_feedback.trained += late;
        stats.batches += 1;
        // Feedback that came while these steps waited in the queue trains as late samples.
        for s in batch.steps.iter().filter(|s| !s.late) {
            if let Some(rewards) = self.queued_feedback.remove(&Fp::of(&s.step_id)) {
                for (reward, at) in rewards {
                    self.late_sample(Fp::of(&s.step_id), reward, at);
                }
            }
        }
    }

    /// Counters per channel, with the queue, open-trajectory and waiting gauges filled in at
    /// `now_ms`.
    pub fn stats(&self, now_ms: i64) -> BTreeMap<String, ChannelStats> {
        let mut out: BTreeMap<String, ChannelStats> = self
            .channels
            .iter()
            .map(|(name, c)| {
                let mut s = c.stats.clone();
                s.ready_groups = c.queue.len() as u64;
                s.queued_steps = c.queue.iter().map(|u| u.steps() as u64).sum();
                s.forming_groups = c.forming.len() as u64;
                (name.to_string(), s)
            })
            .collect();
        for t in self.trajs.values() {
            out.entry(t.channel.to_string())
                .or_default()
                .open_trajectories += 1;
        }
        for (channel, waiting) in self.waiting(now_ms) {
            out.entry(channel).or_default().waiting = waiting;
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

fn push_unique(list: &mut Vec<RewardRef>, reward: RewardRef) {
    if !list.iter().any(|r| r.id == reward.id) {
        list.push(reward);
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
