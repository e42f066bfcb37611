//! The live dashboard: `GET /dashboard` (the page, built from `dashboard/` with uPlot and embedded
//! here) and `GET /v1/dashboard/data` (JSON, behind the API keys). The data comes from the event
//! streams themselves — every gateway follows `clawline.steps.>`, rewards, feedback, weights and
//! training metrics on core NATS into 5-second buckets over the last 10 minutes — plus the
//! batcher's statistics and the JetStream consumers' lag, polled every 5 s. A tenant's key sees
//! its own steps, rewards, feedback and latest steps; an admin key sees every tenant and the
//! system (versions, trainer, queue, lag).

mod follow;

use std::collections::{BTreeMap, HashMap, VecDeque};

use clawline_runtime::keys::Caller;
use serde_json::{Value, json};

pub use follow::follow;

/// Bucket width and how many are kept.
pub const BUCKET_MS: i64 = 5_000;
const KEEP_MS: i64 = 10 * 60 * 1000;
const RECENT: usize = 200;
const TIMELINE: usize = 100;
const TRAINING: usize = 600;
/// Characters of a prompt or answer shown in the latest-steps table.
const SHOWN_CHARS: usize = 200;

#[derive(Default)]
struct Acc {
    sum: f64,
    n: u64,
}

/// `(tenant, label)` → bucket start → sum and count.
#[derive(Default)]
struct Series(HashMap<(String, String), BTreeMap<i64, Acc>>);

impl Series {
    fn add(&mut self, tenant: &str, label: &str, t_ms: i64, value: f64) {
        let b = self
            .0
            .entry((tenant.to_string(), label.to_string()))
            .or_default()
            .entry(t_ms - t_ms.rem_euclid(BUCKET_MS))
            .or_default();
        b.sum += value;
        b.n += 1;
    }

    fn prune(&mut self, oldest: i64) {
        for buckets in self.0.values_mut() {
            buckets.retain(|t, _| *t >= oldest);
        }
        self.0.retain(|_, b| !b.is_empty());
    }

    /// Label → `[[t, value]]` over the tenants `caller` may see, merged across tenants.
    fn view(
        &self,
        caller: &Caller,
        value: impl Fn(&Acc) -> f64,
    ) -> BTreeMap<String, Vec<(i64, f64)>> {
        let mut merged: BTreeMap<String, BTreeMap<i64, Acc>> = BTreeMap::new();
        for ((tenant, label), buckets) in &self.0 {
            if !caller.admin && *tenant != caller.tenant {
                continue;
            }
            let into = merged.entry(label.clone()).or_default();
            for (t, acc) in buckets {
                let a = into.entry(*t).or_default();
                a.sum += acc.sum;
                a.n += acc.n;
            }
        }
        merged
            .into_iter()
            .map(|(label, b)| (label, b.iter().map(|(t, a)| (*t, value(a))).collect()))
            .collect()
    }
}

/// One answered call, for the latest-steps table (texts cut to `SHOWN_CHARS`).
#[derive(serde::Serialize, Clone)]
pub struct Recent {
    pub t: i64,
    pub tenant: String,
    pub channel: String,
    pub prompt: String,
    pub answer: String,
    pub version: Option<u64>,
}

#[derive(serde::Serialize, Clone)]
pub struct TimelineEntry {
    pub t: i64,
    pub version: u64,
    pub engine: String,
    pub event: &'static str,
    pub reason: String,
}

#[derive(serde::Serialize, Clone)]
pub struct Lag {
    pub stream: String,
    pub consumer: String,
    pub pending: u64,
    pub unacked: u64,
}

/// What the dashboard shows, fed by [`follow`].
#[derive(Default)]
pub struct Board {
    steps: Series,
    rewards: Series,
    feedback: Series,
    serving: BTreeMap<String, Vec<(i64, f64)>>,
    timeline: VecDeque<TimelineEntry>,
    training: VecDeque<(i64, f64, f64, f64)>,
    recent: VecDeque<Recent>,
    datapool: Option<Value>,
    lag: Vec<Lag>,
}

