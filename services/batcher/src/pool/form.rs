//! Forming batches from the head of a channel's queue: window batches with running per-tenant,
//! per-source baselines, prompt batches of whole groups; split when the encoded batch is too big.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use clawline_schemas::{BatchFormed, BatchGroup, BatchStep, Envelope, GroupMode};

use super::baseline::WindowBaseline;
use super::ready::mean_std;
use super::{Channel, Pool, ReadyStep, ReadyTraj, secs_ms};

/// A batch formed but not yet committed, with its encoded form (what is published).
pub struct Proposed {
    pub batch: BatchFormed,
    pub payload: Bytes,
    units: usize,
    /// Steps taken from the unit after the whole ones (window mode splits a trajectory).
    partial_steps: usize,
}

impl Pool {
    /// The channels with something queued.
    pub fn channels_with_work(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| !c.queue.is_empty())
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// The batch the head of `channel`'s queue makes now, if it is due; not removed until `commit`.
    pub fn next_batch(&self, channel: &str, now_ms: i64) -> Option<Proposed> {
        let ch = self.channels.get(channel)?;
        let cfg = self.cfg.channel(channel);
        let oldest = ch.queue.front()?.ready_ms;
        let flush = now_ms - oldest >= secs_ms(cfg.flush_after_secs);
        let due = match cfg.mode {
            GroupMode::Window => {
                // Enough steps queued for a full batch? (Counts only as far as needed.)
                let mut queued = 0;
                for unit in &ch.queue {
                    queued += unit.steps();
                    if queued >= cfg.batch_size {
                        break;
                    }
                }
                queued >= cfg.batch_size
            }
            GroupMode::Prompt => ch.queue.len() >= cfg.batch_size,
        };
        if !due && !flush {
            return None;
        }
        // Too big for one message: take half as much until it fits (one group at least).
        let mut limit = cfg.batch_size;
        loop {
            let mut proposed = match cfg.mode {
                GroupMode::Window => {
                    self.window_batch(channel, ch, limit, cfg.baseline_decay, cfg.normalize)
                }
                GroupMode::Prompt => self.prompt_batch(channel, ch, limit),
            };
            match clawline_schemas::encode(&proposed.batch) {
                Ok(bytes) if bytes.len() > self.cfg.max_batch_bytes && limit > 1 => limit /= 2,
                Ok(bytes) => {
                    proposed.payload = bytes.into();
                    return Some(proposed);
                }
                Err(e) => {
                    tracing::error!(channel, error = %e, "encoding a batch failed");
                    return None;
                }
            }
        }
    }

