//! simplekv's storage engine: a Bitcask per partition directory.
//!
//! - an append-only log of checksummed records ([`record`]) in segments named by their first
//!   LSN ([`segment`]), the last one active, closed ones read through `mmap`;
//! - an in-memory [`keydir`] mapping every live key to its newest record (48 bytes per key);
//! - [`hint`] files so that opening never reads values;
//! - merge ([`merge`]) that rewrites closed segments off the owner's thread;
//! - a commit [`journal`] so that `fsync = always` flushes one file per commit, not one per
//!   partition written;
//! - recovery [`points`] recording how far each log was fsynced, so that damage below them is
//!   never cut away as a torn write;
//! - what replication needs: records carry LSN and leader epoch, batches are read and appended
//!   verbatim, the log can be truncated to an LSN, and a [`epoch::LeaderEpochCache`] answers
//!   OffsetsForLeaderEpoch.
//!
//! The on-disk format and the recovery rules are in `engine/FORMAT.md`. The engine knows
//! nothing of sockets, threads or protocols: a [`Store`] is a plain value owned by one thread.
// Input from disk must never panic the process (tests may unwrap).
#![warn(clippy::unwrap_used)]

pub mod epoch;
pub mod error;
mod fsutil;
pub mod hint;
pub mod journal;
pub mod keydir;
mod lock;
pub mod merge;
pub mod options;
pub mod points;
pub mod record;
pub mod segment;
mod slot_index;
mod store;
mod watch;

#[cfg(test)]
mod full_disk_tests;
#[cfg(test)]
#[path = "../tests/support/tmpfs.rs"]
#[allow(dead_code)] // shared with the integration tests, which use more of it
mod test_tmpfs;

pub use epoch::{EpochEntry, LeaderEpochCache};
pub use error::{MergeError, OpenError, ReadError, WriteError};
pub use fsutil::free_space;
pub use hint::HintJob;
pub use journal::{Journal, JournalError, JournalSync, Staged};
pub use merge::{MergeJob, MergeOutput, MergeStats};
pub use options::{Durability, Options, system_clock};
pub use store::{
    Change, ChangeKind, KeyMeta, Prefetch, Prior, RecordBatch, RecoveryReport, Store, StoreStats,
    SyncTicket,
};
pub use watch::{KeyVersion, RECENT_TOUCHES};
