//! A query's view of the archive: the files whose rows are all at or below their stream's
//! checkpoint, listed once when the query starts. DataFusion lists and reads through this store,
//! so a file a flush writes while the query runs is not seen (its rows come from the live tail),
//! and no row needs a sequence filter.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::archive::parse_file_name;

#[derive(Debug)]
pub struct Snapshot {
    inner: Arc<dyn ObjectStore>,
    files: Arc<Vec<ObjectMeta>>,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "archive snapshot of {} ({} files)",
            self.inner,
            self.files.len()
        )
    }
}

impl Snapshot {
    /// Lists `prefix` in `inner` and keeps the archive files within their stream's checkpoint.
    pub async fn take(
        inner: Arc<dyn ObjectStore>,
        prefix: &Path,
        checkpoints: &HashMap<String, u64>,
    ) -> object_store::Result<Self> {
        let listed: Vec<ObjectMeta> = inner
            .list(Some(prefix))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<object_store::Result<_>>()?;
        let files = listed
            .into_iter()
            .filter(|meta| {
                meta.location
                    .filename()
                    .and_then(parse_file_name)
                    .is_some_and(|(stream, _, last)| {
                        checkpoints.get(&stream).is_some_and(|c| last <= *c)
                    })
            })
            .collect();
        Ok(Self {
            inner,
            files: Arc::new(files),
        })
    }

    fn read_only() -> object_store::Error {
        object_store::Error::NotSupported {
            source: "a query's archive snapshot is read-only".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for Snapshot {
    async fn put_opts(
        &self,
        _: &Path,
        _: PutPayload,
        _: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(Self::read_only())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(Self::read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(Self::read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let matching: Vec<object_store::Result<ObjectMeta>> = self
            .files
            .iter()
            .filter(|m| prefix.is_none_or(|p| m.location.prefix_matches(p)))
            .cloned()
            .map(Ok)
            .collect();
        futures::stream::iter(matching).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let depth = prefix.map_or(0, |p| p.parts().count());
        let mut common_prefixes = Vec::new();
        let mut objects = Vec::new();
        for meta in self.files.iter() {
            if prefix.is_some_and(|p| !meta.location.prefix_matches(p)) {
                continue;
            }
            let parts: Vec<_> = meta.location.parts().collect();
            if parts.len() == depth + 1 {
                objects.push(meta.clone());
            } else {
                let dir = Path::from_iter(parts.into_iter().take(depth + 1));
                if !common_prefixes.contains(&dir) {
                    common_prefixes.push(dir);
                }
            }
        }
        Ok(ListResult {
            common_prefixes,
            objects,
        })
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(Self::read_only())
    }
}