    fn window_batch(
        &self,
        channel: &str,
        ch: &Channel,
        size: usize,
        decay: f64,
        normalize: bool,
    ) -> Proposed {
        let channel_name = self.channels.get_key_value(channel).map(|(k, _)| k.clone());
        let mut baselines: BTreeMap<&str, WindowBaseline> = BTreeMap::new();
        let mut steps = Vec::with_capacity(size);
        let mut groups: Vec<BatchGroup> = Vec::new();
        let mut group_of: BTreeMap<&str, u32> = BTreeMap::new();
        let (mut units, mut partial) = (0, 0);
        'outer: for unit in &ch.queue {
            for (i, t) in unit.trajs.iter().enumerate() {
                for (j, s) in t.steps.iter().enumerate() {
                    if steps.len() == size {
                        partial = if i == 0 { j } else { 0 };
                        break 'outer;
                    }
                    let b = baselines.entry(&t.tenant).or_insert_with(|| {
                        channel_name
                            .as_ref()
                            .and_then(|c| self.baselines.get(&(t.tenant.clone(), c.clone())))
                            .cloned()
                            .unwrap_or_default()
                    });
                    let advantage = b.advantage(
                        s.rewards.iter().map(|(source, v)| (&**source, *v)),
                        &self.cfg.rewards,
                        decay,
                        normalize,
                    );
                    let g = *group_of.entry(&t.tenant).or_insert_with(|| {
                        groups.push(BatchGroup {
                            key: "window".into(),
                            tenant: t.tenant.to_string(),
                            baseline: advantage.baseline,
                            ..Default::default()
                        });
                        (groups.len() - 1) as u32
                    });
                    steps.push(batch_step(t, s, g, advantage.value));
                }
            }
            units += 1;
        }
        for g in &mut groups {
            let mine = || steps.iter().filter(|s| s.tenant == g.tenant);
            let rewards: Vec<f64> = mine().map(|s| s.reward).collect();
            let trajs: HashSet<&str> = mine().map(|s| s.trajectory_uid.as_str()).collect();
            g.steps = rewards.len() as u32;
            g.trajectories = trajs.len() as u32;
            (g.reward_mean, g.reward_std) = mean_std(&rewards);
        }
        Proposed {
            batch: self.batch(channel, GroupMode::Window, groups, steps),
            payload: Bytes::new(),
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
                key: unit.key.to_string(),
                tenant: unit.tenant.to_string(),
                trajectories: unit.trajs.len() as u32,
                steps: unit.steps() as u32,
                reward_mean: unit.mean,
                reward_std: unit.std,
                baseline: unit.mean,
            });
            for (t, advantage) in unit.trajs.iter().zip(&unit.advantages) {
                for s in &t.steps {
                    steps.push(batch_step(t, s, g, *advantage));
                }
            }
        }
        let units = groups.len();
        Proposed {
            batch: self.batch(channel, GroupMode::Prompt, groups, steps),
            payload: Bytes::new(),
            units,
            partial_steps: 0,
        }
    }

    fn batch(
        &self,
        channel: &str,
        mode: GroupMode,
        groups: Vec<BatchGroup>,
        steps: Vec<BatchStep>,
    ) -> BatchFormed {
        let keys: Vec<String> = steps.iter().map(BatchStep::sample_key).collect();
        BatchFormed {
            envelope: Envelope::new(
                BatchFormed::id_for(keys.iter().map(String::as_str)),
                &self.producer,
            ),
            channel: channel.to_string(),
            mode,
            policy_version: self.policy_version,
            groups,
            steps,
        }
    }

    /// The batch is stored (or will be: the caller keeps it until JetStream acks): remove its
    /// steps from the queue and count them consumed.
    pub fn commit(&mut self, proposed: &Proposed) {
        if let Some(ch) = self.channels.get_mut(proposed.batch.channel.as_str()) {
            ch.queue.drain(..proposed.units.min(ch.queue.len()));
            if proposed.partial_steps > 0
                && let Some(unit) = ch.queue.front_mut()
                && let Some(first) = unit.trajs.first_mut()
            {
                first
                    .steps
                    .drain(..proposed.partial_steps.min(first.steps.len()));
            }
        }
        self.replay_batch(&proposed.batch);
    }
}

fn batch_step(t: &ReadyTraj, s: &ReadyStep, group: u32, advantage: f64) -> BatchStep {
    BatchStep {
        step_id: s.entry.id.to_string(),
        tenant: t.tenant.to_string(),
        trajectory_uid: t.uid.to_string(),
        prompt_uid: t.prompt_uid.to_string(),
        step_index: s.entry.step_index,
        group,
        token_source: s.entry.token_source,
        prompt_ids: s.entry.prompt_ids.to_vec(),
        response_ids: s.entry.response_ids.to_vec(),
        old_logprobs: s.entry.logprobs.as_ref().map(|l| l.to_vec()),
        reward: s.reward,
        advantage,
        rewards: s
            .rewards
            .iter()
            .map(|(source, v)| (source.to_string(), *v))
            .collect(),
        reward_ids: s.entry.rewards.iter().map(|r| r.id.to_string()).collect(),
        policy_version: s.entry.policy_version,
        staleness: s.staleness,
        importance_cap: s.importance_cap,
        truncated: t.truncated,
        late: s.late,
    }
}
