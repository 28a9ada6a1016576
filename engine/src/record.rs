//! The log record: the unit appended to a segment, streamed to followers and replayed on open.
//!
//! Layout (little-endian, see `engine/FORMAT.md` for the reasons behind each field):
//!
//! ```text
//! 0   4  crc32    over bytes [4, 33 + key_len + val_len)
//! 4   8  lsn      offset of the record in its partition's log
//! 12  4  epoch    leader epoch the record was written in
//! 16  8  expire   absolute expiry, unix ms; 0 = none
//! 24  1  tag      1 put, 2 delete, 3 expire (sets `expire` on an existing key), 4 clear;
//!                 bit 0x80 (`MORE`): the next record belongs to the same batch
//! 25  4  key_len
//! 29  4  val_len
//! 33     key bytes, then value bytes
//! ```

/// Bytes before the key.
pub const HEADER_LEN: usize = 33;

/// Hard ceilings checked when decoding: a length field beyond these is corruption, whatever
/// the configured limits are (those only gate new writes).
pub const MAX_KEY_LEN_HARD: u32 = 512 << 20;
pub const MAX_VALUE_LEN_HARD: u32 = 1 << 30;

/// Bit of the tag byte saying that the next record in the log belongs to the same batch:
/// the writes a partition took between two hand-overs to the OS (one event-loop turn), so
/// every command's records. Recovery and replication keep a batch whole: a log ends after a
/// record without it.
pub const MORE: u8 = 0x80;

/// What a record does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// Set the key to the value (with the record's expiry).
    Put = 1,
    /// Delete the key (a tombstone).
    Delete = 2,
    /// Change the expiry of an existing key; the value is empty. `expire = 0` persists the key.
    Expire = 3,
    /// Delete every key (FLUSHDB); key and value are empty.
    Clear = 4,
}

impl Tag {
    pub fn from_u8(b: u8) -> Option<Tag> {
        match b {
            1 => Some(Tag::Put),
            2 => Some(Tag::Delete),
            3 => Some(Tag::Expire),
            4 => Some(Tag::Clear),
            _ => None,
        }
    }
}

/// The fixed-size part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub lsn: u64,
    pub epoch: u32,
    pub expire: u64,
    pub tag: Tag,
    pub key_len: u32,
    pub val_len: u32,
    /// The next record belongs to the same batch (`MORE`).
    pub more: bool,
}

impl Header {
    /// Total encoded length of the record this header starts.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.val_len as usize
    }
}

/// A decoded record borrowing its key and value from the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub header: Header,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Why bytes failed to decode as a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the lengths it declares: a torn tail when at the end.
    Truncated { need: usize, have: usize },
    /// A tag byte that names no record kind (0 is what preallocated or zeroed space reads as).
    BadTag(u8),
    /// A declared length beyond the hard ceiling.
    BadLength { key_len: u32, val_len: u32 },
    /// The checksum does not match the bytes.
    BadChecksum { stored: u32, computed: u32 },
    /// A whole, checksummed record whose LSN does not follow the one before it (a file out of
    /// place), found by recovery; `decode` itself never returns it.
    LsnOutOfOrder { lsn: u64, after: u64 },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { need, have } => {
                write!(f, "record truncated: needs {need} bytes, {have} present")
            }
            DecodeError::BadTag(t) => write!(f, "unknown record tag {t}"),
            DecodeError::BadLength { key_len, val_len } => {
                write!(f, "impossible lengths key={key_len} value={val_len}")
            }
            DecodeError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            DecodeError::LsnOutOfOrder { lsn, after } => {
                write!(f, "LSN {lsn} does not follow {after}")
            }
        }
    }
}

/// The little-endian `u32` at `b[at..at + 4]`.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `b[at..at + 8]`.
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads and checks the header fields (not the checksum) of the record at the start of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<Header, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let tag = Tag::from_u8(buf[24] & !MORE).ok_or(DecodeError::BadTag(buf[24]))?;
    let key_len = u32_at(buf, 25);
    let val_len = u32_at(buf, 29);
    if key_len > MAX_KEY_LEN_HARD || val_len > MAX_VALUE_LEN_HARD {
        return Err(DecodeError::BadLength { key_len, val_len });
    }
    Ok(Header {
        lsn: u64_at(buf, 4),
        epoch: u32_at(buf, 12),
        expire: u64_at(buf, 16),
        tag,
        key_len,
        val_len,
        more: buf[24] & MORE != 0,
    })
}

/// Decodes and verifies the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    let header = decode_header(buf)?;
    let len = header.record_len();
    if buf.len() < len {
        return Err(DecodeError::Truncated {
            need: len,
            have: buf.len(),
        });
    }
    let stored = u32_at(buf, 0);
    let computed = crc32fast::hash(&buf[4..len]);
    if stored != computed {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    let key_end = HEADER_LEN + header.key_len as usize;
    Ok(RecordRef {
        header,
        key: &buf[HEADER_LEN..key_end],
        value: &buf[key_end..len],
    })
}

