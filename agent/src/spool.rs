//! The on-disk spool: every event batch is written here, checksummed and
//! fsynced, before it is sent, and deleted only when the collector's
//! cumulative Ack covers it. A crash, a reboot or a long collector outage
//! loses nothing that reached the spool.
//!
//! Layout: a file `acked` with the highest acknowledged sequence number
//! (so a restart resends only what is still open), and segment files
//! `<first seq>.seg` of records
//! `[len u32][crc32 u32][seq u64][EventBatch protobuf]` (little endian; the
//! CRC covers seq and payload). At open, a torn record at the end of the
//! newest segment (a crash mid-write) is cut off. A damaged record
//! anywhere else loses only itself: the records after it are found again,
//! a copy of the segment as found is kept as `*.corrupt`, and the batches
//! that could not be read (gaps in the seqs) are counted. Start-up never
//! blocks.
//!
//! When the spool is over its size cap it drops the least important events
//! first: older segments are rewritten without their progress reports
//! (an episode's `Active` updates, superseded by its later reports; flow
//! summaries will rank below them). Only if that is not enough are the
//! oldest segments dropped whole. Every dropped event is counted.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use doorwatch_proto::v1::{self, EventBatch};
use prost::Message;

/// How much an event matters when the spool must drop some; the lowest
/// goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Importance {
    /// A progress report of an episode that later reports supersede, or
    /// knocks (single tries at closed ports).
    Progress,
    /// A first or final report: what security staff act on.
    Detection,
}

/// The importance of one event.
pub fn importance(event: &v1::Event) -> Importance {
    let active = v1::EpisodeState::Active as i32;
    match &event.detail {
        Some(v1::event::Detail::Scan(scan)) if scan.state == active => Importance::Progress,
        Some(v1::event::Detail::Flood(flood)) if flood.state == active => Importance::Progress,
        Some(v1::event::Detail::Knocks(_) | v1::event::Detail::Flows(_)) => Importance::Progress,
        Some(v1::event::Detail::Outbound(anomaly)) if anomaly.state == active => {
            Importance::Progress
        }
        _ => Importance::Detection,
    }
}

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 4 << 20;
/// No record is larger than the largest message the collector accepts.
const MAX_RECORD: usize = doorwatch_proto::MAX_MESSAGE_BYTES;
const HEADER: usize = 16;

/// A spool problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("batch {0} is larger than a spool record may be")]
    TooLarge(u64),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What opening found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged batches found (they will be resent).
    pub batches: usize,
    /// Bytes cut off a torn last record.
    pub truncated_bytes: u64,
    /// Copies (`*.corrupt`) of segments found damaged; their valid
    /// records were kept.
    pub quarantined: Vec<PathBuf>,
    /// Unacknowledged batches that could not be read (gaps in the seqs):
    /// their events are lost, and how many there were was lost with them.
    pub lost_batches: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
    events: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
}

/// The spool of one agent.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cap_bytes: u64,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to.
    current: Option<(u64, File)>,
    index: VecDeque<Entry>,
    events: usize,
    next_seq: u64,
}

fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What one segment holds.
struct Parsed {
    entries: Vec<Entry>,
    /// Where the last valid record ends (the segment's useful length).
    end: usize,
    /// Bytes between valid records that are no record (damage).
    damaged_bytes: usize,
}

/// A segment damaged before its end: a copy as found is left beside it
/// (`*.corrupt`) for whoever looks into it, and the segment is rewritten
/// with its valid records only, so the next start finds (and counts)
/// nothing again. Returns the rewritten bytes.
fn quarantine_and_compact(
    path: &Path,
    found: &[u8],
    parsed: &Parsed,
    recovery: &mut Recovery,
) -> Result<Vec<u8>, SpoolError> {
    let copy = path.with_extension("corrupt");
    std::fs::write(&copy, found).map_err(io_err(&copy))?;
    recovery.quarantined.push(copy);
    let compacted = compact(found, &parsed.entries);
    let rewrite = path.with_extension("rewrite");
    write_synced(&rewrite, &compacted)?;
    std::fs::rename(&rewrite, path).map_err(io_err(path))?;
    Ok(compacted)
}

