//! Hint files: for a closed segment, every record's header fields and key plus its offset,
//! without the value, so that opening a partition never reads values.
//!
//! ```text
//! file header (32 bytes): magic "SKVHINT\x01" | file_id u64 | count u64 | crc32 of [0,24) | 0u32
//! entry:  crc32 over [4, 37 + key_len) | lsn u64 | epoch u32 | expire u64 | tag u8
//!         | key_len u32 | val_len u32 | offset u32 | key
//! ```
//!
//! A hint is written to a temporary name, fsynced and renamed into place, so a hint file that
//! exists is complete. It names the `file_id` of the segment it describes; a hint whose id
//! differs from its segment's (a crash between renames of a merge) is ignored and the
//! segment is scanned instead.
//!
//! A clean shutdown also describes each active segment, in the same format, in a *shutdown
//! hint* (`.shint`): every record from the segment header to the end of the file, so that the
//! next start need not read (and checksum) the values of the segment that takes appends. Its
//! entries must tile the file exactly, and opening removes every shutdown hint, durably,
//! before anything is written: one can never describe a segment that changed after it.
use std::path::{Path, PathBuf};

use crate::error::{IoContext, MergeError};
use crate::record::{self, Tag};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};

const HINT_MAGIC: &[u8; 8] = b"SKVHINT\x01";
const HINT_HEADER_LEN: usize = 32;
const ENTRY_FIXED: usize = 37;

/// One record of a segment as a hint file lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintEntry<'a> {
    pub lsn: u64,
    pub epoch: u32,
    pub expire: u64,
    pub tag: Tag,
    pub val_len: u32,
    pub offset: u32,
    pub key: &'a [u8],
}

impl<'a> HintEntry<'a> {
    /// The entry of a record found `off` bytes into a segment's body (past its header).
    pub fn of_record(off: usize, r: &record::RecordRef<'a>) -> HintEntry<'a> {
        HintEntry {
            lsn: r.header.lsn,
            epoch: r.header.epoch,
            expire: r.header.expire,
            tag: r.header.tag,
            val_len: r.header.val_len,
            offset: (off + SEGMENT_HEADER_LEN) as u32,
            key: r.key,
        }
    }
}

pub fn encode_header(out: &mut Vec<u8>, file_id: u64, count: u64) {
    let start = out.len();
    out.extend_from_slice(HINT_MAGIC);
    out.extend_from_slice(&file_id.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out[start..start + 24]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
}

pub fn encode_entry(out: &mut Vec<u8>, e: &HintEntry<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&e.lsn.to_le_bytes());
    out.extend_from_slice(&e.epoch.to_le_bytes());
    out.extend_from_slice(&e.expire.to_le_bytes());
    out.push(e.tag as u8);
    out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.val_len.to_le_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(e.key);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The entry count a hint file's header declares (to size the keydir before loading), without
/// reading the rest of the file; `None` if the header is not valid.
pub fn declared_count(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut h = [0u8; HINT_HEADER_LEN];
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.read_exact(&mut h).ok()?;
    declared_count_in(&h, len)
}

/// The entry count the hint header at the start of `buf` declares, at most what a file of
/// `file_len` bytes can hold (a header that checks may still come from a damaged file, and
/// the count sizes an allocation); `None` if the header is not valid.
pub fn declared_count_in(buf: &[u8], file_len: u64) -> Option<u64> {
    let h = buf.get(..HINT_HEADER_LEN)?;
    if &h[0..8] != HINT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[24..28].try_into().ok()?);
    let fits = file_len.saturating_sub(HINT_HEADER_LEN as u64) / ENTRY_FIXED as u64;
    (crc == crc32fast::hash(&h[0..24]))
        .then(|| u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8])).min(fits))
}

/// A hint file whose every entry has been checked; its entries can then be walked without
/// allocating (opening millions of keys reads them twice rather than copy them).
pub struct CheckedHint<'a> {
    buf: &'a [u8],
    pub count: u64,
    /// One past the LSN of the last entry (the `floor` given to `check` if there is none).
    pub end_lsn: u64,
    /// The entries describe every byte of the segment, record after record from its header
    /// on (what a shutdown hint must do to stand for a scan).
    pub tiles: bool,
}

