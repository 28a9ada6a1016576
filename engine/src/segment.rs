//! A segment: one file of the partition log, named by its base LSN (`{base:020}.log`).
//!
//! Every segment is read through one `memmap2` mapping. The active segment is mapped once
//! with a length of its full capacity, beyond the file's current end: Linux allows a shared
//! mapping past EOF, and pages become readable as `write()` extends the file, so appends need
//! no remap and reads of the active segment need no syscall. Bytes not yet handed to the OS
//! (appended during the current event-loop turn) are read from the write buffer instead.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

use crate::error::{IoContext, OpenError, WriteError};
use crate::record;

pub const SEGMENT_HEADER_LEN: usize = 64;
/// The magic's last byte is the format version. 2: records may carry `record::MORE` (write
/// batches). Version 1 files are read as they are; a build that knows only version 1 refuses
/// version 2 files ("bad magic") instead of misreading the bit as damage.
const SEGMENT_MAGIC: &[u8; 7] = b"SKVLOG\x00";
pub const SEGMENT_FORMAT: u8 = 2;

/// The fixed header at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN the segment is named by; every record in it has LSN >= base.
    pub base: u64,
    /// For merge output: the end (exclusive) of the LSN range it replaced. Any other segment
    /// whose base lies in (base, covered_end) is a leftover input of an interrupted merge.
    /// 0 for segments written by appends.
    pub covered_end: u64,
    /// Random id tying hint files to this exact file.
    pub file_id: u64,
    /// For merge output: tombstones (and expired values) with an LSN below this may have been
    /// dropped, by this merge or an earlier one whose output it merged. A replica whose log
    /// ends below it may still hold a value one of them deleted, so it cannot catch up from
    /// this log record by record. 0 for segments written by appends (and for files written
    /// before the field existed: the bytes were zero).
    pub dropped_below: u64,
    /// Format version (the magic's last byte): `SEGMENT_FORMAT` for every file written now.
    pub format: u8,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..7].copy_from_slice(SEGMENT_MAGIC);
        b[7] = self.format;
        b[8..16].copy_from_slice(&self.base.to_le_bytes());
        b[16..24].copy_from_slice(&self.covered_end.to_le_bytes());
        b[24..32].copy_from_slice(&self.file_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.dropped_below.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "file is {} bytes, shorter than the header",
                b.len()
            ));
        }
        if &b[0..7] != SEGMENT_MAGIC || !(1..=SEGMENT_FORMAT).contains(&b[7]) {
            return Err(if &b[0..7] == SEGMENT_MAGIC {
                format!(
                    "format version {} is newer than this build's ({SEGMENT_FORMAT})",
                    b[7]
                )
            } else {
                "bad magic".into()
            });
        }
        let stored = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if stored != crc32fast::hash(&b[0..60]) {
            return Err("header checksum mismatch".into());
        }
        let u = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        Ok(SegmentHeader {
            base: u(8),
            covered_end: u(16),
            file_id: u(24),
            dropped_below: u(32),
            format: b[7],
        })
    }
}

pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub fn hint_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.hint"))
}

/// Parses `{base:020}.log` names; anything else is not a segment.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Maps `len` bytes of `file` read-only, possibly past its end (see the module comment).
fn map(file: &File, len: usize, path: &Path) -> Result<Mmap, std::io::Error> {
    let _ = path;
    // SAFETY: the mapping is read-only and shared. simplekv holds an exclusive lock on the
    // directory, so no other process truncates or rewrites these files; within the process
    // a segment is only truncated after every keydir entry into the truncated range has been
    // dropped, and bytes are only read below the length known to be written.
    unsafe { MmapOptions::new().len(len.max(1)).map(file) }
}

/// An open segment file.
pub struct Segment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Shared so an fsync can run on another thread without a `dup` per call.
    file: Arc<File>,
    map: Mmap,
    /// Bytes handed to the OS (the file length as far as this process knows).
    written: u64,
    /// Bytes appended but not yet written (active segment only).
    buf: Vec<u8>,
    /// Bytes known to be fsynced.
    synced: u64,
    /// Sparse LSN → offset index: one entry about every `INDEX_INTERVAL` bytes.
    index: Vec<(u64, u32)>,
    last_indexed_off: u64,
    /// Bytes of records superseded, deleted or otherwise dead.
    pub dead: u64,
    /// LSN of the last record, if any.
    pub last_lsn: Option<u64>,
    active: bool,
    /// Offset in `buf` of the last record encoded here with `MORE` set: the open batch of
    /// local writes, ended before the buffer is written.
    open_batch: Option<usize>,
    /// The last record appended has `MORE` set (its batch goes on).
    tail_more: bool,
    /// File offset up to which disk blocks are allocated for appends (`reserve`): buffered
    /// records below it cannot fail to be written for want of space.
    reserved: u64,
    /// The file system cannot allocate ahead (no `fallocate`): appends are not reserved.
    no_reserve: bool,
    /// A failed write dropped buffered records (`flush`).
    dropped: bool,
}

