//! The archiver: every stream to Parquet, resumable to the message.
//!
//! Per stream, messages are read in sequence order and buffered; a flush (every `roll_rows`
//! messages or `roll_secs`) writes one file per (table, date, channel) named with the flush's
//! stream sequence range, each to a temporary name, fsynced, then renamed; only then does the
//! stream's checkpoint (`_checkpoints/<STREAM>.json`, written the same way) move to the flush's
//! last sequence. At start, files beyond the checkpoint (a flush cut short by kill -9) and
//! temporary files are deleted, and reading resumes right after the checkpoint: no row is written
//! twice and none is skipped.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use clawline_runtime::CancellationToken;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::tables::{self, Row, Table};

#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    pub root: PathBuf,
    pub roll_rows: usize,
    pub roll_every: Duration,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every message up to this stream sequence is in a file.
    pub last_seq: u64,
}

pub fn checkpoint_path(root: &Path, stream: &str) -> PathBuf {
    root.join("_checkpoints").join(format!("{stream}.json"))
}

pub fn read_checkpoint(root: &Path, stream: &str) -> anyhow::Result<Checkpoint> {
    let path = checkpoint_path(root, stream);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: corrupt checkpoint", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent dir")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write(&mut file)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `part-<STREAM>-<first>-<last>.parquet`
pub fn file_name(stream: &str, first: u64, last: u64) -> String {
    format!("part-{stream}-{first:020}-{last:020}.parquet")
}

fn parse_file_name(name: &str) -> Option<(String, u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = rest.rsplitn(3, '-');
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    Some((parts.next()?.to_string(), first, last))
}

/// Every archive file under `dir` (recursively).
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

/// Deletes what a cut-short flush left: temporary files, and files past the checkpoint.
fn clean(root: &Path, stream: &str, checkpoint: &Checkpoint) -> anyhow::Result<usize> {
    let mut removed = 0;
    for table in tables::TABLES.iter().filter(|t| t.stream == stream) {
        let mut files = Vec::new();
        walk(&root.join(table.name), &mut files);
        for f in files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let stale = name.ends_with(".tmp")
                || parse_file_name(name)
                    .is_some_and(|(s, first, _)| s == stream && first > checkpoint.last_seq);
            if stale {
                std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Archives one stream until `shutdown`; a clean stop flushes what is buffered.
pub async fn archive_stream(
    js: jetstream::Context,
    stream: &'static str,
    config: ArchiveConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let checkpoint = read_checkpoint(&config.root, stream)?;
    let removed = clean(&config.root, stream, &checkpoint)?;
    if removed > 0 {
        tracing::warn!(stream, removed, "removed files of an unfinished flush");
    }
    let mut next = checkpoint.last_seq + 1;
    tracing::info!(stream, from = next, "archiving");
    let mut buffer: Vec<Row> = Vec::new();
    let mut first_buffered = Instant::now();
    while !shutdown.is_cancelled() {
        let consumer = async {
            js.get_stream(stream)
                .await?
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next + buffer.len() as u64,
                    },
                    ..Default::default()
                })
                .await
                .map_err(anyhow::Error::from)
        };
        let messages = match consumer.await {
            Ok(c) => c.messages().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(stream, error = %err, "cannot read; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let wait = if buffer.is_empty() {
                Duration::from_secs(3600)
            } else {
                config.roll_every.saturating_sub(first_buffered.elapsed())
            };
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => None,
                m = messages.next() => match m {
                    Some(Ok(m)) => Some(m),
                    Some(Err(err)) => {
                        tracing::warn!(stream, error = %err, "stream error; re-reading");
                        break;
                    }
                    None => break,
                },
            };
            if let Some(m) = message {
                let seq = m
                    .info()
                    .map(|i| i.stream_sequence)
                    .unwrap_or(next + buffer.len() as u64);
                if buffer.is_empty() {
                    first_buffered = Instant::now();
                }
                let json = match tables::decode_json(&m.payload) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(stream, seq, error = %e, "undecodable event: archived as null row");
                        serde_json::Value::Null
                    }
                };
                buffer.push(Row {
                    seq,
                    subject: m.subject.to_string(),
                    json,
                });
            }
            let due = buffer.len() >= config.roll_rows
                || (!buffer.is_empty() && first_buffered.elapsed() >= config.roll_every);
            if due {
                next = flush(&config.root, stream, &mut buffer).await?;
            }
        }
    }
    if !buffer.is_empty() {
        flush(&config.root, stream, &mut buffer).await?;
    }
    Ok(())
}

/// Writes the buffer as files and moves the checkpoint; returns the next sequence to read.
async fn flush(root: &Path, stream: &'static str, buffer: &mut Vec<Row>) -> anyhow::Result<u64> {
    let rows = std::mem::take(buffer);
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || write_files(&root, stream, rows)).await?
}

fn write_files(root: &Path, stream: &str, rows: Vec<Row>) -> anyhow::Result<u64> {
    let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
    else {
        anyhow::bail!("empty flush");
    };
    let mut groups: BTreeMap<(&'static str, String, String), Vec<Row>> = BTreeMap::new();
    for row in rows {
        let Some(table) = tables::table_for(stream, &row.subject) else {
            continue;
        };
        let (date, channel) = row.partition(table);
        groups
            .entry((table.name, date, channel))
            .or_default()
            .push(row);
    }
    let name = file_name(stream, first, last);
    let mut written = 0;
    for ((table_name, date, channel), rows) in groups {
        let table = tables::table(table_name).context("table")?;
        let path = partition_dir(root, table, &date, &channel).join(&name);
        let batch = tables::to_batch(table, &rows, false)?;
        write_atomic(&path, |file| {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                .set_key_value_metadata(Some(vec![
                    parquet::file::metadata::KeyValue::new(
                        "clawline.stream".into(),
                        stream.to_string(),
                    ),
                    parquet::file::metadata::KeyValue::new(
                        "clawline.first_seq".into(),
                        first.to_string(),
                    ),
                    parquet::file::metadata::KeyValue::new(
                        "clawline.last_seq".into(),
                        last.to_string(),
                    ),
                ]))
                .build();
            let mut writer = ArrowWriter::try_new(file.try_clone()?, batch.schema(), Some(props))?;
            writer.write(&batch)?;
            writer.close()?;
            Ok(())
        })?;
        written += 1;
    }
    let checkpoint = Checkpoint { last_seq: last };
    write_atomic(&checkpoint_path(root, stream), |f| {
        f.write_all(&serde_json::to_vec(&checkpoint)?)?;
        Ok(())
    })?;
    tracing::debug!(stream, first, last, files = written, "archived");
    Ok(last + 1)
}

pub fn partition_dir(root: &Path, table: &Table, date: &str, channel: &str) -> PathBuf {
    let mut dir = root.join(table.name).join(format!("date={date}"));
    if table.by_channel {
        dir = dir.join(format!("channel={channel}"));
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let n = file_name("STEPS", 7, 1234);
        assert_eq!(parse_file_name(&n), Some(("STEPS".into(), 7, 1234)));
        assert_eq!(parse_file_name("part-x.parquet"), None);
    }
}
