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
    /// The latest recorded step (index, id of its first choice): what the next call continues.
    pub last_step: Option<(u32, String)>,
    /// For a uid the client chose: the end of the block of step indexes this gateway leased for
    /// it (KV `trajectories`); a step index at or past it waits for the next lease. `None` for
    /// uids the gateway made, which no earlier run or other gateway can have used.
    pub lease_end: Option<u32>,
    last_active: Instant,
    /// Where the session stands: "messages + answer" of its last call, and the same without a
    /// trailing context message the agent may not keep in its history.
    fingerprints: Vec<Fingerprint>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub session_idle: Duration,
    pub trajectory_ttl: Duration,
    pub max_trajectories: usize,
}

pub struct Sessions {
    limits: Limits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<String, Trajectory>,
    by_fingerprint: HashMap<Fingerprint, String>,
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
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
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
                Ok((existing.clone(), false))
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
        };
        inner.by_uid.insert(uid.to_string(), trajectory.clone());
        Ok((trajectory, true))
    }

    /// The trajectory, if it exists and belongs to `tenant`.
    pub fn get(&self, uid: &str, tenant: &str) -> Result<Trajectory, Denied> {
        let inner = self.lock();
        match inner.by_uid.get(uid) {
            Some(t) if t.tenant == tenant => Ok(t.clone()),
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
                Ok(t.clone())
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
        let out = t.clone();
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

    /// Notes that step `index` (first choice `step_id`) was recorded, unless a later one already was.
    pub fn step_recorded(&self, uid: &str, tenant: &str, index: u32, step_id: &str) {
        let _ = self.update(uid, tenant, |t| {
            if t.last_step.as_ref().is_none_or(|(last, _)| *last < index) {
                t.last_step = Some((index, step_id.to_string()));
            }
        });
    }

    /// The implicit session that `messages` continue, if any.
    pub fn continuing(&self, tenant: &str, messages: &[serde_json::Value]) -> Option<Trajectory> {
        let last_assistant = messages
            .iter()
            .rposition(|m| m.get("role").and_then(|r| r.as_str()) == Some("assistant"))?;
        let key = fingerprint(tenant, &messages[..=last_assistant], None);
        let inner = self.lock();
        let uid = inner.by_fingerprint.get(&key)?;
        let t = inner.by_uid.get(uid)?;
        (!t.completed && t.tenant == tenant && t.last_active.elapsed() < self.limits.session_idle)
            .then(|| t.clone())
    }

    /// Remembers that `messages` plus `answer` is where this session stands now. When the call
    /// ended with more than one message after the last answer, the last of them may be context the
    /// agent adds to each call and never keeps in its history (OpenClaw's internal-context user
    /// message): the history without it is remembered too.
    pub fn remember_turn(
        &self,
        uid: &str,
        tenant: &str,
        messages: &[serde_json::Value],
        answer: &serde_json::Value,
    ) {
        let mut keys = vec![fingerprint(tenant, messages, Some(answer))];
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
            ));
        }
        let mut inner = self.lock();
        let Some(t) = inner.by_uid.get_mut(uid) else {
            return;
        };
        let old = std::mem::replace(&mut t.fingerprints, keys.clone());
        for key in old {
            inner.by_fingerprint.remove(&key);
        }
        for key in keys {
            inner.by_fingerprint.insert(key, uid.to_string());
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
                ended.push(t.clone());
            }
        }
        by_uid.retain(|_, t| {
            let keep = now.duration_since(t.last_active) < self.limits.trajectory_ttl;
            if !keep {
                for fp in &t.fingerprints {
                    by_fingerprint.remove(fp);
                }
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
                    for fp in &t.fingerprints {
                        by_fingerprint.remove(fp);
                    }
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sessions(idle_ms: u64) -> Sessions {
        Sessions::new(Limits {
            session_idle: Duration::from_millis(idle_ms),
            trajectory_ttl: Duration::from_secs(3600),
            max_trajectories: 3,
        })
    }

    #[test]
    fn client_named_trajectories_take_indexes_only_inside_their_leases() {
        let s = sessions(60_000);
        s.create("t1", "acme", "train", "p", None, Origin::Client)
            .expect("create");
        assert_eq!(
            s.take_leased_step("t1", "acme").map(|t| t.next_step),
            Err(Untaken::NeedsLease(0))
        );
        // A restarted gateway's lease starts after an earlier run's block.
        s.grant("t1", "acme", 64..66);
        assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 64);
        assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 65);
        assert_eq!(
            s.take_leased_step("t1", "acme").map(|t| t.next_step),
            Err(Untaken::NeedsLease(66))
        );
        // Two calls leased at once: the later block wins, the older one changes nothing.
        s.grant("t1", "acme", 70..72);
        s.grant("t1", "acme", 66..68);
        assert_eq!(s.take_leased_step("t1", "acme").unwrap().next_step, 70);
        assert_eq!(
            s.take_leased_step("t1", "evil").map(|t| t.next_step),
            Err(Untaken::Denied(Denied::NotFound))
        );
        // Trajectories the gateway named need no lease.
        s.create("t2", "acme", "train", "p", None, Origin::Conversation)
            .unwrap();
        assert_eq!(s.take_leased_step("t2", "acme").unwrap().next_step, 0);
    }

    /// What OpenClaw does to its history between calls: a context message at the end of each
    /// call that it never keeps, tool-call arguments re-serialized and tool-call ids renamed.
    #[test]
    fn an_agents_rewritten_history_still_continues_its_session() {
        let s = sessions(60_000);
        s.create("t1", "acme", "train", "p", None, Origin::Conversation)
            .expect("create");
        let context =
            json!({"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>> cwd=/home"});
        let mut sent = vec![
            json!({"role": "system", "content": "You are a helpful agent."}),
            json!({"role": "user", "content": "[Thu 2026-12-03 06:22 UTC] Read notes.txt"}),
            context.clone(),
        ];
        let answer = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a1", "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"notes.txt\"}"}}]});
        s.remember_turn("t1", "acme", &sent, &answer);

        // The agent's next call: its own history (no context message), its serialization, its ids.
        sent.pop();
        sent.push(json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"notes.txt\"}"}}]}));
        sent.push(json!({"role": "tool", "tool_call_id": "toolu_1", "content": "buy milk"}));
        sent.push(context);
        assert_eq!(
            s.continuing("acme", &sent).map(|t| t.uid),
            Some("t1".into())
        );
        // Other arguments are another call.
        sent[2]["tool_calls"][0]["function"]["arguments"] = json!("{\"path\":\"other.txt\"}");
        assert!(s.continuing("acme", &sent).is_none());
    }

    #[test]
    fn a_call_extending_the_last_answer_continues_the_session() {
        let s = sessions(60_000);
        s.create("t1", "acme", "train", "p", None, Origin::Conversation)
            .expect("create");
        let first = vec![json!({"role": "user", "content": "hi"})];
        let answer = json!({"role": "assistant", "content": "hello"});
        s.remember_turn("t1", "acme", &first, &answer);

        let mut next = first.clone();
        next.push(json!({"role": "assistant", "content": "hello ", "tool_calls": null}));
        next.push(json!({"role": "user", "content": "how are you?"}));
        assert_eq!(
            s.continuing("acme", &next).map(|t| t.uid),
            Some("t1".into())
        );
        // Another tenant sending the same history does not join it.
        assert!(s.continuing("other", &next).is_none());
        // A different answer in the history is a different conversation.
        next[1] = json!({"role": "assistant", "content": "bye"});
        assert!(s.continuing("acme", &next).is_none());
        // A fresh conversation has no assistant message and never continues anything.
        assert!(s.continuing("acme", &first).is_none());
    }

    #[test]
    fn step_indexes_count_per_trajectory_and_tenants_are_isolated() {
        let s = sessions(60_000);
        s.create("t1", "acme", "train", "p", None, Origin::Init)
            .expect("create");
        assert_eq!(s.next_step("t1", "acme").expect("step").next_step, 0);
        assert_eq!(s.next_step("t1", "acme").expect("step").next_step, 1);
        assert!(s.next_step("t1", "evil").is_err());
        assert!(
            s.create("t1", "evil", "train", "p", None, Origin::Init)
                .is_err()
        );
    }

    #[test]
    fn idle_sessions_end_and_memory_stays_bounded() {
        let s = sessions(0);
        for i in 0..5 {
            s.create(
                &format!("t{i}"),
                "acme",
                "train",
                "p",
                None,
                if i == 0 {
                    Origin::Conversation
                } else {
                    Origin::Init
                },
            )
            .expect("create");
        }
        let ended = s.sweep();
        assert_eq!(
            ended.iter().map(|t| t.uid.as_str()).collect::<Vec<_>>(),
            vec!["t0"]
        );
        assert_eq!(s.len(), 3, "capped at max_trajectories");
        assert!(s.sweep().is_empty(), "an ended session is reported once");
    }
}
