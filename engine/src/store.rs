//! `Store`: one partition's Bitcask — its directory, segments, keydir and leader-epoch cache.
//!
//! A `Store` is owned by one thread and used through `&mut self`; it has no internal locks.
//! Work that may take long (writing hint files, merging) is handed out as jobs that touch only
//! files, so the owner can run them on another thread and install the result in small steps.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, OpenError, ReadError, WriteError};
use crate::fsutil;
use crate::hint::{self, HintJob};
use crate::keydir::{Keydir, Location};
use crate::lock::DirLock;
use crate::merge::MergeState;
use crate::options::{Durability, MAX_SEGMENT_SIZE, Options};
use crate::points;
use crate::record::{self, HEADER_LEN, Tag};
use crate::segment::{self, SEGMENT_FORMAT, SEGMENT_HEADER_LEN, Segment, SegmentHeader};

/// What recovery found and did when the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub segments_from_hints: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_tail_bytes: u64,
    /// Segments deleted as leftovers of an interrupted merge.
    pub leftover_segments_removed: usize,
    /// With `repair`: bytes dropped after corruption in an older segment.
    pub repaired_bytes_dropped: u64,
    /// The active segment was loaded from the hint a clean shutdown wrote for it (see
    /// `Store::close_with_shutdown_hint`), not scanned.
    pub active_from_shutdown_hint: bool,
    pub elapsed: Duration,
}

impl RecoveryReport {
    /// Segments read record by record: neither from a hint file nor from a shutdown hint.
    pub fn segments_read_whole(&self) -> usize {
        self.segments
            .saturating_sub(self.segments_from_hints + usize::from(self.active_from_shutdown_hint))
    }
}

/// Stages of [`Store::prefetch`], in the order a batch runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// The key's index chunk.
    Index,
    /// The keydir entries its chunk names.
    Entry,
    /// The start of its record.
    Record,
}

/// Visible metadata of a key, answered from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    /// Absolute expiry in unix ms, if any.
    pub expire: Option<u64>,
    pub value_len: u32,
}

/// Counters for INFO and for deciding when to merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub keys: usize,
    pub keys_with_expiry: usize,
    pub segments: usize,
    pub total_bytes: u64,
    pub dead_bytes: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub keydir_bytes: usize,
    pub unsynced: bool,
    /// Writes refused for want of disk space.
    pub write_errors: u64,
}

/// An fsync of what a partition has written so far, to run on another thread
/// (see `Store::sync_ticket`).
#[derive(Clone, Debug)]
pub struct SyncTicket {
    file: std::sync::Arc<fs::File>,
    upto: u64,
    file_id: u64,
    path: PathBuf,
}

impl SyncTicket {
    pub fn run(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// A descriptor on the file system holding the partition (for one `syncfs` of many).
    pub fn file(&self) -> &fs::File {
        &self.file
    }
}

/// Records read for replication: whole encoded records, ready to append on a follower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordBatch {
    pub bytes: Vec<u8>,
    pub count: usize,
    /// LSN of the last record in `bytes`, if any.
    pub last_lsn: Option<u64>,
    /// The LSN to ask for next.
    pub next_lsn: u64,
}

/// What a key had before a `put` replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    Absent,
    Live,
    /// A value whose expiry had passed (hidden, not deleted yet).
    Expired,
}

/// One local write's effect on a key (`Store::set_change_tap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Set {
        prior: Prior,
    },
    /// `was_visible` false: the value deleted had expired already.
    Deleted {
        was_visible: bool,
    },
    Expire,
    Persist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub kind: ChangeKind,
    /// Increases with every change recorded in the process, over all stores: the order the
    /// writes of several partitions ran in.
    pub seq: u64,
}

/// The next `Change::seq`.
static CHANGE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    _lock: DirLock,
    /// Segment table indexed by segment id (the `seg` of keydir locations).
    pub(crate) segments: Vec<Option<Segment>>,
    free_ids: Vec<u32>,
    /// Segment ids in increasing base order; the last one is the active segment.
    pub(crate) order: Vec<u32>,
    pub(crate) keydir: Keydir,
    epochs: LeaderEpochCache,
    next_lsn: u64,
    /// Epoch stamped on locally written records.
    epoch: u32,
    last_sync: Instant,
    hint_jobs: Vec<HintJob>,
    /// Bumped whenever the log is rebuilt from disk; merge output of an older generation is stale.
    pub(crate) generation: u64,
    pub(crate) merge: MergeState,
    report: RecoveryReport,
    failed: Option<String>,
    /// Following a leader: merges never drop values as expired (see `set_replica`).
    pub(crate) replica: bool,
    expired_scratch: Vec<Vec<u8>>,
    /// With a commit journal: copies of the records appended since the owner last took them
    /// (see `set_journal_tap`).
    tap: Option<Vec<u8>>,
    /// What the local writes changed, key by key, while someone listens (`set_change_tap`:
    /// the server's keyspace notifications).
    changes: Option<Vec<Change>>,
    /// Where the last `read_records` stopped: (next LSN, file id of its segment, offset). The
    /// leader's worker reads the records of each turn for its followers right after writing
    /// them, so the next read usually starts exactly there instead of at the sparse index
    /// entry up to 64 KiB before it.
    read_cursor: std::cell::Cell<(u64, u64, usize)>,
    /// Recent deletes and expiry changes, for WATCH (`watch`).
    pub(crate) touches: crate::watch::Touches,
    /// A failed write dropped records of the open batch (see `fail_write`): the batch's
    /// `commit_write` fails with this.
    dropped: Option<String>,
    /// Writes refused for want of disk space (`make_room`), and the last refusal while no
    /// write has succeeded since, for INFO.
    write_errors: u64,
    write_failing: Option<String>,
    /// The last write failed on the disk itself (no room could be allocated, a roll, write
    /// or fsync failed), not on a limit or `Options::min_free_space`, and no write has gone
    /// in since nor has `probe_writes` found the disk working (see `disk_failure`).
    disk_failing: Option<String>,
    /// The most room a write failed to get on the disk since `probe_writes` last found the
    /// disk working: a probe asks for at least that much.
    probe_need: u64,
    /// Bytes of the active segment's reserved space kept for writes that were given room
    /// ahead (`set_aside`): other writes get room past it.
    set_aside: u64,
    /// Bytes of data-adding records that were given room ahead (`set_floor_credit`): not held
    /// back by `Options::min_free_space` (it was checked when their room was set aside).
    floor_credit: u64,
    /// The time reads and writes see while set (`freeze_clock`), instead of the clock.
    frozen_now: Option<u64>,
    /// Bytes of data-adding records since the free space was last checked (where nothing
    /// is reserved).
    unchecked: u64,
    /// (segment file id, offset): the space set aside up to there was taken by a write that adds
    /// data, after the free space check. Writes that add data use it without another check;
    /// room a delete took (unchecked) is not theirs (found by a black-box run: SETs
    /// alternating with DELs took the file system from the floor to nothing).
    checked_room: (u64, u64),
}

const NO_CURSOR: (u64, u64, usize) = (u64::MAX, 0, 0);
/// Hint entries, or records of a scanned segment, looked ahead at while loading, their
/// index chunks prefetched (`load`, `ScanAhead`).
const LOAD_PREFETCH: usize = 16;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("keys", &self.keydir.len())
            .field("next_lsn", &self.next_lsn)
            .finish()
    }
}

struct Loaded {
    segments: Vec<Option<Segment>>,
    order: Vec<u32>,
    keydir: Keydir,
    next_lsn: u64,
    report: RecoveryReport,
    hint_jobs: Vec<HintJob>,
}

impl Store {
    /// Opens (creating if needed) the partition in `dir`, recovering from whatever a crash
    /// left behind. Holds an exclusive lock on the directory until dropped.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store, OpenError> {
        opts.validate().map_err(OpenError::BadOptions)?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at_open(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        let epochs = LeaderEpochCache::load(&dir)?;
        let loaded = load(&dir, &opts)?;
        let mut store = Store {
            dir,
            opts,
            _lock: lock,
            segments: Vec::new(),
            free_ids: Vec::new(),
            order: Vec::new(),
            keydir: Keydir::new(),
            epochs,
            next_lsn: 0,
            epoch: 0,
            last_sync: Instant::now(),
            hint_jobs: Vec::new(),
            // Random, so that no merge job of another store on this directory (one replaced
            // by a copied log) ever matches this one's.
            generation: fsutil::random_id() >> 1,
            merge: MergeState::Idle,
            report: RecoveryReport::default(),
            failed: None,
            replica: false,
            expired_scratch: Vec::new(),
            read_cursor: std::cell::Cell::new(NO_CURSOR),
            tap: None,
            changes: None,
            touches: crate::watch::Touches::new(0),
            dropped: None,
            write_errors: 0,
            write_failing: None,
            disk_failing: None,
            probe_need: 0,
            set_aside: 0,
            floor_credit: 0,
            frozen_now: None,
            unchecked: 0,
            checked_room: (0, 0),
        };
        store.install_loaded(loaded, false)?;
        store.upgrade_active_format()?;
        // They described the files as the start found them: a reload later (or a copy of
        // another log opened with these options) judges by the bytes alone.
        store.opts.recovery_points = Vec::new();
        Ok(store)
    }

    /// Write batches set `record::MORE` bits, which a build of format 1 reads as damage (and
    /// in the last segment would cut as a torn tail): they never go into a format 1 file. A
    /// format 1 active segment with records is closed (the log rolls), an empty one gets a
    /// format 2 header.
    fn upgrade_active_format(&mut self) -> Result<(), OpenError> {
        let id = self.active_id();
        let seg = self.seg(id);
        if !self.opts.write_batches || seg.header.format >= SEGMENT_FORMAT {
            return Ok(());
        }
        let path = seg.path.clone();
        let as_open_err = |e: WriteError| OpenError::BadSegmentHeader {
            path: path.clone(),
            reason: format!("cannot start a segment of format {SEGMENT_FORMAT}: {e}"),
        };
        if seg.is_empty() {
            let mut header = seg.header;
            header.format = SEGMENT_FORMAT;
            rewrite_header(&path, &header).at_open(&path)?;
            self.seg_mut(id).header = header;
            Ok(())
        } else {
            self.roll_with(0).map_err(as_open_err)
        }
    }

    fn install_loaded(&mut self, l: Loaded, reloading: bool) -> Result<(), OpenError> {
        self.segments = l.segments;
        self.free_ids.clear();
        self.order = l.order;
        self.keydir = l.keydir;
        self.next_lsn = l.next_lsn;
        // Records a reload dropped may get their LSNs again: no version taken before matches.
        self.touches.new_history(self.next_lsn);
        self.report = l.report;
        self.hint_jobs = l.hint_jobs;
        self.generation += 1;
        self.read_cursor.set(NO_CURSOR);
        self.merge = MergeState::Idle;
        // Records dropped by a reload are not in the log: they must not reach the journal.
        if let Some(t) = self.tap.as_mut() {
            t.clear();
        }
        // Epochs that start past the log end are dropped (the checkpoint is rewritten first,
        // and memory follows only if that worked). At open this must succeed: those epochs
        // belong to records lost in a crash. On a reload after a failed write they belong to
        // the records that just failed (a leader's epoch that began at the log end, a batch
        // from a leader that will be fetched again) and stay true, so a checkpoint that cannot
        // be rewritten (the disk that made the write fail is full) keeps them, in memory and
        // in the file alike, instead of leaving the store unusable until a restart.
        // The epoch the store was in goes on at the log end on a reload (a leader whose first
        // records failed is still the leader of its epoch; dropped, its next records would
        // carry the previous epoch and defeat the divergence check of a returning replica).
        // A follower's epochs are its leader's: those past its log end go (a fetched batch
        // that failed is fetched again with its epoch).
        let truncated = if reloading && !self.replica {
            self.epochs.truncate_keeping_latest(self.next_lsn)
        } else {
            self.epochs.truncate_from_end(self.next_lsn)
        };
        if let Err(e) = truncated {
            if !reloading {
                return Err(OpenError::BadEpochFile {
                    path: self.dir.join(crate::epoch::EPOCH_FILE),
                    reason: format!("cannot rewrite it without the epochs past the log end: {e}"),
                });
            }
            warn!(
                "{}: leader-epoch checkpoint not rewritten ({e}); epochs past the log end kept",
                self.dir.display()
            );
        }
        self.epoch = self.epochs.latest().map(|e| e.epoch).unwrap_or(0);
        Ok(())
    }

