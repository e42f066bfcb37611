//! "Why isn't it learning?", the DataPool's part: where a step is and what it waits for, and how
//! many held steps wait for what.

use serde::Serialize;

use super::input::Fp;
use super::ready::{StepNeed, has_source};
use super::{Pool, StepEntry, Traj, secs_ms};

/// Held steps by what they wait for (a step waiting for two things counts under the first).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Waiting {
    /// Steps that train on their own, waiting for the user's reaction (or the reaction wait).
    pub reaction: u64,
    /// Steps waiting for required rewards (`rewards.required`).
    pub rewards: u64,
    /// Steps whose trajectory has not completed yet (explicit trajectories).
    pub completion: u64,
}

/// One reward a step has.
#[derive(Debug, Clone, Serialize)]
pub struct RewardSeen {
    pub source: String,
    pub value: f64,
    /// `step` or `trajectory`.
    pub scope: &'static str,
}

/// What the DataPool knows of one step (`clawline.datapool.explain`).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub step_id: String,
    /// `waiting` (held, not ready), `queued` (ready, waiting for a batch), `done` (batched or
    /// dropped; the BATCHES stream says which) or `unknown` (not seen).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectory_uid: Option<String>,
    /// `step` (trains on its own) or `trajectory` (with its whole trajectory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<&'static str>,
    /// What it still waits for, in plain words.
    pub waits_for: Vec<String>,
    pub rewards: Vec<RewardSeen>,
}