impl<'a> CheckedHint<'a> {
    /// Checks, in one pass, the header and every entry, that LSNs increase from `floor` on and
    /// that every record fits in the segment's `seg_len` bytes; `None` if anything is off.
    pub fn check(
        buf: &'a [u8],
        expect_file_id: u64,
        floor: u64,
        seg_len: u64,
    ) -> Option<CheckedHint<'a>> {
        let mut n = 0u64;
        let mut min = floor;
        let mut fits = true;
        // Where the next record starts if the entries tile the segment (None once not).
        let mut at = Some(SEGMENT_HEADER_LEN as u64);
        walk(buf, expect_file_id, |e| {
            let end =
                e.offset as u64 + (record::HEADER_LEN + e.key.len()) as u64 + e.val_len as u64;
            fits &= e.lsn >= min && end <= seg_len;
            min = e.lsn.saturating_add(1);
            at = at.filter(|&a| a == e.offset as u64).map(|_| end);
            n += 1;
        })?;
        fits.then_some(CheckedHint {
            buf,
            count: n,
            end_lsn: min,
            tiles: at == Some(seg_len),
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = HintEntry<'a>> + 'a {
        let buf = self.buf;
        let mut pos = HINT_HEADER_LEN;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let e = entry_at(buf, pos)?;
            pos += ENTRY_FIXED + e.key.len();
            Some(e)
        })
    }
}

fn entry_at(buf: &[u8], pos: usize) -> Option<HintEntry<'_>> {
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
    let key_len = u32_at(pos + 25) as usize;
    Some(HintEntry {
        lsn: u64_at(pos + 4),
        epoch: u32_at(pos + 12),
        expire: u64_at(pos + 16),
        tag: Tag::from_u8(buf[pos + 24])?,
        val_len: u32_at(pos + 29),
        offset: u32_at(pos + 33),
        key: buf.get(pos + ENTRY_FIXED..pos + ENTRY_FIXED + key_len)?,
    })
}

/// Validates a whole hint file, calling `f` for each entry; `None` if anything is off.
fn walk<'a>(buf: &'a [u8], expect_file_id: u64, mut f: impl FnMut(HintEntry<'a>)) -> Option<()> {
    if buf.len() < HINT_HEADER_LEN || &buf[0..8] != HINT_MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
    if u32_at(24) != crc32fast::hash(&buf[0..24]) || u32_at(28) != 0 || u64_at(8) != expect_file_id
    {
        return None;
    }
    let count = u64_at(16);
    let mut seen = 0u64;
    let mut pos = HINT_HEADER_LEN;
    while pos < buf.len() {
        if buf.len() - pos < ENTRY_FIXED {
            return None;
        }
        let key_len = u32_at(pos + 25) as usize;
        if key_len > record::MAX_KEY_LEN_HARD as usize || buf.len() - pos - ENTRY_FIXED < key_len {
            return None;
        }
        let end = pos + ENTRY_FIXED + key_len;
        if u32_at(pos) != crc32fast::hash(&buf[pos + 4..end]) {
            return None;
        }
        f(entry_at(buf, pos)?);
        seen += 1;
        pos = end;
    }
    (seen == count).then_some(())
}

/// Decodes a whole hint file; `None` if anything is off (then the segment is scanned).
pub fn decode_all(buf: &[u8], expect_file_id: u64) -> Option<Vec<HintEntry<'_>>> {
    let mut out = Vec::new();
    walk(buf, expect_file_id, |e| out.push(e))?;
    Some(out)
}