/// Appends one encoded record (the last of its batch) to `out` and returns its length.
pub fn encode(
    out: &mut Vec<u8>,
    lsn: u64,
    epoch: u32,
    expire: u64,
    tag: Tag,
    key: &[u8],
    value: &[u8],
) -> usize {
    encode_in_batch(out, lsn, epoch, expire, tag, false, key, value)
}

/// Appends one encoded record to `out`, with `MORE` set when `more`; returns its length.
#[allow(clippy::too_many_arguments)]
pub fn encode_in_batch(
    out: &mut Vec<u8>,
    lsn: u64,
    epoch: u32,
    expire: u64,
    tag: Tag,
    more: bool,
    key: &[u8],
    value: &[u8],
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&expire.to_le_bytes());
    out.push(tag as u8 | if more { MORE } else { 0 });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Makes the whole record at the start of `rec` the last of its batch: clears `MORE` and
/// recomputes the checksum. False (nothing changed) if `rec` does not start with a whole
/// record or the bit was clear.
pub fn end_batch(rec: &mut [u8]) -> bool {
    let Ok(h) = decode_header(rec) else {
        return false;
    };
    let len = h.record_len();
    if !h.more || rec.len() < len {
        return false;
    }
    rec[24] &= !MORE;
    let crc = crc32fast::hash(&rec[4..len]);
    rec[0..4].copy_from_slice(&crc.to_le_bytes());
    true
}

/// Iterates over the whole records at the start of a buffer, stopping at the first one that
/// does not decode (the error and its offset are kept for the caller).
pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
    error: Option<(usize, DecodeError)>,
}

impl<'a> RecordIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        RecordIter {
            buf,
            pos: 0,
            error: None,
        }
    }

    /// Offset just past the last record returned.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The decode error that stopped the iteration, with its offset, if it did not reach the end.
    pub fn error(&self) -> Option<(usize, DecodeError)> {
        self.error
    }
}

impl<'a> Iterator for RecordIter<'a> {
    /// (offset in the buffer, record)
    type Item = (usize, RecordRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() || self.error.is_some() {
            return None;
        }
        match decode(&self.buf[self.pos..]) {
            Ok(r) => {
                let at = self.pos;
                self.pos += r.header.record_len();
                Some((at, r))
            }
            Err(e) => {
                self.error = Some((self.pos, e));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_keeps_every_field() {
        let mut buf = Vec::new();
        let n = encode(
            &mut buf,
            42,
            7,
            1_700_000_000_000,
            Tag::Put,
            b"k\0ey",
            b"va\r\nlue",
        );
        assert_eq!(n, buf.len());
        let r = decode(&buf).unwrap();
        assert_eq!(r.header.lsn, 42);
        assert_eq!(r.header.epoch, 7);
        assert_eq!(r.header.expire, 1_700_000_000_000);
        assert_eq!(r.header.tag, Tag::Put);
        assert_eq!(r.key, b"k\0ey");
        assert_eq!(r.value, b"va\r\nlue");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, 0, Tag::Put, b"key", b"value");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode(&b).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, 0, Tag::Delete, b"key", b"");
        for cut in 0..buf.len() {
            assert!(matches!(
                decode(&buf[..cut]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn zeroed_bytes_are_a_bad_tag_not_a_record() {
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::BadTag(0)));
        // The batch bit alone names no kind either.
        let mut b = [0u8; 64];
        b[24] = MORE;
        assert_eq!(decode_header(&b), Err(DecodeError::BadTag(MORE)));
    }

    #[test]
    fn the_batch_bit_round_trips_and_ending_a_batch_keeps_the_record_valid() {
        let mut buf = Vec::new();
        encode_in_batch(&mut buf, 9, 2, 5, Tag::Expire, true, b"k", b"");
        let r = decode(&buf).unwrap();
        assert!(r.header.more);
        assert_eq!(r.header.tag, Tag::Expire);
        let mut plain = Vec::new();
        encode(&mut plain, 9, 2, 5, Tag::Expire, b"k", b"");
        assert_ne!(buf, plain);
        assert!(end_batch(&mut buf));
        assert_eq!(buf, plain, "an ended batch reads as a record written alone");
        assert!(!decode(&buf).unwrap().header.more);
        assert!(!end_batch(&mut buf), "already the last of its batch");
        assert!(!end_batch(&mut buf[..10]), "not a whole record");
    }

    #[test]
    fn iterator_stops_at_the_first_bad_record_and_reports_its_offset() {
        let mut buf = Vec::new();
        let a = encode(&mut buf, 1, 1, 0, Tag::Put, b"a", b"1");
        encode(&mut buf, 2, 1, 0, Tag::Put, b"b", b"2");
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let mut it = RecordIter::new(&buf);
        assert_eq!(it.by_ref().count(), 1);
        assert_eq!(it.position(), a);
        assert!(matches!(it.error(), Some((off, DecodeError::BadChecksum { .. })) if off == a));
    }
}
