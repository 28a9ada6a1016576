//! Merge: rewrite closed segments keeping only what a read or a follower can still need.
//!
//! Three phases, so the owning thread is never stalled for long:
//!
//! 1. `Store::start_merge` (owner, cheap): picks every closed segment — a prefix of the log,
//!    so no older segment can hold a key that a dropped tombstone was hiding (on a nearly
//!    full disk, `start_merge_within`: the oldest that fit, or a later run that keeps its
//!    tombstones) — and returns a [`MergeJob`] naming their files.
//! 2. [`MergeJob::run`] (any thread): reads the inputs (hint files where valid), keeps the
//!    newest record of each key, folds expiry changes into the value they apply to, drops
//!    tombstones and expired values below the retention horizon, and writes output segments
//!    in LSN order, each covering whole input segments, plus their hint files, all fsynced
//!    under temporary names.
//! 3. `Store::install_merge` (owner): commits the outputs oldest first — rename over the input
//!    of the same base, delete the other inputs it covers, fsync the directory — then
//!    `Store::merge_step` re-points keydir entries a bounded number at a time. Old segments
//!    stay mapped until the last entry has moved, so reads never miss.
//!
//! Crash safety: before the first rename nothing changed; after it, recovery sees each output's
//! `covered_end` and deletes leftover inputs in its range. Committing oldest first means a
//! tombstone is never removed while an older value it hides is still on disk.
use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{IoContext, MergeError};
use crate::fsutil;
use crate::hint::{self, HintEntry};
use crate::record::{self, HEADER_LEN, Tag};
use crate::segment::{self, SEGMENT_HEADER_LEN, Segment, SegmentHeader};
use crate::store::Store;

#[derive(Default)]
pub(crate) enum MergeState {
    #[default]
    Idle,
    Running {
        generation: u64,
        /// The job's `dropped_below` mark: tombstones below it may go.
        drops_below: u64,
    },
    Installing(Box<Installing>),
}

pub(crate) struct Installing {
    moves: Vec<(u32, Move)>,
    pos: usize,
    /// Input segment ids, kept mapped until every entry moved.
    retired: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct MergeInput {
    pub seg_id: u32,
    pub path: PathBuf,
    pub base: u64,
    pub file_id: u64,
}

/// The file work of a merge; see the module documentation.
#[derive(Clone, Debug)]
pub struct MergeJob {
    dir: PathBuf,
    generation: u64,
    inputs: Vec<MergeInput>,
    /// The closed segments after the inputs (a merge of a prefix): a value or tombstone of
    /// the inputs that one of them replaces is not written again. Closed segments are
    /// synced and below every replica's high watermark, so the replacement stays.
    later: Vec<MergeInput>,
    /// End (exclusive) of the LSN range the inputs cover: the base of the segment after
    /// them (the active one unless the merge takes a prefix of the closed ones).
    end: u64,
    horizon: u64,
    /// `SegmentHeader::dropped_below` of every output.
    dropped_below: u64,
    now: u64,
    segment_size: u64,
}

/// A live value moved by the merge: where it was and where it is now.
#[derive(Clone, Debug)]
struct Move {
    key: Box<[u8]>,
    input: usize,
    src_off: u32,
    new_off: u32,
    rec_len: u32,
}

#[derive(Debug)]
pub struct MergedSegment {
    header: SegmentHeader,
    log_tmp: PathBuf,
    hint_tmp: PathBuf,
    moves: Vec<Move>,
    /// (lsn, offset) of every record, for the sparse index.
    records: Vec<(u64, u32)>,
    dead_bytes: u64,
}

/// What a finished merge job hands back to the owner.
#[derive(Debug)]
pub struct MergeOutput {
    generation: u64,
    inputs: Vec<MergeInput>,
    later: Vec<MergeInput>,
    outputs: Vec<MergedSegment>,
    /// Values dropped because they looked expired to the merge.
    expired_dropped: Vec<Dropped>,
    pub stats: MergeStats,
}

#[derive(Debug)]
struct Dropped {
    key: Box<[u8]>,
    input: usize,
    src_off: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub records_in: u64,
    pub records_out: u64,
}

impl MergeOutput {
    /// Deletes the temporary files of an output that will not be installed.
    pub fn discard(self) {
        for o in &self.outputs {
            let _ = std::fs::remove_file(&o.log_tmp);
            let _ = std::fs::remove_file(&o.hint_tmp);
        }
    }
}

/// The newest state of one key within the merged range.
struct Latest {
    lsn: u64,
    epoch: u32,
    expire: u64,
    tag: Tag,
    /// For values: (input index, record offset, value length).
    src: Option<(usize, u32, u32)>,
}

impl Store {
    /// Starts a merge of every closed segment. `horizon`: tombstones and expired values with an
    /// LSN below it may be dropped — every replica has applied everything below it (standalone:
    /// `u64::MAX`). Returns `Ok(None)` when there is nothing to merge.
    pub fn start_merge(&mut self, horizon: u64) -> Result<Option<MergeJob>, MergeError> {
        self.start_merge_within(horizon, u64::MAX)
    }

