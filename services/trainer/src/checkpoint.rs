//! Checkpoints: `--checkpoint-dir/ckpt-…/` holds the trainable weights, the optimizer state and
//! `state.json` (the last batch covered, the version numbering, a version being published);
//! `CURRENT` names the newest complete one. A checkpoint is written into a temporary directory,
//! synced, renamed into place and only then named by `CURRENT` (itself replaced atomically), so a
//! crash at any point leaves the previous checkpoint whole.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clawline_schemas::{LoraAdapter, TrainingSummary, WeightsFormat, WeightsPublished};
use serde::{Deserialize, Serialize};

use crate::Settings;
use clawline_model::AdamW;

use crate::learner::{Learner, Trained, WEIGHTS_FILE};
use crate::trust::Backoff;

const CURRENT: &str = "CURRENT";
const STATE_FILE: &str = "state.json";
const PREFIX: &str = "ckpt-";

/// What a checkpoint records beside the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct State {
    /// What is trained; a resume with other flags is refused.
    pub format: WeightsFormat,
    #[serde(default)]
    pub lora: Option<LoraAdapter>,
    pub base_model: String,
    /// The BATCHES sequence of the last batch the checkpoint covers (trained or refused).
    pub last_batch_seq: u64,
    /// Updates since the first start.
    pub updates: u64,
    /// The last version this trainer published (0: none, the base model).
    pub version: u64,
    /// Training since `version`.
    #[serde(default)]
    pub since: Since,
    /// A version whose weights are this checkpoint's, not yet confirmed published.
    #[serde(default)]
    pub pending: Option<WeightsPublished>,
    /// The learning rate's backoff (`--max-kl-serving`): restored with the weights, so a restart
    /// decides the same on the same batch.
    #[serde(default)]
    pub backoff: Backoff,
}

/// The batches trained since the last version, and their summed metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Since {
    pub batch_ids: Vec<String>,
    pub first_batch_seq: u64,
    pub last_batch_seq: u64,
    /// Sums; `summary` turns them into means.
    pub sums: TrainingSummary,
}

impl Since {
    pub fn updates(&self) -> u64 {
        self.sums.updates
    }

    /// Adds one trained batch.
    pub fn add(&mut self, seq: u64, batch_id: &str, trained: &Trained) {
        let Some(m) = &trained.metrics else { return };
        if self.batch_ids.is_empty() {
            self.first_batch_seq = seq;
        }
        self.batch_ids.push(batch_id.to_string());
        self.last_batch_seq = seq;
        let s = &mut self.sums;
        s.updates += 1;
        s.steps += trained.steps;
        s.tokens += m.tokens;
        s.loss += m.loss;
        s.policy_loss += m.policy_loss;
        s.ratio_mean += m.ratio_mean;
        s.clip_fraction += m.clip_fraction;
        s.kl += m.kl;
        s.entropy += m.entropy;
        s.grad_norm += m.grad_norm;
        s.reward_mean += trained.reward_mean;
        if let Some(kl) = trained.kl_serving {
            s.kl_serving = Some(s.kl_serving.unwrap_or(0.0) + kl);
        }
        // The version's distance to the base: the latest measure.
        if trained.kl_base.is_some() {
            s.kl_base = trained.kl_base;
            s.drift_base = trained.drift_base;
        }
    }

    /// Counts an update that was undone (its batch is not one the version learned from).
    pub fn backed_off(&mut self) {
        self.sums.backoffs += 1;
    }

    /// Totals, and means per update.
    pub fn summary(&self) -> TrainingSummary {
        let n = self.sums.updates.max(1) as f64;
        let s = &self.sums;
        TrainingSummary {
            updates: s.updates,
            steps: s.steps,
            tokens: s.tokens,
            loss: s.loss / n,
            policy_loss: s.policy_loss / n,
            ratio_mean: s.ratio_mean / n,
            clip_fraction: s.clip_fraction / n,
            kl: s.kl / n,
            entropy: s.entropy / n,
            grad_norm: s.grad_norm / n,
            reward_mean: s.reward_mean / n,
            kl_serving: s.kl_serving.map(|kl| kl / n),
            kl_base: s.kl_base,
            drift_base: s.drift_base,
            backoffs: s.backoffs,
        }
    }
}

