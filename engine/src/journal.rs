//! The commit journal: with `fsync = always`, one file to fsync per commit instead of one per
//! partition written.
//!
//! A server worker owns many partitions, and a turn of its event loop writes to several of
//! them. Making each turn durable by fsyncing every partition log written costs one device
//! flush per file (or a `syncfs`, which is no cheaper than a few of them). With a journal the
//! worker also copies the turn's records, framed per partition, into one pre-allocated file and
//! fsyncs only that: overwriting blocks that already exist needs no metadata update, so an
//! `fdatasync` of it is the cheapest flush the device offers.
//!
//! The partition logs stay the source of truth; the journal only covers records that are
//! written to a log but not yet fsynced there. Each worker has two journal files and writes
//! one at a time. When the active one is full the worker *switches*: it starts the other file
//! under a new header and runs a *checkpoint* that fsyncs every partition log. Once that checkpoint has landed, every frame of the file left behind is
//! in the logs, so that file may be overwritten at the next switch. Until then a further switch
//! is refused ([`Staged::NoRoom`]) and the caller makes the records durable itself: fsyncing
//! every partition log and then [`Journal::reset`] (fsyncing only the logs written would leave
//! journaled records of a log below records in no journal, and a start that cuts a damaged
//! record of the former as a torn write, the journal replaying it, would drop the latter).
//!
//! On start, before any partition is written, [`read_dir`] collects the valid frames of every
//! journal file and [`crate::Store::replay_journal`] appends those records that a partition's
//! log does not have (LSN at or above its log end), then fsyncs the log. A log that was cut
//! back (a follower truncating to the point where it diverges from its leader) must not get
//! the cut records back from the journal: the owner calls [`Journal::reset`] after fsyncing
//! every partition log, which gives both files new headers so none of their frames replay.
//!
//! File layout (little endian): a 4096-byte header block — magic `SKVJRNL1`, worker id `u32`,
//! sequence `u64` (which of the two files is newer), generation `u64` (random, new for every
//! use of the file), CRC32 of those 28 bytes — then frames until the first one that does not
//! check: payload length `u32` (0 ends the file), partition `u32`, generation `u64` (must be
//! the header's, so frames left from an earlier use of the file never count), CRC32 `u32` of
//! length, partition, generation and payload, then the payload: whole encoded records.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fsutil;
use crate::record::{u32_at, u64_at};

/// Directory (inside the data directory) holding the journal files.
pub const JOURNAL_DIR: &str = "journal";
const MAGIC: &[u8; 8] = b"SKVJRNL1";
/// The header has a block of its own, so writing frames never rewrites it.
pub const HEADER_LEN: u64 = 4096;
const HEADER_BYTES: usize = 32;
/// Length, partition, generation, CRC.
pub const FRAME_HEADER_LEN: usize = 20;
/// Smallest usable journal file.
pub const MIN_FILE_SIZE: u64 = 64 * 1024;
const ZERO_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("commit journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("commit journal file size {0} is below the minimum of {MIN_FILE_SIZE} bytes")]
    TooSmall(u64),
}

