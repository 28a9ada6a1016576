//! The leader-epoch cache: (epoch, start LSN) pairs, in increasing order of both, persisted
//! in `leader-epoch-checkpoint` and fsynced on every change (Kafka's LeaderEpochFileCache,
//! KIP-101/KIP-279).
//!
//! It answers "where does epoch E end in my log?", which is how a follower finds the exact
//! point where its log diverges from a new leader's instead of truncating to its high
//! watermark and losing committed records.
use std::path::{Path, PathBuf};

use crate::error::{IoContext, OpenError, WriteError};

pub const EPOCH_FILE: &str = "leader-epoch-checkpoint";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_lsn: u64,
}

#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, OpenError> {
        let path = dir.join(EPOCH_FILE);
        let entries = match std::fs::read_to_string(&path) {
            Ok(s) => parse(&s).map_err(|reason| OpenError::BadEpochFile {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).at_open(&path),
        };
        Ok(LeaderEpochCache { path, entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_lsn`. Older or equal epochs are ignored; an entry
    /// whose start is not below the new one is dropped (its epoch wrote nothing that stays).
    /// The checkpoint is written first; on failure nothing changes (memory and file agree).
    pub fn assign(&mut self, epoch: u32, start_lsn: u64) -> Result<bool, WriteError> {
        if self.latest().is_some_and(|l| epoch <= l.epoch) {
            return Ok(false);
        }
        let mut next = self.starting_before(start_lsn);
        next.push(EpochEntry { epoch, start_lsn });
        self.replace(next)?;
        Ok(true)
    }

    /// OffsetsForLeaderEpoch: the largest epoch <= `epoch` this log knows, and the LSN where it
    /// ends (the start of the next epoch, or `log_end` for the latest). `None` when the log has
    /// no epoch that old.
    pub fn end_offset_for(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.entries[i - 1];
        let end = self.entries.get(i).map(|e| e.start_lsn).unwrap_or(log_end);
        Some((found.epoch, end))
    }

    /// Drops epochs that start at or after `end_lsn` (the log was truncated there).
    /// The checkpoint is written first; on failure nothing changes (memory and file agree:
    /// an entry the file keeps must not be forgotten in memory, or a crash would bring back
    /// an epoch the log no longer has while the process ran without it).
    pub fn truncate_from_end(&mut self, end_lsn: u64) -> Result<(), WriteError> {
        if self.entries.iter().all(|e| e.start_lsn < end_lsn) {
            return Ok(());
        }
        self.replace(self.starting_before(end_lsn))
    }

    /// As `truncate_from_end`, but the latest epoch goes on at `end_lsn`: after a reload
    /// that dropped records of a failed write, the leader's epoch is still its epoch and
    /// the records written next carry it.
    pub fn truncate_keeping_latest(&mut self, end_lsn: u64) -> Result<(), WriteError> {
        let Some(&last) = self.entries.last() else {
            return Ok(());
        };
        let mut next = self.starting_before(end_lsn);
        if next.last().is_none_or(|e| e.epoch < last.epoch) {
            next.push(EpochEntry {
                epoch: last.epoch,
                start_lsn: end_lsn,
            });
        }
        if next == self.entries {
            return Ok(());
        }
        self.replace(next)
    }

    /// Writes the checkpoint again as it is: shows that it can be written (a disk that was
    /// full or failing works again), without changing anything.
    pub fn rewrite(&self) -> Result<(), WriteError> {
        self.persist(&self.entries)
    }

    /// The entries of epochs that start below `lsn`.
    fn starting_before(&self, lsn: u64) -> Vec<EpochEntry> {
        self.entries
            .iter()
            .copied()
            .filter(|e| e.start_lsn < lsn)
            .collect()
    }

    /// The checkpoint first, then memory (which changes only if the file did).
    fn replace(&mut self, next: Vec<EpochEntry>) -> Result<(), WriteError> {
        self.persist(&next)?;
        self.entries = next;
        Ok(())
    }

    fn persist(&self, entries: &[EpochEntry]) -> Result<(), WriteError> {
        let mut s = format!("0\n{}\n", entries.len());
        for e in entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_lsn));
        }
        crate::fsutil::write_atomic(&self.path, s.as_bytes()).at_write(&self.path)
    }
}

fn parse(s: &str) -> Result<Vec<EpochEntry>, String> {
    let mut lines = s.lines();
    match lines.next() {
        Some("0") => {}
        other => return Err(format!("unknown version line {other:?}")),
    }
    let n: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("missing entry count")?;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for (i, l) in lines.enumerate() {
        let mut it = l.split(' ');
        let (Some(e), Some(o), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: expected `epoch start_lsn`", i + 3));
        };
        let epoch = e
            .parse()
            .map_err(|_| format!("line {}: bad epoch {e:?}", i + 3))?;
        let start_lsn = o
            .parse()
            .map_err(|_| format!("line {}: bad lsn {o:?}", i + 3))?;
        if let Some(prev) = out.last() {
            let prev: &EpochEntry = prev;
            if epoch <= prev.epoch || start_lsn < prev.start_lsn {
                return Err(format!("line {}: entries out of order", i + 3));
            }
        }
        out.push(EpochEntry { epoch, start_lsn });
    }
    if out.len() != n {
        return Err(format!("count says {n} entries, found {}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka_semantics_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(c.end_offset_for(0, 10), None);
        c.assign(1, 0).unwrap();
        c.assign(3, 50).unwrap();
        assert!(!c.assign(2, 60).unwrap(), "older epoch ignored");
        c.assign(4, 80).unwrap();
        assert_eq!(c.end_offset_for(1, 100), Some((1, 50)));
        assert_eq!(
            c.end_offset_for(2, 100),
            Some((1, 50)),
            "epoch 2 unknown: its predecessor"
        );
        assert_eq!(c.end_offset_for(3, 100), Some((3, 80)));
        assert_eq!(c.end_offset_for(9, 100), Some((4, 100)));
        assert_eq!(c.end_offset_for(0, 100), None);
        let c2 = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(c2.entries(), c.entries());
        c.truncate_from_end(50).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_lsn: 0
            }]
        );
        assert_eq!(
            LeaderEpochCache::load(dir.path()).unwrap().entries().len(),
            1
        );
    }

    #[test]
    fn epoch_with_no_records_is_replaced_by_a_newer_one_at_the_same_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        c.assign(1, 10).unwrap();
        c.assign(2, 10).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_lsn: 10
            }]
        );
    }

    #[test]
    fn damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "0\n2\n1 0\n").unwrap();
        let e = LeaderEpochCache::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("count says 2"), "{e}");
    }
}