    /// Rebuilds every in-memory structure from the files (after a truncation or a failed write).
    fn reload(&mut self) -> Result<(), WriteError> {
        self.touches.new_history(self.next_lsn);
        self.segments.clear();
        self.keydir = Keydir::new();
        match load(&self.dir, &self.opts).and_then(|l| self.install_loaded(l, true)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(WriteError::Recovery(Box::new(e)))
            }
        }
    }

    /// Re-reads the files after they changed under the store (a merge install that failed
    /// midway), the active segment's buffered writes first.
    pub(crate) fn reread_files(&mut self) -> Result<(), WriteError> {
        self.end_batch();
        let id = self.active_id();
        // fsynced, not only written: the reload counts what is in the files as synced, and
        // with `fsync = always` the turn's replies go out on that.
        if let Err(e) = self.seg_mut(id).sync() {
            return Err(self.fail_write(e));
        }
        self.reload()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Changes the size limits for new writes at run time (CONFIG SET); values above the
    /// format's hard ceilings are capped to them.
    pub fn set_limits(&mut self, max_key_len: usize, max_value_len: usize) {
        self.opts.max_key_len = max_key_len.min(record::MAX_KEY_LEN_HARD as usize);
        self.opts.max_value_len = max_value_len.min(record::MAX_VALUE_LEN_HARD as usize);
    }

    /// Changes the durability policy at run time (CONFIG SET appendfsync).
    pub fn set_durability(&mut self, d: Durability) {
        self.opts.durability = d;
    }

    /// Marks the store as a replica's copy (or a leader's/standalone again). A replica takes
    /// every change from its leader, tombstones for expired keys included, and never decides
    /// on its own clock that a value is gone: merge keeps expired values there.
    pub fn set_replica(&mut self, replica: bool) {
        self.replica = replica;
    }

    /// A merge under way will not be installed: its output is discarded as stale when it
    /// comes back. For an owner whose store stops taking local writes (a leader demoted):
    /// installing a merge may write records of its own (see `settle_expired`), with the
    /// clock the merge started with.
    pub fn abandon_merge(&mut self) {
        if matches!(self.merge, MergeState::Running { .. }) {
            // A new generation, so that not even a merge started after this one takes it.
            self.generation += 1;
            self.merge = MergeState::Idle;
        }
    }

    /// Abandons a merge under way (not installed yet) that may drop tombstones at or above
    /// `lsn`: a replica turned out to be back at `lsn` and still needs them. True if it did.
    pub fn abandon_merge_dropping_from(&mut self, lsn: u64) -> bool {
        match self.merge {
            MergeState::Running { drops_below, .. } if drops_below > lsn => {
                self.abandon_merge();
                true
            }
            _ => false,
        }
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub(crate) fn now(&self) -> u64 {
        match self.frozen_now {
            Some(t) => t,
            None => (self.opts.clock)(),
        }
    }

    /// Until `None`: which keys have expired is decided at time `at` (unix ms), not by the
    /// clock: a transaction runs at one time, as in Redis, so a key it sets with a short
    /// TTL does not expire between two of its commands.
    pub fn freeze_clock(&mut self, at: Option<u64>) {
        self.frozen_now = at;
    }

    fn check_failed(&self) -> Result<(), WriteError> {
        match &self.failed {
            Some(m) => Err(WriteError::Failed(m.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn active_id(&self) -> u32 {
        self.order[self.order.len() - 1]
    }

    pub(crate) fn seg(&self, id: u32) -> &Segment {
        self.segments[id as usize]
            .as_ref()
            .unwrap_or_else(|| unreachable!("segment id {id} used after removal"))
    }

    pub(crate) fn seg_mut(&mut self, id: u32) -> &mut Segment {
        self.segments[id as usize]
            .as_mut()
            .unwrap_or_else(|| unreachable!("segment id {id} used after removal"))
    }

    pub(crate) fn alloc_seg_id(&mut self, seg: Segment) -> u32 {
        if let Some(id) = self.free_ids.pop() {
            self.segments[id as usize] = Some(seg);
            id
        } else {
            self.segments.push(Some(seg));
            (self.segments.len() - 1) as u32
        }
    }

    pub(crate) fn free_seg_id(&mut self, id: u32) {
        self.segments[id as usize] = None;
        self.free_ids.push(id);
    }

    // ---------------------------------------------------------------- reads

    pub(crate) fn visible(&self, loc: &Location) -> bool {
        loc.expire == 0 || loc.expire > self.now()
    }

    fn visible_loc(&self, key: &[u8]) -> Option<Location> {
        self.keydir.get(key).filter(|l| self.visible(l))
    }

    /// The hash [`Store::prefetch`] takes for `key`.
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        self.keydir.hash(key)
    }

    /// Starts loading what a lookup of `key` will read, so that a batch of lookups (a
    /// pipelined client's commands) overlaps its cache misses instead of taking them one
    /// after another: call it for every key of the batch with [`Prefetch::Index`], then for
    /// every key with `Entry`, then with `Record` (each stage reads what the one before
    /// loaded), then run the commands. A hint only: no result depends on it.
    pub fn prefetch(&self, key: &[u8], hash: u64, stage: Prefetch) {
        match stage {
            Prefetch::Index => self.keydir.prefetch_index(hash),
            Prefetch::Entry => self.keydir.prefetch_entries(hash),
            Prefetch::Record => {
                if let Some(loc) = self.keydir.get_hashed(key, hash)
                    && let Some(seg) = self.segments.get(loc.seg as usize).and_then(Option::as_ref)
                    && let Some(b) = seg.bytes(loc.off as u64, loc.record_len() as usize)
                {
                    // The header and key, and the end of a small value (reads check the
                    // whole record).
                    let p = b.as_ptr();
                    crate::slot_index::prefetch_line(p);
                    if b.len() <= 256 {
                        crate::slot_index::prefetch_line(p.wrapping_add(b.len() - 1));
                    }
                }
            }
        }
    }

    /// Calls `f` with the value of `key` if it exists and has not expired.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, ReadError> {
        let Some(loc) = self.visible_loc(key) else {
            return Ok(None);
        };
        let bytes = self.record_bytes(&loc, loc.record_len() as usize)?;
        let r = record::decode(bytes).map_err(|e| self.corrupt_at(&loc, e.to_string()))?;
        if r.key != key || r.header.tag != Tag::Put {
            return Err(self.corrupt_at(&loc, "keydir points at a record of another key".into()));
        }
        Ok(Some(f(r.value)))
    }

    /// The first `len` bytes of the record at `loc`.
    pub(crate) fn record_bytes(&self, loc: &Location, len: usize) -> Result<&[u8], ReadError> {
        self.seg(loc.seg).bytes(loc.off as u64, len).ok_or_else(|| {
            self.corrupt_at(loc, "record extends past the end of the segment".into())
        })
    }

    /// A read of the record at `loc` that found it damaged.
    pub(crate) fn corrupt_at(&self, loc: &Location, reason: String) -> ReadError {
        ReadError::Corrupt {
            path: self.seg(loc.seg).path.clone(),
            offset: loc.off as u64,
            reason,
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        self.get_with(key, |v| v.to_vec())
    }

    /// Expiry and value length of a visible key, without touching disk.
    pub fn meta(&self, key: &[u8]) -> Option<KeyMeta> {
        self.visible_loc(key).map(|l| KeyMeta {
            expire: (l.expire != 0).then_some(l.expire),
            value_len: l.val_len,
        })
    }

    /// Bytes of memory a visible key takes (its keydir entry and share of the index); the
    /// value is on disk and not counted. `None` if the key is absent.
    pub fn memory_usage(&self, key: &[u8]) -> Option<usize> {
        self.visible_loc(key)
            .map(|l| self.keydir.key_memory(key.len(), l.expire != 0))
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.visible_loc(key).is_some()
    }

    /// Milliseconds left to live: `None` if absent, `Some(None)` if it never expires.
    pub fn ttl_ms(&self, key: &[u8]) -> Option<Option<u64>> {
        let now = self.now();
        self.meta(key)
            .map(|m| m.expire.map(|e| e.saturating_sub(now)))
    }

    /// Number of keys, including expired ones not yet deleted (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.keydir.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keydir.is_empty()
    }

    /// Cursor-based iteration over visible keys: calls `f` for up to about `count` keys and
    /// returns the next cursor, 0 when the scan is complete. A key present for the whole scan
    /// is returned exactly once; pattern matching is left to the caller.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        let now = self.now();
        let cursor = u32::try_from(cursor).unwrap_or(u32::MAX);
        self.keydir.scan(cursor, count.max(1), |k, l| {
            if l.expire == 0 || l.expire > now {
                f(k)
            }
        }) as u64
    }

    /// A random visible key; `None` only when there is none. After 16 random picks that all
    /// found expired keys (many expired at once, not deleted yet: active expiry takes them a
    /// batch at a time, and takes none under CLIENT PAUSE or on a follower), the first
    /// visible key from a random slot on: Redis's RANDOMKEY deletes the expired keys it
    /// picks until it finds a live one, which a read here does not do.
    pub fn random_key(&self) -> Option<Vec<u8>> {
        for _ in 0..16 {
            let k = self.keydir.random_key()?;
            if self.exists(&k) {
                return Some(k);
            }
        }
        let now = self.now();
        self.keydir
            .find_from_random(|l| l.expire == 0 || l.expire > now)
    }

    // ---------------------------------------------------------------- writes

    fn check_limits(&self, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
        if key.len() > self.opts.max_key_len {
            return Err(WriteError::KeyTooLarge {
                len: key.len(),
                max: self.opts.max_key_len,
            });
        }
        if value.len() > self.opts.max_value_len {
            return Err(WriteError::ValueTooLarge {
                len: value.len(),
                max: self.opts.max_value_len,
            });
        }
        Ok(())
    }

    /// Rolls to a new segment if `rec_len` more bytes would not fit in the active one.
    /// A batch never spans segments: while the last record appended has `MORE` set, the
    /// segment grows past `segment_size` (mapped larger if need be) and rolls after the batch;
    /// only at `MAX_SEGMENT_SIZE` (keydir offsets are 32-bit) does a batch end early.
    /// Then reserves disk space for the record (`Segment::reserve`): a full disk fails the
    /// write here, before anything is applied. A write that `adds` data (not a delete, not a
    /// follower's append, not a merge's) past the room a checked write took also fails when
    /// the file system would have less free than `Options::min_free_space` after it.
    fn make_room(&mut self, rec_len: u64, adds: bool) -> Result<(), WriteError> {
        let r = self
            .fit(rec_len)
            .and_then(|()| self.reserve_room(rec_len, adds));
        if let Err(e) = &r {
            self.write_errors += 1;
            let why = match e {
                WriteError::Reserve { path, source } => format!("{}: {source}", path.display()),
                other => other.to_string(),
            };
            if is_disk_error(e) {
                self.disk_failing = Some(why.clone());
                self.probe_need = self.probe_need.max(rec_len + self.set_aside);
            }
            self.write_failing = Some(why);
        }
        r
    }

    /// `make_room` once the record fits in the active segment.
    fn reserve_room(&mut self, rec_len: u64, adds: bool) -> Result<(), WriteError> {
        let id = self.active_id();
        // Room kept for others (`set_aside`) stays theirs: this record gets room past it. A
        // roll or a reload left that room behind: it is taken again first, without the free
        // space check (it passed when the room was set aside).
        let kept = self.set_aside;
        let need = rec_len + kept;
        let mut checked = if kept > 0 {
            self.seg_mut(id).reserve(kept)
        } else {
            Ok(())
        };
        let mut check = false;
        if adds {
            let seg = self.seg(id);
            check = match seg.reserved_end() {
                // Within room a checked write took (the rest of a command's records after
                // `make_room_for`, or the slack of the last step) there is nothing to check.
                Some(_) => {
                    self.checked_room.0 != seg.header.file_id
                        || seg.len() + need > self.checked_room.1
                }
                // Nothing is reserved here: every 256 KiB.
                None => {
                    self.unchecked += rec_len;
                    self.unchecked >= 256 << 10
                }
            };
            if check && self.floor_credit >= rec_len {
                // Room set aside for this record: checked then. It counts as checked room:
                // the rest of the command's records go into it without a check. (Writes
                // after it may use the rest of the space reserved with it: reserved space
                // is allocated already, writing into it takes no more from the disk.)
                self.floor_credit -= rec_len;
            } else if check && checked.is_ok() {
                self.floor_credit = 0;
                self.unchecked = 0;
                checked = self.check_free_space(rec_len);
            }
        }
        checked.and_then(|()| self.seg_mut(id).reserve(need))?;
        let seg = self.seg(id);
        if check && let Some(end) = seg.reserved_end() {
            self.checked_room = (seg.header.file_id, end);
        }
        Ok(())
    }

    /// `WriteError::DiskLow` when the file system would have less free than
    /// `Options::min_free_space` after `more` bytes (never when it cannot be asked).
    fn check_free_space(&self, more: u64) -> Result<(), WriteError> {
        let floor = self.opts.min_free_space;
        if floor == 0 {
            return Ok(());
        }
        let Some(free) = fsutil::free_space(&self.dir) else {
            return Ok(());
        };
        if free < floor.saturating_add(more) {
            return Err(WriteError::DiskLow {
                path: self.dir.clone(),
                free,
                need: more,
                floor,
            });
        }
        Ok(())
    }

    /// The next `bytes` of records that add data are not held back by
    /// `Options::min_free_space`: for the records of a command whose room was set aside
    /// (`set_aside`), which passed the check then, and may find that room left behind in a
    /// closed segment by a roll since. Records past them (a command that wrote more than its
    /// room was sized for) are checked again. 0 ends it.
    pub fn set_floor_credit(&mut self, bytes: u64) {
        self.floor_credit = bytes;
    }

    /// (all, dead) bytes of the active segment (`closed_stats` has the closed ones').
    pub fn active_stats(&self) -> (u64, u64) {
        let s = self.seg(self.active_id());
        (s.len(), s.dead.min(s.len()))
    }

    /// Changes `Options::min_free_space` at run time (CONFIG SET).
    pub fn set_min_free_space(&mut self, floor: u64) {
        self.opts.min_free_space = floor;
    }

    fn fit(&mut self, rec_len: u64) -> Result<(), WriteError> {
        let active = self.seg(self.active_id());
        let len = active.len();
        let over_size = len + rec_len > self.opts.segment_size;
        let over_map = len + rec_len > active.capacity();
        if active.batch_open() && len + rec_len <= MAX_SEGMENT_SIZE {
            if over_map {
                let cap = (len + rec_len)
                    .max(active.capacity().saturating_mul(2))
                    .min(MAX_SEGMENT_SIZE);
                let id = self.active_id();
                return self.seg_mut(id).reopen_writable(cap);
            }
            return Ok(());
        }
        if over_map && active.is_empty() {
            // Rolling would create a segment with the same base: map this one larger instead.
            let cap = self
                .opts
                .segment_size
                .max(SEGMENT_HEADER_LEN as u64 + rec_len);
            let id = self.active_id();
            return self.seg_mut(id).reopen_writable(cap);
        }
        if (over_size && !active.is_empty()) || over_map {
            self.roll_with(rec_len)?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at the current log end.
    pub fn roll(&mut self) -> Result<(), WriteError> {
        self.check_failed()?;
        if self.seg(self.active_id()).is_empty() {
            return Ok(());
        }
        self.roll_with(0)
    }

    fn roll_with(&mut self, first_record: u64) -> Result<(), WriteError> {
        self.end_batch();
        let id = self.active_id();
        let dir = self.dir.clone();
        let seg = self.seg_mut(id);
        if let Err(e) = seg.seal() {
            return Err(self.fail_write(e));
        }
        let header = SegmentHeader {
            base: self.next_lsn,
            covered_end: 0,
            dropped_below: 0,
            file_id: fsutil::random_id(),
            format: SEGMENT_FORMAT,
        };
        let cap = self
            .opts
            .segment_size
            .max(SEGMENT_HEADER_LEN as u64 + first_record);
        let new = match Segment::create(&dir, header, cap, None) {
            Ok(new) => new,
            Err(e) => {
                // The log goes on in this segment (a full disk has no room for a new one).
                self.seg_mut(id).unseal();
                return Err(e);
            }
        };
        // Only now is the old segment closed for good: a hint written for it while it still
        // took appends would describe a part of it, and once a later segment followed it,
        // opening would trust the hint and find the rest of its records missing (found by a
        // black-box run: a roll failed on a full disk, then a kill -9).
        let seg = self.seg(id);
        let job = (!seg.is_empty()).then(|| HintJob {
            segment: seg.path.clone(),
            hint: hint::hint_for_segment(&seg.path),
            file_id: seg.header.file_id,
        });
        self.hint_jobs.extend(job);
        let new_id = self.alloc_seg_id(new);
        self.order.push(new_id);
        Ok(())
    }

    /// Makes room (and reserves disk space) for every record of a command that writes
    /// several, before it writes the first: a command stopped halfway by a full disk would
    /// keep its first records (the batch they end is whole on disk). `puts` and `deletes`:
    /// the keys (and values) of the records it will append.
    pub fn make_room_for(
        &mut self,
        puts: &[(&[u8], &[u8])],
        deletes: &[&[u8]],
    ) -> Result<(), WriteError> {
        self.check_failed()?;
        for (k, v) in puts {
            self.check_limits(k, v)?;
        }
        let len = records_len(puts.iter().map(|(k, v)| (*k, v.len())), deletes);
        if len == 0 {
            return Ok(());
        }
        // Only what one segment can take: a larger batch ends early (`fit`) anyway.
        self.make_room(len.min(MAX_SEGMENT_SIZE / 2), !puts.is_empty())
    }

    /// `make_room_for`, keeping the room for these records until `release_set_aside`: other
    /// writes meanwhile get room past it. For a command whose parts on several workers must
    /// all have room before any is applied. Returns the bytes set aside.
    pub fn set_aside(
        &mut self,
        puts: &[(&[u8], &[u8])],
        deletes: &[&[u8]],
    ) -> Result<u64, WriteError> {
        for (k, v) in puts {
            self.check_limits(k, v)?;
        }
        let sized: Vec<(&[u8], usize)> = puts.iter().map(|(k, v)| (*k, v.len())).collect();
        self.set_aside_sized(&sized, deletes)
    }

    /// `set_aside` for records whose values are known only by a bound on their length (a
    /// command in a transaction whose value depends on what it finds: APPEND, INCR, ...).
    pub fn set_aside_sized(
        &mut self,
        puts: &[(&[u8], usize)],
        deletes: &[&[u8]],
    ) -> Result<u64, WriteError> {
        self.check_failed()?;
        let len = records_len(puts.iter().copied(), deletes).min(MAX_SEGMENT_SIZE / 2);
        if len > 0 {
            self.make_room(len, !puts.is_empty())?;
        }
        self.set_aside += len;
        Ok(len)
    }

    /// Gives back room kept by `set_aside` (before the records it was for are written, or
    /// when they will not be).
    pub fn release_set_aside(&mut self, len: u64) {
        self.set_aside = self.set_aside.saturating_sub(len);
    }

    /// Encodes one record into the active segment and applies it to the keydir.
    fn append_local(
        &mut self,
        tag: Tag,
        key: &[u8],
        value: &[u8],
        expire: u64,
    ) -> Result<u64, WriteError> {
        // A value or an expiry change adds data; deletes are what frees space.
        let adds = matches!(tag, Tag::Put | Tag::Expire);
        self.append_record(tag, key, value, expire, adds)
    }

    /// `append_local`, saying whether the record counts as one that adds data (a merge's
    /// rewrite of a value does not: merges are what `Options::min_free_space` is kept for).
    pub(crate) fn append_record(
        &mut self,
        tag: Tag,
        key: &[u8],
        value: &[u8],
        expire: u64,
        adds: bool,
    ) -> Result<u64, WriteError> {
        self.check_failed()?;
        let rec_len = (HEADER_LEN + key.len() + value.len()) as u64;
        self.make_room(rec_len, adds)?;
        let lsn = self.next_lsn;
        let epoch = self.epoch;
        let id = self.active_id();
        let Some(seg) = self.segments[id as usize].as_mut() else {
            unreachable!("active segment {id} missing")
        };
        let off = seg.len();
        // With write batches every record goes out as one more of the open batch; the one
        // before a hand-over to the OS is made the batch's last (`end_batch`).
        let at = seg.buf_mut().len();
        let more = self.opts.write_batches;
        record::encode_in_batch(seg.buf_mut(), lsn, epoch, expire, tag, more, key, value);
        if more {
            seg.open_batch_at(at);
        }
        seg.note_record(lsn, off);
        if let Some(tap) = self.tap.as_mut() {
            let buf = seg.buf_mut();
            tap.extend_from_slice(&buf[buf.len() - rec_len as usize..]);
        }
        self.next_lsn = lsn + 1;
        // For WATCH: when the value a Delete replaces had expired (a key watched when it
        // had expired already is not changed by the delete of that value).
        let expired_at = match tag {
            Tag::Delete => match self.keydir.get(key) {
                Some(loc) if !self.visible(&loc) => loc.expire,
                _ => u64::MAX,
            },
            _ => u64::MAX,
        };
        self.apply(id, off as u32, tag, key, value.len() as u32, expire);
        match tag {
            Tag::Delete | Tag::Expire => self.touches.note(self.keydir.hash(key), lsn, expired_at),
            Tag::Clear => self.touches.note_clear(lsn),
            Tag::Put => {}
        }
        Ok(lsn)
    }

    /// Applies one record at (seg, off) to the keydir and the dead-byte counters.
    pub(crate) fn apply(
        &mut self,
        seg: u32,
        off: u32,
        tag: Tag,
        key: &[u8],
        val_len: u32,
        expire: u64,
    ) {
        let rec_len = (HEADER_LEN + key.len()) as u64 + val_len as u64;
        match tag {
            Tag::Put => {
                let loc = Location {
                    seg,
                    off,
                    key_len: key.len() as u32,
                    val_len,
                    expire,
                };
                if let Some(prev) = self.keydir.insert(key, loc) {
                    self.mark_dead(prev.seg, prev.record_len());
                }
            }
            Tag::Delete => {
                if let Some(prev) = self.keydir.remove(key) {
                    self.mark_dead(prev.seg, prev.record_len());
                }
                self.mark_dead(seg, rec_len);
            }
            Tag::Expire => {
                self.keydir.set_expire(key, expire);
                self.mark_dead(seg, rec_len);
            }
            Tag::Clear => {
                self.keydir.clear();
                // Everything before this record is dead.
                for &id in &self.order {
                    if let Some(s) = self.segments[id as usize].as_mut() {
                        s.dead = if id == seg {
                            off as u64 + rec_len
                        } else {
                            s.len()
                        };
                    }
                }
            }
        }
    }

    fn mark_dead(&mut self, seg: u32, bytes: u64) {
        if let Some(Some(s)) = self.segments.get_mut(seg as usize) {
            s.dead += bytes;
        }
    }

    /// Sets `key` to `value`, with an absolute expiry in unix ms (`None` = never). Returns the LSN.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire: Option<u64>,
    ) -> Result<u64, WriteError> {
        self.check_limits(key, value)?;
        let prior = match self.changes.is_some() {
            true => match self.keydir.get(key) {
                None => Prior::Absent,
                Some(loc) if self.visible(&loc) => Prior::Live,
                Some(_) => Prior::Expired,
            },
            false => Prior::Absent,
        };
        let lsn = self.append_local(Tag::Put, key, value, expire.unwrap_or(0))?;
        self.note_change(key, ChangeKind::Set { prior });
        Ok(lsn)
    }

    /// Deletes `key`; returns whether a visible key was deleted. A key that is in the keydir
    /// but expired is deleted too (a tombstone is written) and reported as not existing.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, WriteError> {
        let Some(loc) = self.keydir.get(key) else {
            return Ok(false);
        };
        let was_visible = self.visible(&loc);
        self.append_local(Tag::Delete, key, &[], 0)?;
        self.note_change(key, ChangeKind::Deleted { was_visible });
        Ok(was_visible)
    }

    /// Sets (`Some`) or clears (`None`) the expiry of a visible key; false if there is no such key.
    pub fn set_expire(&mut self, key: &[u8], expire: Option<u64>) -> Result<bool, WriteError> {
        if self.visible_loc(key).is_none() {
            return Ok(false);
        }
        self.append_local(Tag::Expire, key, &[], expire.unwrap_or(0))?;
        let kind = match expire {
            Some(_) => ChangeKind::Expire,
            None => ChangeKind::Persist,
        };
        self.note_change(key, kind);
        Ok(true)
    }

    /// Records, from now on (`true`) or no more, what each local write (`put`, `delete`,
    /// `set_expire`) changed, for [`Store::take_changes`]. Off by default: it costs a keydir
    /// lookup per `put`.
    pub fn set_change_tap(&mut self, on: bool) {
        match on {
            true => {
                self.changes.get_or_insert_with(Vec::new);
            }
            false => self.changes = None,
        }
    }

    /// The changes recorded since the last call, in the order they were written.
    pub fn take_changes(&mut self, into: &mut Vec<Change>) {
        if let Some(c) = self.changes.as_mut() {
            into.append(c);
        }
    }

    fn note_change(&mut self, key: &[u8], kind: ChangeKind) {
        if let Some(c) = self.changes.as_mut() {
            c.push(Change {
                key: key.to_vec(),
                kind,
                seq: CHANGE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            });
        }
    }

    /// Deletes every key (one `Clear` record).
    pub fn clear(&mut self) -> Result<u64, WriteError> {
        self.append_local(Tag::Clear, &[], &[], 0)
    }

    /// Samples keys with an expiry and returns up to `max` that have expired, for the server
    /// to delete (Redis's active expiry). Followers must not call this: they receive the
    /// leader's tombstones.
    pub fn expired_batch(&mut self, samples: usize) -> Vec<Vec<u8>> {
        let now = self.now();
        let mut out = std::mem::take(&mut self.expired_scratch);
        out.clear();
        self.keydir.sample_expired(samples, now, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    // ------------------------------------------------------------- durability

    /// Ends the open batch of local writes: its last record loses `MORE`, in the segment's
    /// buffer and in the journal tap alike. Called before every hand-over of the buffer to the
    /// OS, so a log on disk only ever ends inside a batch when a write was torn.
    fn end_batch(&mut self) {
        let id = self.active_id();
        if let Some(from_end) = self.seg_mut(id).end_batch()
            && let Some(tap) = self.tap.as_mut()
            && let Some(at) = tap.len().checked_sub(from_end)
        {
            record::end_batch(&mut tap[at..]);
        }
    }

    /// Ends a batch of writes: hands buffered records to the OS and, as the durability policy
    /// asks, fsyncs them. The server calls it once per event-loop turn and releases replies
    /// only after it returns Ok. On error, none of the batch's records remain.
    pub fn commit(&mut self) -> Result<(), WriteError> {
        self.write_batch()?;
        let want_sync = match self.opts.durability {
            Durability::Always => true,
            Durability::EverySec => {
                !self.opts.background_sync && self.last_sync.elapsed() >= Duration::from_secs(1)
            }
            Durability::Never => false,
        };
        if want_sync {
            self.sync()?;
        }
        Ok(())
    }

    /// The first half of `commit` for callers that group fsyncs across partitions: hands the
    /// buffered records to the OS and says whether the policy wants them fsynced before replies
    /// are released (`Always` with unsynced bytes). The caller then calls `sync`, or fsyncs the
    /// whole file system once for many partitions and calls `synced_externally`.
    /// Fails when a write failure earlier in the batch dropped some of its records: the rest
    /// are dropped too, so that the whole batch fails.
    pub fn commit_write(&mut self) -> Result<bool, WriteError> {
        self.write_batch()?;
        let id = self.active_id();
        Ok(self.opts.durability == Durability::Always && self.seg(id).has_unsynced())
    }

    /// Hands the batch's buffered records to the OS (what `commit` and `commit_write` share).
    /// Fails when a write failure earlier in the batch dropped some of its records: the rest
    /// are dropped too, so that the whole batch fails.
    fn write_batch(&mut self) -> Result<(), WriteError> {
        self.check_failed()?;
        if let Some(reason) = self.dropped.take() {
            // The records appended since the failure go too (a reload keeps what is in the
            // files); should it fail, the store is failed and says so from now on.
            let _ = self.reload();
            return Err(WriteError::BatchDropped(reason));
        }
        self.end_batch();
        let id = self.active_id();
        let seg = self.seg_mut(id);
        let wrote = seg.has_unwritten();
        if let Err(e) = seg.flush() {
            let e = self.fail_write(e);
            // Reported right here.
            self.dropped = None;
            return Err(e);
        }
        if wrote {
            self.write_failing = None;
            self.disk_failing = None;
        }
        Ok(())
    }

    /// A ticket to fsync what `commit_write` wrote, on another thread; hand it back to
    /// `sync_done` when it has run. Replies for those writes may be released then.
    pub fn sync_ticket(&self) -> SyncTicket {
        let seg = self.seg(self.active_id());
        let (file, upto) = seg.sync_handle();
        SyncTicket {
            file,
            upto,
            file_id: seg.header.file_id,
            path: seg.path.clone(),
        }
    }

    /// Records the outcome of a ticket's fsync. On failure the store reacts as to any failed
    /// write (see `commit`) and the error is returned for the replies that waited on it.
    pub fn sync_done(
        &mut self,
        t: &SyncTicket,
        result: std::io::Result<()>,
    ) -> Result<(), WriteError> {
        // A store that failed may have lost pages whose fsync error another fsync of the same
        // file already took: a later success proves nothing.
        self.check_failed()?;
        match result {
            Ok(()) => {
                let id = self.active_id();
                let seg = self.seg_mut(id);
                // A roll since the ticket was taken fsynced that segment itself.
                if seg.header.file_id == t.file_id {
                    seg.mark_synced_to(t.upto);
                }
                self.last_sync = Instant::now();
                Ok(())
            }
            Err(source) => Err(self.fail_write(WriteError::Io {
                path: t.path.clone(),
                source,
            })),
        }
    }

    /// Like `sync_ticket`, but on a descriptor of its own. Linux reports a writeback error to
    /// each open file once: an fsync run beside the owner's (a journal checkpoint) must not
    /// share the owner's descriptor, or one of the two could miss the error.
    pub fn sync_ticket_own_fd(&self) -> Result<SyncTicket, WriteError> {
        let seg = self.seg(self.active_id());
        let file = fs::File::open(&seg.path).at_write(&seg.path)?;
        Ok(SyncTicket {
            file: std::sync::Arc::new(file),
            upto: seg.sync_handle().1,
            file_id: seg.header.file_id,
            path: seg.path.clone(),
        })
    }

    /// The store refuses writes until restarted (an fsync failed with EIO, or a reload after
    /// a failed write failed).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Everything written has been made durable by the caller (e.g. one `syncfs` for the
    /// file system holding several partitions).
    pub fn synced_externally(&mut self) {
        let id = self.active_id();
        self.seg_mut(id).mark_synced();
        self.last_sync = Instant::now();
    }

    /// fsyncs everything appended so far.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        self.check_failed()?;
        self.end_batch();
        let id = self.active_id();
        let r = self.seg_mut(id).sync();
        self.last_sync = Instant::now();
        r.map_err(|e| self.fail_write(e))
    }

    /// True when `EverySec` owes an fsync (the server's timer calls `commit` then).
    pub fn sync_due(&self) -> bool {
        self.opts.durability == Durability::EverySec
            && self.seg(self.active_id()).has_unsynced()
            && self.last_sync.elapsed() >= Duration::from_secs(1)
    }

    pub fn has_unsynced(&self) -> bool {
        self.seg(self.active_id()).has_unsynced()
    }

    /// The active segment's file id and how many of its bytes are known to be fsynced: what a
    /// recovery point for this log records (see [`crate::points`]).
    /// `None` for a store whose reload failed: it has no segments left.
    pub fn synced_point(&self) -> Option<(u64, u64)> {
        let id = *self.order.last()?;
        let seg = self.segments.get(id as usize)?.as_ref()?;
        Some((seg.header.file_id, seg.synced()))
    }

    /// With `background_sync`: when `EverySec` owes an fsync, writes the buffer and returns a
    /// handle that fsyncs the active segment on another thread, so the owner never waits on
    /// the disk for it. At most one handle per second.
    /// The bytes count as synced only when the owner hands the outcome to `sync_done`: a
    /// failed fsync is then a failed write (EIO: the store refuses writes), not a log line
    /// while the store went on as if the data were on disk.
    pub fn take_background_sync(&mut self) -> Result<Option<SyncTicket>, WriteError> {
        if !self.sync_due() || self.failed.is_some() {
            return Ok(None);
        }
        self.end_batch();
        let id = self.active_id();
        if let Err(e) = self.seg_mut(id).flush() {
            return Err(self.fail_write(e));
        }
        // At most one a second, landed or not. On the owner's descriptor: one of its own per
        // ticket would pile up open files while a stalled disk holds the fsyncs back.
        self.last_sync = Instant::now();
        Ok(Some(self.sync_ticket()))
    }

    /// After a failed write or fsync the in-memory state may name records that are not on
    /// disk: rebuild it from the files, which hold exactly what was written.
    fn fail_write(&mut self, e: WriteError) -> WriteError {
        warn!(
            "{}: write failed ({e}); reloading state from disk",
            self.dir.display()
        );
        if is_disk_error(&e) {
            self.disk_failing = Some(e.to_string());
        }
        // Records of the batch that the failure dropped had been applied, and commands may
        // have been answered on them: the batch's commit fails (`commit_write`).
        // Records still in the buffer go with the reload too (an fsync that failed while the
        // turn's records waited to be written): their turn must fail as well.
        let id = self.active_id();
        let seg = self.seg_mut(id);
        if seg.take_dropped() || seg.has_unwritten() {
            self.dropped = Some(e.to_string());
        }
        if let WriteError::Io { source, .. } = &e
            && source.raw_os_error().is_some_and(|c| c == libc::EIO)
        {
            // After an fsync EIO the page cache may have dropped the data: only a restart
            // that re-reads the files is safe.
            self.failed = Some(format!("I/O error: {source}"));
            return e;
        }
        if let Err(re) = self.reload() {
            warn!(
                "{}: reload after failed write failed: {re}",
                self.dir.display()
            );
        }
        e
    }

    // ---------------------------------------------------------- commit journal

    /// Turns on (or off) keeping a copy of every record appended, for the owner to write to its
    /// commit journal (see [`crate::journal`]) and then drop with `clear_journal_records`.
    pub fn set_journal_tap(&mut self, on: bool) {
        if on != self.tap.is_some() {
            self.tap = on.then(Vec::new);
        }
    }

    pub fn journal_tap(&self) -> bool {
        self.tap.is_some()
    }

    /// Records appended since the last `clear_journal_records` (empty without a tap).
    pub fn journal_records(&self) -> &[u8] {
        self.tap.as_deref().unwrap_or_default()
    }

    pub fn clear_journal_records(&mut self) {
        if let Some(t) = self.tap.as_mut() {
            t.clear();
            if t.capacity() > (4 << 20) {
                t.shrink_to(1 << 20);
            }
        }
    }

    /// Appends the journaled records (`journal::read_dir`) this log lacks — those at or above
    /// its log end, in order — and fsyncs the log, those it had too (written before a crash,
    /// they may be in the page cache only, and the journal is retired next). Returns how many
    /// were appended.
    pub fn replay_journal(&mut self, records: &[u8]) -> Result<u64, WriteError> {
        let mut missing = Vec::new();
        let mut next = self.next_lsn;
        let mut n = 0;
        for (at, r) in record::RecordIter::new(records) {
            if r.header.lsn >= next {
                if n == 0 && r.header.lsn > next {
                    // The journal covers what was written after the last checkpoint, so its
                    // records follow the log's end unless the log lost synced records
                    // (damage that recovery cut away, a file deleted): refused, as a gap
                    // inside the log is, unless repairing; then say so, as they are gone.
                    if !self.opts.repair {
                        return Err(WriteError::JournalGap {
                            from: next,
                            last: r.header.lsn - 1,
                        });
                    }
                    error!(
                        "{}: records {next}..{} are in neither the log nor the commit \
                         journal and are lost (the log's synced part was damaged?)",
                        self.dir.display(),
                        r.header.lsn
                    );
                }
                let len = r.header.record_len();
                missing.extend_from_slice(&records[at..at + len]);
                next = r.header.lsn + 1;
                n += 1;
            }
        }
        if n > 0 {
            self.append_records(&missing)?;
        }
        if self.has_unsynced() {
            self.sync()?;
        }
        if n > 0 {
            info!(
                "{}: {n} records replayed from the commit journal (log end now {})",
                self.dir.display(),
                self.next_lsn
            );
        }
        Ok(n)
    }

    // ------------------------------------------------------------ replication

    /// LSN the next appended record gets (Kafka's log end offset).
    pub fn log_end(&self) -> u64 {
        self.next_lsn
    }

    /// LSN of the last record in the log, if any.
    pub fn last_lsn(&self) -> Option<u64> {
        self.order
            .iter()
            .rev()
            .find_map(|&id| self.seg(id).last_lsn)
    }

    /// First LSN that can still be read (the base of the oldest segment).
    pub fn log_start(&self) -> u64 {
        self.order
            .first()
            .map(|&id| self.seg(id).base())
            .unwrap_or(0)
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// LSN below which merges may have dropped tombstones (see
    /// `SegmentHeader::dropped_below`): a replica whose log ends below it must copy this log
    /// rather than fetch its records, or a value deleted here could live on there.
    pub fn dropped_below(&self) -> u64 {
        self.order
            .iter()
            .map(|&id| self.seg(id).header.dropped_below)
            .max()
            .unwrap_or(0)
    }

    /// Closes the store after a clean shutdown fsynced every write: describes the active
    /// segment in its shutdown hint (see [`crate::hint`]), so that the next start loads it
    /// without reading values, when it holds at least `min_bytes` of records (below that,
    /// scanning it costs less than the hint's writes). Taking the store makes sure nothing is
    /// written after the hint. `Ok(false)`: no hint was due (a failed or unsynced log, hints
    /// off, a small segment, a write batch left open).
    pub fn close_with_shutdown_hint(self, min_bytes: u64) -> Result<bool, WriteError> {
        let Some(&id) = self.order.last() else {
            return Ok(false);
        };
        let seg = self.seg(id);
        if !self.opts.use_hints
            || self.failed.is_some()
            || seg.has_unsynced()
            || seg.batch_open()
            || seg.len() < SEGMENT_HEADER_LEN as u64 + min_bytes.max(1)
        {
            return Ok(false);
        }
        let path = hint::shutdown_hint_for_segment(&seg.path);
        hint::write_shutdown_hint(&path, seg.header.file_id, seg.written_bytes())
            .at_write(&path)?;
        Ok(true)
    }

    /// Files of the closed segments (and their hint files, where written): what a new
    /// replica can copy as they are.
    pub fn closed_segment_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for &id in &self.order[..self.order.len() - 1] {
            let p = self.seg(id).path.clone();
            let h = hint::hint_for_segment(&p);
            out.push(p);
            if h.exists() {
                out.push(h);
            }
        }
        out
    }

    /// First LSN of the active segment: every record below it is in a closed segment (what a
    /// merge may rewrite).
    pub fn active_base(&self) -> u64 {
        self.seg(self.active_id()).base()
    }

    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Becomes leader for `epoch`: records that it starts at the current log end (fsynced) and
    /// stamps it on every local write from now on.
    pub fn begin_epoch(&mut self, epoch: u32) -> Result<(), WriteError> {
        self.epochs.assign(epoch, self.next_lsn)?;
        self.epoch = self.epoch.max(epoch);
        // A failure met as follower says nothing of the leadership: its own writes will.
        self.disk_failing = None;
        Ok(())
    }

    /// Whether this log could take writes as leader now, asked of a store whose disk failed
    /// (`disk_failure`) or whose leader epoch could not begin, when no write may come to tell:
    /// the store takes writes (it did not fail for good), `room` bytes past the active
    /// segment's end can be allocated (at least as many as the largest write the disk failed
    /// since the last probe that worked, up to 16 MiB), and the leader-epoch checkpoint can be written
    /// again (unchanged). Clears `disk_failure` when all of that works. Nothing is appended:
    /// the room allocated stays for later writes. `Options::min_free_space` is not checked:
    /// writes under it are refused, but the disk works.
    pub fn probe_writes(&mut self, room: u64) -> Result<(), WriteError> {
        self.check_failed()?;
        let id = self.active_id();
        // A write bigger than any ordinary one (hundreds of MiB) must not keep the answer
        // "no" while the disk has room for the others.
        let need = room.max(self.probe_need.min(PROBE_NEED_MAX)) + self.set_aside;
        self.seg_mut(id).reserve(need)?;
        self.epochs.rewrite()?;
        self.disk_failing = None;
        self.probe_need = 0;
        Ok(())
    }

    /// OffsetsForLeaderEpoch (KIP-101): the largest epoch <= `epoch` in this log and its end.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        self.epochs.end_offset_for(epoch, self.next_lsn)
    }

    /// Reads whole records with LSN >= `from`, up to about `max_bytes` (always at least one
    /// record when any exists), from what has been handed to the OS. Records merged away
    /// leave gaps: the batch simply starts at the next LSN present. It ends at the end of a
    /// write batch (a record without `MORE`), past `max_bytes` if need be, so a follower's
    /// log, and with it the high watermark, never ends inside one.
    pub fn read_records(&self, from: u64, max_bytes: usize) -> Result<RecordBatch, ReadError> {
        let mut batch = RecordBatch {
            next_lsn: from.max(self.log_start()),
            ..RecordBatch::default()
        };
        // Last segment whose base <= from, or the first one.
        let start = self
            .order
            .partition_point(|&id| self.seg(id).base() <= from)
            .saturating_sub(1);
        let (at_lsn, at_file, at_pos) = self.read_cursor.get();
        // The last record taken has `MORE`: the batch must be read to its end.
        let mut in_batch = false;
        for &id in &self.order[start..] {
            let seg = self.seg(id);
            let written = seg.written_bytes();
            let mut pos = seg.seek_hint(from) as usize;
            // The cursor counts only in the very file it was taken in (merge outputs take
            // their input's base, never its file id), where a record with exactly that LSN
            // starts there.
            if at_lsn == from
                && at_file == seg.header.file_id
                && at_pos > pos
                && record::decode_header(written.get(at_pos..).unwrap_or_default())
                    .is_ok_and(|h| h.lsn == from)
            {
                pos = at_pos;
            }
            // The last record stepped over, if any.
            let mut stepped: Option<usize> = None;
            while pos < written.len() {
                let corrupt_at = |at: usize, e: record::DecodeError| ReadError::Corrupt {
                    path: seg.path.clone(),
                    offset: at as u64,
                    reason: e.to_string(),
                };
                // Records before `from` (up to one index interval of them) are only stepped
                // over: their headers give the lengths, and only what is sent is verified.
                let h = record::decode_header(&written[pos..]).map_err(|e| corrupt_at(pos, e))?;
                let len = h.record_len();
                if len > written.len() - pos {
                    let e = record::DecodeError::Truncated {
                        need: len,
                        have: written.len() - pos,
                    };
                    return Err(corrupt_at(pos, e));
                }
                if h.lsn < from {
                    stepped = Some(pos);
                    pos += len;
                    continue;
                }
                // Past `from` right after stepping: a gap merged away, or the record at
                // `from` with a damaged LSN, which its checksum tells.
                if h.lsn > from
                    && batch.count == 0
                    && let Some(at) = stepped.take()
                {
                    record::decode(&written[at..]).map_err(|e| corrupt_at(at, e))?;
                }
                record::decode(&written[pos..]).map_err(|e| corrupt_at(pos, e))?;
                if batch.count > 0 && !in_batch && batch.bytes.len() + len > max_bytes {
                    return Ok(batch);
                }
                in_batch = h.more;
                batch.bytes.extend_from_slice(&written[pos..pos + len]);
                batch.count += 1;
                batch.last_lsn = Some(h.lsn);
                batch.next_lsn = h.lsn + 1;
                self.read_cursor
                    .set((batch.next_lsn, seg.header.file_id, pos + len));
                pos += len;
            }
            if batch.count > 0 && !in_batch && batch.bytes.len() >= max_bytes {
                break;
            }
        }
        if batch.count == 0 {
            // Nothing flushed at or after `from` yet.
            batch.next_lsn = from.max(self.log_start());
        }
        Ok(batch)
    }

    /// Appends records received from a leader, keeping their LSNs and epochs. The whole batch
    /// is validated first: on any error nothing is appended.
    pub fn append_records(&mut self, batch: &[u8]) -> Result<usize, WriteError> {
        self.check_failed()?;
        self.end_batch();
        let mut expect_at_least = self.next_lsn;
        let mut it = record::RecordIter::new(batch);
        // Decoded (and checksummed) once: the records are applied from this list.
        let mut records = Vec::new();
        for (at, r) in it.by_ref() {
            if r.header.lsn < expect_at_least {
                return Err(WriteError::LsnNotIncreasing {
                    got: r.header.lsn,
                    log_end: expect_at_least,
                });
            }
            expect_at_least = r.header.lsn + 1;
            records.push((at, r));
        }
        if let Some((offset, e)) = it.error() {
            return Err(WriteError::BadReplicatedRecord {
                offset,
                reason: e.to_string(),
            });
        }
        // Room for each of the leader's write batches before its first record: a batch
        // stays in one segment, so a full disk refuses a whole batch, never its second half
        // (a follower's log would otherwise end inside a batch, which recovery drops, after
        // the leader had counted it as replicated).
        let mut batch_room = Vec::with_capacity(records.len());
        let mut starts_batch = true;
        let mut open_at = 0;
        for (i, (_, r)) in records.iter().enumerate() {
            if starts_batch {
                open_at = i;
            }
            batch_room.push(0u64);
            batch_room[open_at] += r.header.record_len() as u64;
            starts_batch = !r.header.more;
        }
        let mut n = 0;
        for ((at, r), room) in records.into_iter().zip(batch_room) {
            let len = r.header.record_len();
            self.make_room((len as u64).max(room.min(MAX_SEGMENT_SIZE / 2)), false)?;
            if self
                .epochs
                .latest()
                .is_none_or(|l| r.header.epoch > l.epoch)
            {
                self.epochs.assign(r.header.epoch, r.header.lsn)?;
            }
            let id = self.active_id();
            let seg = self.seg_mut(id);
            let off = seg.append(&batch[at..at + len]);
            seg.note_record(r.header.lsn, off);
            if let Some(tap) = self.tap.as_mut() {
                tap.extend_from_slice(&batch[at..at + len]);
            }
            self.next_lsn = r.header.lsn + 1;
            self.epoch = self.epoch.max(r.header.epoch);
            self.apply(
                id,
                off as u32,
                r.header.tag,
                r.key,
                r.header.val_len,
                r.header.expire,
            );
            n += 1;
        }
        if n > 0 {
            self.touches.new_history(self.next_lsn);
        }
        Ok(n)
    }

    /// Removes every record with LSN >= `lsn` (a follower cutting its log at the point where it
    /// diverges from the leader) and rebuilds the keydir, so keys overwritten in the removed
    /// range get their older values back.
    pub fn truncate_to(&mut self, lsn: u64) -> Result<(), WriteError> {
        self.check_failed()?;
        if lsn >= self.next_lsn {
            return Ok(());
        }
        self.read_cursor.set(NO_CURSOR);
        self.end_batch();
        let id = self.active_id();
        if let Err(e) = self.seg_mut(id).flush() {
            return Err(self.fail_write(e));
        }
        // LSNs from `lsn` on will be given again: no version taken before matches.
        self.touches.new_history(lsn);
        match self.cut_files(lsn) {
            Ok(()) => {
                info!("{}: log truncated to LSN {lsn}", self.dir.display());
                self.reload()
            }
            Err(e) => {
                // The files are a consistent (possibly partly cut) log: re-read them.
                warn!(
                    "{}: truncation to LSN {lsn} failed: {e}",
                    self.dir.display()
                );
                let _ = self.reload();
                Err(e)
            }
        }
    }

    /// The file work of `truncate_to`. A cut inside a write batch moves back to the batch's
    /// start (the log end then lies below `lsn`), so that no part of a batch stays.
    fn cut_files(&mut self, mut lsn: u64) -> Result<(), WriteError> {
        let dir = self.dir.clone();
        // Segments that start at or after the cut go entirely, newest first, so a crash midway
        // leaves a shorter log, never one with a hole.
        while let Some(&id) = self.order.last() {
            let seg = self.seg(id);
            if seg.base() < lsn {
                break;
            }
            let path = seg.path.clone();
            remove_if_exists(&hint::hint_for_segment(&path)).at_write(&path)?;
            remove_if_exists(&path).at_write(&path)?;
            self.order.pop();
            self.free_seg_id(id);
        }
        if let Some(&id) = self.order.last() {
            // The segment holding the cut keeps the records before it.
            let capacity = self.opts.segment_size;
            let seg = self.seg_mut(id);
            if !seg.is_active() {
                seg.reopen_writable(capacity)?;
            }
            let written = seg.written_bytes();
            // From the segment's start: a batch's start may lie before the sparse index
            // entry for `lsn`. Every record is checked, not only its header: a segment loaded
            // from a hint (a closed one, or the active one after a clean shutdown) had none
            // checked at the start, and a damaged length would lead the walk astray (the
            // reload after the cut reads the segment whole anyway).
            let mut pos = SEGMENT_HEADER_LEN;
            let mut batch_start: Option<(usize, u64)> = None;
            while pos < written.len() {
                match record::decode(&written[pos..]).map(|r| r.header) {
                    Ok(h) if h.lsn < lsn => {
                        match (h.more, batch_start) {
                            (true, None) => batch_start = Some((pos, h.lsn)),
                            (false, _) => batch_start = None,
                            (true, Some(_)) => {}
                        }
                        pos += h.record_len();
                    }
                    _ => break,
                }
            }
            if let Some((at, first)) = batch_start {
                warn!(
                    "{}: the cut at LSN {lsn} falls inside a write batch; cutting at its start, LSN {first}",
                    dir.display()
                );
                pos = at;
                lsn = first;
            }
            let path = seg.path.clone();
            remove_if_exists(&hint::hint_for_segment(&path)).at_write(&path)?;
            // A new file id makes hint jobs queued before the cut skip this file and recovery
            // points recorded before it match nothing (see `renew_file_id`), and covered_end = the cut records that the log runs up to it even when merges left
            // no record near its end (the log end never moves backwards, so LSNs are never
            // reused). No segment exists past the cut, so none is mistaken for a leftover
            // merge input.
            seg.header.file_id = fsutil::random_id();
            seg.header.covered_end = lsn;
            rewrite_header(&path, &seg.header).at_write(&path)?;
            seg.truncate(pos as u64)?;
        } else {
            // Everything was cut: keep numbering from the cut, as the leader does. Nothing
            // below the cut is left, tombstones included.
            let header = SegmentHeader {
                base: lsn,
                covered_end: 0,
                dropped_below: lsn,
                file_id: fsutil::random_id(),
                format: SEGMENT_FORMAT,
            };
            let seg = Segment::create(&dir, header, self.opts.segment_size, None)?;
            let id = self.alloc_seg_id(seg);
            self.order.push(id);
        }
        // What is left is an exact prefix of the log: tombstones merges dropped are missing
        // only below the cut. Capped after the cut, so a crash in between leaves a mark too
        // high (which only costs a replica a copy of the log), never too low.
        for id in self.order.clone() {
            let seg = self.seg(id);
            if seg.header.dropped_below > lsn {
                let mut header = seg.header;
                header.dropped_below = lsn;
                let path = seg.path.clone();
                rewrite_header(&path, &header).at_write(&path)?;
                self.seg_mut(id).header = header;
            }
        }
        fsutil::sync_dir(&dir).at_write(&dir)?;
        self.epochs.truncate_from_end(lsn)?;
        self.hint_jobs.clear();
        Ok(())
    }

    // ------------------------------------------------------------ maintenance

    /// Hint files owed for segments closed since the last call; run them on any thread.
    pub fn take_hint_jobs(&mut self) -> Vec<HintJob> {
        std::mem::take(&mut self.hint_jobs)
    }

    pub fn stats(&self) -> StoreStats {
        let mut total = 0;
        let mut dead = 0;
        for &id in &self.order {
            let s = self.seg(id);
            total += s.len();
            dead += s.dead.min(s.len());
        }
        StoreStats {
            keys: self.keydir.len(),
            keys_with_expiry: self.keydir.with_expiry(),
            segments: self.order.len(),
            total_bytes: total,
            dead_bytes: dead,
            log_start: self.log_start(),
            log_end: self.next_lsn,
            keydir_bytes: self.keydir.memory_bytes(),
            unsynced: self.has_unsynced(),
            write_errors: self.write_errors,
        }
    }

    /// The active segment reserves no disk space ahead (as on a file system without
    /// `fallocate`), so a full disk fails the write of a batch instead of its records.
    #[cfg(test)]
    pub(crate) fn stop_reserving(&mut self) {
        let id = self.active_id();
        self.seg_mut(id).stop_reserving();
    }

    /// Why the last write was refused, unless a write has succeeded since.
    pub fn write_failing(&self) -> Option<&str> {
        self.write_failing.as_deref()
    }

    /// Why this log cannot take writes on its disk: it refuses them until restarted (an
    /// fsync failed with EIO), or the last write failed on the disk itself (no room could be
    /// allocated, a roll or a write failed; not a limit nor `Options::min_free_space`) and
    /// none has gone in since, nor has `probe_writes` found the disk working again.
    pub fn disk_failure(&self) -> Option<&str> {
        self.failed.as_deref().or(self.disk_failing.as_deref())
    }

    /// Bytes of closed segments and how many of them are dead: what a merge could reclaim.
    pub fn closed_stats(&self) -> (u64, u64) {
        let mut total = 0;
        let mut dead = 0;
        for &id in &self.order[..self.order.len() - 1] {
            let s = self.seg(id);
            total += s.len();
            dead += s.dead.min(s.len());
        }
        (total, dead)
    }
}

/// Bytes of the records putting `puts` (key, value length) and deleting `deletes`.
fn records_len<'a>(puts: impl Iterator<Item = (&'a [u8], usize)>, deletes: &[&[u8]]) -> u64 {
    puts.map(|(k, v)| (HEADER_LEN + k.len() + v) as u64)
        .chain(deletes.iter().map(|k| (HEADER_LEN + k.len()) as u64))
        .sum()
}