trait At<T> {
    fn at(self, path: &Path) -> Result<T, JournalError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, JournalError> {
        self.map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The path of journal file `index` (0 or 1) of `worker`.
pub fn journal_path(dir: &Path, worker: u32, index: usize) -> PathBuf {
    dir.join(format!("worker-{worker}.{index}.journal"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    worker: u32,
    seq: u64,
    generation: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.worker.to_le_bytes());
        b[12..20].copy_from_slice(&self.seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_BYTES)?;
        if &b[..8] != MAGIC || crc32fast::hash(&b[..28]) != u32_at(b, 28) {
            return None;
        }
        Some(Header {
            worker: u32_at(b, 8),
            seq: u64_at(b, 12),
            generation: u64_at(b, 20),
        })
    }
}

fn frame_crc(len: u32, partition: u32, generation: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&partition.to_le_bytes());
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// What [`Journal::stage`] did with a partition's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staged {
    /// Framed; durable once [`Journal::write`] and a [`JournalSync`] taken after it have run.
    Staged,
    /// Framed in the other file, which the journal switched to: once written, every partition
    /// log must be fsynced (a checkpoint; report it with [`Journal::checkpointed`]).
    Switched,
    /// Not framed: the records do not fit, and the other file may still hold frames that are
    /// not in the logs yet. The caller must fsync that partition's log itself.
    NoRoom,
}

/// A worker's commit journal (see the module documentation).
#[derive(Debug)]
pub struct Journal {
    worker: u32,
    size: u64,
    files: [Arc<File>; 2],
    paths: [PathBuf; 2],
    active: usize,
    seq: u64,
    generation: u64,
    /// Where the next frame goes in the active file (staged frames included).
    pos: u64,
    /// Frames not yet written, and the offset of the first in the active file.
    staged: Vec<u8>,
    staged_at: u64,
    /// The other file holds nothing the partition logs lack: a switch may overwrite it.
    other_free: bool,
    /// The file left by a switch may have writes not fsynced yet.
    prev_unsynced: bool,
}

/// An fsync of a journal's files, to run on another thread.
#[derive(Clone, Debug)]
pub struct JournalSync {
    files: Vec<(Arc<File>, PathBuf)>,
}

impl JournalSync {
    pub fn run(&self) -> Result<(), JournalError> {
        for (f, p) in &self.files {
            f.sync_data().at(p)?;
        }
        Ok(())
    }
}

impl Journal {
    /// Opens (creating and zero-filling as needed) the two journal files of `worker` in `dir`,
    /// each `size` bytes, and gives them new headers: whatever frames they held no longer count,
    /// so call it only after [`read_dir`]'s records have been replayed and fsynced.
    pub fn open(dir: &Path, worker: u32, size: u64) -> Result<Journal, JournalError> {
        if size < MIN_FILE_SIZE {
            return Err(JournalError::TooSmall(size));
        }
        fs::create_dir_all(dir).at(dir)?;
        let paths = [journal_path(dir, worker, 0), journal_path(dir, worker, 1)];
        Journal::open_files(dir, worker, size, paths.clone()).inspect_err(|_| {
            // No half-made journal is left to take space (a full disk is a likely cause).
            for p in &paths {
                let _ = fs::remove_file(p);
            }
        })
    }

    fn open_files(
        dir: &Path,
        worker: u32,
        size: u64,
        paths: [PathBuf; 2],
    ) -> Result<Journal, JournalError> {
        let mut created = false;
        let mut open = |path: &Path| -> Result<Arc<File>, JournalError> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .at(path)?;
            if f.metadata().at(path)?.len() != size {
                created = true;
                preallocate(&f, size).at(path)?;
            }
            Ok(Arc::new(f))
        };
        let files = [open(&paths[0])?, open(&paths[1])?];
        if created {
            fsutil::sync_dir(dir).at(dir)?;
        }
        let mut j = Journal {
            worker,
            size,
            files,
            paths,
            active: 0,
            seq: 0,
            generation: 0,
            pos: HEADER_LEN,
            staged: Vec::new(),
            staged_at: HEADER_LEN,
            other_free: true,
            prev_unsynced: false,
        };
        j.reset()?;
        Ok(j)
    }

    /// Size of each of the two files.
    pub fn file_size(&self) -> u64 {
        self.size
    }

    /// The sequence number of the active file (bumped by every switch and reset).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Frames the records that `partition` appended (whole encoded records) for the next
    /// [`Journal::write`]. An empty slice stages nothing.
    pub fn stage(&mut self, partition: u32, records: &[u8]) -> Result<Staged, JournalError> {
        if records.is_empty() {
            return Ok(Staged::Staged);
        }
        let need = (FRAME_HEADER_LEN + records.len()) as u64;
        if need > self.size - HEADER_LEN {
            return Ok(Staged::NoRoom);
        }
        let mut outcome = Staged::Staged;
        if self.pos + need > self.size {
            if !self.other_free {
                return Ok(Staged::NoRoom);
            }
            self.switch()?;
            outcome = Staged::Switched;
        }
        let len = records.len() as u32;
        let g = self.generation;
        self.staged.extend_from_slice(&len.to_le_bytes());
        self.staged.extend_from_slice(&partition.to_le_bytes());
        self.staged.extend_from_slice(&g.to_le_bytes());
        let crc = frame_crc(len, partition, g, records);
        self.staged.extend_from_slice(&crc.to_le_bytes());
        self.staged.extend_from_slice(records);
        self.pos += need;
        Ok(outcome)
    }

