//! Engine options: what the server's `[storage]` and `[limits]` settings become.

/// When appended records reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `commit()` writes and fsyncs: a reply released after it means the record survives power loss.
    Always,
    /// `commit()` writes; an fsync happens at most once per second. A crash of the process loses
    /// nothing that was committed, power loss up to about a second.
    #[default]
    EverySec,
    /// `commit()` writes; the OS decides when to sync.
    Never,
}

/// A clock in unix milliseconds. Injectable so tests can move time.
pub type Clock = fn() -> u64;

/// Wall-clock unix time in milliseconds.
pub fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Roll the active segment when appending would take it past this many bytes.
    pub segment_size: u64,
    pub max_key_len: usize,
    pub max_value_len: usize,
    pub durability: Durability,
    /// On corruption inside an older segment, drop everything from that point on instead of
    /// refusing to open.
    pub repair: bool,
    /// Load closed segments from their hint files when valid (otherwise every segment is scanned).
    pub use_hints: bool,
    /// `EverySec` fsyncs are taken by the caller with `Store::take_background_sync` and run on
    /// another thread; `commit` never waits for them.
    pub background_sync: bool,
    /// The lowest LSN of this partition's records in a commit journal that the caller replays
    /// after opening (`Store::replay_journal`): damage in the last segment at or above it is
    /// cut as a torn tail, since the replay brings back every record from there.
    pub journaled_from: Option<u64>,
    /// How far segment files of this partition were fsynced, as recorded by the caller (see
    /// [`crate::points`]): in the last segment, a bad record below its point, or a file shorter
    /// than it, is damage (refused, or dropped with `repair`), never cut as a torn write.
    pub recovery_points: Vec<crate::points::RecoveryPoint>,
    /// The records appended between two hand-overs to the OS (`commit`, `commit_write`, a
    /// roll, ...) form one write batch (see `record::MORE`): recovery drops a batch whose last
    /// record is missing, replication reads whole batches, a batch stays in one segment. The
    /// server turns it on, so the writes of one event-loop turn, and every command's among
    /// them, are kept whole. Off, every record stands alone.
    pub write_batches: bool,
    /// Bytes of free space the file system keeps for deletes and merges (0: none): once less
    /// is free, writes that add data are refused (`WriteError::DiskLow`) while deletes, merges and a
    /// follower's appends go on. Checked when a segment sets more disk space aside.
    pub min_free_space: u64,
    pub clock: Clock,
}

/// Segment offsets are u32 in the keydir; keep every segment well under 4 GiB.
pub const MAX_SEGMENT_SIZE: u64 = 3 << 30;
pub const MIN_SEGMENT_SIZE: u64 = 4 << 10;

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 256 << 20,
            max_key_len: 1 << 20,
            max_value_len: 512 << 20,
            durability: Durability::EverySec,
            repair: false,
            use_hints: true,
            background_sync: false,
            journaled_from: None,
            recovery_points: Vec::new(),
            write_batches: false,
            min_free_space: 0,
            clock: system_clock,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(format!(
                "segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        if self.max_key_len > crate::record::MAX_KEY_LEN_HARD as usize {
            return Err(format!(
                "max_key_len {} is over {}",
                self.max_key_len,
                crate::record::MAX_KEY_LEN_HARD
            ));
        }
        if self.max_value_len > crate::record::MAX_VALUE_LEN_HARD as usize {
            return Err(format!(
                "max_value_len {} is over {}",
                self.max_value_len,
                crate::record::MAX_VALUE_LEN_HARD
            ));
        }
        Ok(())
    }
}
