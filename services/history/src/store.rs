//! Where the archive lives: a local directory (the default) or an S3-compatible bucket through the
//! `object_store` crate (`s3://bucket/prefix`, credentials and endpoint from the usual `AWS_*`
//! variables). The archiver and the SQL engine see the same few operations on paths relative to the
//! root (`steps/date=…/channel=…/part-….parquet`, `_checkpoints/STEPS.json`).
//!
//! Local writes go to a temporary file that is fsynced and renamed, so a file is whole or absent;
//! an object store PUT is atomic by itself, so the same holds there.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::snapshot::Snapshot;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Clone)]
pub enum ArchiveRoot {
    Local(PathBuf),
    Remote {
        /// `s3://bucket/prefix` as given.
        url: String,
        /// `s3://bucket`, the key DataFusion finds the store under.
        base: url::Url,
        prefix: ObjectPath,
        store: Arc<dyn ObjectStore>,
    },
}

impl fmt::Debug for ArchiveRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ArchiveRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Remote { url, .. } => f.write_str(url),
        }
    }
}

impl FromStr for ArchiveRoot {
    type Err = String;

    /// A directory, or `s3://bucket[/prefix]` (also `s3a://`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("://") {
            None => Ok(Self::Local(PathBuf::from(s))),
            Some(_) => Self::s3(s, &[]),
        }
    }
}

impl ArchiveRoot {
    /// `s3://bucket[/prefix]`, configured from the `AWS_*` variables and then `options`
    /// (`object_store`'s keys: `aws_endpoint`, `aws_allow_http`, `aws_access_key_id`, …).
    pub fn s3(s: &str, options: &[(&str, &str)]) -> Result<Self, String> {
        let scheme = s.split_once("://").map_or("", |(scheme, _)| scheme);
        if scheme != "s3" && scheme != "s3a" {
            return Err(format!(
                "{s}: unsupported archive location (a directory or s3://bucket/prefix)"
            ));
        }
        let parsed = url::Url::parse(s).map_err(|e| format!("{s}: {e}"))?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("{s}: no bucket name"))?;
        let mut builder = AmazonS3Builder::from_env().with_url(s);
        for (key, value) in options {
            let key = key.parse().map_err(|e| format!("{s}: {e}"))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder.build().map_err(|e| format!("{s}: {e}"))?;
        let base = url::Url::parse(&format!("{scheme}://{bucket}")).map_err(|e| e.to_string())?;
        Ok(Self::Remote {
            url: s.trim_end_matches('/').to_string(),
            base,
            prefix: ObjectPath::from(parsed.path().trim_matches('/')),
            store: Arc::new(store),
        })
    }

    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self::Local(path.into())
    }

    /// The local directory, when the archive is one.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Remote { .. } => None,
        }
    }

    fn object(prefix: &ObjectPath, rel: &str) -> ObjectPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(prefix.clone(), |p, part| p.join(part))
    }

    /// Creates the root where that means something (a local directory).
    pub async fn create(&self) -> anyhow::Result<()> {
        if let Self::Local(p) = self {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        Ok(())
    }

    /// Writes `bytes` at `rel` so that readers see the whole object or none of it.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Local(root) => {
                let path = root.join(rel);
                tokio::task::spawn_blocking(move || write_atomic(&path, &bytes)).await?
            }
            Self::Remote { store, prefix, .. } => {
                let key = Self::object(prefix, rel);
                store
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .with_context(|| format!("writing {self}/{rel}"))?;
                Ok(())
            }
        }
    }

    /// The object at `rel`, or `None` when there is none.
    pub async fn get(&self, rel: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Self::Local(root) => match std::fs::read(root.join(rel)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {self}/{rel}")),
            },
            Self::Remote { store, prefix, .. } => {
                match store.get(&Self::object(prefix, rel)).await {
                    Ok(got) => Ok(Some(got.bytes().await?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {self}/{rel}")),
                }
            }
        }
    }

    /// Every object under `rel_dir`, as paths relative to the root.
    pub async fn list(&self, rel_dir: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Local(root) => {
                let mut files = Vec::new();
                walk(&root.join(rel_dir), &mut files);
                Ok(files
                    .iter()
                    .filter_map(|f| f.strip_prefix(root).ok())
                    .map(|f| f.to_string_lossy().replace('\\', "/"))
                    .collect())
            }
            Self::Remote { store, prefix, .. } => {
                let dir = Self::object(prefix, rel_dir);
                let objects: Vec<_> = store
                    .list(Some(&dir))
                    .try_collect()
                    .await
                    .with_context(|| format!("listing {self}/{rel_dir}"))?;
                Ok(objects
                    .into_iter()
                    .filter_map(|o| {
                        o.location
                            .prefix_match(prefix)
                            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>())
                    })
                    .map(|parts| parts.join("/"))
                    .collect())
            }
        }
    }

    pub async fn delete(&self, rel: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(root) => {
                let path = root.join(rel);
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
            }
            Self::Remote { store, prefix, .. } => store
                .delete(&Self::object(prefix, rel))
                .await
                .with_context(|| format!("removing {self}/{rel}")),
        }
    }

    /// The object store holding the archive, its base URL and the archive's prefix in it. A local
    /// archive goes through `LocalFileSystem` at `file:///`, as DataFusion reads local files.
    fn objects(&self) -> anyhow::Result<(url::Url, Arc<dyn ObjectStore>, ObjectPath)> {
        match self {
            Self::Local(root) => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("creating {}", root.display()))?;
                let abs = root
                    .canonicalize()
                    .with_context(|| format!("resolving {}", root.display()))?;
                let prefix = ObjectPath::from_absolute_path(&abs)
                    .with_context(|| format!("{}: not a usable path", abs.display()))?;
                let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
                Ok((url::Url::parse("file:///")?, store, prefix))
            }
            Self::Remote {
                base,
                prefix,
                store,
                ..
            } => Ok((base.clone(), store.clone(), prefix.clone())),
        }
    }

    /// Registers in `ctx` the archive as it stands: the files within their stream's checkpoint
    /// (see `snapshot`). Tables are then read through `View::table_url`.
    pub async fn register_snapshot(
        &self,
        ctx: &SessionContext,
        checkpoints: &HashMap<String, u64>,
    ) -> anyhow::Result<View> {
        let (base, store, prefix) = self.objects()?;
        let snapshot = Snapshot::take(store, &prefix, checkpoints)
            .await
            .with_context(|| format!("listing the archive {self}"))?;
        ctx.register_object_store(&base, Arc::new(snapshot));
        Ok(View { base, prefix })
    }
}

/// Where a query finds the archive's tables.
pub struct View {
    base: url::Url,
    prefix: ObjectPath,
}

impl View {
    pub fn table_url(&self, table: &str) -> datafusion::error::Result<ListingTableUrl> {
        let mut url = self.base.as_str().trim_end_matches('/').to_string();
        for part in self.prefix.as_ref().split('/').chain([table]) {
            if !part.is_empty() {
                url.push('/');
                url.push_str(part);
            }
        }
        url.push('/');
        ListingTableUrl::parse(url)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().context("no parent dir")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Every file under `dir` (recursively).
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