    /// Writes the staged frames to the active file (to the OS, not fsynced).
    pub fn write(&mut self) -> Result<(), JournalError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let path = &self.paths[self.active];
        let r = self.files[self.active].write_all_at(&self.staged, self.staged_at);
        if r.is_err() {
            // Frames are all-or-nothing per write: forget these, the caller falls back.
            self.pos = self.staged_at;
        }
        self.staged_at = self.pos;
        self.staged.clear();
        if self.staged.capacity() > (4 << 20) {
            self.staged.shrink_to(1 << 20);
        }
        r.at(path)
    }

    /// An fsync of everything written so far (the active file, and the one a switch left if
    /// it may have unsynced frames).
    pub fn sync_ticket(&mut self) -> JournalSync {
        let mut files = vec![(
            self.files[self.active].clone(),
            self.paths[self.active].clone(),
        )];
        if std::mem::take(&mut self.prev_unsynced) {
            let o = 1 - self.active;
            files.push((self.files[o].clone(), self.paths[o].clone()));
        }
        JournalSync { files }
    }

    /// A flush that fsynced every partition log, and started when the active file had sequence
    /// `seq`, has landed: if no switch happened since, the other file's frames are all in the
    /// logs and it may be overwritten.
    pub fn checkpointed(&mut self, seq: u64) {
        if seq == self.seq {
            self.other_free = true;
        }
    }

    /// Starts over in the active file, with new headers in both files: no frame written so far
    /// replays. Call it only when every partition log is fsynced (after a log was cut back, so
    /// the cut records never come back). Writes and fsyncs both headers.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        let other = 1 - self.active;
        self.seq += 2;
        self.write_header(other, self.seq - 1)?;
        self.generation = self.write_header(self.active, self.seq)?;
        for i in [other, self.active] {
            self.files[i].sync_data().at(&self.paths[i])?;
        }
        self.pos = HEADER_LEN;
        self.staged.clear();
        self.staged_at = HEADER_LEN;
        self.other_free = true;
        self.prev_unsynced = false;
        Ok(())
    }

    /// Removes both files (after every partition log was fsynced), for a journal that is given
    /// up after an error.
    pub fn discard(self) -> Result<(), JournalError> {
        match self.paths[0].parent() {
            Some(dir) => remove_worker_files(dir, self.worker).map(|_| ()),
            None => Ok(()),
        }
    }

    fn switch(&mut self) -> Result<(), JournalError> {
        // Frames staged before the switch go to the file they were placed in.
        self.write()?;
        let next = 1 - self.active;
        self.generation = self.write_header(next, self.seq + 1)?;
        self.active = next;
        self.seq += 1;
        self.pos = HEADER_LEN;
        self.staged_at = HEADER_LEN;
        self.other_free = false;
        self.prev_unsynced = true;
        Ok(())
    }

    /// Writes a header with a new generation to file `index` (not fsynced); returns the
    /// generation.
    fn write_header(&self, index: usize, seq: u64) -> Result<u64, JournalError> {
        let generation = fsutil::random_id();
        let h = Header {
            worker: self.worker,
            seq,
            generation,
        };
        self.files[index]
            .write_all_at(&h.encode(), 0)
            .at(&self.paths[index])?;
        Ok(generation)
    }
}