/// Whether a record of the last segment that does not decode at `off` (of the segment file's
/// `bytes`) is damage inside the log rather than a torn tail. It is damage when a whole,
/// checksummed record with a later LSN follows somewhere after it and either the damaged
/// record leads right to it (its length fields do: its content changed, a tag or an LSN
/// say; or its checksum matches once a length is taken from where that record starts: only
/// a length changed) or the bytes between hold no zeroed block. A power loss can persist a later page of a write and not an
/// earlier one, whose blocks then read as zeros, across record boundaries: that is a torn
/// write (of records never synced). A flipped bit, in a value, a length or a tag, is damage.
/// A whole record out of LSN order is never a torn write, nor is a last record that is all
/// there ([`whole_but_damaged`]). Records that a commit journal
/// replays after opening (`Options::journaled_from`) are cut as torn: the replay restores them;
/// those below the journal's first record were fsynced, and are damage.
///
/// Above a recovery point (`above_point`: records written since the points were last
/// recorded, which may never have been fsynced) a record whose framing is whole, whose
/// checksum fails and which holds a block of zeros in its own bytes is what a power cut
/// leaves of a large write it tore (a later page persisted, an earlier one not): torn.
/// Without a point, a value of zeros with a flipped byte looks the same and its framing
/// makes it damage.
fn damage_inside(
    bytes: &[u8],
    off: usize,
    e: &record::DecodeError,
    next_lsn: u64,
    opts: &Options,
    above_point: bool,
) -> bool {
    if matches!(e, record::DecodeError::LsnOutOfOrder { .. }) {
        return true;
    }
    if let Some(j) = opts.journaled_from {
        // At or above the journal's first record the replay restores what is cut; below it
        // every record was fsynced in the log (a checkpoint, or the fsync of every log a
        // journal restart or a tap turning on begins with, came before the journal let its
        // frames go), so nothing there is a torn write.
        return next_lsn < j;
    }
    let Some(next) = next_whole_record(bytes, off + 1, next_lsn) else {
        return whole_but_damaged(bytes, off, e);
    };
    let framed = bytes.len() >= off + record::HEADER_LEN && {
        let key_len = record::u32_at(bytes, off + 25) as usize;
        let val_len = record::u32_at(bytes, off + 29) as usize;
        off + record::HEADER_LEN + key_len + val_len == next
    };
    let zeroed = has_zeroed_block(bytes, off, next) || zeroed_header(bytes, off);
    let torn_inside = above_point && matches!(e, record::DecodeError::BadChecksum { .. });
    !zeroed || only_a_length_changed(bytes, off, next) || (framed && !torn_inside)
}