    /// `start_merge` of as many closed segments as hold at most `live` bytes of live data
    /// (what the merge writes again, hint files aside): on a disk with less free space than
    /// all the live data of the closed segments, a merge of them all would fail for want of
    /// space. The oldest ones when they fit, a prefix of the log, so that no older segment
    /// can hold a key that a dropped tombstone was hiding; otherwise (the oldest hold more
    /// live data than fits: the outputs of earlier merges, say) the run of consecutive
    /// segments with the most dead bytes that fits, keeping every tombstone, clear and
    /// expired value it holds, as a follower's merge above its horizon does (an older
    /// segment may hold what they hide). `Ok(None)` when nothing with dead bytes fits.
    pub fn start_merge_within(
        &mut self,
        horizon: u64,
        live: u64,
    ) -> Result<Option<MergeJob>, MergeError> {
        if !matches!(self.merge, MergeState::Idle) {
            return Err(MergeError::Busy);
        }
        if self.order.len() < 2 {
            return Ok(None);
        }
        let closed = self.order.len() - 1;
        // (live, dead) bytes of each closed segment.
        let sizes: Vec<(u64, u64)> = self.order[..closed]
            .iter()
            .map(|&id| {
                let s = self.seg(id);
                let d = s.dead.min(s.len());
                (s.len() - d, d)
            })
            .collect();
        // The longest run from `from` whose live data fits: (end, dead bytes).
        let run_from = |from: usize| {
            let (mut to, mut taken, mut dead) = (from, 0u64, 0u64);
            while to < closed && taken.saturating_add(sizes[to].0) <= live {
                taken += sizes[to].0;
                dead += sizes[to].1;
                to += 1;
            }
            (to, dead)
        };
        let (n, dead) = run_from(0);
        let (from, to, horizon) = if n == closed || (n > 0 && dead > 0) {
            (0, n, horizon)
        } else {
            let best = (1..closed)
                .map(|i| (i, run_from(i)))
                .filter(|&(i, (to, dead))| to > i && dead > 0)
                .max_by_key(|&(_, (_, dead))| dead);
            match best {
                // Nothing below the window is merged: every tombstone stays (horizon 0).
                Some((i, (to, _))) => (i, to, 0),
                None => return Ok(None),
            }
        };
        let input = |id: u32| {
            let s = self.seg(id);
            MergeInput {
                seg_id: id,
                path: s.path.clone(),
                base: s.base(),
                file_id: s.header.file_id,
            }
        };
        let merged = &self.order[from..to];
        let inputs: Vec<MergeInput> = merged.iter().map(|&id| input(id)).collect();
        let later: Vec<MergeInput> = self.order[to..closed].iter().map(|&id| input(id)).collect();
        // The base of the first segment after the inputs (the active one's for a full merge).
        let end = self.seg(self.order[to]).base();
        // Never lower than what the inputs had dropped already, so the mark survives
        // whichever outputs a later merge leaves: every output carries the whole merge's.
        let dropped_below = merged
            .iter()
            .map(|&id| self.seg(id).header.dropped_below)
            .fold(horizon.min(end), u64::max);
        self.merge = MergeState::Running {
            generation: self.generation,
            drops_below: horizon.min(end),
        };
        Ok(Some(MergeJob {
            dir: self.dir.clone(),
            generation: self.generation,
            inputs,
            later,
            end,
            horizon,
            dropped_below,
            // A replica never expires on its own clock: a record it has not received yet may
            // have extended the expiry on the leader.
            now: if self.replica { 0 } else { self.now() },
            segment_size: self.opts.segment_size,
        }))
    }

