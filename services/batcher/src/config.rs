//! The batcher's TOML file. Every key has a default suited to live traffic: window batches of 8
//! rewarded steps, the reward models required (30 s deadline, then whatever rewards arrived).
//! Unknown keys are errors, so a typo cannot silently change how batches form.

use std::collections::BTreeMap;
use std::path::Path;

use clawline_schemas::GroupMode;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Grouping for channels without their own table.
    pub defaults: ChannelConfig,
    /// Per-channel grouping, e.g. `[channels.val]`; missing keys take the built-in defaults.
    pub channels: BTreeMap<String, ChannelConfig>,
    pub rewards: RewardConfig,
    pub completion: CompletionConfig,
    pub staleness: StalenessConfig,
    pub late_feedback: LateFeedbackConfig,
    /// Ready groups (window mode: ready steps) a channel may hold unpublished; beyond it the
    /// oldest are dropped (counted as `queue_full`).
    pub max_queue_size: usize,
    /// A batch's encoded size limit; a bigger batch is split.
    pub max_batch_bytes: usize,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            defaults: ChannelConfig::default(),
            channels: BTreeMap::new(),
            rewards: RewardConfig::default(),
            completion: CompletionConfig::default(),
            staleness: StalenessConfig::default(),
            late_feedback: LateFeedbackConfig::default(),
            max_queue_size: 10_000,
            max_batch_bytes: 4 << 20,
        }
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        config
            .check()
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), String> {
        for (name, c) in std::iter::once(("defaults", &self.defaults))
            .chain(self.channels.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if c.batch_size == 0 {
                return Err(format!("{name}: batch_size must be at least 1"));
            }
            if c.mode == GroupMode::Prompt && c.group_size < 2 {
                return Err(format!(
                    "{name}: group_size must be at least 2 in prompt mode"
                ));
            }
            if !(0.0..1.0).contains(&c.baseline_decay) {
                return Err(format!("{name}: baseline_decay must be in [0, 1)"));
            }
        }
        Ok(())
    }

    pub fn channel(&self, name: &str) -> &ChannelConfig {
        self.channels.get(name).unwrap_or(&self.defaults)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroVariance {
    /// A group whose rewards are all equal teaches nothing: drop it (counted).
    Drop,
    /// Keep it with zero advantages.
    Keep,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    pub mode: GroupMode,
    /// Window mode: steps per batch. Prompt mode: groups per batch.
    pub batch_size: usize,
    /// Prompt mode: complete trajectories per prompt group (GRPO's n).
    pub group_size: usize,
    pub zero_variance: ZeroVariance,
    /// Prompt mode: a group still short of `group_size` this long after its first trajectory
    /// completed is dropped (counted as `group_timeout`).
    pub group_timeout_secs: u64,
    /// Window mode: a partial batch goes out once its oldest step waited this long.
    pub flush_after_secs: u64,
    /// Window mode: the running baseline per tenant is `b ← decay·b + (1−decay)·r`.
    pub baseline_decay: f64,
    /// Divide advantages by the group's (prompt) or running (window) standard deviation.
    pub normalize: bool,
    /// Window mode: when a step may train (prompt mode always waits for whole trajectories).
    pub readiness: Readiness,
    /// A step that trains on its own waits this long after its answer for the user's reaction
    /// (explicit feedback, or their next turn read as implicit feedback), then trains without.
    pub reaction_wait_secs: u64,
    /// Train on background turns (an agent's heartbeat or scheduled wake: steps the gateway
    /// recorded with `background: true`). Off: they are dropped, counted as `background`.
    pub train_background: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Per step for conversations the gateway grouped itself (clients that send no trajectory
    /// ids and never complete one); per trajectory for trajectories a client names and completes.
    Auto,
    /// Every step on its own: ready once its required rewards and the user's reaction (or the
    /// reaction wait) are in. Later turns never hold earlier ones back.
    Step,
    /// Whole trajectories, ready once complete (Claw-R1's semantics).
    Trajectory,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            mode: GroupMode::Window,
            batch_size: 8,
            group_size: 4,
            zero_variance: ZeroVariance::Drop,
            group_timeout_secs: 3600,
            flush_after_secs: 60,
            baseline_decay: 0.9,
            normalize: false,
            readiness: Readiness::Auto,
            reaction_wait_secs: 30,
            train_background: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Past the deadline, use whatever rewards arrived (counted as `deadline_fallback`).
    UseAvailable,
    /// Past the deadline, drop the step (counted as `missing_reward`).
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// Source patterns a step waits for (`rm:*` matches every reward model, `client` exactly).
    pub required: Vec<String>,
    /// Weight of each source in the combined reward (first matching pattern; unlisted sources
    /// weigh 0). The combined reward is Σ weight × value, each source's value being the mean of
    /// its events for the step (its own and its trajectory's).
    pub weights: BTreeMap<String, f64>,
    /// How long after its trajectory completed a step waits for required rewards.
    pub deadline_secs: u64,
    pub fallback: Fallback,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            required: vec!["rm:*".into()],
            weights: [
                ("rm:*", 1.0),
                ("rule:*", 1.0),
                ("feedback:explicit", 2.0),
                ("feedback:implicit", 0.5),
                ("client", 1.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            deadline_secs: 30,
            fallback: Fallback::UseAvailable,
        }
    }
}

impl RewardConfig {
    pub fn weight(&self, source: &str) -> f64 {
        // Exact names win over patterns; longer patterns over shorter.
        if let Some(w) = self.weights.get(source) {
            return *w;
        }
        self.weights
            .iter()
            .filter(|(p, _)| matches(p, source))
            .max_by_key(|(p, _)| p.len())
            .map_or(0.0, |(_, w)| *w)
    }
}

/// `rm:*` matches `rm:bundled@12ab34cd`; a pattern without `*` matches exactly.
pub fn matches(pattern: &str, source: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => source.starts_with(prefix),
        None => pattern == source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnIdle {
    /// Treat the trajectory as complete, marking its steps `truncated`.
    Truncate,
    /// Drop its steps (counted as `abandoned`).
    Abandon,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletionConfig {
    /// A trajectory with no event for this long and no completion is idle.
    pub idle_timeout_secs: u64,
    pub on_idle: OnIdle,
}

impl Default for CompletionConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 1800,
            on_idle: OnIdle::Truncate,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StalePolicy {
    /// Drop steps more than `max_lag` versions behind (counted as `stale`).
    Drop,
    /// Keep them with `importance_cap` for the trainer's truncated importance weights.
    Cap,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessConfig {
    pub max_lag: u64,
    pub policy: StalePolicy,
    pub importance_cap: f64,
}

impl Default for StalenessConfig {
    fn default() -> Self {
        Self {
            max_lag: 4,
            policy: StalePolicy::Drop,
            importance_cap: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateMode {
    /// Feedback on a step that already trained trains once more, as a sample of its own that
    /// carries only that feedback (window-mode channels, within `window_secs` and `max_steps`).
    Train,
    /// Counted and reported as too late; nothing trains.
    Report,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LateFeedbackConfig {
    pub mode: LateMode,
    /// How long after its batch a step's tokens are kept for late feedback.
    pub window_secs: u64,
    /// At most this many batched steps are kept for late feedback (the oldest go first).
    pub max_steps: usize,
}

impl Default for LateFeedbackConfig {
    fn default() -> Self {
        Self {
            mode: LateMode::Train,
            window_secs: 3600,
            max_steps: 10_000,
        }
    }
}