/// Whether the last record, at `off`, is all there and was damaged after it was written: its
/// checksum is what fails, the lengths it declares fit in the file, and in every 512-byte
/// block it touches some byte of it is not zero. A crash tears a write by leaving blocks
/// unwritten, which read as zeros in the space a segment sets aside ahead (or lie past the end
/// of the file), so a torn record has a block whose part of it is all zeros (its first or
/// last block included, which it may share with the record before it or with the space
/// after it); when every block of the record made it and its checksum still fails, a bit
/// flipped later, maybe long after an fsync vouched for it (a value too large for the commit
/// journal, a record the journal no longer holds). Cut as a torn tail, such a record went
/// with no more than a warning. (A record whose own bytes in some block are zeros anyway is
/// still cut: that cannot be told from a torn write.)
fn whole_but_damaged(bytes: &[u8], off: usize, e: &record::DecodeError) -> bool {
    if !matches!(e, record::DecodeError::BadChecksum { .. }) {
        return false;
    }
    let Ok(h) = record::decode_header(&bytes[off..]) else {
        return false;
    };
    let end = off + h.record_len();
    const BLOCK: usize = 512;
    end <= bytes.len()
        && (off - off % BLOCK..end).step_by(BLOCK).all(|b| {
            bytes[b.max(off)..(b + BLOCK).min(end)]
                .iter()
                .any(|&x| x != 0)
        })
}

