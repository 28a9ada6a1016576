//! Key versions for optimistic transactions (WATCH): what a key looked like, and whether it
//! changed since.
//!
//! A version is taken with the log end at the time (`since`). A key changed since then if a
//! record for it was written at or after `since`:
//! - a Put: the keydir entry's record is newer (its LSN; a merge moving the record keeps the
//!   LSN, so it changes nothing);
//! - a Delete or an Expire record (a key that came and went again left only a tombstone; an
//!   expiry set and removed again leaves the entry as it was): the store keeps the key hashes
//!   and LSNs of its latest `RECENT_TOUCHES` deletes and expiry changes, in memory.
//!
//! A visible key that expired since (its entry is still there) counts as changed too; a key
//! that had expired already when its version was taken is not changed by the delete of that
//! expired value (as in Redis 7, where the watch remembers that the key had expired), but is
//! by the delete of a value that was still to expire then (written since). A Clear
//! (FLUSHALL) changes the keys it deletes, as in Redis: a key absent then and absent now is
//! unchanged when the Clear was the first record since. When the
//! store cannot tell (older touches forgotten, other records before a Clear, records that came from a leader
//! or a truncation or a reload, which may reuse LSNs) the key counts as changed: a transaction
//! may be retried for nothing, never run on a changed key.
use std::collections::VecDeque;

use crate::error::ReadError;
use crate::keydir::Location;
use crate::record::{self, HEADER_LEN};
use crate::store::Store;

/// Deletes and expiry changes remembered per store (16 bytes each).
pub const RECENT_TOUCHES: usize = 2048;

/// What WATCH remembers of a key ([`Store::version`]); [`Store::unchanged_since`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// The store's history mark then (see `Touches::mark`).
    mark: u64,
    /// The log end then.
    since: u64,
    /// Whether the key was visible then.
    present: bool,
    /// The time then (unix ms).
    at: u64,
}

/// The deletes and expiry changes a store remembers for WATCH.
#[derive(Debug)]
pub(crate) struct Touches {
    /// (key hash, LSN, when the value it replaced had expired: `u64::MAX` for a value that
    /// was visible) of the latest Delete and Expire records, oldest first.
    recent: VecDeque<(u64, u64, u64)>,
    /// Every such record with an LSN at or above this one is in `recent`.
    known_from: u64,
    /// The LSN of the Clear record that set `known_from`, if one did.
    cleared_at: Option<u64>,
    /// Changed whenever records arrive other than by local appends (from a leader, or a
    /// truncation or reload that may give LSNs again) and on every open: no version taken
    /// before matches.
    mark: u64,
}

impl Touches {
    pub(crate) fn new(next_lsn: u64) -> Touches {
        Touches {
            recent: VecDeque::new(),
            known_from: next_lsn,
            cleared_at: None,
            mark: crate::fsutil::random_id(),
        }
    }

    /// A Delete or Expire record at `lsn`; `expired_at`: the time the value it replaced had
    /// expired at (unix ms), `u64::MAX` when it was visible.
    pub(crate) fn note(&mut self, hash: u64, lsn: u64, expired_at: u64) {
        if self.recent.len() == RECENT_TOUCHES
            && let Some((_, oldest, _)) = self.recent.pop_front()
        {
            self.known_from = oldest + 1;
            self.cleared_at = None;
        }
        self.recent.push_back((hash, lsn, expired_at));
    }

    /// A Clear record: every key deleted at `lsn`.
    pub(crate) fn note_clear(&mut self, lsn: u64) {
        self.recent.clear();
        self.known_from = lsn + 1;
        self.cleared_at = Some(lsn);
    }

    /// Records came from elsewhere: forget every version taken so far.
    pub(crate) fn new_history(&mut self, next_lsn: u64) {
        *self = Touches::new(next_lsn);
    }

    /// Whether a key of this hash may have been deleted or had its expiry changed at or
    /// after `since`; a delete of a value that had expired by `absent_at` does not count
    /// (`absent_at`: the time the version saw the key absent, else 0).
    fn touched_since(&self, hash: u64, since: u64, absent_at: u64) -> bool {
        // Nothing but the Clear since: it deleted what was there, and this key was not (a
        // key present then is told by its presence).
        let only_a_clear = self.cleared_at == Some(since);
        (since < self.known_from && !only_a_clear)
            || self
                .recent
                .iter()
                .rev()
                .take_while(|(_, lsn, _)| *lsn >= since)
                .any(|&(h, _, expired_at)| h == hash && expired_at > absent_at)
    }
}

impl Store {
    /// The version of `key` now, for WATCH.
    pub fn version(&self, key: &[u8]) -> KeyVersion {
        KeyVersion {
            mark: self.touches.mark,
            since: self.log_end(),
            present: self.exists(key),
            at: self.now(),
        }
    }

    /// Whether `key` is as it was when `v` was taken (false when that cannot be told).
    pub fn unchanged_since(&self, key: &[u8], v: KeyVersion) -> Result<bool, ReadError> {
        if v.mark != self.touches.mark {
            return Ok(false);
        }
        if let Some(loc) = self.keydir.get(key) {
            // Written since, or visible now but not then, or the other way round (expired).
            if self.record_lsn(&loc)? >= v.since || self.visible(&loc) != v.present {
                return Ok(false);
            }
        } else if v.present {
            return Ok(false);
        }
        let absent_at = if v.present { 0 } else { v.at };
        Ok(!self
            .touches
            .touched_since(self.keydir.hash(key), v.since, absent_at))
    }

    fn record_lsn(&self, loc: &Location) -> Result<u64, ReadError> {
        let bytes = self.record_bytes(loc, HEADER_LEN)?;
        let h = record::decode_header(bytes).map_err(|e| self.corrupt_at(loc, e.to_string()))?;
        Ok(h.lsn)
    }
}