    /// Rolls the active segment and merges everything (BGREWRITEAOF): runs the job inline and
    /// installs it completely. For tests and tools; the server runs the job off-thread.
    pub fn merge_now(&mut self, horizon: u64) -> Result<Option<MergeStats>, MergeError> {
        self.roll().map_err(|e| MergeError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let Some(job) = self.start_merge(horizon)? else {
            return Ok(None);
        };
        let out = match job.run() {
            Ok(o) => o,
            Err(e) => {
                self.abort_merge();
                return Err(e);
            }
        };
        let stats = out.stats;
        self.install_merge(out)?;
        while self.merge_step(usize::MAX) {}
        Ok(Some(stats))
    }

    /// Forgets a merge whose job failed or was dropped.
    pub fn abort_merge(&mut self) {
        if matches!(self.merge, MergeState::Running { .. }) {
            self.merge = MergeState::Idle;
        }
    }

    pub fn merge_in_progress(&self) -> bool {
        !matches!(self.merge, MergeState::Idle)
    }

    /// Commits a finished merge (see the module documentation) and starts re-pointing keys;
    /// call [`Store::merge_step`] until it returns false.
    pub fn install_merge(&mut self, out: MergeOutput) -> Result<(), MergeError> {
        // Where the inputs are in the log: consecutive, as they were picked.
        let input_ids: Vec<u32> = out.inputs.iter().map(|i| i.seg_id).collect();
        let at = self
            .order
            .windows(input_ids.len().max(1))
            .position(|w| w == &input_ids[..]);
        let current = matches!(self.merge, MergeState::Running { generation, .. } if generation == out.generation)
            && at.is_some()
            && out.inputs.iter().chain(&out.later).all(|i| {
                self.order.contains(&i.seg_id)
                    && self.segments[i.seg_id as usize]
                        .as_ref()
                        .is_some_and(|s| s.header.file_id == i.file_id)
            });
        if !current {
            if matches!(self.merge, MergeState::Running { .. }) {
                self.merge = MergeState::Idle;
            }
            out.discard();
            return Err(MergeError::Stale);
        }
        // Nothing is installed yet: on failure (no room for a tombstone) the merge is over
        // and its outputs go, or no merge could start again and they would hold the disk.
        if let Err(e) = self.settle_expired(&out) {
            self.merge = MergeState::Idle;
            out.discard();
            return Err(e);
        }
        let dir = self.dir.clone();
        let n_inputs = out.inputs.len();
        let mut new_ids = Vec::with_capacity(out.outputs.len());
        let mut moves = Vec::new();
        let mut committed_any = false;
        let result: Result<(), MergeError> = (|| {
            for o in &out.outputs {
                let base = o.header.base;
                let log = segment::segment_path(&dir, base);
                let hint = segment::hint_path(&dir, base);
                std::fs::rename(&o.log_tmp, &log).at_merge(&log)?;
                committed_any = true;
                std::fs::rename(&o.hint_tmp, &hint).at_merge(&hint)?;
                for i in &out.inputs {
                    if i.base > base && i.base < o.header.covered_end {
                        remove(&segment::hint_path(&dir, i.base))?;
                        remove(&i.path)?;
                    }
                }
                fsutil::sync_dir(&dir).at_merge(&dir)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for o in &out.outputs {
                let _ = std::fs::remove_file(&o.log_tmp);
                let _ = std::fs::remove_file(&o.hint_tmp);
            }
            self.merge = MergeState::Idle;
            if committed_any {
                // Disk and memory disagree now; the files are consistent, so re-read them.
                let _ = self.reload_after_merge_failure();
            }
            return Err(e);
        }
        for o in out.outputs {
            let path = segment::segment_path(&dir, o.header.base);
            let mut seg = Segment::open(&path, false, 0).map_err(|e| MergeError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            for &(lsn, off) in &o.records {
                seg.note_record(lsn, off as u64);
            }
            seg.dead = o.dead_bytes;
            let id = self.alloc_seg_id(seg);
            new_ids.push(id);
            moves.extend(o.moves.into_iter().map(|m| (id, m)));
        }
        let at = at.unwrap_or(0);
        let retired: Vec<u32> = self.order[at..at + n_inputs].to_vec();
        let mut order = self.order[..at].to_vec();
        order.extend(new_ids);
        order.extend_from_slice(&self.order[at + n_inputs..]);
        self.order = order;
        // Translate input indexes to the retired segment ids.
        for (_, m) in moves.iter_mut() {
            m.input = input_ids[m.input] as usize;
        }
        self.merge = MergeState::Installing(Box::new(Installing {
            moves,
            pos: 0,
            retired,
        }));
        Ok(())
    }

    /// Values the merge dropped as expired whose keydir entry still points at them: if a
    /// record the merge did not see (in the active segment) extended the expiry, the value is
    /// written again (a fresh record with the keydir's expiry); otherwise the key gets a
    /// tombstone, as active expiry would give it, so replicas delete it too. Either is made
    /// durable before the old file goes.
    fn settle_expired(&mut self, out: &MergeOutput) -> Result<(), MergeError> {
        let now = self.now();
        let mut wrote = false;
        for d in &out.expired_dropped {
            let seg_id = out.inputs[d.input].seg_id;
            let Some(loc) = self.keydir.get(&d.key) else {
                continue;
            };
            if loc.seg != seg_id || loc.off != d.src_off {
                continue;
            }
            wrote = true;
            if loc.expire != 0 && loc.expire <= now {
                self.delete(&d.key).map_err(|e| as_merge_io(&self.dir, e))?;
                continue;
            }
            let value = self
                .get(&d.key)
                .map_err(|e| MergeError::Corrupt {
                    path: out.inputs[d.input].path.clone(),
                    offset: d.src_off as u64,
                    reason: e.to_string(),
                })?
                .unwrap_or_default();
            // Kept alive by a record the merge did not see: written again, within the space
            // kept free for merges.
            self.append_record(Tag::Put, &d.key, &value, loc.expire, false)
                .map_err(|e| as_merge_io(&self.dir, e))?;
        }
        if wrote {
            self.sync().map_err(|e| as_merge_io(&self.dir, e))?;
        }
        Ok(())
    }

    fn reload_after_merge_failure(&mut self) -> Result<(), MergeError> {
        self.reread_files().map_err(|e| MergeError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Re-points up to `budget` keys to merged segments; returns true while work remains.
    pub fn merge_step(&mut self, budget: usize) -> bool {
        let MergeState::Installing(inst) = &mut self.merge else {
            return false;
        };
        let end = inst.pos.saturating_add(budget).min(inst.moves.len());
        let mut dead = Vec::new();
        for (new_id, m) in &inst.moves[inst.pos..end] {
            if !self
                .keydir
                .repoint_if(&m.key, m.input as u32, m.src_off, *new_id, m.new_off)
            {
                dead.push((*new_id, m.rec_len as u64));
            }
        }
        inst.pos = end;
        let done = inst.pos >= inst.moves.len();
        let retired = if done {
            std::mem::take(&mut inst.retired)
        } else {
            Vec::new()
        };
        for (id, bytes) in dead {
            if let Some(Some(s)) = self.segments.get_mut(id as usize) {
                s.dead += bytes;
            }
        }
        if done {
            for id in retired {
                self.free_seg_id(id);
            }
            self.merge = MergeState::Idle;
        }
        !done
    }
}

fn as_merge_io(dir: &std::path::Path, e: crate::WriteError) -> MergeError {
    MergeError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Opens a segment a merge reads, checking it is still the one the merge was started on.
fn open_input(i: &MergeInput) -> Result<Segment, MergeError> {
    let s = Segment::open(&i.path, false, 0).map_err(|e| MergeError::Io {
        path: i.path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if s.header.file_id != i.file_id {
        return Err(MergeError::Stale);
    }
    Ok(s)
}

/// Every record of a closed segment, from its hint file when that is valid.
fn for_each_entry(seg: &Segment, mut visit: impl FnMut(HintEntry<'_>)) -> Result<(), MergeError> {
    let hint_bytes = std::fs::read(hint::hint_for_segment(&seg.path)).ok();
    if let Some(entries) = hint_bytes
        .as_deref()
        .and_then(|b| hint::decode_all(b, seg.header.file_id))
    {
        entries.into_iter().for_each(visit);
        return Ok(());
    }
    let bytes = seg.written_bytes();
    let body = &bytes[SEGMENT_HEADER_LEN.min(bytes.len())..];
    let mut it = record::RecordIter::new(body);
    for (off, r) in it.by_ref() {
        visit(HintEntry::of_record(off, &r));
    }
    if let Some((off, e)) = it.error() {
        return Err(MergeError::Corrupt {
            path: seg.path.clone(),
            offset: (off + SEGMENT_HEADER_LEN) as u64,
            reason: e.to_string(),
        });
    }
    Ok(())
}

fn remove(p: &std::path::Path) -> Result<(), MergeError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(MergeError::Io {
            path: p.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl MergeJob {
    /// Does the file work (see the module documentation). Touches no shared state. A job
    /// that fails leaves no file behind (found by a black-box run: on a nearly full disk the
    /// outputs of failed merges took the space the next merges needed, until a restart).
    pub fn run(self) -> Result<MergeOutput, MergeError> {
        let dir = self.dir.clone();
        let bases: Vec<u64> = self.inputs.iter().map(|i| i.base).collect();
        let r = self.run_files();
        if r.is_err() {
            for base in bases {
                let _ = std::fs::remove_file(dir.join(format!("{base:020}.log.merge")));
                let _ = std::fs::remove_file(dir.join(format!("{base:020}.hint.merge")));
            }
        }
        r
    }

    fn run_files(self) -> Result<MergeOutput, MergeError> {
        let mut segs = Vec::with_capacity(self.inputs.len());
        for i in &self.inputs {
            segs.push(open_input(i)?);
        }
        let mut stats = MergeStats::default();
        let mut latest = Folded::default();
        for (idx, seg) in segs.iter().enumerate() {
            stats.input_bytes += seg.len();
            for_each_entry(seg, |e| {
                stats.records_in += 1;
                fold(&mut latest, idx, e);
            })?;
        }
        // What a later closed segment replaces (a newer value, a delete, a FLUSHALL) is not
        // written again: a merge of a prefix would otherwise copy the values a workload of
        // overwrites replaced since, and need the room of all of them. Expiry changes there
        // leave the value they apply to here.
        for l in &self.later {
            let seg = open_input(l)?;
            for_each_entry(&seg, |e| match e.tag {
                Tag::Put | Tag::Delete => {
                    latest.map.remove(e.key);
                }
                Tag::Clear => {
                    latest.map.clear();
                    latest.clear = None;
                }
                Tag::Expire => {}
            })?;
        }

        // Keep what a reader or a lagging follower can still need.
        let Folded { map, clear } = latest;
        let mut kept: Vec<(Box<[u8]>, Latest)> = Vec::with_capacity(map.len() + 1);
        let mut expired_dropped = Vec::new();
        for (key, st) in map {
            // The newest expiry applies; the newest record decides against the horizon.
            let newest = st.later_expire.as_ref().unwrap_or(&st.main);
            let gone = match st.main.tag {
                Tag::Put => newest.expire != 0 && newest.expire <= self.now,
                Tag::Delete | Tag::Expire | Tag::Clear => true,
            };
            if gone && newest.lsn < self.horizon {
                if let Some((input, src_off, _)) = st.main.src {
                    // An expiry change in the active segment (outside this merge) may have
                    // saved it: the installer checks the keydir.
                    expired_dropped.push(Dropped {
                        key,
                        input,
                        src_off,
                    });
                }
                continue;
            }
            // The value keeps its own LSN and a later expiry change stays a record of its
            // own: folding them would move the value to a later output, and a crash between
            // output commits would lose it.
            if let Some(e) = st.later_expire {
                kept.push((key.clone(), e));
            }
            kept.push((key, st.main));
        }
        if let Some(c) = clear
            && c.lsn >= self.horizon
        {
            kept.push((Box::default(), c));
        }
        kept.sort_unstable_by_key(|(_, l)| l.lsn);

        // Group whole input segments into outputs of about `segment_size` bytes.
        let mut outputs = Vec::new();
        let mut k = 0;
        let mut group_start = 0;
        let mut group_bytes = 0u64;
        for i in 0..self.inputs.len() {
            let range_end = self.inputs.get(i + 1).map(|n| n.base).unwrap_or(self.end);
            while k < kept.len() && kept[k].1.lsn < range_end {
                let l = &kept[k].1;
                group_bytes += HEADER_LEN as u64
                    + kept[k].0.len() as u64
                    + l.src.map(|s| s.2 as u64).unwrap_or(0);
                k += 1;
            }
            let last_input = i + 1 == self.inputs.len();
            if group_bytes >= self.segment_size || last_input {
                let from = outputs_end(&outputs);
                let out = self.write_output(
                    &segs,
                    &kept[from..k],
                    self.inputs[group_start].base,
                    range_end,
                )?;
                stats.output_bytes += out.1;
                stats.records_out += (k - from) as u64;
                outputs.push((out.0, k));
                group_start = i + 1;
                group_bytes = 0;
            }
        }
        fsutil::sync_dir(&self.dir).at_merge(&self.dir)?;
        Ok(MergeOutput {
            generation: self.generation,
            inputs: self.inputs,
            later: self.later,
            outputs: outputs.into_iter().map(|(o, _)| o).collect(),
            expired_dropped,
            stats,
        })
    }

    fn write_output(
        &self,
        segs: &[Segment],
        records: &[(Box<[u8]>, Latest)],
        base: u64,
        covered_end: u64,
    ) -> Result<(MergedSegment, u64), MergeError> {
        use std::io::Write;
        let header = SegmentHeader {
            base,
            covered_end,
            file_id: fsutil::random_id(),
            dropped_below: self.dropped_below,
            format: crate::segment::SEGMENT_FORMAT,
        };
        let log_tmp = self.dir.join(format!("{base:020}.log.merge"));
        let hint_tmp = self.dir.join(format!("{base:020}.hint.merge"));
        let mut file = std::fs::File::create(&log_tmp).at_merge(&log_tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        w.write_all(&header.encode()).at_merge(&log_tmp)?;
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut moves = Vec::new();
        let mut index = Vec::with_capacity(records.len());
        let mut hint_entries = Vec::new();
        let mut dead = 0u64;
        let mut buf = Vec::new();
        for (key, l) in records {
            buf.clear();
            let value: &[u8] = match l.src {
                Some((input, src_off, val_len)) => {
                    let seg = &segs[input];
                    let len = HEADER_LEN + key.len() + val_len as usize;
                    let corrupt = |reason: String| MergeError::Corrupt {
                        path: seg.path.clone(),
                        offset: src_off as u64,
                        reason,
                    };
                    let bytes = seg
                        .bytes(src_off as u64, len)
                        .ok_or_else(|| corrupt("record past the end of the file".into()))?;
                    let r = record::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
                    if r.key != &key[..] {
                        return Err(corrupt("hint names another key".into()));
                    }
                    r.value
                }
                None => &[],
            };
            let tag = if l.tag == Tag::Put && l.src.is_none() {
                Tag::Expire
            } else {
                l.tag
            };
            let n = record::encode(&mut buf, l.lsn, l.epoch, l.expire, tag, key, value);
            w.write_all(&buf).at_merge(&log_tmp)?;
            hint::encode_entry(
                &mut hint_entries,
                &HintEntry {
                    lsn: l.lsn,
                    epoch: l.epoch,
                    expire: l.expire,
                    tag,
                    val_len: value.len() as u32,
                    offset: off as u32,
                    key,
                },
            );
            index.push((l.lsn, off as u32));
            match (tag, l.src) {
                (Tag::Put, Some((input, src_off, _))) => moves.push(Move {
                    key: key.clone(),
                    input,
                    src_off,
                    new_off: off as u32,
                    rec_len: n as u32,
                }),
                _ => dead += n as u64,
            }
            off += n as u64;
        }
        w.flush().at_merge(&log_tmp)?;
        drop(w);
        file.sync_all().at_merge(&log_tmp)?;
        let mut hint_file = Vec::with_capacity(32 + hint_entries.len());
        hint::encode_header(&mut hint_file, header.file_id, records.len() as u64);
        hint_file.extend_from_slice(&hint_entries);
        {
            let mut f = std::fs::File::create(&hint_tmp).at_merge(&hint_tmp)?;
            f.write_all(&hint_file).at_merge(&hint_tmp)?;
            f.sync_all().at_merge(&hint_tmp)?;
        }
        Ok((
            MergedSegment {
                header,
                log_tmp,
                hint_tmp,
                moves,
                records: index,
                dead_bytes: dead,
            },
            off,
        ))
    }
}

fn outputs_end(outputs: &[(MergedSegment, usize)]) -> usize {
    outputs.last().map(|(_, k)| *k).unwrap_or(0)
}

/// The newest state of every key in the merged range, plus the last `Clear` (kept apart: the
/// empty key is a valid key of its own).
#[derive(Default)]
struct Folded {
    map: HashMap<Box<[u8]>, KeyState>,
    clear: Option<Latest>,
}

/// A key's newest record, and for a value the newest expiry change after it.
struct KeyState {
    main: Latest,
    later_expire: Option<Latest>,
}

/// Folds one record into the newest-state map.
fn fold(f: &mut Folded, input: usize, e: HintEntry<'_>) {
    let plain = |tag, src| Latest {
        lsn: e.lsn,
        epoch: e.epoch,
        expire: if tag == Tag::Delete { 0 } else { e.expire },
        tag,
        src,
    };
    match e.tag {
        Tag::Put | Tag::Delete => {
            let src = (e.tag == Tag::Put).then_some((input, e.offset, e.val_len));
            let st = KeyState {
                main: plain(e.tag, src),
                later_expire: None,
            };
            match f.map.get_mut(e.key) {
                Some(slot) => *slot = st,
                None => {
                    f.map.insert(e.key.into(), st);
                }
            }
        }
        Tag::Expire => match f.map.get_mut(e.key) {
            Some(slot) if slot.main.tag == Tag::Put => {
                slot.later_expire = Some(plain(Tag::Expire, None));
            }
            Some(slot) if slot.main.tag == Tag::Expire => slot.main = plain(Tag::Expire, None),
            // An expiry change of a deleted key changes nothing.
            Some(_) => {}
            None => {
                f.map.insert(
                    e.key.into(),
                    KeyState {
                        main: plain(Tag::Expire, None),
                        later_expire: None,
                    },
                );
            }
        },
        Tag::Clear => {
            f.map.clear();
            f.clear = Some(plain(Tag::Clear, None));
        }
    }
}
