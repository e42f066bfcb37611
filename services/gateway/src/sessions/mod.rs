//! Trajectories the gateway knows, and sessions for unmodified clients.
//!
//! A trajectory is known by uid (from `/init_trajectory`, a header, or created for a new
//! conversation) and carries its tenant, channel and next step index. For clients that send no ids,
//! a call whose messages start with an earlier call's messages plus that call's answer continues the
//! earlier call's trajectory: each answered call leaves a fingerprint of "messages + answer", and a new
//! call looks up the fingerprint of its messages up to its last assistant message.
//!
//! Memory is bounded: a sweeper forgets trajectories idle longer than the TTL and, past
//! `max_trajectories`, the least recently used ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod fingerprint;

use fingerprint::{Fingerprint, fingerprint};

/// How agents open a history they compacted: the first user message starts with one of these.
/// Claude Code (`/compact` and auto-compact) replaces the conversation with its summary so;
/// OpenClaw puts its summary first and keeps the latest turns as they were.
pub const COMPACTION_MARKERS: &[&str] = &[
    "This session is being continued from a previous conversation that ran out of context.",
    "The conversation history before this point was compacted into the following summary:",
];

/// Whether `messages` are a compacted history: the first user message opens with a marker.
pub fn compacted(messages: &[serde_json::Value]) -> bool {
    messages
        .iter()
        .find(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("user"))
        .map(|m| crate::chat::content_text(m.get("content")))
        .is_some_and(|text| {
            COMPACTION_MARKERS
                .iter()
                .any(|marker| text.trim_start().starts_with(marker))
        })
}

/// One known trajectory.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub uid: String,
    pub tenant: String,
    pub channel: String,
    pub prompt_uid: String,
    pub metadata: Option<serde_json::Value>,
    /// Created for a client that sends no ids (completed by the gateway when idle).
    pub implicit: bool,
    pub completed: bool,
    /// Steps recorded so far; the next step gets this index.
    pub next_step: u32,
    /// The step the next call continues (index, id of its first choice): the latest recorded
    /// user-facing step; for a call [`Sessions::continuing`] matched, the step whose answer its
    /// history ends with (which may be a background turn's, when the agent kept it).
    pub last_step: Option<(u32, String)>,
    /// For a uid the client chose: the end of the block of step indexes this gateway leased for
    /// it (KV `trajectories`); a step index at or past it waits for the next lease. `None` for
    /// uids the gateway made, which no earlier run or other gateway can have used.
    pub lease_end: Option<u32>,
    last_active: Instant,
    /// Where the session stands: "messages + answer" of its last call, and the same without a
    /// trailing context message the agent may not keep in its history; after background turns
    /// also where it stood before them (agents drop a heartbeat that had nothing to say).
    fingerprints: Vec<Fingerprint>,
    /// The latest user-facing answer alone, for a compacted history that keeps it (OpenClaw).
    last_answer: Option<Fingerprint>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub session_idle: Duration,
    pub trajectory_ttl: Duration,
    pub max_trajectories: usize,
}

pub struct Sessions {
    limits: Limits,
    /// What marks a background turn's message ([`crate::background`]): such messages match
    /// whatever the agent keeps of them in its history.
    wake_markers: Vec<String>,
    inner: Mutex<Inner>,
}

/// Where a fingerprint leads: the trajectory, and the step whose answer ends that history.
type Point = (String, (u32, String));

#[derive(Default)]
struct Inner {
    /// Boxed: a slot of the table (which keeps up to half its slots spare) is a pointer, not a
    /// whole trajectory.
    by_uid: HashMap<String, Box<Trajectory>>,
    by_fingerprint: HashMap<Fingerprint, Point>,
    /// The trajectory of each recorded step (its first choice's id), for feedback that names
    /// only the step.
    by_step: HashMap<String, String>,
}

