//! Key versions for optimistic transactions (WATCH): what a key looked like, and whether it
//! changed since.
//!
//! A visible key's version is the LSN of its value's record and its expiry: any write to it
//! (a new value, even the same bytes; an expiry set or removed) changes one of them, and a
//! merge moving the record changes neither (records keep their LSN). An absent key's version
//! is the log end at the time: it changed if any record for it was written since. A record
//! still in the keydir says so directly (the key exists again, or exists expired); a key that
//! came and went again left only a tombstone, so the store keeps the key hashes and LSNs of
//! its latest deletes (`RECENT_DELETES` of them, in memory). When that is not enough to tell
//! (older deletes forgotten, a Clear since, records that came from a leader or a truncation)
//! the key counts as changed: a transaction may be retried for nothing, never run on a
//! changed key.
use std::collections::VecDeque;

use crate::error::ReadError;
use crate::keydir::Location;
use crate::record::{self, HEADER_LEN};
use crate::store::Store;

/// Deletes remembered per store (16 bytes each).
pub const RECENT_DELETES: usize = 2048;

/// What WATCH remembers of a key ([`Store::version`]); [`Store::unchanged_since`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// The store's history mark then (see `Deletes::mark`).
    mark: u64,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Visible: the LSN of its value's record, and its expiry (0: none).
    Present { lsn: u64, expire: u64 },
    /// Absent or expired; `since`: the log end then.
    Absent { since: u64 },
}

/// The deletes a store remembers for WATCH.
#[derive(Debug)]
pub(crate) struct Deletes {
    /// (key hash, LSN) of the latest deletes, oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Every delete with an LSN at or above this one is in `recent`.
    known_from: u64,
    /// Changed whenever records arrive other than by local writes (from a leader, or a log
    /// truncation that may reuse LSNs) and on every open: no version taken before matches.
    mark: u64,
}

impl Deletes {
    pub(crate) fn new(next_lsn: u64) -> Deletes {
        Deletes {
            recent: VecDeque::new(),
            known_from: next_lsn,
            mark: crate::fsutil::random_id(),
        }
    }

    pub(crate) fn note_delete(&mut self, hash: u64, lsn: u64) {
        if self.recent.len() == RECENT_DELETES
            && let Some((_, oldest)) = self.recent.pop_front()
        {
            self.known_from = oldest + 1;
        }
        self.recent.push_back((hash, lsn));
    }

    /// A Clear record: every key deleted at `lsn`.
    pub(crate) fn note_clear(&mut self, lsn: u64) {
        self.recent.clear();
        self.known_from = lsn + 1;
    }

    /// Records came from elsewhere: forget every version taken so far.
    pub(crate) fn new_history(&mut self, next_lsn: u64) {
        *self = Deletes::new(next_lsn);
    }

    /// Whether a key of this hash may have been deleted at or after `since`.
    fn deleted_since(&self, hash: u64, since: u64) -> bool {
        since < self.known_from
            || self
                .recent
                .iter()
                .rev()
                .take_while(|(_, lsn)| *lsn >= since)
                .any(|(h, _)| *h == hash)
    }
}

impl Store {
    /// The version of `key` now, for WATCH.
    pub fn version(&self, key: &[u8]) -> Result<KeyVersion, ReadError> {
        let state = match self.keydir.get(key).filter(|l| self.visible(l)) {
            Some(loc) => State::Present {
                lsn: self.record_lsn(&loc)?,
                expire: loc.expire,
            },
            None => State::Absent {
                since: self.log_end(),
            },
        };
        Ok(KeyVersion {
            mark: self.deletes.mark,
            state,
        })
    }

    /// Whether `key` is as it was when `v` was taken (false when that cannot be told).
    pub fn unchanged_since(&self, key: &[u8], v: KeyVersion) -> Result<bool, ReadError> {
        if v.mark != self.deletes.mark {
            return Ok(false);
        }
        match v.state {
            State::Present { .. } => Ok(self.version(key)? == v),
            State::Absent { since } => {
                if let Some(loc) = self.keydir.get(key)
                    && (self.visible(&loc) || self.record_lsn(&loc)? >= since)
                {
                    return Ok(false);
                }
                Ok(!self.deletes.deleted_since(self.keydir.hash(key), since))
            }
        }
    }

    fn record_lsn(&self, loc: &Location) -> Result<u64, ReadError> {
        let seg = self.seg(loc.seg);
        let corrupt = |reason: String| ReadError::Corrupt {
            path: seg.path.clone(),
            offset: loc.off as u64,
            reason,
        };
        let bytes = seg
            .bytes(loc.off as u64, HEADER_LEN)
            .ok_or_else(|| corrupt("record extends past the end of the segment".into()))?;
        let h = record::decode_header(bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(h.lsn)
    }
}