/// Writes the hint of the closed segment in `file` (of `file_len` bytes) atomically at
/// `path`, the segment read with plain reads: a map of it would fault (SIGBUS, the whole process) at pages a follower's
/// truncation cut off meanwhile. Values are checksummed in chunks, never held whole. A hint
/// is written only when every record checks out to the end of the file: anything else (a
/// read cut short, a segment changed under the job, damage) writes none, and opening scans
/// the segment instead.
fn write_hint_read(
    path: &Path,
    file_id: u64,
    file: &std::fs::File,
    file_len: u64,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Read};
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("segment {what}"));
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    r.read_exact(&mut head)?;
    let body = file_len.saturating_sub(SEGMENT_HEADER_LEN as u64);
    let mut entries = Vec::new();
    let mut count = 0u64;
    let mut key = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut off = 0usize;
    while (off as u64) < body {
        let mut h = [0u8; record::HEADER_LEN];
        r.read_exact(&mut h)?;
        let header = record::decode_header(&h).map_err(|e| bad(&format!("record: {e}")))?;
        let len = header.record_len();
        if off as u64 + len as u64 > body {
            return Err(bad("record past the end of the file"));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[4..]);
        key.resize(header.key_len as usize, 0);
        r.read_exact(&mut key)?;
        crc.update(&key);
        let mut left = header.val_len as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            r.read_exact(&mut chunk[..n])?;
            crc.update(&chunk[..n]);
            left -= n;
        }
        if crc.finalize() != record::u32_at(&h, 0) {
            return Err(bad("record checksum mismatch"));
        }
        let entry = HintEntry {
            lsn: header.lsn,
            epoch: header.epoch,
            expire: header.expire,
            tag: header.tag,
            val_len: header.val_len,
            offset: (off + SEGMENT_HEADER_LEN) as u32,
            key: &key,
        };
        encode_entry(&mut entries, &entry);
        count += 1;
        off += len;
    }
    let mut out = Vec::with_capacity(HINT_HEADER_LEN + entries.len());
    encode_header(&mut out, file_id, count);
    out.extend_from_slice(&entries);
    crate::fsutil::write_atomic(path, &out)
}

/// Work to write the hint of a segment that was just closed. It touches only that segment's
/// files, so the caller may run it on any thread.
#[derive(Clone, Debug)]
pub struct HintJob {
    pub segment: PathBuf,
    pub hint: PathBuf,
    pub file_id: u64,
}

impl HintJob {
    pub fn run(&self) -> Result<(), MergeError> {
        use std::os::unix::fs::FileExt;
        // Merged away or truncated meanwhile: nothing to describe.
        let Ok(file) = std::fs::File::open(&self.segment) else {
            return Ok(());
        };
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let (Ok(meta), Ok(())) = (file.metadata(), file.read_exact_at(&mut head, 0)) else {
            return Ok(());
        };
        if SegmentHeader::decode(&head).map(|h| h.file_id) != Ok(self.file_id) {
            return Ok(());
        }
        write_hint_read(&self.hint, self.file_id, &file, meta.len()).at_merge(&self.hint)
    }
}

/// Writes the shutdown hint of an active segment whose every byte, header included, is
/// `segment` (all fsynced, no write to come) at `path`, under a temporary name renamed into
/// place; an error (a record that does not check, a write batch left open) writes none.
///
/// It is read from the store's own mapping (no other thread can cut the segment now), and
/// neither it nor its directory is fsynced: a hint that the disk lost in part fails its
/// checks (entry checksums, the count, the tiling), and so does any that could be left from
/// another segment or file id. A lost one only makes the next start read the segment.
pub fn write_shutdown_hint(path: &Path, file_id: u64, segment: &[u8]) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind, Write};
    let bad = |what: String| Error::new(ErrorKind::InvalidData, format!("segment {what}"));
    let mut out = vec![0u8; HINT_HEADER_LEN];
    out.reserve(segment.len() / 2);
    let mut off = SEGMENT_HEADER_LEN;
    let mut count = 0u64;
    let mut open_batch = false;
    while off < segment.len() {
        let r = record::decode(&segment[off..])
            .map_err(|e| bad(format!("record at offset {off}: {e}")))?;
        encode_entry(
            &mut out,
            &HintEntry::of_record(off - SEGMENT_HEADER_LEN, &r),
        );
        count += 1;
        open_batch = r.header.more;
        off += r.header.record_len();
    }
    if open_batch {
        return Err(bad("ends inside a write batch".into()));
    }
    let mut head = Vec::with_capacity(HINT_HEADER_LEN);
    encode_header(&mut head, file_id, count);
    out[..HINT_HEADER_LEN].copy_from_slice(&head);
    let tmp = path.with_extension("shint.tmp");
    std::fs::File::create(&tmp)?.write_all(&out)?;
    std::fs::rename(&tmp, path)
}