/// Whether the record at `off` is whole but for one of its length fields: its checksum
/// matches when its key or its value length is what makes it end at `next`. (A value of
/// zeros with a flipped length bit would otherwise look like a torn write.)
fn only_a_length_changed(bytes: &[u8], off: usize, next: usize) -> bool {
    let Some(total) = next.checked_sub(off + record::HEADER_LEN) else {
        return false;
    };
    let stored = record::u32_at(bytes, off);
    let key_len = record::u32_at(bytes, off + 25) as usize;
    let val_len = record::u32_at(bytes, off + 29) as usize;
    let candidates = [
        total.checked_sub(key_len).map(|v| (key_len, v)),
        total.checked_sub(val_len).map(|k| (k, val_len)),
    ];
    candidates.into_iter().flatten().any(|(k, v)| {
        let (Ok(k), Ok(v)) = (u32::try_from(k), u32::try_from(v)) else {
            return false;
        };
        let mut header = [0u8; record::HEADER_LEN - 4];
        header.copy_from_slice(&bytes[off + 4..off + record::HEADER_LEN]);
        header[21..25].copy_from_slice(&k.to_le_bytes());
        header[25..29].copy_from_slice(&v.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&bytes[off + record::HEADER_LEN..next]);
        crc.finalize() == stored
    })
}