/// Extends `f` to `size` bytes of written zeros (not a sparse file: overwriting blocks that
/// exist is what makes the journal's fsync cheap), and fsyncs it.
fn preallocate(f: &File, size: u64) -> io::Result<()> {
    f.set_len(0)?;
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = 0u64;
    while at < size {
        let n = ((size - at) as usize).min(ZERO_CHUNK);
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    f.sync_all()
}

/// What the journal files in a directory hold.
#[derive(Debug, Default)]
pub struct Replay {
    /// Per partition, the journaled records in the order they were written.
    pub partitions: BTreeMap<u32, Vec<u8>>,
    pub files: Vec<PathBuf>,
    pub frames: u64,
    pub bytes: u64,
}

/// Reads every journal file in `dir` (none if it does not exist): the records of their valid
/// frames, per partition, oldest file first for each worker. A file or frame that does not
/// check (torn, stale, from an earlier use of the file) ends that file's frames; it is never an
/// error, as the logs hold every record the journal no longer proves.
pub fn read_dir(dir: &Path) -> Result<Replay, JournalError> {
    let mut out = Replay::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).at(dir),
    };
    let mut found = Vec::new();
    for e in entries {
        let path = e.at(dir)?.path();
        if path.extension().is_some_and(|x| x == "journal") {
            let f = File::open(&path).at(&path)?;
            let mut head = [0u8; HEADER_BYTES];
            // A file too short for a header holds nothing.
            if f.read_exact_at(&mut head, 0).is_ok()
                && let Some(h) = Header::decode(&head)
            {
                found.push((h, path.clone()));
            }
            out.files.push(path);
        }
    }
    found.sort_by_key(|(h, _)| (h.worker, h.seq));
    // One file at a time, streamed: memory holds the records, never whole files.
    for (h, path) in found {
        read_frames(&path, &h, &mut out).at(&path)?;
    }
    Ok(out)
}

/// Appends the records of the valid frames of one file (header `h`) to `out`.
fn read_frames(path: &Path, h: &Header, out: &mut Replay) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, f);
    r.seek(SeekFrom::Start(HEADER_LEN))?;
    let mut pos = HEADER_LEN;
    let mut fh = [0u8; FRAME_HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        match r.read_exact(&mut fh) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32_at(&fh, 0);
        let partition = u32_at(&fh, 4);
        let generation = u64_at(&fh, 8);
        let crc = u32_at(&fh, 16);
        let start = pos + FRAME_HEADER_LEN as u64;
        if len == 0 || generation != h.generation || start + len as u64 > file_len {
            return Ok(());
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload)?;
        if crc != frame_crc(len, partition, generation, &payload) {
            return Ok(());
        }
        out.partitions
            .entry(partition)
            .or_default()
            .extend_from_slice(&payload);
        out.frames += 1;
        out.bytes += len as u64;
        pos = start + len as u64;
    }
}

/// Removes both journal files of `worker`, durably (the directory is fsynced): none of their
/// frames can replay after this returns Ok. Returns whether there was any.
pub fn remove_worker_files(dir: &Path, worker: u32) -> Result<bool, JournalError> {
    let mut removed = false;
    for i in 0..2 {
        let p = journal_path(dir, worker, i);
        match fs::remove_file(&p) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&p),
        }
    }
    if removed {
        fsutil::sync_dir(dir).at(dir)?;
    }
    Ok(removed)
}

/// After start-up replayed every journal (and fsynced the logs): removes the files of workers
/// `workers..` and zeroes the header of the others, durably, so that no frame written before
/// can replay (whoever owns a partition now, and whatever it cuts from its log), while the
/// files stay allocated for their workers to reuse.
pub fn invalidate_all(dir: &Path, workers: u32) -> Result<(), JournalError> {
    remove_unused(dir, workers)?;
    for w in 0..workers {
        for i in 0..2 {
            let p = journal_path(dir, w, i);
            let f = match OpenOptions::new().write(true).open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&p),
            };
            f.write_all_at(&[0u8; HEADER_BYTES], 0).at(&p)?;
            f.sync_data().at(&p)?;
        }
    }
    Ok(())
}

/// Removes the journal files of workers `workers..` (a restart with fewer workers), after
/// their records were replayed and fsynced.
pub fn remove_unused(dir: &Path, workers: u32) -> Result<usize, JournalError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at(dir),
    };
    let mut removed = 0;
    for e in entries {
        let path = e.at(dir)?.path();
        let worker = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("worker-"))
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<u32>().ok());
        if path.extension().is_some_and(|x| x == "journal") && worker.is_none_or(|w| w >= workers) {
            fs::remove_file(&path).at(&path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsutil::sync_dir(dir).at(dir)?;
    }
    Ok(removed)
}