const INDEX_INTERVAL: u64 = 64 << 10;

/// How much disk `Segment::reserve` allocates ahead at a time: every partition's active
/// segment holds up to this much more than it wrote (a black-box run: at 1 MiB, 16 idle
/// partitions held 16 MiB of a small disk), so it stays small; one `fallocate` per step of
/// records costs nothing measurable.
const RESERVE_STEP: u64 = 256 << 10;

impl Drop for Segment {
    /// An active segment gives back the space it set aside (a clean shutdown, a reload): found
    /// by a black-box run, every partition's log kept 1 MiB past its end after a restart.
    fn drop(&mut self) {
        if self.active {
            self.release_reserved();
        }
    }
}

/// Allocates `[off, off + len)` of `file` without changing its length; returns `len`.
fn fallocate_keep_size(file: &File, off: u64, len: u64) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: a plain syscall on a descriptor this file owns.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, o, l) };
        if rc == 0 {
            return Ok(len);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn punch_hole(file: &File, off: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: as in `fallocate_keep_size`.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Segment {
    /// Creates a new, empty active segment (header written and fsynced, directory fsynced).
    pub fn create(
        dir: &Path,
        header: SegmentHeader,
        capacity: u64,
        file_name: Option<&str>,
    ) -> Result<Segment, WriteError> {
        let path = match file_name {
            Some(n) => dir.join(n),
            None => segment_path(dir, header.base),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .at_write(&path)?;
        let made = (|| {
            file.write_all(&header.encode()).at_write(&path)?;
            file.sync_all().at_write(&path)?;
            crate::fsutil::sync_dir(dir).at_write(dir)?;
            map(
                &file,
                capacity.max(SEGMENT_HEADER_LEN as u64) as usize,
                &path,
            )
            .at_write(&path)
        })();
        let map = match made {
            Ok(m) => m,
            Err(e) => {
                // Not left behind (a full disk fails the header write): the next roll
                // creates the same name again, and the log stays a run of whole segments.
                // Should the removal fail too, opening drops a file without a whole header.
                if std::fs::remove_file(&path).is_ok() {
                    let _ = crate::fsutil::sync_dir(dir);
                }
                return Err(e);
            }
        };
        Ok(Segment {
            path,
            header,
            file: Arc::new(file),
            map,
            written: SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
            synced: SEGMENT_HEADER_LEN as u64,
            index: Vec::new(),
            last_indexed_off: 0,
            dead: 0,
            last_lsn: None,
            active: true,
            open_batch: None,
            tail_more: false,
            reserved: SEGMENT_HEADER_LEN as u64,
            no_reserve: false,
            dropped: false,
        })
    }

    /// Opens an existing segment; `capacity` > file length keeps room to append.
    pub fn open(path: &Path, writable: bool, capacity: u64) -> Result<Segment, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .at_open(path)?;
        let len = file.metadata().at_open(path)?.len();
        let mut hb = [0u8; SEGMENT_HEADER_LEN];
        if len < SEGMENT_HEADER_LEN as u64 {
            return Err(OpenError::BadSegmentHeader {
                path: path.to_path_buf(),
                reason: format!("file is {len} bytes, shorter than the header"),
            });
        }
        file.read_exact_at(&mut hb, 0).at_open(path)?;
        let header = SegmentHeader::decode(&hb).map_err(|reason| OpenError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason,
        })?;
        let map = map(&file, capacity.max(len) as usize, path).at_open(path)?;
        Ok(Segment {
            path: path.to_path_buf(),
            header,
            file: Arc::new(file),
            map,
            written: len,
            buf: Vec::new(),
            // The log's tail may have been written (and acknowledged, the commit journal
            // holding it) by a process that died before fsyncing it: the page cache then
            // still shows it, but nothing says it is on disk. A segment that takes appends
            // counts as unsynced until fsynced; a closed one was fsynced when sealed.
            synced: if writable { 0 } else { len },
            index: Vec::new(),
            last_indexed_off: 0,
            dead: 0,
            last_lsn: None,
            active: writable,
            open_batch: None,
            tail_more: false,
            reserved: len,
            no_reserve: false,
            dropped: false,
        })
    }

    pub fn base(&self) -> u64 {
        self.header.base
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Logical length: written plus buffered bytes.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= SEGMENT_HEADER_LEN as u64
    }

    /// Room left in the mapping.
    pub fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// The bytes handed to the OS, through the mapping.
    pub fn written_bytes(&self) -> &[u8] {
        &self.map[..self.written as usize]
    }

    /// Bytes at `[off, off + len)`, from the mapping or the write buffer.
    pub fn bytes(&self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        if end <= self.written {
            self.map.get(off as usize..end as usize)
        } else if off >= self.written {
            let s = (off - self.written) as usize;
            self.buf.get(s..s + len)
        } else {
            // A record straddling the written/buffered boundary cannot exist: flushes write
            // whole buffers.
            None
        }
    }

    /// Records the position of a record for LSN lookups.
    pub fn note_record(&mut self, lsn: u64, off: u64) {
        if self.index.is_empty() || off >= self.last_indexed_off + INDEX_INTERVAL {
            self.index.push((lsn, off as u32));
            self.last_indexed_off = off;
        }
        self.last_lsn = Some(lsn);
    }

    /// An offset at or before the first record with LSN >= `lsn`.
    pub fn seek_hint(&self, lsn: u64) -> u64 {
        let i = self.index.partition_point(|&(l, _)| l <= lsn);
        if i == 0 {
            SEGMENT_HEADER_LEN as u64
        } else {
            self.index[i - 1].1 as u64
        }
    }

    /// Appends one encoded record to the write buffer as it is (`MORE` included); returns its
    /// offset.
    pub fn append(&mut self, bytes: &[u8]) -> u64 {
        let off = self.len();
        debug_assert!(self.open_batch.is_none(), "the store ends its batch first");
        self.end_batch();
        self.tail_more = bytes.get(24).is_some_and(|b| b & record::MORE != 0);
        self.buf.extend_from_slice(bytes);
        off
    }

    /// The record just encoded into `buf_mut()` at buffer offset `at` has `MORE` set and ends
    /// the open batch for now.
    pub fn open_batch_at(&mut self, at: usize) {
        self.open_batch = Some(at);
        self.tail_more = true;
    }

    /// The last record appended has `MORE` set: its batch is not finished.
    pub fn batch_open(&self) -> bool {
        self.tail_more
    }

    /// Makes the last record of the open batch of local writes its end (clears `MORE`).
    /// Returns how far from the end of the buffer that record starts, for copies of it.
    pub fn end_batch(&mut self) -> Option<usize> {
        let at = self.open_batch.take()?;
        self.tail_more = false;
        record::end_batch(&mut self.buf[at..]);
        Some(self.buf.len() - at)
    }

    /// Gives the write buffer to the mapping's file pointer; takes whatever the caller
    /// encoded directly into `buf_mut()`.
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn has_unwritten(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn has_unsynced(&self) -> bool {
        self.synced < self.len()
    }

    /// Writes the buffer to the file. On error the file is cut back to its previous length so
    /// no partial record stays behind, and the buffer is dropped.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // The store ends the batch first (and its journal copy with it); never written open.
        debug_assert!(self.open_batch.is_none(), "the store ends its batch first");
        self.end_batch();
        match self.file.write_all_at(&self.buf, self.written) {
            Ok(()) => {
                self.written += self.buf.len() as u64;
                self.buf.clear();
                if self.buf.capacity() > (4 << 20) {
                    self.buf.shrink_to(1 << 20);
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.written);
                self.buf.clear();
                self.dropped = true;
                Err(WriteError::Io {
                    path: self.path.clone(),
                    source: e,
                })
            }
        }
    }

    /// fdatasync the file (after flushing).
    pub fn sync(&mut self) -> Result<(), WriteError> {
        self.flush()?;
        if self.synced < self.written {
            self.file.sync_data().at_write(&self.path)?;
            self.synced = self.written;
        }
        Ok(())
    }

    /// Stops appending: flush, fsync, and give back the blocks reserved past the end.
    pub fn seal(&mut self) -> Result<(), WriteError> {
        self.sync()?;
        self.active = false;
        self.release_reserved();
        Ok(())
    }

    /// Takes appends again after a `seal` (the segment meant to follow could not be created).
    pub fn unseal(&mut self) {
        self.active = true;
    }

    /// Whether `more` bytes fit in the space already set aside (or nothing is set aside on
    /// this file system).
    pub fn has_room(&self, more: u64) -> bool {
        self.no_reserve || self.len() + more <= self.reserved
    }

    /// File offset up to which space is set aside (`reserve`); `None` where nothing is.
    pub fn reserved_end(&self) -> Option<u64> {
        (!self.no_reserve).then_some(self.reserved)
    }

    /// Makes sure the disk has room for `more` bytes appended after everything buffered, so
    /// that writing the buffer cannot fail for want of space: the records of a turn are
    /// applied (and may be read) before the turn ends and writes them, and a write that would
    /// then fail would take back records other commands already saw. Space is allocated past
    /// the end of the file (`FALLOC_FL_KEEP_SIZE`: the file's length, all that recovery
    /// reads, is unchanged) in steps of `RESERVE_STEP`, or just `more` when the disk has no
    /// more than that. A full disk fails the write that asks, before it is applied.
    pub fn reserve(&mut self, more: u64) -> Result<(), WriteError> {
        let need = self.len() + more;
        if self.no_reserve || need <= self.reserved {
            return Ok(());
        }
        let from = self.reserved.max(self.written);
        let step = RESERVE_STEP.min(self.capacity().saturating_sub(from));
        let mut r = fallocate_keep_size(&self.file, from, (need - from).max(step));
        if r.as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOSPC))
            && step > need - from
        {
            r = fallocate_keep_size(&self.file, from, need - from);
        }
        match r {
            Ok(len) => {
                self.reserved = from + len;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) =>
            {
                self.no_reserve = true;
                Ok(())
            }
            Err(source) => Err(WriteError::Reserve {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Frees the blocks reserved past the written end (best effort: a file system that keeps
    /// them only wastes the space until the segment is merged away).
    fn release_reserved(&mut self) {
        if self.reserved > self.written && !self.no_reserve {
            // A truncation to the same length frees blocks past the end on ext4 and XFS; a
            // hole punched there does on tmpfs.
            let _ = self.file.set_len(self.written);
            let _ = punch_hole(&self.file, self.written, self.reserved - self.written);
        }
        self.reserved = self.written;
    }

    /// Gives the reservation back and reserves no more, as on a file system without
    /// `fallocate`.
    #[cfg(test)]
    pub(crate) fn stop_reserving(&mut self) {
        self.release_reserved();
        self.no_reserve = true;
    }

    /// True once after a failed write dropped buffered records.
    pub fn take_dropped(&mut self) -> bool {
        std::mem::take(&mut self.dropped)
    }

    /// Cuts the file at `off` (a record boundary), drops the sparse index past it and makes the
    /// segment appendable again.
    pub fn truncate(&mut self, off: u64) -> Result<(), WriteError> {
        self.flush()?;
        self.file.set_len(off).at_write(&self.path)?;
        self.file.sync_all().at_write(&self.path)?;
        self.written = off;
        self.synced = off;
        self.reserved = off;
        self.index.retain(|&(_, o)| (o as u64) < off);
        self.last_indexed_off = self.index.last().map(|&(_, o)| o as u64).unwrap_or(0);
        self.active = true;
        Ok(())
    }

    /// Re-opens the file for writing (a closed segment becoming active after a truncation).
    pub fn reopen_writable(&mut self, capacity: u64) -> Result<(), WriteError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .at_write(&self.path)?;
        let map =
            map(&file, capacity.max(self.written) as usize, &self.path).at_write(&self.path)?;
        self.file = Arc::new(file);
        self.map = map;
        self.active = true;
        Ok(())
    }

    /// Counts everything written as synced (an fsync of it was handed to another thread).
    pub fn mark_synced(&mut self) {
        self.synced = self.written;
    }

    /// Counts the first `upto` bytes as synced (an fsync that started when that much was
    /// written has finished).
    pub fn mark_synced_to(&mut self, upto: u64) {
        self.synced = self.synced.max(upto.min(self.written));
    }

    /// Bytes known to be fsynced.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// The file and how much of it is written, for an fsync on another thread.
    pub fn sync_handle(&self) -> (Arc<File>, u64) {
        (self.file.clone(), self.written)
    }

    pub fn reset_index(&mut self) {
        self.index.clear();
        self.last_indexed_off = 0;
        self.last_lsn = None;
        self.dead = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_corruption_detected() {
        let h = SegmentHeader {
            base: 12,
            covered_end: 99,
            file_id: 0xdead_beef,
            dropped_below: 77,
            format: SEGMENT_FORMAT,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[10] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
        assert!(SegmentHeader::decode(&b[..10]).is_err());
    }

    #[test]
    fn names_parse_only_when_exact() {
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.hint"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn appended_bytes_are_readable_before_and_after_flush_through_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let h = SegmentHeader {
            base: 0,
            covered_end: 0,
            file_id: 1,
            dropped_below: 0,
            format: SEGMENT_FORMAT,
        };
        let mut s = Segment::create(dir.path(), h, 1 << 20, None).unwrap();
        let off = s.append(b"hello");
        assert_eq!(s.bytes(off, 5), Some(&b"hello"[..]));
        s.flush().unwrap();
        assert_eq!(s.bytes(off, 5), Some(&b"hello"[..]));
        let off2 = s.append(b"world");
        assert_eq!(s.bytes(off2, 5), Some(&b"world"[..]));
        s.sync().unwrap();
        assert_eq!(s.bytes(off2, 5), Some(&b"world"[..]));
        assert_eq!(s.bytes(off2, 6), None);
    }
}