pub fn cut(text: &str) -> String {
    let mut s: String = text.chars().take(SHOWN_CHARS).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

impl Board {
    pub fn step(&mut self, recent: Recent) {
        let label = format!("{}/{}", recent.channel, recent.tenant);
        self.steps.add(&recent.tenant, &label, recent.t, 1.0);
        push_bounded(&mut self.recent, recent, RECENT);
    }

    pub fn reward(&mut self, tenant: &str, source: &str, t: i64, value: f64) {
        self.rewards.add(tenant, source, t, value);
    }

    pub fn feedback(&mut self, tenant: &str, label: &str, t: i64) {
        self.feedback.add(tenant, label, t, 1.0);
    }

    pub fn weights(&mut self, entry: TimelineEntry) {
        if entry.event == "activated" {
            let points = self.serving.entry(entry.engine.clone()).or_default();
            points.push((entry.t, entry.version as f64));
            let oldest = entry.t - KEEP_MS;
            points.retain(|(t, _)| *t >= oldest);
        }
        push_bounded(&mut self.timeline, entry, TIMELINE);
    }

    pub fn training(&mut self, t: i64, loss: f64, kl: f64, entropy: f64) {
        push_bounded(&mut self.training, (t, loss, kl, entropy), TRAINING);
    }

    pub fn datapool(&mut self, stats: Value) {
        self.datapool = Some(stats);
    }

    pub fn lag(&mut self, lag: Vec<Lag>) {
        self.lag = lag;
    }

    pub fn prune(&mut self, now: i64) {
        let oldest = now - KEEP_MS;
        self.steps.prune(oldest);
        self.rewards.prune(oldest);
        self.feedback.prune(oldest);
    }

    /// The JSON `/v1/dashboard/data` answers `caller` with.
    pub fn snapshot(&self, caller: &Caller, now: i64) -> Value {
        let per_second = |a: &Acc| a.sum / (BUCKET_MS as f64 / 1000.0);
        let mean = |a: &Acc| a.sum / a.n.max(1) as f64;
        let count = |a: &Acc| a.sum;
        let visible: Vec<&Recent> = self
            .recent
            .iter()
            .filter(|r| caller.admin || r.tenant == caller.tenant)
            .collect();
        let recent = &visible[visible.len().saturating_sub(20)..];
        let mut out = json!({
            "now": now,
            "admin": caller.admin,
            "tenant": caller.tenant,
            "bucket_ms": BUCKET_MS,
            "steps": self.steps.view(caller, per_second),
            "rewards": self.rewards.view(caller, mean),
            "feedback": self.feedback.view(caller, count),
            "recent": recent,
            "serving": {}, "timeline": [], "training": {},
            "queue": {"channels": {}, "drops": {}}, "lag": [],
        });
        if caller.admin {
            out["serving"] = json!(self.serving);
            out["timeline"] = json!(self.timeline);
            let series = |pick: fn(&(i64, f64, f64, f64)) -> f64| {
                self.training
                    .iter()
                    .map(|p| (p.0, pick(p)))
                    .collect::<Vec<_>>()
            };
            out["training"] = json!({
                "loss": series(|p| p.1), "kl": series(|p| p.2), "entropy": series(|p| p.3),
            });
            out["queue"] = queue(self.datapool.as_ref());
            out["lag"] = json!(self.lag);
        }
        out
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, max: usize) {
    q.push_back(item);
    while q.len() > max {
        q.pop_front();
    }
}

/// The batcher's statistics as the queue table shows them: per channel steps waiting and ready
/// units, and drops summed by reason.
fn queue(stats: Option<&Value>) -> Value {
    let mut channels = serde_json::Map::new();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(chs) = stats.and_then(|s| s["channels"].as_object()) {
        for (name, c) in chs {
            channels.insert(
                name.clone(),
                json!({"waiting": c["queued_steps"], "ready": c["ready_groups"]}),
            );
            for (reason, n) in c["dropped"].as_object().into_iter().flatten() {
                *drops.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    json!({"channels": channels, "drops": drops})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: &str, admin: bool) -> Caller {
        Caller {
            tenant: tenant.into(),
            admin,
            key_id: "k".into(),
            rate: None,
            max_body: None,
        }
    }

    fn recent(tenant: &str, t: i64, prompt: &str) -> Recent {
        Recent {
            t,
            tenant: tenant.into(),
            channel: "train".into(),
            prompt: prompt.into(),
            answer: "a".into(),
            version: Some(1),
        }
    }

    #[test]
    fn a_tenant_sees_only_its_own_and_admins_see_all() {
        let mut b = Board::default();
        b.step(recent("acme", 10_000, "acme's secret"));
        b.step(recent("acme", 11_000, "more"));
        b.step(recent("globex", 12_000, "globex's secret"));
        b.reward("acme", "rm:x", 10_000, 0.2);
        b.reward("globex", "rm:x", 10_000, 0.8);
        b.weights(TimelineEntry {
            t: 10_000,
            version: 3,
            engine: "policy".into(),
            event: "activated",
            reason: "published".into(),
        });
        let acme = b.snapshot(&caller("acme", false), 20_000);
        assert_eq!(acme["steps"]["train/acme"], json!([[10_000, 0.4]]));
        assert!(acme["steps"].get("train/globex").is_none());
        assert_eq!(acme["rewards"]["rm:x"], json!([[10_000, 0.2]]));
        let text = acme.to_string();
        assert!(!text.contains("globex"), "{text}");
        assert_eq!(
            acme["timeline"],
            json!([]),
            "system sections are for admins"
        );
        let admin = b.snapshot(&caller("ops", true), 20_000);
        assert_eq!(admin["rewards"]["rm:x"], json!([[10_000, 0.5]]));
        assert_eq!(admin["recent"].as_array().unwrap().len(), 3);
        assert_eq!(admin["serving"]["policy"], json!([[10_000, 3.0]]));
        b.prune(10_000 + KEEP_MS + BUCKET_MS);
        assert_eq!(b.snapshot(&caller("ops", true), 0)["steps"], json!({}));
    }
}