pub struct Checkpoints {
    dir: PathBuf,
    /// One trainer per checkpoint dir: two would overwrite each other's `CURRENT`.
    _lock: clawline_runtime::DirLock,
}

impl Checkpoints {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let lock = clawline_runtime::lock_dir(dir)
            .with_context(|| format!("--checkpoint-dir {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The newest complete checkpoint and its state.
    pub fn latest(&self) -> anyhow::Result<Option<(PathBuf, State)>> {
        let current = self.dir.join(CURRENT);
        let name = match std::fs::read_to_string(&current) {
            Ok(name) => name.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", current.display())),
        };
        anyhow::ensure!(
            name.starts_with(PREFIX) && !name.contains('/'),
            "{}: names {name:?}, not a checkpoint",
            current.display()
        );
        let dir = self.dir.join(&name);
        let text = std::fs::read_to_string(dir.join(STATE_FILE))
            .with_context(|| format!("checkpoint {}: no {STATE_FILE}", dir.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("checkpoint {}: {STATE_FILE} unreadable", dir.display()))?;
        Ok(Some((dir, state)))
    }

    /// Writes a checkpoint: `save` fills the directory with tensors, then a pending version gets
    /// the sha256 and size of the weights file, then the state is written and the checkpoint made
    /// current. Older checkpoints are removed.
    pub fn write(
        &self,
        state: &mut State,
        save: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{PREFIX}{:012}-{stamp}", state.last_batch_seq);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        save(&tmp)?;
        if let Some(event) = state.pending.as_mut() {
            let (sha256, size) = clawline_model::weights::sha256_file(&tmp.join(WEIGHTS_FILE))?;
            event.envelope.event_id = WeightsPublished::id_for(event.version, &sha256);
            event.sha256 = sha256;
            event.size = size;
        }
        write_file(&tmp.join(STATE_FILE), &serde_json::to_vec_pretty(state)?)?;
        for entry in std::fs::read_dir(&tmp)? {
            File::open(entry?.path())?.sync_all()?;
        }
        let dir = self.dir.join(&name);
        std::fs::rename(&tmp, &dir).with_context(|| format!("renaming to {}", dir.display()))?;
        write_file(&self.dir.join(CURRENT), name.as_bytes())?;
        File::open(&self.dir)?.sync_all()?;
        self.remove_all_but(&name);
        Ok(dir)
    }

    /// Replaces the state of the checkpoint in `dir` (after its pending version was published).
    pub fn rewrite_state(&self, dir: &Path, state: &State) -> anyhow::Result<()> {
        write_file(&dir.join(STATE_FILE), &serde_json::to_vec_pretty(state)?)
    }

    fn remove_all_but(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.starts_with(PREFIX) || name.starts_with(&format!(".{PREFIX}"))) && name != keep
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Writes through a synced temporary file renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Builds the learner and restores the newest checkpoint, refusing one made with other flags.
pub fn resume(
    config: &Settings,
    device: tch::Device,
    checkpoints: &Checkpoints,
) -> anyhow::Result<(Learner, State, Option<PathBuf>)> {
    let mut optimizer = AdamW::new(config.lr);
    optimizer.weight_decay = config.weight_decay;
    let lora = config.lora();
    let mut learner = Learner::new(
        &config.model,
        lora.as_ref(),
        config.seed,
        (device, config.dtype.kind(device)),
        optimizer,
        config.loss(),
        config.bounds(),
    )?;
    let base_model = config
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.model.display().to_string());
    match checkpoints.latest()? {
        Some((dir, state)) => {
            anyhow::ensure!(
                state.format == learner.format() && state.lora == learner.lora(),
                "--checkpoint-dir {}: its checkpoint trains {:?} {:?}, the flags ask for {:?} {:?} \
                 (use the same --lora-* flags or another --checkpoint-dir)",
                config.checkpoint_dir.display(),
                state.format,
                state.lora,
                learner.format(),
                learner.lora()
            );
            learner.restore(&dir)?;
            Ok((learner, state, Some(dir)))
        }
        None => {
            let state = State {
                format: learner.format(),
                lora: learner.lora(),
                base_model,
                ..Default::default()
            };
            Ok((learner, state, None))
        }
    }
}