/// The bytes of the hint file at `path`, mapped rather than read: a start reads every byte
/// once or twice, and a copy cost a third of the time it spent on them (the copy, and the
/// zeroed memory it went to). `None` if it cannot be opened or is empty.
pub fn map_hint(path: &Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() == 0 {
        return None;
    }
    // SAFETY: read-only, and hint files are never changed in place: they are written under
    // another name and renamed over (`fsutil::write_atomic`, merge), or removed, which leaves
    // a mapping whole. The directory lock keeps other processes out.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}

/// The shutdown hint path of a segment path.
pub fn shutdown_hint_for_segment(seg_path: &Path) -> PathBuf {
    seg_path.with_extension("shint")
}

/// Parses `{base:020}.shint` names.
pub fn parse_shutdown_hint_name(name: &str) -> Option<u64> {
    crate::segment::parse_segment_name(&format!("{}.log", name.strip_suffix(".shint")?))
}

/// The hint path of a segment path.
pub fn hint_for_segment(seg_path: &Path) -> PathBuf {
    seg_path.with_extension("hint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_round_trip_and_any_damage_rejects_the_whole_file() {
        let mut seg = SegmentHeaderBytes::new();
        record::encode(&mut seg.0, 5, 1, 0, Tag::Put, b"alpha", b"one");
        record::encode(&mut seg.0, 6, 1, 99, Tag::Expire, b"alpha", b"");
        record::encode(&mut seg.0, 7, 2, 0, Tag::Delete, b"beta", b"");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, &seg.0).unwrap();
        let p = dir.path().join("x.hint");
        let file = std::fs::File::open(&log).unwrap();
        write_hint_read(&p, 77, &file, seg.0.len() as u64).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let es = decode_all(&bytes, 77).unwrap();
        assert_eq!(es.len(), 3);
        assert_eq!(es[0].key, b"alpha");
        assert_eq!(es[0].offset as usize, SEGMENT_HEADER_LEN);
        assert_eq!(es[1].expire, 99);
        assert_eq!(es[2].tag, Tag::Delete);
        assert!(decode_all(&bytes, 78).is_none(), "wrong file id");
        let len = seg.0.len() as u64;
        let c = CheckedHint::check(&bytes, 77, 0, len).unwrap();
        assert_eq!((c.count, c.end_lsn, c.tiles), (3, 8, true));
        assert_eq!(c.entries().count(), 3);
        assert!(
            !CheckedHint::check(&bytes, 77, 0, len + 1).unwrap().tiles,
            "a byte past the last record"
        );
        assert!(
            CheckedHint::check(&bytes, 77, 0, len - 1).is_none(),
            "past the end"
        );
        assert!(
            CheckedHint::check(&bytes, 77, 6, len).is_none(),
            "below the floor"
        );
        assert!(
            CheckedHint::check(&bytes, 78, 0, len).is_none(),
            "wrong file id"
        );
        for cut in 0..bytes.len() {
            assert!(decode_all(&bytes[..cut], 77).is_none(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode_all(&b, 77).is_none(), "flip at {i}");
        }
    }

    #[test]
    fn a_shutdown_hint_tiles_its_segment_and_none_is_written_inside_a_batch() {
        let mut seg = SegmentHeaderBytes::new();
        record::encode(&mut seg.0, 5, 1, 0, Tag::Put, b"alpha", b"one");
        record::encode(&mut seg.0, 6, 1, 0, Tag::Delete, b"beta", b"");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.shint");
        write_shutdown_hint(&p, 9, &seg.0).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let c = CheckedHint::check(&bytes, 9, 0, seg.0.len() as u64).unwrap();
        assert_eq!((c.count, c.end_lsn, c.tiles), (2, 7, true));
        assert!(!dir.path().join("x.shint.tmp").exists());

        record::encode_in_batch(&mut seg.0, 7, 1, 0, Tag::Put, true, b"gamma", b"g");
        std::fs::remove_file(&p).unwrap();
        assert!(
            write_shutdown_hint(&p, 9, &seg.0).is_err(),
            "a batch left open"
        );
        assert!(!p.exists());
        let mut damaged = seg.0.clone();
        damaged[SEGMENT_HEADER_LEN + 40] ^= 1;
        assert!(
            write_shutdown_hint(&p, 9, &damaged).is_err(),
            "a record that does not check"
        );
        assert!(!p.exists());
    }

    struct SegmentHeaderBytes(Vec<u8>);
    impl SegmentHeaderBytes {
        fn new() -> Self {
            SegmentHeaderBytes(vec![0u8; SEGMENT_HEADER_LEN])
        }
    }
}