/// The offset of the first whole, checksummed record at or after `from` whose LSN could
/// follow `next_lsn` (at most one per header's length beyond it).
fn next_whole_record(bytes: &[u8], from: usize, next_lsn: u64) -> Option<usize> {
    let max_lsn = next_lsn + (bytes.len().saturating_sub(from) / record::HEADER_LEN) as u64;
    (from..bytes.len().saturating_sub(record::HEADER_LEN - 1)).find(|&p| {
        record::decode_header(&bytes[p..]).is_ok_and(|h| {
            (next_lsn..=max_lsn).contains(&h.lsn)
                && p + h.record_len() <= bytes.len()
                && record::decode(&bytes[p..]).is_ok()
        })
    })
}

/// Whether `bytes[from..to]` holds a 512-byte block, aligned in the file, of zeros only.
/// Whether the record at `off` begins with zeros through its whole header and on to the end
/// of that 512-byte block: no header is all zeros (tag 0 is none), so no flipped bit makes
/// one. It is what a power cut leaves when the block holding the end of fsynced records and
/// the start of unsynced ones went back to what was on disk, those records' part written, the
/// rest zeros, with no whole zeroed block after it before the next record.
fn zeroed_header(bytes: &[u8], off: usize) -> bool {
    let end = (off + record::HEADER_LEN).max(off.next_multiple_of(512));
    end <= bytes.len() && bytes[off..end].iter().all(|&x| x == 0)
}

fn has_zeroed_block(bytes: &[u8], from: usize, to: usize) -> bool {
    const BLOCK: usize = 512;
    let mut b = from.next_multiple_of(BLOCK);
    while b + BLOCK <= to {
        if bytes[b..b + BLOCK].iter().all(|&x| x == 0) {
            return true;
        }
        b += BLOCK;
    }
    false
}

fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Gives a segment about to be cut back a new file id, durably, first: recovery points (see
/// [`crate::points`]) name the file by its id, and one recorded before the cut must match
/// nothing after it, or bytes written over the cut range and torn by a crash would pass for
/// damage to fsynced records.
fn renew_file_id(seg: &mut Segment) -> Result<(), WriteError> {
    seg.header.file_id = fsutil::random_id();
    rewrite_header(&seg.path, &seg.header).at_write(&seg.path)
}

/// The most `probe_writes` asks for on behalf of a failed write.
const PROBE_NEED_MAX: u64 = 16 << 20;

/// Whether a failed write failed on the disk itself: no room (`ENOSPC`, `EDQUOT`), an I/O
/// error, a read-only file system. Not a limit, the free-space floor, nor the process's own
/// limits (descriptors, memory), which another replica would meet as well or not at all.
fn is_disk_error(e: &WriteError) -> bool {
    let source = match e {
        WriteError::Reserve { source, .. } | WriteError::Io { source, .. } => source,
        WriteError::Failed(_) => return true,
        _ => return false,
    };
    matches!(
        source.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::EROFS)
    )
}

fn rewrite_header(path: &Path, h: &SegmentHeader) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&h.encode(), 0)?;
    f.sync_all()
}

/// Walks the record headers of a segment a few records ahead of its scan at open, starting
/// to load the index chunk of each record's key (as the hint path does with its entries):
/// at millions of keys, waiting for each insert's chunk was most of a start's time. Only a
/// hint: the scan checks every record itself, and a record the walk did not reach (or
/// passed) has its hash computed where it is applied.
struct ScanAhead<'a> {
    bytes: &'a [u8],
    /// Where the walk goes on.
    next: usize,
    /// Records walked and not applied yet: (position, key hash), oldest at `head`.
    ring: [(usize, u64); LOAD_PREFETCH],
    head: usize,
    len: usize,
}

