//! Versions on local disk: `--work-dir/v<N>/` is what engines load. A full version is a complete
//! Hugging Face model directory (the published `model.safetensors` plus the base model's config
//! and tokenizer files); a LoRA version is a PEFT adapter directory. The object is downloaded,
//! its size and sha256 checked against the event, and only then renamed into place, so an engine
//! never sees a corrupt or partial version.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_model::lora::{ADAPTER_CONFIG, LoraConfig, adapter_config};
use clawline_schemas::{WeightsFormat, WeightsPublished};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;

/// Files of the base model a full version directory carries beside its weights.
const BASE_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];
const VERIFIED: &str = ".sha256";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object does not match its event: reject the version.
    #[error("integrity: {0}")]
    Integrity(String),
    /// NATS or the disk failed: try again.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Versions {
    dir: PathBuf,
    base: PathBuf,
}

impl Versions {
    pub fn new(dir: &Path, base: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("--work-dir {}", dir.display()))?;
        anyhow::ensure!(
            base.join("config.json").is_file(),
            "--base-model {}: no config.json",
            base.display()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            base: base.to_path_buf(),
        })
    }

    /// The directory of `event`'s version, downloading and checking it when it is not there yet.
    pub async fn materialise(
        &self,
        js: &jetstream::Context,
        event: &WeightsPublished,
    ) -> Result<PathBuf, FetchError> {
        let dir = self.dir.join(format!("v{}", event.version));
        let verified = std::fs::read_to_string(dir.join(VERIFIED)).unwrap_or_default();
        if verified.trim() == event.sha256 {
            return Ok(dir);
        }
        let tmp = self.dir.join(format!(".v{}.tmp", event.version));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).context("creating the version directory")?;
        let file_name = Path::new(&event.object)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| FetchError::Integrity(format!("object name {:?}", event.object)))?;
        let (sha, size) = download(js, event, &tmp.join(&file_name)).await?;
        if size != event.size || sha != event.sha256 {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(FetchError::Integrity(format!(
                "object {} has {size} bytes with sha256 {sha}; the event says {} bytes, {}",
                event.object, event.size, event.sha256
            )));
        }
        match event.format {
            WeightsFormat::Full => {
                for name in BASE_FILES {
                    let from = self.base.join(name);
                    if from.is_file() {
                        std::fs::copy(&from, tmp.join(name))
                            .with_context(|| format!("copying {}", from.display()))?;
                    }
                }
            }
            WeightsFormat::Lora => {
                let lora = event.lora.as_ref().ok_or_else(|| {
                    FetchError::Integrity("a LoRA version without its adapter settings".into())
                })?;
                let config = LoraConfig {
                    r: lora.r as usize,
                    alpha: lora.alpha,
                    target_modules: lora.target_modules.clone(),
                    ..Default::default()
                };
                let text = adapter_config(&config, &self.base.display().to_string());
                std::fs::write(tmp.join(ADAPTER_CONFIG), text.to_string())
                    .context("writing adapter_config.json")?;
            }
        }
        std::fs::write(tmp.join(VERIFIED), &event.sha256).context("writing the checksum")?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).with_context(|| format!("renaming to {}", dir.display()))?;
        Ok(dir)
    }

    /// Removes version directories other than `keep`.
    pub fn prune(&self, keep: &[u64]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix('v').and_then(|v| v.parse::<u64>().ok());
            if version.is_some_and(|v| !keep.contains(&v)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Streams the object into `path`, returning its hex sha256 and size.
async fn download(
    js: &jetstream::Context,
    event: &WeightsPublished,
    path: &Path,
) -> Result<(String, u64), FetchError> {
    let store = js
        .get_object_store(&event.bucket)
        .await
        .with_context(|| format!("opening the object store {}", event.bucket))?;
    let mut object = match store.get(&event.object).await {
        Ok(object) => object,
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::object_store::GetErrorKind::NotFound
            ) =>
        {
            return Err(FetchError::Integrity(format!(
                "object {} is missing from {}",
                event.object, event.bucket
            )));
        }
        Err(e) => return Err(anyhow::Error::from(e).context("reading the object").into()),
    };
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match object.read(&mut buf).await {
            Ok(n) => n,
            // A chunk that fails its digest, or a torn object.
            Err(e) => {
                return Err(FetchError::Integrity(format!(
                    "reading {}: {e}",
                    event.object
                )));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        tokio::io::AsyncWriteExt::write_all(&mut file, &buf[..n])
            .await
            .context("writing the version")?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .context("writing the version")?;
    file.sync_all().await.context("syncing the version")?;
    Ok((hex::encode(hasher.finalize()), size))
}