/// Forgets what points to trajectory `t`: its fingerprints and its steps.
fn forget(
    by_fingerprint: &mut HashMap<Fingerprint, Point>,
    by_step: &mut HashMap<String, String>,
    t: &Trajectory,
) {
    for fp in &t.fingerprints {
        by_fingerprint.remove(fp);
    }
    for index in 0..t.next_step {
        by_step.remove(&clawline_schemas::StepRecorded::id_for(
            &t.tenant, &t.uid, index, 0,
        ));
    }
}

/// Why a trajectory cannot be used by this caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// Unknown, or owned by another tenant (the two are not told apart).
    NotFound,
}

/// Who named a trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The gateway, for a client that sends no ids (completed by the gateway when idle).
    Conversation,
    /// The gateway, asked by `/init_trajectory`.
    Init,
    /// The client (`x-clawline-trajectory`): its step indexes come from leases
    /// ([`Sessions::take_leased_step`], [`Sessions::grant`]).
    Client,
}

/// Why [`Sessions::take_leased_step`] gave no step index.
#[derive(Debug, PartialEq, Eq)]
pub enum Untaken {
    Denied(Denied),
    /// The leased block is used up (or none was leased yet): lease indexes from this one on.
    NeedsLease(u32),
}

impl Sessions {
    pub fn new(limits: Limits, wake_markers: Vec<String>) -> Self {
        Self {
            limits,
            wake_markers,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a new trajectory, or returns the existing one of the same tenant; `true` when it
    /// was created by this call.
    pub fn create(
        &self,
        uid: &str,
        tenant: &str,
        channel: &str,
        prompt_uid: &str,
        metadata: Option<serde_json::Value>,
        origin: Origin,
    ) -> Result<(Trajectory, bool), Denied> {
        let mut inner = self.lock();
        if let Some(existing) = inner.by_uid.get(uid) {
            return if existing.tenant == tenant {
                Ok((Trajectory::clone(existing), false))
            } else {
                Err(Denied::NotFound)
            };
        }
        let trajectory = Trajectory {
            uid: uid.to_string(),
            tenant: tenant.to_string(),
            channel: channel.to_string(),
            prompt_uid: prompt_uid.to_string(),
            metadata,
            implicit: origin == Origin::Conversation,
            completed: false,
            next_step: 0,
            last_step: None,
            lease_end: (origin == Origin::Client).then_some(0),
            last_active: Instant::now(),
            fingerprints: Vec::new(),
            last_answer: None,
        };
        inner
            .by_uid
            .insert(uid.to_string(), Box::new(trajectory.clone()));
        Ok((trajectory, true))
    }

    /// The trajectory, if it exists and belongs to `tenant`.
    pub fn get(&self, uid: &str, tenant: &str) -> Result<Trajectory, Denied> {
        let inner = self.lock();
        match inner.by_uid.get(uid) {
            Some(t) if t.tenant == tenant => Ok(Trajectory::clone(t)),
            _ => Err(Denied::NotFound),
        }
    }

    /// Applies `change` to a trajectory of `tenant` and returns the result.
    pub fn update(
        &self,
        uid: &str,
        tenant: &str,
        change: impl FnOnce(&mut Trajectory),
    ) -> Result<Trajectory, Denied> {
        let mut inner = self.lock();
        match inner.by_uid.get_mut(uid) {
            Some(t) if t.tenant == tenant => {
                change(t);
                t.last_active = Instant::now();
                Ok(Trajectory::clone(t))
            }
            _ => Err(Denied::NotFound),
        }
    }

    /// Takes the next step index of a trajectory (counts per trajectory, from 0).
    pub fn next_step(&self, uid: &str, tenant: &str) -> Result<Trajectory, Denied> {
        let mut taken = None;
        self.update(uid, tenant, |t| {
            taken = Some(t.next_step);
            t.next_step += 1;
        })
        .map(|mut t| {
            t.next_step = taken.unwrap_or(t.next_step);
            t
        })
    }

    /// [`Self::next_step`] for trajectories with leased indexes: takes one only inside the leased
    /// block.
    pub fn take_leased_step(&self, uid: &str, tenant: &str) -> Result<Trajectory, Untaken> {
        let mut inner = self.lock();
        let t = match inner.by_uid.get_mut(uid) {
            Some(t) if t.tenant == tenant => t,
            _ => return Err(Untaken::Denied(Denied::NotFound)),
        };
        if t.lease_end.is_some_and(|end| t.next_step >= end) {
            return Err(Untaken::NeedsLease(t.next_step));
        }
        t.last_active = Instant::now();
        let out = Trajectory::clone(t);
        t.next_step += 1;
        Ok(out)
    }

    /// Records a leased block `start..end` of step indexes: later steps start at `start` unless
    /// this gateway is already past it. A block older than the one in use changes nothing.
    pub fn grant(&self, uid: &str, tenant: &str, block: std::ops::Range<u32>) {
        let _ = self.update(uid, tenant, |t| {
            if t.lease_end.is_some_and(|end| block.end > end) {
                t.next_step = t.next_step.max(block.start);
                t.lease_end = Some(block.end);
            }
        });
    }

    /// Notes that step `index` (first choice `step_id`) was recorded: feedback may name it alone
    /// from now on, and, for a step the user saw (`seen`), the user's next message reacts to it
    /// unless a later one was already recorded.
    pub fn step_recorded(&self, uid: &str, tenant: &str, index: u32, step_id: &str, seen: bool) {
        let known = self.update(uid, tenant, |t| {
            if seen && t.last_step.as_ref().is_none_or(|(last, _)| *last < index) {
                t.last_step = Some((index, step_id.to_string()));
            }
        });
        if known.is_ok() {
            self.lock()
                .by_step
                .insert(step_id.to_string(), uid.to_string());
        }
    }

    /// The trajectory a recorded step of `tenant` belongs to, by the step's id.
    pub fn trajectory_of_step(&self, step_id: &str, tenant: &str) -> Result<Trajectory, Denied> {
        let uid = self.lock().by_step.get(step_id).cloned();
        self.get(&uid.ok_or(Denied::NotFound)?, tenant)
    }

    /// The implicit session that `messages` continue, if any, with `last_step` set to the step
    /// whose answer the history ends with.
    pub fn continuing(&self, tenant: &str, messages: &[serde_json::Value]) -> Option<Trajectory> {
        let last_assistant = messages
            .iter()
            .rposition(|m| m.get("role").and_then(|r| r.as_str()) == Some("assistant"))?;
        let key = fingerprint(
            tenant,
            &messages[..=last_assistant],
            None,
            &self.wake_markers,
        );
        let inner = self.lock();
        let (uid, step) = inner.by_fingerprint.get(&key)?;
        let t = inner.by_uid.get(uid)?;
        (!t.completed && t.tenant == tenant && t.last_active.elapsed() < self.limits.session_idle)
            .then(|| Trajectory {
                last_step: Some(step.clone()),
                ..Trajectory::clone(t)
            })
    }

    /// The conversation a call whose history the agent compacted continues. A compacted history
    /// (the earlier turns replaced by a summary) matches no fingerprint. With the agent's own
    /// session id (Claude Code), the session's most recently active open conversation goes on;
    /// only such a call joins by session id: Claude Code's subagents share their parent's id and
    /// open with their own task, not a summary. Without one (OpenClaw sends none to a custom
    /// provider), the open conversation whose latest answer the compacted history still ends
    /// its kept turns with.
    pub fn resumed_after_compaction(
        &self,
        tenant: &str,
        agent_session: Option<&str>,
        messages: &[serde_json::Value],
    ) -> Option<Trajectory> {
        if !compacted(messages) {
            return None;
        }
        let kept_answer = match agent_session {
            Some(_) => None,
            None => {
                let answer = messages.iter().rev().find(|m| {
                    m.get("role").and_then(serde_json::Value::as_str) == Some("assistant")
                })?;
                Some(fingerprint(tenant, &[], Some(answer), &self.wake_markers))
            }
        };
        let inner = self.lock();
        inner
            .by_uid
            .values()
            .filter(|t| {
                t.implicit
                    && !t.completed
                    && t.tenant == tenant
                    && t.last_active.elapsed() < self.limits.session_idle
                    && match (agent_session, kept_answer) {
                        (Some(session), _) => {
                            t.metadata
                                .as_ref()
                                .and_then(|m| m.get("agent_session"))
                                .and_then(serde_json::Value::as_str)
                                == Some(session)
                        }
                        (None, answer) => answer.is_some() && t.last_answer == answer,
                    }
            })
            .max_by_key(|t| t.last_active)
            .map(|t| Trajectory {
                // A summary alone replaced the answers: nothing in the call reacts to one of them.
                // Kept turns end with the latest answer, which the new message reacts to.
                last_step: kept_answer.and(t.last_step.clone()),
                ..Trajectory::clone(t)
            })
    }

    /// Remembers that `messages` plus `answer` (step `step`) is where this session stands now.
    /// When the call ended with more than one message after the last answer, the last of them may
    /// be context the agent adds to each call and never keeps in its history (OpenClaw's
    /// internal-context user message): the history without it is remembered too. A background
    /// turn adds to where the session stands instead of moving it: an agent may keep the turn in
    /// its history or drop it (OpenClaw keeps a heartbeat only when it had something to say).
    pub fn remember_turn(
        &self,
        uid: &str,
        tenant: &str,
        messages: &[serde_json::Value],
        answer: &serde_json::Value,
        step: (u32, String),
        background: bool,
    ) {
        let wake = &self.wake_markers;
        let mut keys = vec![fingerprint(tenant, messages, Some(answer), wake)];
        let new_since_answer = messages
            .iter()
            .rev()
            .take_while(|m| m.get("role").and_then(|r| r.as_str()) != Some("assistant"))
            .count();
        if new_since_answer >= 2 {
            keys.push(fingerprint(
                tenant,
                &messages[..messages.len() - 1],
                Some(answer),
                wake,
            ));
        }
        let mut inner = self.lock();
        let Some(t) = inner.by_uid.get_mut(uid) else {
            return;
        };
        let old = if background {
            t.fingerprints.extend(keys.iter().copied());
            Vec::new()
        } else {
            t.last_answer = Some(fingerprint(tenant, &[], Some(answer), wake));
            std::mem::replace(&mut t.fingerprints, keys.clone())
        };
        for key in old {
            inner.by_fingerprint.remove(&key);
        }
        for key in keys {
            inner
                .by_fingerprint
                .insert(key, (uid.to_string(), step.clone()));
        }
    }

    /// Forgets what is idle too long or over the cap. Returns the implicit sessions that ended
    /// without completion, for the caller to complete with reason `idle_timeout`.
    pub fn sweep(&self) -> Vec<Trajectory> {
        let now = Instant::now();
        let mut ended = Vec::new();
        let mut inner = self.lock();
        let Inner {
            by_uid,
            by_fingerprint,
            by_step,
        } = &mut *inner;
        for t in by_uid.values_mut() {
            if t.implicit
                && !t.completed
                && now.duration_since(t.last_active) >= self.limits.session_idle
            {
                t.completed = true;
                for fp in std::mem::take(&mut t.fingerprints) {
                    by_fingerprint.remove(&fp);
                }
                ended.push(Trajectory::clone(t));
            }
        }
        by_uid.retain(|_, t| {
            let keep = now.duration_since(t.last_active) < self.limits.trajectory_ttl;
            if !keep {
                forget(by_fingerprint, by_step, t);
            }
            keep
        });
        if by_uid.len() > self.limits.max_trajectories {
            let mut ages: Vec<(Instant, String)> = by_uid
                .iter()
                .map(|(uid, t)| (t.last_active, uid.clone()))
                .collect();
            ages.sort();
            let excess = by_uid.len() - self.limits.max_trajectories;
            for (_, uid) in ages.into_iter().take(excess) {
                if let Some(t) = by_uid.remove(&uid) {
                    forget(by_fingerprint, by_step, &t);
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests;
