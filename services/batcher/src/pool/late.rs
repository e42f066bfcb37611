//! Feedback that arrives after its step trained: a user who rates an answer an hour later, or a
//! thumbs-up that comes while the step waits in a queued batch.
//!
//! Batched steps are kept (their tokens and the reward ids they trained with) for
//! `late_feedback.window_secs`, at most `late_feedback.max_steps` of them. A reaction (a
//! `feedback:*` reward) on such a step that it did not train with becomes, under `mode = "train"`,
//! a sample of its own in a window-mode channel: the same tokens, carrying only that feedback
//! (`BatchStep::late`). Otherwise — `mode = "report"`, a step no longer kept, a prompt-mode channel
//! — it is counted as too late; the feedback itself stays recorded in REWARDS either way.
//!
//! The kept steps are rebuilt from BATCHES at start (a batch names the reward ids each step trained
//! with, late samples included), so a restarted batcher neither trains a late reaction twice nor
//! forgets one it had not trained yet.

use std::collections::VecDeque;

use clawline_schemas::{BatchStep, GroupMode, RewardAssigned, TokenSource};
use serde::Serialize;

use super::input::{Fp, FpMap};
use super::ready::REACTION;
use super::{Name, Pool, ReadyStep, ReadyTraj, RewardRef, StepEntry, secs_ms};
use crate::config::{LateMode, matches};

/// Late feedback of one channel.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LateStats {
    /// Late samples that went into a batch.
    pub trained: u64,
    /// Late reactions that trained nothing (`mode = "report"`, or the step was no longer kept).
    pub too_late: u64,
}

/// A batched step, kept for late feedback.
#[derive(Debug)]
struct Kept {
    channel: Name,
    tenant: Name,
    uid: Name,
    prompt_uid: Name,
    step_id: Box<str>,
    step_index: u32,
    token_source: TokenSource,
    prompt_ids: Box<[u32]>,
    response_ids: Box<[u32]>,
    logprobs: Option<Box<[f32]>>,
    policy_version: Option<u64>,
    /// Reward ids the step trained with so far.
    used: Vec<Box<str>>,
}

#[derive(Debug, Default)]
pub(super) struct Recent {
    kept: FpMap<Kept>,
    /// Insertion order with the batch time, for eviction.
    order: VecDeque<(Fp, i64)>,
}

impl Pool {
    /// A batch step (read back or just committed) is kept for late feedback.
    pub(super) fn remember_batched(&mut self, channel: &Name, s: &BatchStep, at: i64) {
        let fp = Fp::of(&s.step_id);
        let cfg = &self.cfg.late_feedback;
        let (window, max) = (secs_ms(cfg.window_secs), cfg.max_steps);
        if let Some(kept) = self.recent.kept.get_mut(&fp) {
            kept.used
                .extend(s.reward_ids.iter().map(|id| id.as_str().into()));
        } else if max > 0 {
            let tenant = self.intern(&s.tenant);
            self.recent.kept.insert(
                fp,
                Kept {
                    channel: channel.clone(),
                    tenant,
                    uid: s.trajectory_uid.as_str().into(),
                    prompt_uid: s.prompt_uid.as_str().into(),
                    step_id: s.step_id.as_str().into(),
                    step_index: s.step_index,
                    token_source: s.token_source,
                    prompt_ids: s.prompt_ids.clone().into_boxed_slice(),
                    response_ids: s.response_ids.clone().into_boxed_slice(),
                    logprobs: s.old_logprobs.clone().map(Vec::into_boxed_slice),
                    policy_version: s.policy_version,
                    used: s.reward_ids.iter().map(|id| id.as_str().into()).collect(),
                },
            );
            self.recent.order.push_back((fp, at));
        }
        while let Some(&(old, then)) = self.recent.order.front() {
            if self.recent.order.len() <= max && at - then < window {
                break;
            }
            self.recent.order.pop_front();
            self.recent.kept.remove(&old);
        }
    }

    /// Whether `fp` is a batched step still kept for late feedback.
    pub(super) fn kept_for_late(&self, fp: Fp) -> bool {
        self.recent.kept.contains_key(&fp)
    }

    /// A reward for a step that already trained (or was dropped).
    pub(super) fn late_reward(&mut self, fp: Fp, r: &RewardAssigned, reward: RewardRef) {
        if !matches(REACTION, &r.source) {
            // Scores that come late (a rule added later, a re-scored step) change nothing.
            return;
        }
        match self.recent.kept.get(&fp) {
            Some(kept) if kept.used.iter().any(|id| **id == *reward.id) => {}
            Some(_) => self.late_sample(fp, reward, r.envelope.event_time),
            None => {
                let channel = r.channel.clone().unwrap_or_default();
                tracing::info!(step_id = ?r.step_id, source = %r.source, "feedback came after its step had trained and is no longer kept: too late");
                self.channel(&channel).stats.late_feedback.too_late += 1;
            }
        }
    }

    /// A late reaction on a kept step trains as its own sample (or is counted as too late).
    pub(super) fn late_sample(&mut self, fp: Fp, reward: RewardRef, now_ms: i64) {
        if !matches(REACTION, &reward.source) {
            return;
        }
        let Some(kept) = self.recent.kept.get_mut(&fp) else {
            return;
        };
        if kept.used.iter().any(|id| **id == *reward.id) {
            return;
        }
        let channel = kept.channel.clone();
        let trains = self.cfg.late_feedback.mode == LateMode::Train
            && self.cfg.channel(&channel).mode == GroupMode::Window;
        if !trains {
            self.channel(&channel).stats.late_feedback.too_late += 1;
            return;
        }
        kept.used.push(reward.id.clone());
        let entry = StepEntry {
            id: kept.step_id.clone(),
            fp,
            step_index: kept.step_index,
            choice_index: 0,
            token_source: kept.token_source,
            prompt_ids: kept.prompt_ids.clone(),
            response_ids: kept.response_ids.clone(),
            logprobs: kept.logprobs.clone(),
            policy_version: kept.policy_version,
            at: now_ms,
            rewards: vec![reward],
        };
        let (tenant, uid, prompt_uid) = (
            kept.tenant.clone(),
            kept.uid.clone(),
            kept.prompt_uid.clone(),
        );
        // However many versions ago it was answered, a late sample keeps its feedback: its
        // importance ratio is capped instead of the sample being dropped as stale.
        let staleness = match (self.policy_version, entry.policy_version) {
            (Some(now), Some(then)) => now.saturating_sub(then),
            _ => 0,
        };
        let importance_cap =
            (staleness > self.cfg.staleness.max_lag).then_some(self.cfg.staleness.importance_cap);
        let (value, rewards) = Self::combine(&entry, &[]);
        let ready = ReadyTraj {
            tenant: tenant.clone(),
            uid: uid.clone(),
            prompt_uid: prompt_uid.clone(),
            truncated: false,
            order: (now_ms, uid),
            steps: vec![ReadyStep {
                entry,
                reward: value,
                rewards,
                staleness,
                importance_cap,
                late: true,
            }],
        };
        // A window-mode channel (checked above): it queues as a unit of its own.
        self.enqueue(&channel, tenant, prompt_uid, ready, now_ms);
    }
}
