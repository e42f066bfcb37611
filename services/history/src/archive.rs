//! The archiver: every stream to Parquet, resumable to the message.
//!
//! Per stream, messages are read in sequence order and buffered; a flush (every `roll_rows`
//! messages or `roll_secs`) writes one file per (table, date, channel) named with the flush's
//! stream sequence range, each whole or not at all (a local temporary file fsynced and renamed,
//! or one object-store PUT); only then does the stream's checkpoint (`_checkpoints/<STREAM>.json`,
//! written the same way) move to the flush's last sequence. At start, files beyond the checkpoint (a flush cut short by kill -9) and
//! temporary files are deleted, and reading resumes right after the checkpoint: no row is written
//! twice and none is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clawline_nats::Follower;
use clawline_runtime::CancellationToken;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::store::ArchiveRoot;
use crate::tables::{self, Row, Table};

#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    pub root: ArchiveRoot,
    pub roll_rows: usize,
    pub roll_every: Duration,
}

impl ArchiveConfig {
    /// The archive at `root`, rolling files at the defaults ([`crate::ROLL_ROWS`] messages or
    /// [`crate::ROLL_SECS`] seconds).
    pub fn new(root: ArchiveRoot) -> Self {
        Self {
            root,
            roll_rows: crate::ROLL_ROWS,
            roll_every: Duration::from_secs(crate::ROLL_SECS),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every message up to this stream sequence is in a file.
    pub last_seq: u64,
    /// When the archived stream was created (Unix nanoseconds, JetStream's stream info): which
    /// deployment's stream the sequences count in. Absent in archives written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_created: Option<i64>,
}

impl Checkpoint {
    /// Refuses a live stream that is not the one this archive was written from: its sequences
    /// count something else, so joining the two would mix two histories.
    pub fn check_stream(
        &self,
        root: &ArchiveRoot,
        stream: &str,
        created: i64,
    ) -> anyhow::Result<()> {
        match self.stream_created {
            Some(archived) if archived != created => anyhow::bail!(
                "--archive-dir {root} holds stream {stream} of another NATS deployment (created {}, \
                 the one at --nats-url was created {}): give the archive of this deployment, or \
                 --archive-only to query the archive alone",
                rfc3339(archived),
                rfc3339(created)
            ),
            _ => Ok(()),
        }
    }
}

/// A stream's creation time as JetStream reports it, in Unix nanoseconds.
pub fn created_nanos(info: &jetstream::stream::Info) -> i64 {
    i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn rfc3339(nanos: i64) -> String {
    crate::explain::rfc3339(nanos / 1_000_000)
}

/// The checkpoint's path relative to the archive root.
pub fn checkpoint_key(stream: &str) -> String {
    format!("_checkpoints/{stream}.json")
}

/// The checkpoint file of a local archive.
pub fn checkpoint_path(root: &Path, stream: &str) -> PathBuf {
    root.join(checkpoint_key(stream))
}

pub async fn read_checkpoint(root: &ArchiveRoot, stream: &str) -> anyhow::Result<Checkpoint> {
    match root.get(&checkpoint_key(stream)).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{root}/{}: corrupt checkpoint", checkpoint_key(stream))),
        None => Ok(Checkpoint::default()),
    }
}

/// `part-<STREAM>-<first>-<last>.parquet`
pub fn file_name(stream: &str, first: u64, last: u64) -> String {
    format!("part-{stream}-{first:020}-{last:020}.parquet")
}

pub(crate) fn parse_file_name(name: &str) -> Option<(String, u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = rest.rsplitn(3, '-');
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    Some((parts.next()?.to_string(), first, last))
}

/// Deletes what a cut-short flush left: temporary files, and files past the checkpoint.
async fn clean(root: &ArchiveRoot, stream: &str, checkpoint: &Checkpoint) -> anyhow::Result<usize> {
    let mut removed = 0;
    for table in tables::TABLES.iter().filter(|t| t.stream == stream) {
        for f in root.list(table.name).await? {
            let name = f.rsplit('/').next().unwrap_or_default();
            let stale = name.ends_with(".tmp")
                || parse_file_name(name)
                    .is_some_and(|(s, first, _)| s == stream && first > checkpoint.last_seq);
            if stale {
                root.delete(&f).await?;
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
    let checkpoint = read_checkpoint(&config.root, stream).await?;
    let removed = clean(&config.root, stream, &checkpoint).await?;
    if removed > 0 {
        tracing::warn!(stream, removed, "removed files of an unfinished flush");
    }
    let next = checkpoint.last_seq + 1;
    tracing::info!(stream, from = next, "archiving");
    let root = config.root.clone();
    // Another deployment's stream (checked at each connection): its sequences are not this
    // archive's.
    let mut follower = Follower::new(js, stream, None, next).check_stream(move |info| {
        checkpoint
            .check_stream(&root, stream, created_nanos(info))
            .map_err(|e| format!("{e:#}"))
    });
    let mut buffer: Vec<Row> = Vec::new();
    let mut first_buffered = Instant::now();
    loop {
        let wait = if buffer.is_empty() {
            Duration::from_secs(3600)
        } else {
            config.roll_every.saturating_sub(first_buffered.elapsed())
        };
        let room = config.roll_rows.saturating_sub(buffer.len()).max(1);
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = follower.next_chunk(room, wait) => chunk?,
        };
        for m in chunk {
            if buffer.is_empty() {
                first_buffered = Instant::now();
            }
            let json = match tables::decode_json(&m.payload) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(stream, seq = m.seq, error = %e, "undecodable event: archived as null row");
                    serde_json::Value::Null
                }
            };
            buffer.push(Row {
                seq: m.seq,
                subject: m.subject.to_string(),
                json,
            });
        }
        let due = buffer.len() >= config.roll_rows
            || (!buffer.is_empty() && first_buffered.elapsed() >= config.roll_every);
        if due {
            let created = follower.info().map(created_nanos);
            flush(&config.root, stream, created, &mut buffer).await?;
        }
    }
    if !buffer.is_empty() {
        let created = follower.info().map(created_nanos);
        flush(&config.root, stream, created, &mut buffer).await?;
    }
    Ok(())
}

/// Writes the buffer as files and moves the checkpoint.
async fn flush(
    root: &ArchiveRoot,
    stream: &'static str,
    created: Option<i64>,
    buffer: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let rows = std::mem::take(buffer);
    let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
    else {
        anyhow::bail!("empty flush");
    };
    let files = tokio::task::spawn_blocking(move || encode_files(stream, rows)).await??;
    let written = files.len();
    for (path, bytes) in files {
        root.put(&path, bytes).await?;
    }
    let checkpoint = Checkpoint {
        last_seq: last,
        stream_created: created,
    };
    root.put(&checkpoint_key(stream), serde_json::to_vec(&checkpoint)?)
        .await?;
    tracing::debug!(stream, first, last, files = written, "archived");
    Ok(())
}

/// The flush's Parquet files, one per (table, date, channel), with their paths under the root.
fn encode_files(stream: &str, rows: Vec<Row>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let first = rows.first().map_or(0, |r| r.seq);
    let last = rows.last().map_or(0, |r| r.seq);
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
    let mut files = Vec::new();
    for ((table_name, date, channel), rows) in groups {
        let table = tables::table(table_name).context("table")?;
        let path = format!("{}/{name}", partition_key(table, &date, &channel));
        let batch = tables::to_batch(table, &rows, false)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_key_value_metadata(Some(
                [
                    ("clawline.stream", stream.to_string()),
                    ("clawline.first_seq", first.to_string()),
                    ("clawline.last_seq", last.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.into(), v))
                .collect(),
            ))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
        writer.write(&batch)?;
        writer.close()?;
        files.push((path, bytes));
    }
    Ok(files)
}

/// `steps/date=2026-11-24/channel=train` (tables without channels stop at the date).
pub fn partition_key(table: &Table, date: &str, channel: &str) -> String {
    let mut key = format!("{}/date={date}", table.name);
    if table.by_channel {
        key.push_str(&format!("/channel={channel}"));
    }
    key
}

/// A partition's directory in a local archive.
pub fn partition_dir(root: &Path, table: &Table, date: &str, channel: &str) -> PathBuf {
    root.join(partition_key(table, date, channel))
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