/// A crash while appending: cuts what follows the last valid record.
fn cut_torn_tail(path: &Path, end: usize) -> Result<(), SpoolError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    file.set_len(end as u64).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// The record at `offset`, if a valid one starts there. After damage,
/// `window_after` is the last seq known good: a record found then must
/// follow it closely, which rejects garbage cheaply before any checksum.
fn record_at(
    bytes: &[u8],
    offset: usize,
    window_after: Option<u64>,
    segment: u64,
) -> Option<Entry> {
    let header = bytes.get(offset..offset + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&header[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    if len > MAX_RECORD {
        return None;
    }
    if let Some(after) = window_after
        && (seq <= after || seq - after > RESYNC_SEQ_WINDOW)
    {
        return None;
    }
    let payload = bytes.get(offset + HEADER..offset + HEADER + len)?;
    let mut check = crc32fast::Hasher::new();
    check.update(&seq_bytes);
    check.update(payload);
    if check.finalize() != crc {
        return None;
    }
    let batch = EventBatch::decode(payload).ok()?;
    if batch.seq != seq {
        return None;
    }
    Some(Entry {
        seq,
        segment,
        offset: offset as u64,
        len: len as u32,
        events: batch.events.len() as u32,
    })
}

/// How far past the last good seq a record found after damage may be.
const RESYNC_SEQ_WINDOW: u64 = 1 << 20;

/// Parses the records of one segment. A damaged record does not end the
/// segment: the records after it are found again (a header whose seq
/// follows the last good one, then a matching checksum and batch), so one
/// bad record loses only itself. `base` is the highest seq known before
/// this segment (the previous segments' last, or the acknowledged one).
fn parse(bytes: &[u8], segment: u64, base: u64) -> Parsed {
    let mut entries: Vec<Entry> = Vec::new();
    let (mut offset, mut end, mut damaged_bytes) = (0, 0, 0);
    let mut last: Option<u64> = None;
    while offset + HEADER <= bytes.len() {
        let resyncing = offset != end;
        let window = resyncing.then(|| last.unwrap_or(base).max(base));
        match record_at(bytes, offset, window, segment) {
            Some(entry) if last.is_none_or(|l| entry.seq > l) => {
                damaged_bytes += offset - end;
                offset += HEADER + entry.len as usize;
                end = offset;
                last = Some(entry.seq);
                entries.push(entry);
            }
            _ => offset += 1,
        }
    }
    Parsed {
        entries,
        end,
        damaged_bytes,
    }
}

/// The valid records of a damaged segment, back to back.
fn compact(bytes: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for e in entries {
        let start = e.offset as usize;
        if let Some(record) = bytes.get(start..start + HEADER + e.len as usize) {
            out.extend_from_slice(record);
        }
    }
    out
}

/// Writes `bytes` to `path` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let mut file = File::create(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// The segment reader on bytes in memory, for the fuzz targets (`fuzz/`):
/// how many records [`Spool::open`] would accept from a segment holding
/// `bytes` (nothing acknowledged yet), and where the last of them ends.
/// Not an API.
#[doc(hidden)]
pub fn parse_segment(bytes: &[u8]) -> (usize, usize) {
    let parsed = parse(bytes, 0, 0);
    (parsed.entries.len(), parsed.end)
}

/// One segment record as [`Spool::append`] writes it, for the fuzz targets
/// (`fuzz/`), so they can reach past the checksum. Not an API.
#[doc(hidden)]
pub fn segment_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    record(seq, payload)
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering what a
    /// previous run left.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<(Self, Recovery), SpoolError> {
        Self::open_with_segments(dir, cap_bytes, SEGMENT_BYTES)
    }

    /// [`Spool::open`] with a chosen segment size (tests use small ones).
    pub fn open_with_segments(
        dir: &Path,
        cap_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Self, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(dir))?;
        }
        let mut ids: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(".rewrite") {
                // A crash while shedding; the original segment is intact.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut spool = Self {
            dir: dir.to_owned(),
            cap_bytes,
            segment_bytes,
            segments: BTreeMap::new(),
            current: None,
            index: VecDeque::new(),
            events: 0,
            next_seq: 1,
        };
        let acked: u64 = std::fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        spool.next_seq = acked + 1;
        let mut recovery = Recovery::default();
        let last = ids.last().copied();
        // The highest seq known so far: records must follow it, and a
        // gap after it that damage explains is batches lost. (A gap
        // without damage is the oldest batches dropped over the cap,
        // counted when they were.)
        let mut known = acked;
        let mut after_damage = false;
        for id in ids {
            let path = spool.segment_path(id);
            let found = std::fs::read(&path).map_err(io_err(&path))?;
            let newest = Some(id) == last;
            let parsed = parse(&found, id, known);
            // Damage before the end; the newest segment may also end in a
            // torn record (a crash while appending), which is no damage.
            let damaged_here = parsed.damaged_bytes > 0 || (!newest && parsed.end < found.len());
            let (parsed, length) = if damaged_here {
                let compacted = quarantine_and_compact(&path, &found, &parsed, &mut recovery)?;
                (parse(&compacted, id, known), compacted.len())
            } else {
                if parsed.end < found.len() {
                    cut_torn_tail(&path, parsed.end)?;
                    recovery.truncated_bytes += (found.len() - parsed.end) as u64;
                }
                (parsed, found.len())
            };
            let entries: Vec<Entry> = parsed
                .entries
                .into_iter()
                .filter(|e| e.seq > acked)
                .collect();
            for entry in &entries {
                // Seqs are consecutive: a gap in a damaged segment, or
                // right after one, is batches nobody can read any more.
                if damaged_here || after_damage {
                    recovery.lost_batches += entry.seq.saturating_sub(known + 1);
                }
                after_damage = false;
                known = known.max(entry.seq);
            }
            // A damaged segment's lost tail shows as a gap before the next.
            after_damage |= damaged_here;
            if entries.is_empty() && !newest {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for entry in &entries {
                spool.next_seq = spool.next_seq.max(entry.seq + 1);
                spool.events += entry.events as usize;
            }
            spool.index.extend(entries);
            spool.segments.insert(
                id,
                Segment {
                    path,
                    bytes: length.min(parsed.end) as u64,
                },
            );
        }
        recovery.batches = spool.index.len();
        Ok((spool, recovery))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.seg"))
    }

    /// The sequence number the next batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes a batch of `events` durably and returns its sequence number
    /// and how many old events were dropped to stay under the cap.
    pub fn append(&mut self, events: Vec<v1::Event>) -> Result<(u64, usize), SpoolError> {
        let seq = self.next_seq;
        let batch = EventBatch { seq, events };
        let payload = batch.encode_to_vec();
        if payload.len() > MAX_RECORD {
            return Err(SpoolError::TooLarge(seq));
        }
        let bytes = record(seq, &payload);
        let full = self
            .current
            .as_ref()
            .and_then(|(id, _)| self.segments.get(id))
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if full {
            let path = self.segment_path(seq);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.segments.insert(seq, Segment { path, bytes: 0 });
            self.current = Some((seq, file));
        }
        let missing = || SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("no open spool segment"),
        };
        let (id, file) = self.current.as_mut().ok_or_else(missing)?;
        let segment = self.segments.get_mut(id).ok_or_else(missing)?;
        let offset = segment.bytes;
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // Leave no half record behind for the next write to follow.
            let _ = file.set_len(offset);
            return Err(SpoolError::Io {
                path: segment.path.clone(),
                source,
            });
        }
        segment.bytes += bytes.len() as u64;
        let events = batch.events.len();
        self.index.push_back(Entry {
            seq,
            segment: *id,
            offset,
            len: payload.len() as u32,
            events: events as u32,
        });
        self.events += events;
        self.next_seq += 1;
        Ok((seq, self.enforce_cap()))
    }

    /// While over the cap, sheds progress reports from older segments,
    /// then drops the oldest segments whole; returns events dropped.
    fn enforce_cap(&mut self) -> usize {
        let mut dropped = 0;
        if self.bytes() > self.cap_bytes {
            dropped += self.shed(Importance::Progress);
        }
        while self.bytes() > self.cap_bytes && self.segments.len() > 1 {
            let Some((&oldest, _)) = self.segments.iter().next() else {
                break;
            };
            dropped += self.remove_segment(oldest);
        }
        dropped
    }

    /// Rewrites closed segments, oldest first, without events of
    /// importance `level` or lower, until the spool is under its cap.
    /// Batches keep their sequence numbers (a batch may become empty).
    /// A segment that cannot be rewritten is left as it was. A batch that
    /// was sent but not yet acknowledged may be shed too; if the collector
    /// stored the original, its shed events count as dropped although they
    /// arrived (drops may be over-counted, never under-counted).
    fn shed(&mut self, level: Importance) -> usize {
        let current = self.current.as_ref().map(|(id, _)| *id);
        let closed: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|id| Some(*id) != current)
            .collect();
        let mut dropped = 0;
        for id in closed {
            if self.bytes() <= self.cap_bytes {
                break;
            }
            match self.rewrite_without(id, level) {
                Ok(n) => dropped += n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot shed progress reports from a spool segment")
                }
            }
        }
        dropped
    }

    fn rewrite_without(&mut self, id: u64, level: Importance) -> Result<usize, SpoolError> {
        let positions: Vec<usize> = (0..self.index.len())
            .filter(|&i| self.index[i].segment == id)
            .collect();
        let path = self.segment_path(id);
        // One read of the whole segment, not one per batch.
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut out = Vec::new();
        let mut updated = Vec::with_capacity(positions.len());
        let mut dropped = 0;
        for &i in &positions {
            let entry = self.index[i];
            let start = entry.offset as usize + HEADER;
            let payload = bytes
                .get(start..start + entry.len as usize)
                .ok_or_else(|| SpoolError::Io {
                    path: path.clone(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })?;
            let mut batch = EventBatch::decode(payload).map_err(|e| SpoolError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            let before = batch.events.len();
            batch.events.retain(|e| importance(e) > level);
            dropped += before - batch.events.len();
            let payload = batch.encode_to_vec();
            let offset = out.len() as u64;
            out.extend_from_slice(&record(batch.seq, &payload));
            updated.push((i, offset, payload.len() as u32, batch.events.len() as u32));
        }
        if dropped == 0 {
            return Ok(0);
        }
        let tmp = path.with_extension("rewrite");
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&out).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpoolError::Io { path, source });
        }
        for (i, offset, len, events) in updated {
            let entry = &mut self.index[i];
            self.events -= (entry.events - events) as usize;
            entry.offset = offset;
            entry.len = len;
            entry.events = events;
        }
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.bytes = out.len() as u64;
        }
        Ok(dropped)
    }

    fn remove_segment(&mut self, id: u64) -> usize {
        let mut dropped = 0;
        while self.index.front().is_some_and(|e| e.segment == id) {
            if let Some(e) = self.index.pop_front() {
                dropped += e.events as usize;
            }
        }
        self.events -= dropped;
        if let Some(segment) = self.segments.remove(&id) {
            let _ = std::fs::remove_file(&segment.path);
        }
        if self.current.as_ref().is_some_and(|(c, _)| *c == id) {
            self.current = None;
        }
        dropped
    }

    /// Forgets every batch with `seq <= acked` and deletes segments that
    /// hold nothing else. Returns how many batches were forgotten.
    pub fn ack(&mut self, acked: u64) -> usize {
        let mut removed = 0;
        while let Some(e) = self.index.front().copied() {
            if e.seq > acked {
                break;
            }
            self.index.pop_front();
            self.events -= e.events as usize;
            removed += 1;
        }
        if removed > 0 {
            self.record_ack(acked);
        }
        let keep_from = self.index.front().map_or(u64::MAX, |e| e.segment);
        let done: Vec<u64> = self
            .segments
            .range(..keep_from)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.remove_segment(id);
        }
        removed
    }

    /// Remembers the acknowledged position across restarts. Losing it is
    /// harmless (batches are resent and deduplicated by event id), so a
    /// failure is only logged.
    fn record_ack(&self, acked: u64) {
        let tmp = self.dir.join("acked.tmp");
        let result = std::fs::write(&tmp, acked.to_string())
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("acked")));
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the acknowledged position");
        }
    }

    /// Drops the oldest batch (the collector refused it as invalid);
    /// returns its event count.
    pub fn pop_front(&mut self) -> usize {
        match self.index.front().copied() {
            Some(e) => {
                self.ack(e.seq);
                e.events as usize
            }
            None => 0,
        }
    }

    /// The `n`-th unacknowledged batch, read back from disk.
    pub fn get(&self, n: usize) -> Result<Option<EventBatch>, SpoolError> {
        let Some(entry) = self.index.get(n) else {
            return Ok(None);
        };
        let path = self.segment_path(entry.segment);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(entry.offset + HEADER as u64))
            .map_err(io_err(&path))?;
        let mut payload = vec![0u8; entry.len as usize];
        file.read_exact(&mut payload).map_err(io_err(&path))?;
        EventBatch::decode(payload.as_slice())
            .map(Some)
            .map_err(|e| SpoolError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Unacknowledged batches.
    pub fn batches(&self) -> usize {
        self.index.len()
    }

    /// Unacknowledged events.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod tests;