impl<'a> ScanAhead<'a> {
    fn new(bytes: &'a [u8], start: usize) -> ScanAhead<'a> {
        ScanAhead {
            bytes,
            next: start,
            ring: [(0, 0); LOAD_PREFETCH],
            head: 0,
            len: 0,
        }
    }

    /// The hash of `key`, the key of the record at `pos`; walks on.
    fn hash_at(&mut self, pos: usize, key: &[u8], keydir: &Keydir) -> u64 {
        while self.len > 0 && self.ring[self.head].0 < pos {
            self.pop();
        }
        self.fill(keydir);
        if self.len > 0 && self.ring[self.head].0 == pos {
            self.pop()
        } else {
            keydir.hash(key)
        }
    }

    fn pop(&mut self) -> u64 {
        let (_, h) = self.ring[self.head];
        self.head = (self.head + 1) % LOAD_PREFETCH;
        self.len -= 1;
        h
    }

    fn fill(&mut self, keydir: &Keydir) {
        while self.len < LOAD_PREFETCH && self.next < self.bytes.len() {
            let at = self.next;
            let Ok(h) = record::decode_header(&self.bytes[at..]) else {
                self.next = self.bytes.len();
                return;
            };
            let Some(key) = self
                .bytes
                .get(at + HEADER_LEN..at + HEADER_LEN + h.key_len as usize)
            else {
                self.next = self.bytes.len();
                return;
            };
            let hash = keydir.hash(key);
            keydir.prefetch_index(hash);
            self.ring[(self.head + self.len) % LOAD_PREFETCH] = (at, hash);
            self.len += 1;
            self.next = at.saturating_add(h.record_len());
        }
    }
}

/// Records in a segment's bytes, by their headers, up to the first that does not decode (an
/// upper bound on the keys they hold; recovery validates them properly).
fn count_records(bytes: &[u8]) -> u64 {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut n = 0u64;
    while pos < bytes.len() {
        match record::decode_header(&bytes[pos..]) {
            Ok(h) => {
                pos = pos.saturating_add(h.record_len());
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}

/// Reads a directory back into memory (see `engine/FORMAT.md`, "Recovery").
fn load(dir: &Path, opts: &Options) -> Result<Loaded, OpenError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut bases = Vec::new();
    let mut shutdown_hints = Vec::new();
    for entry in fs::read_dir(dir).at_open(dir)? {
        let entry = entry.at_open(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".merge") || name.ends_with(".tmp") {
            // Unfinished output of a merge or an atomic write: never part of the log.
            remove_if_exists(&entry.path()).at_open(&entry.path())?;
        } else if let Some(base) = segment::parse_segment_name(name) {
            bases.push(base);
        } else if let Some(base) = hint::parse_shutdown_hint_name(name) {
            shutdown_hints.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    // A shutdown hint describes the active segment as a clean shutdown left it; it is read
    // now and every one is removed, durably, before anything here is written, so that none
    // outlives a change to its segment. Only the last segment's can be used.
    let mut shutdown_hint: Option<(u64, memmap2::Mmap)> = None;
    if !shutdown_hints.is_empty() {
        for (base, path) in &shutdown_hints {
            if opts.use_hints && Some(base) == bases.last() {
                // Mapped: its bytes stay readable after the file is removed below, and none
                // is read before its header checks.
                shutdown_hint = hint::map_hint(path).map(|b| (*base, b));
            }
            remove_if_exists(path).at_open(path)?;
        }
        fsutil::sync_dir(dir).at_open(dir)?;
    }
    // A crash between creating a segment and writing its header leaves a file shorter than
    // the header; so did a roll whose header write failed (a full disk) before such files
    // were removed, and the log went on in the segment before it. Such a file holds no
    // record, wherever it is, so it is dropped (any other damaged header is an error).
    let mut dropped = false;
    let mut kept = Vec::with_capacity(bases.len());
    for base in bases {
        let path = segment::segment_path(dir, base);
        let len = fs::metadata(&path).at_open(&path)?.len();
        if len < SEGMENT_HEADER_LEN as u64 {
            warn!(
                "{}: removing a segment torn inside its header ({len} bytes, no records)",
                path.display()
            );
            remove_if_exists(&path).at_open(&path)?;
            dropped = true;
        } else {
            kept.push(base);
        }
    }
    if dropped {
        fsutil::sync_dir(dir).at_open(dir)?;
    }
    let bases = kept;

    // Open headers and drop leftover inputs of an interrupted merge.
    let mut segs: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut covered_until = 0u64;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::segment_path(dir, base);
        let last = i + 1 == bases.len();
        let cap = if last { opts.segment_size } else { 0 };
        let seg = Segment::open(&path, last, cap)?;
        if seg.header.base != base {
            return Err(OpenError::BadSegmentHeader {
                path,
                reason: format!(
                    "header says base {} but the name says {base}",
                    seg.header.base
                ),
            });
        }
        if base < covered_until {
            warn!(
                "{}: removing leftover of an interrupted merge (covered up to LSN {covered_until})",
                path.display()
            );
            drop(seg);
            remove_if_exists(&hint::hint_for_segment(&path)).at_open(&path)?;
            remove_if_exists(&path).at_open(&path)?;
            report.leftover_segments_removed += 1;
            continue;
        }
        covered_until = covered_until.max(seg.header.covered_end);
        segs.push(seg);
    }
    if report.leftover_segments_removed > 0 {
        fsutil::sync_dir(dir).at_open(dir)?;
        if let Some(last) = segs.last_mut()
            && !last.is_active()
        {
            last.reopen_writable(opts.segment_size)
                .map_err(|e| OpenError::BadSegmentHeader {
                    path: last.path.clone(),
                    reason: e.to_string(),
                })?;
        }
    }

    // The active (last) segment takes appends, so no hint file may describe it: a closed
    // segment that became the last one again (the files after it were torn or leftovers) loses
    // its hint, and gets a new file id so nothing written for the old one can match it.
    if let Some(last) = segs.last_mut() {
        let hp = hint::hint_for_segment(&last.path);
        if hp.exists() {
            remove_if_exists(&hp).at_open(&hp)?;
            last.header.file_id = fsutil::random_id();
            rewrite_header(&last.path, &last.header).at_open(&last.path)?;
            fsutil::sync_dir(dir).at_open(dir)?;
        }
    }

    let mut keydir = Keydir::new();
    // Size the index once instead of rehashing it as it grows (each growth rehashes every key;
    // at millions of keys that dominated opening): hint headers declare their counts, the
    // segments that will be scanned (the last one, and any without a hint) are counted by
    // walking their record headers, which costs little next to hashing every key again.
    let expected: u64 = segs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let declared = if i + 1 == segs.len() {
                shutdown_hint
                    .as_ref()
                    .filter(|(b, _)| *b == s.base())
                    .and_then(|(_, bytes)| hint::declared_count_in(bytes, bytes.len() as u64))
            } else if opts.use_hints {
                hint::declared_count(&hint::hint_for_segment(&s.path))
            } else {
                None
            };
            declared.unwrap_or_else(|| count_records(s.written_bytes()))
        })
        .sum();
    keydir.reserve(expected.min(1 << 31) as usize);
    let mut segments: Vec<Option<Segment>> = Vec::with_capacity(segs.len() + 4);
    let mut order = Vec::with_capacity(segs.len() + 4);
    let mut hint_jobs = Vec::new();
    let mut next_lsn = 0u64;
    let mut dead: Vec<u64> = Vec::new();
    let n = segs.len();
    let mut drop_rest = false;
    for (i, mut seg) in segs.into_iter().enumerate() {
        let path = seg.path.clone();
        if drop_rest {
            remove_if_exists(&hint::hint_for_segment(&path)).at_open(&path)?;
            remove_if_exists(&path).at_open(&path)?;
            report.repaired_bytes_dropped += seg.len();
            continue;
        }
        let last = i + 1 == n;
        // The log starts at LSN 0 unless its start was cut on purpose (a truncation that cut
        // everything, or a copy of such a log, marks the first segment with `dropped_below`):
        // a later first base is the first segment file lost, with every value it held.
        if order.is_empty() && seg.base() > 0 && seg.header.dropped_below < seg.base() {
            if !opts.repair {
                return Err(OpenError::MissingRecords {
                    path,
                    from: 0,
                    last: seg.base() - 1,
                });
            }
            warn!(
                "{}: the records with LSN 0 to {} are missing before it (the first segment file is gone); repair keeps the log from here",
                path.display(),
                seg.base() - 1
            );
        }
        // Each segment starts where the one before ended (its last record, or the range a
        // merged or truncated one vouches for): a gap is a segment file lost, whose deletes
        // and overwrites would silently be undone.
        if !order.is_empty() && seg.base() > next_lsn {
            if !opts.repair {
                return Err(OpenError::MissingRecords {
                    path,
                    from: next_lsn,
                    last: seg.base() - 1,
                });
            }
            warn!(
                "{}: the records with LSN {next_lsn} to {} are missing before it; repair drops it and every later segment",
                path.display(),
                seg.base() - 1
            );
            drop_rest = true;
            remove_if_exists(&hint::hint_for_segment(&path)).at_open(&path)?;
            remove_if_exists(&path).at_open(&path)?;
            report.repaired_bytes_dropped += seg.len();
            continue;
        }
        let id = segments.len() as u32;
        dead.push(0);
        next_lsn = next_lsn.max(seg.base());
        let mut applied_from_hint = false;
        let hint_bytes = if last {
            shutdown_hint
                .take()
                .filter(|(b, _)| *b == seg.base())
                .map(|(_, v)| v)
        } else if opts.use_hints {
            hint::map_hint(&hint::hint_for_segment(&path))
        } else {
            None
        };
        if let Some(bytes) = hint_bytes {
            let floor = next_lsn.max(seg.base());
            let seg_len = seg.len();
            let checked = hint::CheckedHint::check(&bytes, seg.header.file_id, floor, seg_len);
            // A shutdown hint stands for the scan of the last segment, so it must describe
            // every record of the file, and the file must hold all its recovery point says
            // was fsynced (otherwise the scan finds and reports what is wrong).
            let file_id = seg.header.file_id;
            let point_at = |end: u64| {
                points::synced_of(&opts.recovery_points, file_id)
                    .filter(|_| opts.journaled_from.is_none_or(|j| j > end))
            };
            // Nor when the commit journal still holds records of this partition (a clean
            // shutdown resets it): the scan cuts damage at or above them for the replay.
            let point = checked.as_ref().and_then(|h| point_at(h.end_lsn));
            let usable = checked.filter(|hint| {
                !last
                    || (opts.journaled_from.is_none()
                        && hint.tiles
                        && point.is_none_or(|n| n <= seg_len))
            });
            if let Some(hint) = usable {
                apply_hint(&hint, &mut keydir, &mut dead, id, &mut seg);
                next_lsn = next_lsn.max(hint.end_lsn);
                report.records += hint.count;
                if last {
                    if let Some(n) = point {
                        seg.mark_synced_to(n);
                    }
                    report.active_from_shutdown_hint = true;
                } else {
                    report.segments_from_hints += 1;
                }
                applied_from_hint = true;
            }
        }
        if !applied_from_hint {
            let bytes = seg.written_bytes();
            let total = bytes.len();
            let mut pos = SEGMENT_HEADER_LEN;
            let mut bad: Option<(usize, record::DecodeError, String)> = None;
            let mut marks = Vec::new();
            // Records of a write batch whose last record has not been seen yet: they are
            // applied only when it comes (records a merge or a truncation vouches for, below
            // `covered_end`, are whole whatever their bits say), so that a cut (a torn tail,
            // a repair) never keeps part of a batch.
            let mut open: Vec<(usize, record::Header)> = Vec::new();
            let mut ahead = ScanAhead::new(bytes, pos);
            let mut apply_at = |pos: usize, h: record::Header, marks: &mut Vec<(u64, u64)>| {
                let key = &bytes[pos + HEADER_LEN..pos + HEADER_LEN + h.key_len as usize];
                marks.push((h.lsn, pos as u64));
                let hash = ahead.hash_at(pos, key, &keydir);
                apply_replay(
                    &mut keydir,
                    &mut dead,
                    id,
                    pos as u32,
                    h.tag,
                    (key, hash),
                    h.val_len,
                    h.expire,
                );
            };
            while pos < total {
                match record::decode(&bytes[pos..]) {
                    Ok(r) if r.header.lsn >= next_lsn => {
                        let h = r.header;
                        if h.more && h.lsn >= seg.header.covered_end {
                            open.push((pos, h));
                        } else {
                            for (at, oh) in open.drain(..) {
                                apply_at(at, oh, &mut marks);
                            }
                            apply_at(pos, h, &mut marks);
                        }
                        next_lsn = h.lsn + 1;
                        pos += h.record_len();
                    }
                    Ok(r) => {
                        let e = record::DecodeError::LsnOutOfOrder {
                            lsn: r.header.lsn,
                            after: next_lsn.saturating_sub(1),
                        };
                        bad = Some((pos, e, e.to_string()));
                        break;
                    }
                    Err(e) => {
                        bad = Some((pos, e, e.to_string()));
                        break;
                    }
                }
            }
            // A crash mid-write tears the end of the last segment; damage with whole records
            // after it is inside the log, and cutting there would silently drop records that
            // were written, acknowledged perhaps: it is treated as in a closed segment.
            // Below the recovery point the bytes were fsynced: nothing there is a torn
            // write, unless the commit journal replays the records from there.
            let point = last
                .then(|| points::synced_of(&opts.recovery_points, seg.header.file_id))
                .flatten()
                .filter(|_| opts.journaled_from.is_none_or(|j| j > next_lsn));
            let inside = last
                && bad.as_ref().is_some_and(|(off, e, _)| {
                    point.is_some_and(|n| (*off as u64) < n)
                        || damage_inside(bytes, *off, e, next_lsn, opts, point.is_some())
                });
            if let Some(n) = point
                && bad.is_none()
                && (total as u64) < n
            {
                if !opts.repair {
                    return Err(OpenError::LostSyncedBytes {
                        path,
                        len: total as u64,
                        synced: n,
                    });
                }
                warn!(
                    "{}: the file is {total} bytes but its first {n} were fsynced; repair keeps what is there",
                    path.display()
                );
            }
            let short_of_point = point.is_some_and(|n| bad.is_none() && (total as u64) < n);
            if !last && bad.is_none() {
                // A closed segment ends a batch unless a batch outgrew MAX_SEGMENT_SIZE and
                // was split by a roll: what it holds of it is kept, as it was acknowledged.
                for (at, oh) in open.drain(..) {
                    apply_at(at, oh, &mut marks);
                }
            }
            for &(lsn, off) in &marks {
                seg.note_record(lsn, off);
            }
            if short_of_point {
                // A cut in effect (on repair): writes over the lost range are not fsynced.
                renew_file_id(&mut seg).map_err(|e| OpenError::BadSegmentHeader {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            if let Some(n) = point {
                // Known to be on disk: the points written from now on keep saying so (a cut
                // below renews the file id and counts what it keeps as synced).
                seg.mark_synced_to(n);
            }
            report.records += marks.len() as u64;
            // An unfinished batch at the end is cut with whatever follows it: its last record
            // never reached the disk, so none of it was acknowledged.
            let unfinished = open.first().map(|&(at, h)| (at, h.lsn));
            if let Some((_, first)) = unfinished
                && (bad.is_none() || !inside || opts.repair)
            {
                next_lsn = first;
            }
            let as_open_err = |e: WriteError| OpenError::BadSegmentHeader {
                path: path.clone(),
                reason: e.to_string(),
            };
            // Where the last segment's torn tail starts: an unfinished batch, or a record
            // that does not decode (with the batch it cut into), when that is no damage.
            let torn_at = match (&bad, unfinished) {
                (None, Some((at, _))) => Some(at),
                (Some((bad_off, ..)), u) if last && !inside => Some(u.map_or(*bad_off, |u| u.0)),
                _ => None,
            };
            if let Some(off) = torn_at {
                let cut = total - off;
                let why = match &bad {
                    Some((_, _, reason)) => reason.clone(),
                    None => format!("an unfinished write batch of {} records", open.len()),
                };
                warn!(
                    "{}: dropping a torn tail of {cut} bytes at offset {off} ({why})",
                    path.display()
                );
                report.truncated_tail_bytes += cut as u64;
                renew_file_id(&mut seg).map_err(as_open_err)?;
                seg.truncate(off as u64).map_err(as_open_err)?;
            } else if let Some((bad_off, decode_err, reason)) = bad {
                let off = unfinished.map_or(bad_off, |(at, _)| at);
                let cut = total - off;
                if opts.repair {
                    warn!(
                        "{}: corrupt record at offset {bad_off} ({reason}); repair drops the {cut} bytes from offset {off} (with the write batch it cut into) and every later segment",
                        path.display()
                    );
                    report.repaired_bytes_dropped += cut as u64;
                    seg.reopen_writable(opts.segment_size)
                        .map_err(as_open_err)?;
                    renew_file_id(&mut seg).map_err(as_open_err)?;
                    seg.truncate(off as u64).map_err(as_open_err)?;
                    remove_if_exists(&hint::hint_for_segment(&path)).at_open(&path)?;
                    drop_rest = true;
                } else if let Some(synced) = point.filter(|&n| (bad_off as u64) < n) {
                    return Err(OpenError::DamageBelowRecoveryPoint {
                        path,
                        offset: bad_off as u64,
                        reason: decode_err,
                        synced,
                    });
                } else {
                    return Err(OpenError::CorruptSegment {
                        path,
                        offset: bad_off as u64,
                        reason: decode_err,
                    });
                }
            } else if !last && opts.use_hints {
                hint_jobs.push(HintJob {
                    segment: path.clone(),
                    hint: hint::hint_for_segment(&path),
                    file_id: seg.header.file_id,
                });
            }
        }
        // A merged or truncated segment vouches for its whole range even if the records near
        // its end were dropped.
        next_lsn = next_lsn.max(seg.header.covered_end);
        report.segments += 1;
        segments.push(Some(seg));
        order.push(id);
    }
    if drop_rest {
        fsutil::sync_dir(dir).at_open(dir)?;
    }
    for (id, d) in dead.iter().enumerate() {
        if let Some(Some(s)) = segments.get_mut(id) {
            s.dead = *d;
        }
    }
    if order.is_empty() {
        let header = SegmentHeader {
            base: next_lsn,
            covered_end: 0,
            dropped_below: 0,
            file_id: fsutil::random_id(),
            format: SEGMENT_FORMAT,
        };
        let seg = Segment::create(dir, header, opts.segment_size, None).map_err(|e| {
            OpenError::BadSegmentHeader {
                path: segment::segment_path(dir, next_lsn),
                reason: e.to_string(),
            }
        })?;
        segments.push(Some(seg));
        order.push(0);
    }
    keydir.shrink_if_oversized();
    report.elapsed = started.elapsed();
    Ok(Loaded {
        segments,
        order,
        keydir,
        next_lsn,
        report,
        hint_jobs,
    })
}

/// Applies the entries of a checked hint of segment `id` to the keydir, in order. The index
/// chunks of the keys a few entries ahead are loaded while one goes in: at millions of keys,
/// waiting for each insert's chunk to come from memory was most of a start spent on hints.
/// The entries looked ahead at wait in a ring, decoded once.
fn apply_hint(
    hint: &hint::CheckedHint<'_>,
    keydir: &mut Keydir,
    dead: &mut [u64],
    id: u32,
    seg: &mut Segment,
) {
    let mut ahead = hint.entries();
    let mut ring: [Option<(hint::HintEntry<'_>, u64)>; LOAD_PREFETCH] = [None; LOAD_PREFETCH];
    let mut look = |keydir: &Keydir| {
        ahead.next().map(|e| {
            let h = keydir.hash(e.key);
            keydir.prefetch_index(h);
            (e, h)
        })
    };
    for slot in ring.iter_mut() {
        *slot = look(keydir);
    }
    let mut i = 0;
    while let Some((e, hash)) = ring[i % LOAD_PREFETCH].take() {
        ring[i % LOAD_PREFETCH] = look(keydir);
        seg.note_record(e.lsn, e.offset as u64);
        apply_replay(
            keydir,
            dead,
            id,
            e.offset,
            e.tag,
            (e.key, hash),
            e.val_len,
            e.expire,
        );
        i += 1;
    }
}

/// The replay twin of `Store::apply`, for recovery before the store exists: applies one
/// record met while loading (`key`: its key and the key's `Keydir::hash`).
#[allow(clippy::too_many_arguments)]
fn apply_replay(
    keydir: &mut Keydir,
    dead: &mut [u64],
    seg: u32,
    off: u32,
    tag: Tag,
    (key, hash): (&[u8], u64),
    val_len: u32,
    expire: u64,
) {
    let rec_len = (HEADER_LEN + key.len()) as u64 + val_len as u64;
    let mut kill = |seg: u32, bytes: u64| {
        if let Some(d) = dead.get_mut(seg as usize) {
            *d += bytes;
        }
    };
    match tag {
        Tag::Put => {
            let loc = Location {
                seg,
                off,
                key_len: key.len() as u32,
                val_len,
                expire,
            };
            if let Some(prev) = keydir.insert_hashed(key, hash, loc) {
                kill(prev.seg, prev.record_len());
            }
        }
        Tag::Delete => {
            if let Some(prev) = keydir.remove(key) {
                kill(prev.seg, prev.record_len());
            }
            kill(seg, rec_len);
        }
        Tag::Expire => {
            keydir.set_expire(key, expire);
            kill(seg, rec_len);
        }
        Tag::Clear => {
            keydir.clear();
            // Everything before this record is dead: whole earlier segments (lengths are not
            // known here; `stats` caps dead bytes at the segment length) and this one up to it.
            let cur = seg as usize;
            for d in dead.iter_mut().take(cur) {
                *d = u64::MAX / 4;
            }
            if let Some(d) = dead.get_mut(cur) {
                *d = off as u64 + rec_len;
            }
        }
    }
}

#[cfg(test)]
mod scan_ahead_tests {
    use super::*;

    /// Every record's hash is its key's, asked in order, with records skipped, asked again
    /// for one passed, and past damage where the walk stops.
    #[test]
    fn scan_ahead_gives_each_key_its_hash_in_or_out_of_order() {
        let mut bytes = vec![0u8; SEGMENT_HEADER_LEN];
        let mut recs = Vec::new();
        for i in 0..100u64 {
            let key = format!("key-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes();
            let pos = bytes.len();
            record::encode(
                &mut bytes,
                i,
                1,
                0,
                Tag::Put,
                &key,
                &vec![b'v'; (i % 13) as usize],
            );
            recs.push((pos, key));
        }
        // Damage after the records: the walk stops there, the scan asks for no more.
        bytes.extend_from_slice(&[0xff; 40]);
        let keydir = Keydir::new();
        let mut ahead = ScanAhead::new(&bytes, SEGMENT_HEADER_LEN);
        for (n, (pos, key)) in recs.iter().enumerate() {
            if n % 10 == 3 {
                continue;
            }
            assert_eq!(
                ahead.hash_at(*pos, key, &keydir),
                keydir.hash(key),
                "record {n}"
            );
        }
        // One already passed (a write batch's record applied when its last one comes).
        let (pos, key) = &recs[42];
        assert_eq!(ahead.hash_at(*pos, key, &keydir), keydir.hash(key));
    }
}