fn at(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Pool {
    /// What a held step of `t` waits for at `now_ms`, in plain words (empty: ready at next tick).
    fn waits(&self, t: &Traj, s: &StepEntry, now_ms: i64) -> (Vec<String>, Option<usize>) {
        let mut out = Vec::new();
        let missing: Vec<&String> = self
            .cfg
            .rewards
            .required
            .iter()
            .filter(|p| !has_source(s, &t.rewards, p))
            .collect();
        let missing_line = || {
            let names: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
            format!(
                "reward {} (required by rewards.required; the reward scorer gives it)",
                names.join(", ")
            )
        };
        if self.per_step(t) {
            match self.step_need(t, s, now_ms) {
                StepNeed::Ready => {}
                StepNeed::Rewards => return (vec![missing_line()], Some(1)),
                StepNeed::Reaction(until) => {
                    out.push(format!(
                        "the user's reaction (explicit feedback, or their next turn read as implicit feedback) until {}; then it trains without one",
                        at(until)
                    ));
                    return (out, Some(0));
                }
            }
            return (out, None);
        }
        let mut kind = None;
        if t.completed.is_none() {
            let idle = self.cfg.completion.idle_timeout_secs;
            out.push(format!(
                "trajectory completion (complete_trajectory, a step marked last, or no event until {} = {idle} s idle)",
                at(t.last_event_ms.saturating_add(secs_ms(idle)))
            ));
            kind = Some(2);
        }
        if !missing.is_empty() {
            out.push(missing_line());
            kind = kind.or(Some(1));
        }
        if let Some(last) = t.expected_last
            && !t.steps.iter().any(|e| e.step_index >= last)
        {
            out.push(format!(
                "step {last}, which the completion named as the last"
            ));
        }
        (out, kind)
    }

    /// Held steps by what they wait for, per channel (filled into `stats`).
    pub(super) fn waiting(&self, now_ms: i64) -> Vec<(String, Waiting)> {
        let mut out: Vec<(String, Waiting)> = Vec::new();
        for t in self.trajs.values() {
            for s in &t.steps {
                let (_, kind) = self.waits(t, s, now_ms);
                let Some(kind) = kind else { continue };
                let w = match out.iter_mut().find(|(c, _)| **c == *t.channel) {
                    Some((_, w)) => w,
                    None => {
                        out.push((t.channel.to_string(), Waiting::default()));
                        &mut out.last_mut().expect("pushed").1
                    }
                };
                match kind {
                    0 => w.reaction += 1,
                    1 => w.rewards += 1,
                    _ => w.completion += 1,
                }
            }
        }
        out
    }

    /// Where `step_id` is in the DataPool at `now_ms`.
    pub fn explain(&self, step_id: &str, now_ms: i64) -> Explanation {
        let fp = Fp::of(step_id);
        let mut e = Explanation {
            step_id: step_id.to_string(),
            state: "unknown",
            channel: None,
            trajectory_uid: None,
            readiness: None,
            waits_for: Vec::new(),
            rewards: Vec::new(),
        };
        if let Some(key) = self.step_home.get(&fp)
            && let Some(t) = self.trajs.get(key)
            && let Some(s) = t.steps.iter().find(|s| s.fp == fp)
        {
            e.state = "waiting";
            e.channel = Some(t.channel.to_string());
            e.trajectory_uid = Some(key.1.to_string());
            e.readiness = Some(if self.per_step(t) {
                "step"
            } else {
                "trajectory"
            });
            let scoped = |scope| {
                move |r: &super::RewardRef| RewardSeen {
                    source: r.source.to_string(),
                    value: r.value,
                    scope,
                }
            };
            e.rewards = s.rewards.iter().map(scoped("step")).collect();
            e.rewards.extend(t.rewards.iter().map(scoped("trajectory")));
            (e.waits_for, _) = self.waits(t, s, now_ms);
            if e.waits_for.is_empty() {
                e.waits_for
                    .push("nothing: it is ready and queues at the next tick".into());
            }
            return e;
        }
        if self.queued.contains(&fp) {
            e.state = "queued";
            for (name, ch) in &self.channels {
                let cfg = self.cfg.channel(name);
                let mut ahead = 0;
                for unit in &ch.queue {
                    if let Some(t) = unit
                        .trajs
                        .iter()
                        .find(|t| t.steps.iter().any(|s| s.entry.fp == fp))
                    {
                        e.channel = Some(name.to_string());
                        e.trajectory_uid = Some(t.uid.to_string());
                        if let Some(s) = t.steps.iter().find(|s| s.entry.fp == fp) {
                            e.rewards = s
                                .rewards
                                .iter()
                                .map(|(source, value)| RewardSeen {
                                    source: source.to_string(),
                                    value: *value,
                                    scope: "step",
                                })
                                .collect();
                        }
                        let queued: usize = ch.queue.iter().map(super::Unit::steps).sum();
                        let flush = ch.queue.front().map_or(0, |u| u.ready_ms)
                            + secs_ms(cfg.flush_after_secs);
                        e.waits_for.push(format!(
                            "a batch: {ahead} step(s) queued ahead of it in channel {name}, {queued} queued in all, batch_size {}; a partial batch goes out at {}",
                            cfg.batch_size,
                            at(flush)
                        ));
                        return e;
                    }
                    ahead += unit.steps();
                }
                for ((_, prompt), forming) in &ch.forming {
                    if forming
                        .trajs
                        .iter()
                        .any(|t| t.steps.iter().any(|s| s.entry.fp == fp))
                    {
                        e.channel = Some(name.to_string());
                        e.waits_for.push(format!(
                            "its prompt group {prompt}: {} of {} trajectories complete; the group is dropped if still short at {}",
                            forming.trajs.len(),
                            cfg.group_size,
                            at(forming.first_ms + secs_ms(cfg.group_timeout_secs))
                        ));
                        return e;
                    }
                }
            }
            return e;
        }
        if self.done.contains(&fp) {
            e.state = "done";
            if self.kept_for_late(fp) {
                e.waits_for
                    .push("nothing: it trained; feedback on it now trains as a late sample".into());
            }
            return e;
        }
        if let Some(rewards) = self.orphan_step_rewards.get(&fp) {
            e.rewards = rewards
                .iter()
                .map(|r| RewardSeen {
                    source: r.source.to_string(),
                    value: r.value,
                    scope: "step",
                })
                .collect();
            e.waits_for
                .push("the step itself: rewards for it arrived, its StepRecorded did not".into());
        }
        e
    }
}
