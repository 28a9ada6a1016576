//! Typed errors, one enum per operation family, each carrying the file and offset involved
//! so an operator can act on the message.
use std::path::PathBuf;

use crate::record::DecodeError;

/// Opening (recovering) a partition directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another simplekv process (lock held); stop it or use another directory"
    )]
    Locked { path: PathBuf },
    #[error(
        "{path}: corrupt record at byte {offset}: {reason}; whole records follow it, the segment is not the last one, or the record is all there with every block written, so this is damage inside the log, not a torn write. Restore from a replica, or start with storage.repair = true to drop everything from this point on"
    )]
    CorruptSegment {
        path: PathBuf,
        offset: u64,
        reason: DecodeError,
    },
    #[error(
        "{path}: the records with LSN {from} to {last} are missing before this segment (a segment file deleted or lost?). Restore from a replica, or start with storage.repair = true to drop this segment and every later one"
    )]
    MissingRecords { path: PathBuf, from: u64, last: u64 },
    #[error(
        "{path}: corrupt record at byte {offset}: {reason}; the first {synced} bytes of this file were fsynced (its recovery point), so this is damage to fsynced records, not a torn write. Restore from a replica, or start with storage.repair = true to drop everything from this point on. (A data directory copied from a running server may hold recovery points newer than its logs: delete the copy's recovery-points directory.)"
    )]
    DamageBelowRecoveryPoint {
        path: PathBuf,
        offset: u64,
        reason: DecodeError,
        synced: u64,
    },
    #[error(
        "{path}: the file is {len} bytes but its first {synced} were fsynced (its recovery point): fsynced records are lost. Restore from a replica, or start with storage.repair = true to keep what is there. (A data directory copied from a running server may hold recovery points newer than its logs: delete the copy's recovery-points directory.)"
    )]
    LostSyncedBytes {
        path: PathBuf,
        len: u64,
        synced: u64,
    },
    #[error("{path}: not a simplekv segment: {reason}")]
    BadSegmentHeader { path: PathBuf, reason: String },
    #[error("{path}: leader-epoch checkpoint is unreadable: {reason}")]
    BadEpochFile { path: PathBuf, reason: String },
    #[error("invalid engine options: {0}")]
    BadOptions(String),
}

/// Reading a value.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appending, committing, truncating.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("key is {len} bytes, over the limit of {max} (limits.max_key_len)")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, over the limit of {max} (limits.max_value_len)")]
    ValueTooLarge { len: usize, max: usize },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replicated record at byte {offset} of the batch is invalid: {reason}")]
    BadReplicatedRecord { offset: usize, reason: String },
    #[error("replicated record has LSN {got}, but the log already ends at {log_end}")]
    LsnNotIncreasing { got: u64, log_end: u64 },
    #[error(
        "the store could not recover after a failed write ({0}); restart the process to recover from disk"
    )]
    Failed(String),
    #[error(transparent)]
    Recovery(#[from] Box<OpenError>),
    /// No disk space could be set aside for the record (`Segment::reserve`): nothing was
    /// applied.
    #[error("write to the log failed: {path}: {source}")]
    Reserve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The commit journal's records for a partition start above its log end: synced records
    /// are gone from the log.
    #[error(
        "records {from}..={last} are in neither the log nor the commit journal (the log lost synced records: a deleted segment file or partition directory?); restore the partition from a replica or a backup, or start with storage.repair = true to keep the rest"
    )]
    JournalGap { from: u64, last: u64 },
    #[error("a failed write dropped earlier records of this batch ({0}); none of it was kept")]
    BatchDropped(String),
    /// Less free space than `Options::min_free_space`: nothing was applied.
    #[error(
        "disk space low: {free} bytes free on the file system of {path}, and a write of {need} bytes would leave less than the {floor} kept for deletes and merges (storage.min_free_space); writes that add data are refused until deletes and merges free space (DEL, UNLINK and FLUSHALL still work)"
    )]
    DiskLow {
        path: PathBuf,
        free: u64,
        need: u64,
        floor: u64,
    },
}

/// Merging closed segments.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "the log changed under the merge (truncated or merged again); its output was discarded"
    )]
    Stale,
    #[error("a merge is already running or being installed")]
    Busy,
}

pub(crate) trait IoContext<T> {
    fn at_open(self, path: &std::path::Path) -> Result<T, OpenError>;
    fn at_write(self, path: &std::path::Path) -> Result<T, WriteError>;
    fn at_merge(self, path: &std::path::Path) -> Result<T, MergeError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at_open(self, path: &std::path::Path) -> Result<T, OpenError> {
        self.map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
    fn at_write(self, path: &std::path::Path) -> Result<T, WriteError> {
        self.map_err(|source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
    fn at_merge(self, path: &std::path::Path) -> Result<T, MergeError> {
        self.map_err(|source| MergeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
