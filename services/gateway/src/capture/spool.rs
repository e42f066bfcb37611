//! The spool: an append-only file of events that could not be stored on JetStream, drained in order
//! once NATS is back. A second file holds the drained offset, so a restarted gateway resumes where it
//! left off; a torn frame at the tail (crash mid-append) is detected by its checksum and cut off.
//!
//! Frame: `len: u32 LE | crc32(body): u32 LE | body`, body = `u16 subject len | subject | u16 id len |
//! id | payload`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// One event waiting for JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub subject: String,
    pub msg_id: String,
    pub payload: Bytes,
}

pub struct Spool {
    inner: Mutex<Inner>,
    depth: AtomicU64,
    fsync: bool,
    dir: PathBuf,
    /// One gateway per spool: two appending to one file would interleave and drain twice.
    _lock: clawline_runtime::DirLock,
}

struct Inner {
    file: File,
    offset_path: PathBuf,
    /// Bytes before this offset are drained.
    read_offset: u64,
    /// End of the last whole frame.
    write_len: u64,
}

const HEADER: usize = 8;
const MAX_FRAME: u32 = 64 * 1024 * 1024;

impl Spool {
    /// Opens (or creates) the spool in `dir`, counting the frames still to drain.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<Self> {
        let lock = clawline_runtime::lock_dir(dir)?;
        let path = dir.join("spool.log");
        let offset_path = dir.join("spool.offset");
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let file_len = file.metadata()?.len();
        let read_offset = std::fs::read_to_string(&offset_path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&o| o <= file_len)
            .unwrap_or(0);
        // Count whole frames from the drained offset; cut a torn tail.
        let mut pos = read_offset;
        let mut frames = 0u64;
        while let Some(next) = read_frame(&file, pos, file_len)?.map(|(_, next)| next) {
            pos = next;
            frames += 1;
        }
        if pos < file_len {
            tracing::warn!(path = %path.display(), kept = pos, dropped_bytes = file_len - pos, "spool had a torn tail; cut");
            file.set_len(pos)?;
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                file,
                offset_path,
                read_offset,
                write_len: pos,
            }),
            depth: AtomicU64::new(frames),
            fsync,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Events waiting to be drained.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Acquire)
    }

    /// Appends an event (and fsyncs it when configured). Blocking: call from `spawn_blocking`.
    pub fn append(&self, entry: &SpoolEntry) -> io::Result<()> {
        let frame = encode_frame(entry)?;
        let mut inner = self.lock();
        inner.file.write_all(&frame)?;
        if self.fsync {
            inner.file.sync_data()?;
        }
        inner.write_len += frame.len() as u64;
        self.depth.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The oldest undrained event and the offset after it. Blocking.
    pub fn peek(&self) -> io::Result<Option<(SpoolEntry, u64)>> {
        Ok(self.peek_batch(1)?.pop())
    }

    /// Up to `max` of the oldest undrained events, each with the offset after it. Blocking.
    pub fn peek_batch(&self, max: usize) -> io::Result<Vec<(SpoolEntry, u64)>> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut pos = inner.read_offset;
        while out.len() < max && pos < inner.write_len {
            let Some((entry, next)) = read_frame(&inner.file, pos, inner.write_len)? else {
                break;
            };
            pos = next;
            out.push((entry, next));
        }
        Ok(out)
    }

    /// Marks one event drained: everything before `next_offset`. Blocking.
    pub fn commit(&self, next_offset: u64) -> io::Result<()> {
        self.commit_many(next_offset, 1)
    }

    /// Marks `count` events drained, ending at `next_offset`; empties the file once all is drained.
    /// Blocking.
    pub fn commit_many(&self, next_offset: u64, count: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if next_offset <= inner.read_offset {
            return Ok(());
        }
        inner.read_offset = next_offset;
        self.depth.fetch_sub(count, Ordering::AcqRel);
        if inner.read_offset >= inner.write_len {
            inner.file.set_len(0)?;
            inner.read_offset = 0;
            inner.write_len = 0;
        }
        let tmp = inner.offset_path.with_extension("offset.tmp");
        std::fs::write(&tmp, inner.read_offset.to_string())?;
        std::fs::rename(&tmp, &inner.offset_path)?;
        Ok(())
    }

    /// Sets aside an event JetStream keeps refusing (e.g. larger than the stream allows) in
    /// `rejected.log`, same frame format, so it neither blocks the spool nor vanishes. Blocking.
    pub fn dead_letter(&self, entry: &SpoolEntry) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("rejected.log"))?;
        file.write_all(&encode_frame(entry)?)?;
        file.sync_data()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written frame counted, so the data
        // is still consistent: keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn encode_frame(entry: &SpoolEntry) -> io::Result<Vec<u8>> {
    let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "spool entry field too long");
    let subject_len = u16::try_from(entry.subject.len()).map_err(|_| too_long())?;
    let id_len = u16::try_from(entry.msg_id.len()).map_err(|_| too_long())?;
    let mut body =
        Vec::with_capacity(4 + entry.subject.len() + entry.msg_id.len() + entry.payload.len());
    body.extend_from_slice(&subject_len.to_le_bytes());
    body.extend_from_slice(entry.subject.as_bytes());
    body.extend_from_slice(&id_len.to_le_bytes());
    body.extend_from_slice(entry.msg_id.as_bytes());
    body.extend_from_slice(&entry.payload);
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(too_long)?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads the frame at `pos`; `None` when there is no whole, intact frame there.
fn read_frame(file: &File, pos: u64, end: u64) -> io::Result<Option<(SpoolEntry, u64)>> {
    if pos + HEADER as u64 > end {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, pos)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let next = pos + HEADER as u64 + u64::from(len);
    if len > MAX_FRAME || next > end {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact_at(&mut body, pos + HEADER as u64)?;
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(decode_body(&body).map(|entry| (entry, next)))
}

fn decode_body(body: &[u8]) -> Option<SpoolEntry> {
    let take = |buf: &[u8], at: usize| -> Option<(String, usize)> {
        let len = u16::from_le_bytes([*buf.get(at)?, *buf.get(at + 1)?]) as usize;
        let text = std::str::from_utf8(buf.get(at + 2..at + 2 + len)?).ok()?;
        Some((text.to_string(), at + 2 + len))
    };
    let (subject, at) = take(body, 0)?;
    let (msg_id, at) = take(body, at)?;
    Some(SpoolEntry {
        subject,
        msg_id,
        payload: Bytes::copy_from_slice(body.get(at..)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> SpoolEntry {
        SpoolEntry {
            subject: "clawline.steps.train".into(),
            msg_id: format!("stp_{i}"),
            payload: Bytes::from(vec![i as u8; 100 + i]),
        }
    }

    fn drain(spool: &Spool) -> Vec<SpoolEntry> {
        let mut out = Vec::new();
        while let Some((e, next)) = spool.peek().expect("peek") {
            spool.commit(next).expect("commit");
            out.push(e);
        }
        out
    }

    #[test]
    fn entries_come_back_in_order_and_the_file_empties() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), false).expect("open");
        for i in 0..5 {
            spool.append(&entry(i)).expect("append");
        }
        assert_eq!(spool.depth(), 5);
        assert_eq!(drain(&spool), (0..5).map(entry).collect::<Vec<_>>());
        assert_eq!(spool.depth(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("spool.log"))
                .expect("meta")
                .len(),
            0
        );
    }

    #[test]
    fn a_reopened_spool_resumes_after_the_drained_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let spool = Spool::open(dir.path(), true).expect("open");
            for i in 0..4 {
                spool.append(&entry(i)).expect("append");
            }
            let (first, next) = spool.peek().expect("peek").expect("entry");
            assert_eq!(first, entry(0));
            spool.commit(next).expect("commit");
        }
        let spool = Spool::open(dir.path(), true).expect("reopen");
        assert_eq!(spool.depth(), 3);
        assert_eq!(drain(&spool), (1..4).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn a_spool_has_one_gateway_at_a_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = Spool::open(dir.path(), false).expect("open");
        first.append(&entry(0)).expect("append");
        let err = Spool::open(dir.path(), false)
            .err()
            .expect("a second gateway on the same spool is refused");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(first);
        let spool = Spool::open(dir.path(), false).expect("free again");
        assert_eq!(drain(&spool), vec![entry(0)], "the refusal changed nothing");
    }

    #[test]
    fn a_torn_tail_is_cut_and_whole_frames_survive() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let spool = Spool::open(dir.path(), false).expect("open");
            spool.append(&entry(0)).expect("append");
            spool.append(&entry(1)).expect("append");
        }
        // Simulate a crash mid-append: half a frame at the end.
        let path = dir.path().join("spool.log");
        let mut bytes = std::fs::read(&path).expect("read");
        let whole = bytes.len();
        bytes.extend_from_slice(&encode_frame(&entry(2)).expect("frame")[..50]);
        std::fs::write(&path, &bytes).expect("write");
        let spool = Spool::open(dir.path(), false).expect("reopen");
        assert_eq!(spool.depth(), 2);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len() as usize,
            whole
        );
        spool.append(&entry(3)).expect("append after cut");
        assert_eq!(drain(&spool), vec![entry(0), entry(1), entry(3)]);
    }
}
