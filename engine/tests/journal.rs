//! The commit journal (`journal.rs`) and the store's side of it: the journal tap
//! (`set_journal_tap`, `journal_records`, `clear_journal_records`) and `replay_journal`.
//!
//! - round trips: what the tap copies is exactly what the log holds, and `read_dir` gives back
//!   exactly what was staged and written, per partition;
//! - crash replay: a log that lost its unsynced tail gets every journaled record back (and its
//!   leader epoch), once; records the log has are never appended twice; after a truncation
//!   and a `reset` the cut records stay cut while new records at the reused LSNs replay;
//! - frames that must not count: from before `reset`/`open`, torn or corrupt, of an earlier use
//!   of a file after a switch;
//! - switching between the two files, refused until `checkpointed`, and frame size limits;
//! - `remove_unused` and `discard`;
//! - model-based: random writes to two partitions journaled turn by turn, then (a) the whole
//!   journal replayed into empty stores rebuilds the model, (b) a crash that cuts every log
//!   anywhere past its last fsync loses nothing once the journal is replayed.
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use simplekv_engine::journal::{
    self, FRAME_HEADER_LEN, HEADER_LEN, JOURNAL_DIR, MIN_FILE_SIZE, journal_path,
};
use simplekv_engine::record::{self, Tag};
use simplekv_engine::segment::{self, SEGMENT_HEADER_LEN};
use simplekv_engine::{Durability, Journal, JournalError, Options, Staged, Store, WriteError};

/// A fixed clock: expiries are either well in the future or already past, never crossed.
const NOW: u64 = 1_700_000_000_000;
const LATER: u64 = NOW + 3_600_000;

fn clock() -> u64 {
    NOW
}

fn opts() -> Options {
    Options {
        segment_size: 64 << 10,
        // Irrelevant to these tests (they call `commit_write`, which never fsyncs), but it is
        // the setting the journal exists for.
        durability: Durability::Always,
        clock,
        ..Options::default()
    }
}

fn open_store(dir: &Path, o: Options) -> Store {
    match Store::open(dir, o) {
        Ok(s) => s,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

fn open_journal(dir: &Path, worker: u32, size: u64) -> Journal {
    match Journal::open(dir, worker, size) {
        Ok(j) => j,
        Err(e) => panic!("journal open {}: {e}", dir.display()),
    }
}

fn read_dir(dir: &Path) -> journal::Replay {
    match journal::read_dir(dir) {
        Ok(r) => r,
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    }
}

/// Per partition, the records `read_dir` returns.
fn replayed(dir: &Path) -> BTreeMap<u32, Vec<u8>> {
    read_dir(dir).partitions
}

fn active_segment(s: &Store) -> PathBuf {
    segment::segment_path(s.dir(), s.active_base())
}

fn file_len(p: &Path) -> u64 {
    match fs::metadata(p) {
        Ok(m) => m.len(),
        Err(e) => panic!("stat {}: {e}", p.display()),
    }
}

fn set_file_len(p: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(p).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}

fn flip_byte(p: &Path, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

/// (lsn, tag, key, value) of every record in `bytes`, which must decode to the last byte.
fn decode_all(bytes: &[u8]) -> Vec<(u64, Tag, Vec<u8>, Vec<u8>)> {
    let mut it = record::RecordIter::new(bytes);
    let out: Vec<_> = it
        .by_ref()
        .map(|(_, r)| (r.header.lsn, r.header.tag, r.key.to_vec(), r.value.to_vec()))
        .collect();
    assert_eq!(it.error(), None, "records do not decode");
    assert_eq!(
        it.position(),
        bytes.len(),
        "trailing bytes after the records"
    );
    out
}

/// Byte lengths of the records in `bytes`.
fn record_lens(bytes: &[u8]) -> Vec<usize> {
    record::RecordIter::new(bytes)
        .map(|(_, r)| r.header.record_len())
        .collect()
}

/// An opaque payload for journal-only tests (`read_dir` does not parse records).
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7) ^ (j >> 8)) as u8)
        .collect()
}

fn stage(j: &mut Journal, partition: u32, records: &[u8]) -> Staged {
    match j.stage(partition, records) {
        Ok(s) => s,
        Err(e) => panic!("stage: {e}"),
    }
}

fn write(j: &mut Journal) {
    if let Err(e) = j.write() {
        panic!("journal write: {e}");
    }
}

/// Writes the staged frames and fsyncs them as the server does.
fn write_and_sync(j: &mut Journal) {
    write(j);
    if let Err(e) = j.sync_ticket().run() {
        panic!("journal sync: {e}");
    }
}

// ------------------------------------------------------------------- tap and round trip

#[test]
fn the_tap_copies_exactly_the_appended_records_and_read_dir_returns_them_per_partition() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut s0 = open_store(&root.path().join("p0"), opts());
    let mut s1 = open_store(&root.path().join("p1"), opts());

    // Without a tap nothing is kept.
    assert!(!s0.journal_tap());
    s0.put(b"old", b"before the tap", None).unwrap();
    s0.put(b"gone", b"deleted later", None).unwrap();
    assert!(s0.journal_records().is_empty());
    s0.clear_journal_records();
    assert!(s0.journal_records().is_empty());

    s0.set_journal_tap(true);
    s1.set_journal_tap(true);
    assert!(s0.journal_tap() && s1.journal_tap());
    // Records from before the tap was turned on are not in it.
    assert!(s0.journal_records().is_empty());

    let first0 = s0.log_end();
    s0.put(b"a", b"alpha", None).unwrap();
    s0.put(b"b", b"beta", Some(LATER)).unwrap();
    assert!(s0.delete(b"gone").unwrap());
    assert!(!s0.delete(b"never there").unwrap()); // writes nothing
    assert!(s0.set_expire(b"a", Some(LATER + 1)).unwrap());
    assert!(!s0.set_expire(b"missing", None).unwrap()); // writes nothing
    // Turning the tap on again keeps what it holds.
    s0.set_journal_tap(true);
    s1.put(b"x", &[7u8; 300], None).unwrap();
    s1.clear().unwrap();
    s1.put(b"", b"empty key", None).unwrap();

    let r0 = s0.journal_records().to_vec();
    let r1 = s1.journal_records().to_vec();
    let d0 = decode_all(&r0);
    let got: Vec<(u64, Tag, &[u8])> = d0.iter().map(|(l, t, k, _)| (*l, *t, &k[..])).collect();
    assert_eq!(
        got,
        vec![
            (first0, Tag::Put, &b"a"[..]),
            (first0 + 1, Tag::Put, &b"b"[..]),
            (first0 + 2, Tag::Delete, &b"gone"[..]),
            (first0 + 3, Tag::Expire, &b"a"[..]),
        ]
    );
    assert_eq!(d0[0].3, b"alpha");
    let d1 = decode_all(&r1);
    assert_eq!(
        d1.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        vec![(0, Tag::Put), (1, Tag::Clear), (2, Tag::Put)]
    );

    // Byte for byte what the logs hold.
    s0.commit_write().unwrap();
    s1.commit_write().unwrap();
    assert_eq!(s0.read_records(first0, usize::MAX).unwrap().bytes, r0);
    assert_eq!(s1.read_records(0, usize::MAX).unwrap().bytes, r1);

    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    assert_eq!(j.file_size(), MIN_FILE_SIZE);
    assert_eq!(stage(&mut j, 0, &r0), Staged::Staged);
    assert_eq!(stage(&mut j, 1, &r1), Staged::Staged);
    // Staged frames are not in the file before `write`.
    assert!(replayed(&jdir).is_empty());
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!(rep.partitions.len(), 2);
    assert_eq!(rep.partitions[&0], r0);
    assert_eq!(rep.partitions[&1], r1);
    assert_eq!(rep.frames, 2);
    assert_eq!(rep.bytes, (r0.len() + r1.len()) as u64);
    let mut files = rep.files.clone();
    files.sort();
    assert_eq!(
        files,
        vec![journal_path(&jdir, 0, 0), journal_path(&jdir, 0, 1)]
    );
    for f in &files {
        assert_eq!(file_len(f), MIN_FILE_SIZE);
    }

    // Clearing empties the tap but keeps it on: only later records are copied.
    s0.clear_journal_records();
    s1.clear_journal_records();
    assert!(s0.journal_records().is_empty() && s1.journal_records().is_empty());
    assert!(s0.journal_tap());
    let lsn = s0.put(b"c", b"gamma", None).unwrap();
    let r0b = s0.journal_records().to_vec();
    assert_eq!(
        decode_all(&r0b).iter().map(|r| r.0).collect::<Vec<_>>(),
        [lsn]
    );

    // A second frame of the same partition follows the first.
    assert_eq!(stage(&mut j, 0, &r0b), Staged::Staged);
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!(rep.partitions[&0], [&r0[..], &r0b[..]].concat());
    assert_eq!(rep.partitions[&1], r1);
    assert_eq!(rep.frames, 3);

    // Tap off: nothing is kept, and what was there is gone.
    s0.set_journal_tap(false);
    assert!(!s0.journal_tap());
    assert!(s0.journal_records().is_empty());
    s0.put(b"d", b"delta", None).unwrap();
    assert!(s0.journal_records().is_empty());
    s0.set_journal_tap(true);
    assert!(s0.journal_records().is_empty());
}

#[test]
fn the_tap_copies_replicated_records_and_forgets_records_cut_by_truncation() {
    let root = tempfile::tempdir().unwrap();
    let mut leader = open_store(&root.path().join("leader"), opts());
    let mut follower = open_store(&root.path().join("follower"), opts());
    leader.begin_epoch(4).unwrap();
    for i in 0..20u32 {
        leader
            .put(format!("k{i}").as_bytes(), &i.to_le_bytes(), None)
            .unwrap();
    }
    leader.delete(b"k3").unwrap();
    leader.commit_write().unwrap();
    let batch = leader.read_records(0, usize::MAX).unwrap();
    follower.set_journal_tap(true);
    assert_eq!(follower.append_records(&batch.bytes).unwrap(), 21);
    assert_eq!(follower.journal_records(), &batch.bytes[..]);

    // A truncation reloads the log: the tap must not keep records the log no longer has.
    follower.truncate_to(10).unwrap();
    assert_eq!(follower.log_end(), 10);
    assert!(follower.journal_records().is_empty());
    assert!(follower.journal_tap());
    follower.put(b"after", b"cut", None).unwrap();
    assert_eq!(
        decode_all(follower.journal_records())
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [10]
    );
}

// ------------------------------------------------------------------------ crash replay

/// Writes `n` keys, commits them durably, then writes more with the tap on, journals them
/// (staged, written, fsynced) and hands them to the OS without fsyncing the log.
struct Crashed {
    root: tempfile::TempDir,
    pdir: PathBuf,
    jdir: PathBuf,
    /// The active segment and its length before the journaled writes.
    seg: PathBuf,
    len_before: u64,
    end_before: u64,
    end_after: u64,
    journaled: Vec<u8>,
    /// key -> value after all writes (None: deleted or expired).
    want: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ttl: BTreeMap<Vec<u8>, Option<Option<u64>>>,
    epochs: Vec<(u32, u64)>,
}

fn keys() -> Vec<Vec<u8>> {
    (0..40u32)
        .map(|i| format!("key:{i:02}").into_bytes())
        .collect()
}

fn crash_setup(o: Options) -> Crashed {
    let root = tempfile::tempdir().unwrap();
    let pdir = root.path().join("p0");
    let jdir = root.path().join(JOURNAL_DIR);
    let mut s = open_store(&pdir, o);
    s.begin_epoch(1).unwrap();
    for (i, k) in keys().iter().enumerate() {
        s.put(k, format!("old value {i}").as_bytes(), None).unwrap();
    }
    s.commit().unwrap(); // Durability::Always: fsynced
    assert!(!s.has_unsynced());

    let seg = active_segment(&s);
    let len_before = file_len(&seg);
    let end_before = s.log_end();
    s.set_journal_tap(true);
    s.begin_epoch(2).unwrap();
    let ks = keys();
    for (i, k) in ks.iter().enumerate() {
        match i % 5 {
            0 | 1 => {
                s.put(
                    k,
                    format!("new value {i} {}", "x".repeat(i * 7)).as_bytes(),
                    None,
                )
                .unwrap();
            }
            2 => {
                assert!(s.delete(k).unwrap());
            }
            3 => {
                assert!(s.set_expire(k, Some(LATER + i as u64)).unwrap());
            }
            _ => {
                // Expired already: invisible after the write.
                s.put(k, b"expired", Some(NOW - 1)).unwrap();
            }
        }
    }
    s.put(b"brand new", b"value", Some(LATER)).unwrap();
    // Written to the OS, not fsynced (a reply would wait for the journal's fsync instead).
    assert!(s.commit_write().unwrap());
    assert!(s.has_unsynced());

    let journaled = s.journal_records().to_vec();
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    assert_eq!(stage(&mut j, 0, &journaled), Staged::Staged);
    s.clear_journal_records();
    write_and_sync(&mut j);

    let mut all = ks.clone();
    all.push(b"brand new".to_vec());
    let want = all
        .iter()
        .map(|k| (k.clone(), s.get(k).unwrap()))
        .collect::<BTreeMap<_, _>>();
    let ttl = all
        .iter()
        .map(|k| (k.clone(), s.ttl_ms(k)))
        .collect::<BTreeMap<_, _>>();
    let epochs = s
        .epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_lsn))
        .collect();
    let end_after = s.log_end();
    assert_eq!(
        decode_all(&journaled).len() as u64,
        end_after - end_before,
        "one journaled record per write"
    );
    Crashed {
        root,
        pdir,
        jdir,
        seg,
        len_before,
        end_before,
        end_after,
        journaled,
        want,
        ttl,
        epochs,
    }
}

fn check_state(s: &Store, c: &Crashed, ctx: &str) {
    for (k, v) in &c.want {
        assert_eq!(
            &s.get(k).unwrap(),
            v,
            "{ctx}: get({:?})",
            String::from_utf8_lossy(k)
        );
        assert_eq!(
            s.ttl_ms(k),
            c.ttl[k],
            "{ctx}: ttl({:?})",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(s.log_end(), c.end_after, "{ctx}: log end");
    let epochs: Vec<(u32, u64)> = s
        .epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_lsn))
        .collect();
    assert_eq!(epochs, c.epochs, "{ctx}: leader epochs");
    assert_eq!(s.epoch(), 2, "{ctx}: epoch");
    // The replayed log reads back as the journaled records.
    assert_eq!(
        s.read_records(c.end_before, usize::MAX).unwrap().bytes,
        c.journaled,
        "{ctx}: log records"
    );
}

#[test]
fn a_log_that_lost_its_unsynced_tail_gets_every_journaled_record_back_once() {
    let c = crash_setup(opts());
    assert_eq!(replayed(&c.jdir).get(&0), Some(&c.journaled));

    // Power loss: the log's unsynced tail is gone.
    set_file_len(&c.seg, c.len_before);
    let mut s = open_store(&c.pdir, opts());
    assert_eq!(s.log_end(), c.end_before);
    assert_eq!(s.get(b"key:00").unwrap().unwrap(), b"old value 0");
    assert_eq!(s.get(b"brand new").unwrap(), None);
    // The epoch that began past the surviving log end is gone too.
    assert_eq!(s.epoch(), 1);

    let recs = replayed(&c.jdir);
    // The same records twice (as if both files held them): each is appended once.
    let doubled = [&recs[&0][..], &recs[&0][..]].concat();
    let n = s.replay_journal(&doubled).unwrap();
    assert_eq!(n, c.end_after - c.end_before);
    assert!(!s.has_unsynced(), "replay fsyncs what it appended");
    check_state(&s, &c, "after replay");
    // Idempotent: a second replay appends nothing.
    assert_eq!(s.replay_journal(&recs[&0]).unwrap(), 0);
    check_state(&s, &c, "after a second replay");
    drop(s);

    let s = open_store(&c.pdir, opts());
    check_state(&s, &c, "reopened after replay");
    drop(c.root);
}

#[test]
fn a_log_cut_mid_way_through_the_journaled_records_gets_only_the_missing_ones() {
    let c = crash_setup(opts());
    let lens = record_lens(&c.journaled);
    for keep in [1usize, lens.len() / 2, lens.len() - 1] {
        // Copy the crashed partition so every cut starts from the same files.
        let copy = tempfile::tempdir().unwrap();
        for e in fs::read_dir(&c.pdir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
            }
        }
        let seg = copy.path().join(c.seg.file_name().unwrap());
        // A cut on a record boundary, then one in the middle of the next record (a torn
        // tail that opening drops).
        let boundary = c.len_before + lens[..keep].iter().sum::<usize>() as u64;
        for (cut, survivors) in [(boundary + 5, keep), (boundary, keep)] {
            set_file_len(&seg, cut);
            let mut s = open_store(copy.path(), opts());
            assert_eq!(s.log_end(), c.end_before + survivors as u64, "cut at {cut}");
            let n = s.replay_journal(&c.journaled).unwrap();
            assert_eq!(n, (lens.len() - survivors) as u64, "cut at {cut}");
            check_state(&s, &c, &format!("cut at {cut}"));
            drop(s);
            // Back to the cut for the next round.
            let s = open_store(copy.path(), opts());
            assert_eq!(s.log_end(), c.end_after);
        }
    }
}

#[test]
fn a_log_that_lost_a_rolled_over_tail_gets_it_back() {
    // Small segments: the journaled writes roll the log several times; the sealed segments
    // are fsynced, only the active one loses its tail.
    let o = Options {
        segment_size: 4096,
        ..opts()
    };
    let c = crash_setup(o.clone());
    let s = open_store(&c.pdir, o.clone());
    let active = active_segment(&s);
    let base = s.active_base();
    drop(s);
    assert_ne!(active, c.seg, "the writes must roll the log");
    assert!(base > c.end_before && base < c.end_after);
    // Torn in the middle of the active segment's first record.
    set_file_len(&active, SEGMENT_HEADER_LEN as u64 + 10);
    let mut s = open_store(&c.pdir, o.clone());
    assert_eq!(s.log_end(), base);
    assert_eq!(s.recovery_report().truncated_tail_bytes, 10);
    let n = s.replay_journal(&replayed(&c.jdir)[&0]).unwrap();
    assert_eq!(n, c.end_after - base);
    check_state(&s, &c, "after replay");
    drop(s);
    let s = open_store(&c.pdir, o);
    check_state(&s, &c, "reopened after replay");
}

/// Found by a black-box run: with a partition's directory deleted, the journal's records (the
/// writes since the last checkpoint) were appended to the empty log after an error line, and
/// the server served the partition without everything before them.
#[test]
fn journaled_records_above_a_log_that_lost_synced_ones_are_refused_unless_repairing() {
    let c = crash_setup(opts());
    assert!(c.end_before > 0);
    let empty = tempfile::tempdir().unwrap();
    let mut s = open_store(empty.path(), opts());
    match s.replay_journal(&c.journaled) {
        Err(WriteError::JournalGap { from, last }) => {
            assert_eq!((from, last), (0, c.end_before - 1))
        }
        other => panic!("replay over a gap: {other:?}"),
    }
    assert_eq!(s.log_end(), 0, "nothing appended");
    drop(s);
    let repair = Options {
        repair: true,
        ..opts()
    };
    let mut s = open_store(empty.path(), repair);
    let n = s.replay_journal(&c.journaled).unwrap();
    assert_eq!(n, c.end_after - c.end_before, "repair keeps the rest");
}

#[test]
fn replaying_into_an_intact_log_appends_nothing() {
    let c = crash_setup(opts());
    let recs = replayed(&c.jdir);
    // The records were handed to the OS: a process crash loses nothing.
    let seg_len = file_len(&c.seg);
    let mut s = open_store(&c.pdir, opts());
    assert_eq!(s.log_end(), c.end_after);
    // Found by a code review: the log the crashed process wrote may be in the page cache
    // only, and the journal that holds it is retired after the replay, so the replay fsyncs
    // the log even when it appends nothing (a reopened tail counts as unsynced).
    assert!(
        s.has_unsynced(),
        "the reopened log's tail is not known to be on disk"
    );
    assert_eq!(s.replay_journal(&recs[&0]).unwrap(), 0);
    assert!(!s.has_unsynced(), "fsynced by the replay");
    assert_eq!(s.replay_journal(&c.journaled[..0]).unwrap(), 0);
    assert!(!s.has_unsynced());
    check_state(&s, &c, "intact");
    drop(s);
    assert_eq!(file_len(&c.seg), seg_len, "nothing was appended to the log");

    // Records only partly in the log: those below the log end are skipped even when the
    // journal holds them again later (e.g. the other file of a switch).
    let mut s = open_store(&c.pdir, opts());
    let doubled = [&c.journaled[..], &c.journaled[..]].concat();
    assert_eq!(s.replay_journal(&doubled).unwrap(), 0);
    check_state(&s, &c, "doubled");
}

#[test]
fn after_a_truncation_and_a_reset_cut_records_never_come_back() {
    let root = tempfile::tempdir().unwrap();
    let pdir = root.path().join("p0");
    let jdir = root.path().join(JOURNAL_DIR);
    let mut s = open_store(&pdir, opts());
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    s.set_journal_tap(true);
    for i in 0..30u32 {
        s.put(format!("k{i}").as_bytes(), b"first", None).unwrap();
    }
    s.commit_write().unwrap();
    assert_eq!(stage(&mut j, 0, s.journal_records()), Staged::Staged);
    s.clear_journal_records();
    write_and_sync(&mut j);

    // A follower cuts its log at 20 (the cut is fsynced by `truncate_to`).
    s.truncate_to(20).unwrap();
    assert_eq!(s.log_end(), 20);
    // Without a reset the journal still holds the cut records: a replay cannot tell them
    // from lost ones (this is why the owner must reset it).
    {
        let copy = tempfile::tempdir().unwrap();
        s.sync().unwrap();
        for e in fs::read_dir(&pdir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
            }
        }
        let mut c = open_store(copy.path(), opts());
        assert_eq!(c.log_end(), 20);
        assert_eq!(c.replay_journal(&replayed(&jdir)[&0]).unwrap(), 10);
    }
    s.sync().unwrap();
    j.reset().unwrap();
    assert!(replayed(&jdir).is_empty());

    // New records reuse the cut LSNs; they are journaled and then lost from the log.
    let seg = active_segment(&s);
    let len = file_len(&seg);
    for i in 20..25u32 {
        s.put(format!("k{i}").as_bytes(), b"second", None).unwrap();
    }
    s.commit_write().unwrap();
    assert_eq!(stage(&mut j, 0, s.journal_records()), Staged::Staged);
    s.clear_journal_records();
    write_and_sync(&mut j);
    drop(s);
    set_file_len(&seg, len);
    let mut s = open_store(&pdir, opts());
    assert_eq!(s.log_end(), 20);
    assert_eq!(s.replay_journal(&replayed(&jdir)[&0]).unwrap(), 5);
    assert_eq!(s.log_end(), 25);
    for i in 0..30u32 {
        let want: Option<&[u8]> = match i {
            0..20 => Some(b"first"),
            20..25 => Some(b"second"),
            _ => None,
        };
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
            want,
            "k{i}"
        );
    }
}

// ------------------------------------------------------------------ frames that don't count

#[test]
fn frames_from_before_a_reset_or_an_open_do_not_replay() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let (a, b, c) = (payload(1, 100), payload(2, 200), payload(3, 300));
    assert_eq!(stage(&mut j, 0, &a), Staged::Staged);
    assert_eq!(stage(&mut j, 1, &b), Staged::Staged);
    write_and_sync(&mut j);
    assert_eq!(read_dir(&jdir).frames, 2);

    let seq = j.seq();
    j.reset().unwrap();
    assert!(j.seq() > seq);
    let rep = read_dir(&jdir);
    assert!(rep.partitions.is_empty(), "{:?}", rep.partitions.keys());
    assert_eq!((rep.frames, rep.bytes), (0, 0));
    assert_eq!(rep.files.len(), 2);

    // After a reset frames start over; the new one is all there is, and the old frames past
    // it (of another generation) stay invisible.
    assert_eq!(stage(&mut j, 0, &c), Staged::Staged);
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!(rep.frames, 1);
    assert_eq!(rep.partitions.len(), 1);
    assert_eq!(rep.partitions[&0], c);

    // Frames staged but not written are dropped by a reset.
    assert_eq!(stage(&mut j, 0, &a), Staged::Staged);
    j.reset().unwrap();
    write_and_sync(&mut j);
    assert!(replayed(&jdir).is_empty());

    // A fresh open over files with valid frames gives them new headers.
    assert_eq!(stage(&mut j, 2, &b), Staged::Staged);
    write_and_sync(&mut j);
    assert_eq!(replayed(&jdir)[&2], b);
    drop(j);
    assert_eq!(
        replayed(&jdir)[&2],
        b,
        "dropping a journal keeps its frames"
    );
    let j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    assert!(replayed(&jdir).is_empty());
    drop(j);

    // Reopening with another size rebuilds the files.
    let j = open_journal(&jdir, 0, 2 * MIN_FILE_SIZE);
    for i in 0..2 {
        assert_eq!(file_len(&journal_path(&jdir, 0, i)), 2 * MIN_FILE_SIZE);
    }
    assert!(replayed(&jdir).is_empty());
    drop(j);

    match Journal::open(&jdir, 0, MIN_FILE_SIZE - 1) {
        Err(JournalError::TooSmall(n)) => assert_eq!(n, MIN_FILE_SIZE - 1),
        other => panic!("a too small journal opened: {other:?}"),
    }
}

#[test]
fn a_reset_after_a_switch_hides_both_files() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let p = payload(9, 10_000);
    let mut switched = false;
    for _ in 0..20 {
        if stage(&mut j, 0, &p) == Staged::Switched {
            switched = true;
            break;
        }
    }
    assert!(switched);
    write_and_sync(&mut j);
    assert!(read_dir(&jdir).frames > 6);
    j.reset().unwrap();
    assert!(replayed(&jdir).is_empty());
    // Both files are free again: filling the active one switches at once.
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        outcomes.push(stage(&mut j, 0, &p));
    }
    write_and_sync(&mut j);
    assert_eq!(
        outcomes.iter().filter(|&&o| o == Staged::Switched).count(),
        1
    );
    assert!(!outcomes.contains(&Staged::NoRoom));
    assert_eq!(replayed(&jdir)[&0], p.repeat(8));
}

#[test]
fn a_torn_frame_ends_the_file() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let (a, b, c) = (payload(1, 500), payload(2, 600), payload(3, 700));
    assert_eq!(stage(&mut j, 0, &a), Staged::Staged);
    write_and_sync(&mut j);
    assert_eq!(stage(&mut j, 1, &b), Staged::Staged);
    assert_eq!(stage(&mut j, 0, &c), Staged::Staged);
    write_and_sync(&mut j);
    let path = journal_path(&jdir, 0, 0);
    let original = fs::read(&path).unwrap();
    let second = HEADER_LEN + (FRAME_HEADER_LEN + a.len()) as u64;
    let rep = read_dir(&jdir);
    assert_eq!(rep.frames, 3);
    assert_eq!(rep.partitions[&0], [&a[..], &c[..]].concat());

    // Each corruption alone: a byte of the second frame's payload, of its header (length,
    // partition, generation, CRC), or a write of it torn short.
    let spots = [
        second + FRAME_HEADER_LEN as u64 + 123,
        second + FRAME_HEADER_LEN as u64 + b.len() as u64 - 1,
        second,
        second + 5,
        second + 9,
        second + 17,
    ];
    for at in spots {
        fs::write(&path, &original).unwrap();
        flip_byte(&path, at);
        let rep = read_dir(&jdir);
        assert_eq!(rep.frames, 1, "byte {at} flipped");
        assert_eq!(rep.partitions.len(), 1, "byte {at} flipped");
        assert_eq!(rep.partitions[&0], a, "byte {at} flipped");
    }
    let mut torn = original.clone();
    let end_of_b = (second as usize) + FRAME_HEADER_LEN + b.len();
    torn[end_of_b - 50..end_of_b].fill(0);
    fs::write(&path, &torn).unwrap();
    let rep = read_dir(&jdir);
    assert_eq!((rep.frames, rep.partitions.len()), (1, 1));
    assert_eq!(rep.partitions[&0], a);

    // A corrupt file header: none of its frames count.
    fs::write(&path, &original).unwrap();
    flip_byte(&path, 13);
    assert!(replayed(&jdir).is_empty());
    fs::write(&path, &original).unwrap();
    assert_eq!(read_dir(&jdir).frames, 3);
}

// ------------------------------------------------------------------------------ switching

#[test]
fn a_full_file_switches_once_and_then_only_after_a_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let len = 1000;
    let need = (FRAME_HEADER_LEN + len) as u64;
    let per_file = ((MIN_FILE_SIZE - HEADER_LEN) / need) as usize;
    assert!(per_file > 10);

    // Partition 0 gets even frames, partition 5 odd ones; everything staged since the
    // last header of the file now left behind.
    let mut staged: Vec<(u32, Vec<u8>)> = Vec::new();
    let seq0 = j.seq();
    let mut i = 0;
    let switch_at = loop {
        let p = payload(i, len);
        let part = if i.is_multiple_of(2) { 0 } else { 5 };
        let o = stage(&mut j, part, &p);
        staged.push((part, p));
        if i % 3 == 2 {
            write(&mut j);
        }
        if o == Staged::Switched {
            break i;
        }
        assert_eq!(o, Staged::Staged, "frame {i}");
        assert_eq!(j.seq(), seq0);
        i += 1;
    };
    assert_eq!(
        switch_at, per_file,
        "switched on the first frame that did not fit"
    );
    assert_eq!(j.seq(), seq0 + 1);
    write_and_sync(&mut j);
    let expect = |frames: &[(u32, Vec<u8>)]| {
        let mut m: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (part, p) in frames {
            m.entry(*part).or_default().extend_from_slice(p);
        }
        m
    };
    let rep = read_dir(&jdir);
    assert_eq!(
        rep.partitions,
        expect(&staged),
        "old file first, then the new one"
    );
    assert_eq!(rep.frames, staged.len() as u64);

    // Fill the new file; the switch after that is refused: the old file is not checkpointed.
    let mut i = staged.len();
    loop {
        let p = payload(i, len);
        let part = if i.is_multiple_of(2) { 0 } else { 5 };
        let o = stage(&mut j, part, &p);
        if o == Staged::NoRoom {
            break;
        }
        assert_eq!(o, Staged::Staged, "frame {i}");
        staged.push((part, p));
        i += 1;
    }
    write_and_sync(&mut j);
    assert_eq!(staged.len(), 2 * per_file, "both files full");
    let seq1 = j.seq();
    assert_eq!(seq1, seq0 + 1);
    assert_eq!(read_dir(&jdir).partitions, expect(&staged));
    // Still refused, and a checkpoint of an older sequence does not free it.
    assert_eq!(stage(&mut j, 0, &payload(i, len)), Staged::NoRoom);
    j.checkpointed(seq0);
    assert_eq!(stage(&mut j, 0, &payload(i, len)), Staged::NoRoom);
    // Small frames that still fit are fine.
    let room = MIN_FILE_SIZE - HEADER_LEN - per_file as u64 * need;
    if room > FRAME_HEADER_LEN as u64 {
        let small = payload(i, (room - FRAME_HEADER_LEN as u64) as usize);
        assert_eq!(stage(&mut j, 5, &small), Staged::Staged);
        staged.push((5, small));
        write_and_sync(&mut j);
    }
    assert_eq!(read_dir(&jdir).partitions, expect(&staged));

    // After the checkpoint the old file is overwritten: what remains is the second file's
    // frames, then the new frame in the first file.
    j.checkpointed(j.seq());
    let p = payload(i, len);
    assert_eq!(stage(&mut j, 5, &p), Staged::Switched);
    assert_eq!(j.seq(), seq1 + 1);
    write_and_sync(&mut j);
    staged.drain(..per_file);
    staged.push((5, p));
    let rep = read_dir(&jdir);
    assert_eq!(rep.partitions, expect(&staged));
    assert_eq!(rep.frames, staged.len() as u64);
    // The overwritten file still has frames of its earlier use right after the new one; they
    // are of another generation and do not count.
    let bytes = fs::read(journal_path(&jdir, 0, 0)).unwrap();
    let next = (HEADER_LEN + need) as usize;
    assert_ne!(
        &bytes[next..next + 4],
        &[0u8; 4],
        "old frames are still in the file"
    );
}

#[test]
fn frames_staged_before_a_switch_land_in_the_old_file() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let big = payload(1, 40_000);
    let a = payload(2, 15_000);
    let b = payload(3, 15_000);
    assert_eq!(stage(&mut j, 0, &big), Staged::Staged);
    write_and_sync(&mut j);
    // Neither written before the switch: `a` fits in the old file, `b` does not.
    assert_eq!(stage(&mut j, 1, &a), Staged::Staged);
    assert_eq!(stage(&mut j, 1, &b), Staged::Switched);
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!(rep.frames, 3);
    assert_eq!(rep.partitions[&0], big);
    assert_eq!(rep.partitions[&1], [&a[..], &b[..]].concat());
    let old = fs::read(journal_path(&jdir, 0, 0)).unwrap();
    let at = (HEADER_LEN as usize) + 2 * FRAME_HEADER_LEN + big.len();
    assert_eq!(&old[at..at + a.len()], &a[..]);
    let new = fs::read(journal_path(&jdir, 0, 1)).unwrap();
    let at = HEADER_LEN as usize + FRAME_HEADER_LEN;
    assert_eq!(&new[at..at + b.len()], &b[..]);
}

#[test]
fn frame_size_limits_and_empty_stages() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    let mut j = open_journal(&jdir, 0, MIN_FILE_SIZE);
    let max = (MIN_FILE_SIZE - HEADER_LEN) as usize - FRAME_HEADER_LEN;
    let seq = j.seq();

    // Bigger than a whole file: refused without switching, even with the other file free.
    assert_eq!(stage(&mut j, 0, &payload(0, max + 1)), Staged::NoRoom);
    assert_eq!(stage(&mut j, 0, &payload(0, 10 << 20)), Staged::NoRoom);
    assert_eq!(j.seq(), seq);
    // Empty: nothing is framed.
    assert_eq!(stage(&mut j, 0, &[]), Staged::Staged);
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!((rep.frames, rep.partitions.len()), (0, 0));

    // Exactly a file's worth fits, in the first file.
    let whole = payload(1, max);
    assert_eq!(stage(&mut j, 3, &whole), Staged::Staged);
    assert_eq!(j.seq(), seq);
    // The file is full: an empty stage still does nothing (no switch).
    assert_eq!(stage(&mut j, 3, &[]), Staged::Staged);
    assert_eq!(j.seq(), seq);
    write_and_sync(&mut j);
    assert_eq!(replayed(&jdir)[&3], whole);
    // Anything more switches.
    let one = payload(2, 1);
    assert_eq!(stage(&mut j, 3, &one), Staged::Switched);
    assert_eq!(j.seq(), seq + 1);
    write_and_sync(&mut j);
    let rep = read_dir(&jdir);
    assert_eq!(rep.frames, 2);
    assert_eq!(rep.partitions[&3], [&whole[..], &one[..]].concat());
}

// ------------------------------------------------------------------ files and directories

#[test]
fn remove_unused_removes_only_workers_past_the_count_and_discard_removes_both_files() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    // Nothing there yet.
    assert_eq!(journal::remove_unused(&jdir, 0).unwrap(), 0);
    let rep = read_dir(&jdir);
    assert!(rep.partitions.is_empty() && rep.files.is_empty());

    let mut js: Vec<Journal> = [0u32, 1, 12]
        .iter()
        .map(|&w| open_journal(&jdir, w, MIN_FILE_SIZE))
        .collect();
    for (i, j) in js.iter_mut().enumerate() {
        assert_eq!(stage(j, i as u32, &payload(i, 50)), Staged::Staged);
        write_and_sync(j);
    }
    fs::write(jdir.join("notes.txt"), b"not a journal").unwrap();
    let rep = read_dir(&jdir);
    assert_eq!(rep.files.len(), 6);
    assert_eq!(rep.frames, 3);
    for i in 0..3usize {
        assert_eq!(rep.partitions[&(i as u32)], payload(i, 50));
    }

    assert_eq!(journal::remove_unused(&jdir, 1).unwrap(), 4);
    for w in [1, 12] {
        for i in 0..2 {
            assert!(!journal_path(&jdir, w, i).exists(), "worker {w} file {i}");
        }
    }
    for i in 0..2 {
        assert!(journal_path(&jdir, 0, i).exists());
    }
    assert!(jdir.join("notes.txt").exists());
    let rep = read_dir(&jdir);
    assert_eq!(rep.files.len(), 2);
    assert_eq!(rep.partitions.len(), 1);
    assert_eq!(rep.partitions[&0], payload(0, 50));
    assert_eq!(journal::remove_unused(&jdir, 1).unwrap(), 0);

    // Discarding removes both files of that worker (already removed ones are fine).
    let mut it = js.into_iter();
    let j0 = it.next().unwrap();
    let j1 = it.next().unwrap();
    j0.discard().unwrap();
    j1.discard().unwrap();
    for w in [0, 1] {
        for i in 0..2 {
            assert!(!journal_path(&jdir, w, i).exists());
        }
    }
    let rep = read_dir(&jdir);
    assert!(rep.files.is_empty() && rep.partitions.is_empty());
    assert!(jdir.join("notes.txt").exists());
}

// ---------------------------------------------------------------------------- model tests

/// Partition ids of the two stores (not their indexes, so a mix-up shows).
const PARTS: [u32; 2] = [3, 11];
const KEYS: [&[u8]; 6] = [b"", b"a", b"b", b"k\0\xff", b"long key of some bytes", b"z"];

#[derive(Clone, Copy, Debug)]
enum Ttl {
    Never,
    Later,
    Past,
}

impl Ttl {
    fn at(self) -> Option<u64> {
        match self {
            Ttl::Never => None,
            Ttl::Later => Some(LATER),
            Ttl::Past => Some(NOW - 1),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        p: usize,
        k: usize,
        len: usize,
        seed: u8,
        ttl: Ttl,
    },
    Delete {
        p: usize,
        k: usize,
    },
    Expire {
        p: usize,
        k: usize,
        ttl: Ttl,
    },
    Clear {
        p: usize,
    },
    /// Ends a turn of the event loop; `checkpoint` says whether a checkpoint a switch asked
    /// for is done at its end or put off.
    EndTurn {
        checkpoint: bool,
    },
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![4 => Just(Ttl::Never), 1 => Just(Ttl::Later), 1 => Just(Ttl::Past)]
}

fn op(max_len: usize, checkpoint: f64) -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..2usize, 0..KEYS.len(), 0..max_len, any::<u8>(), ttl())
            .prop_map(|(p, k, len, seed, ttl)| Op::Put { p, k, len, seed, ttl }),
        3 => (0..2usize, 0..KEYS.len()).prop_map(|(p, k)| Op::Delete { p, k }),
        2 => (0..2usize, 0..KEYS.len(), ttl()).prop_map(|(p, k, ttl)| Op::Expire { p, k, ttl }),
        1 => (0..2usize).prop_map(|p| Op::Clear { p }),
        4 => proptest::bool::weighted(checkpoint).prop_map(|checkpoint| Op::EndTurn { checkpoint }),
    ]
}

type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn live(e: &(Vec<u8>, Option<u64>)) -> bool {
    e.1.is_none_or(|t| t > NOW)
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (seed as usize).wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8))
        .map(|b| b as u8)
        .collect()
}

fn check_model(s: &Store, m: &Model, ctx: &str) {
    for k in KEYS {
        let want = m.get(k).filter(|e| live(e));
        assert_eq!(
            s.get(k).unwrap().as_ref(),
            want.map(|e| &e.0),
            "{ctx}: get({k:?})"
        );
        assert_eq!(
            s.meta(k).map(|m| m.expire),
            want.map(|e| e.1),
            "{ctx}: expiry of {k:?}"
        );
    }
}

fn scratch_dir() -> tempfile::TempDir {
    // Journal files are preallocated and fsynced for every case: a tmpfs keeps this fast.
    if Path::new("/dev/shm").is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("skv-journal-")
            .tempdir_in("/dev/shm")
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// Two partitions written turn by turn the way a worker does with `fsync = always` and a
/// journal: every turn hands the logs' records to the OS, journals them and fsyncs the
/// journal; a switch asks for a checkpoint (every log fsynced), which may be put off; a
/// partition whose records get no room fsyncs its own log.
struct Rig {
    root: tempfile::TempDir,
    jdir: PathBuf,
    stores: Vec<Store>,
    models: Vec<Model>,
    journal: Journal,
    /// Per store, the active segment base and file length last known fsynced.
    durable: Vec<(u64, u64)>,
    checkpoint_owed: bool,
    switches: u32,
    no_room: u32,
}

fn pdir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("p{}", PARTS[i]))
}

fn store_opts() -> Options {
    Options {
        segment_size: 4096,
        ..opts()
    }
}

fn synced_mark(s: &Store) -> (u64, u64) {
    (s.active_base(), file_len(&active_segment(s)))
}

impl Rig {
    fn new(journal_size: u64) -> Rig {
        let root = scratch_dir();
        let jdir = root.path().join(JOURNAL_DIR);
        let mut stores = Vec::new();
        let mut durable = Vec::new();
        for i in 0..PARTS.len() {
            let mut s = open_store(&pdir(root.path(), i), store_opts());
            s.set_journal_tap(true);
            durable.push(synced_mark(&s));
            stores.push(s);
        }
        let journal = open_journal(&jdir, 0, journal_size);
        Rig {
            root,
            jdir,
            stores,
            models: vec![Model::new(); PARTS.len()],
            journal,
            durable,
            checkpoint_owed: false,
            switches: 0,
            no_room: 0,
        }
    }

    fn sync_store(&mut self, i: usize) {
        self.stores[i].sync().unwrap();
        self.durable[i] = synced_mark(&self.stores[i]);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put {
                p,
                k,
                len,
                seed,
                ttl,
            } => {
                let v = value(len, seed);
                self.stores[p].put(KEYS[k], &v, ttl.at()).unwrap();
                self.models[p].insert(KEYS[k].to_vec(), (v, ttl.at()));
            }
            Op::Delete { p, k } => {
                let m = &mut self.models[p];
                let was = m.get(KEYS[k]).is_some_and(live);
                assert_eq!(self.stores[p].delete(KEYS[k]).unwrap(), was);
                m.remove(KEYS[k]);
            }
            Op::Expire { p, k, ttl } => {
                let m = &mut self.models[p];
                let visible = m.get(KEYS[k]).is_some_and(live);
                assert_eq!(
                    self.stores[p].set_expire(KEYS[k], ttl.at()).unwrap(),
                    visible
                );
                if let Some(e) = m.get_mut(KEYS[k]).filter(|_| visible) {
                    e.1 = ttl.at();
                }
            }
            Op::Clear { p } => {
                self.stores[p].clear().unwrap();
                self.models[p].clear();
            }
            Op::EndTurn { checkpoint } => self.end_turn(checkpoint),
        }
    }

    fn end_turn(&mut self, checkpoint: bool) {
        for (i, &part) in PARTS.iter().enumerate() {
            self.stores[i].commit_write().unwrap();
            let o = stage(&mut self.journal, part, self.stores[i].journal_records());
            self.stores[i].clear_journal_records();
            match o {
                Staged::Staged => {}
                Staged::Switched => {
                    self.switches += 1;
                    self.checkpoint_owed = true;
                }
                Staged::NoRoom => {
                    self.no_room += 1;
                    self.sync_store(i);
                }
            }
        }
        write(&mut self.journal);
        let seq = self.journal.seq();
        self.journal.sync_ticket().run().unwrap();
        if self.checkpoint_owed && checkpoint {
            for i in 0..self.stores.len() {
                self.sync_store(i);
            }
            self.journal.checkpointed(seq);
            self.checkpoint_owed = false;
        }
        for s in &self.stores {
            assert!(s.journal_records().is_empty());
        }
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
        self.end_turn(false);
    }
}

fn proptest_config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The journal holds every record written (nothing switched it away): replayed into
    /// empty partitions it rebuilds them.
    #[test]
    fn replaying_the_whole_journal_into_empty_stores_rebuilds_the_model(
        ops in proptest::collection::vec(op(300, 0.5), 1..120),
    ) {
        let mut rig = Rig::new(4 * MIN_FILE_SIZE);
        rig.run(&ops);
        prop_assert_eq!(rig.switches, 0);
        prop_assert_eq!(rig.no_room, 0);
        let recs = replayed(&rig.jdir);
        prop_assert!(recs.keys().all(|p| PARTS.contains(p)), "{:?}", recs.keys());
        let fresh = scratch_dir();
        for (i, &part) in PARTS.iter().enumerate() {
            let want = rig.stores[i].log_end();
            let mut s = open_store(&pdir(fresh.path(), i), store_opts());
            let r = recs.get(&part).map_or(&[][..], |v| &v[..]);
            prop_assert_eq!(s.replay_journal(r).unwrap(), want);
            prop_assert_eq!(s.log_end(), want);
            check_model(&s, &rig.models[i], &format!("partition {}", part));
            prop_assert_eq!(s.replay_journal(r).unwrap(), 0);
            drop(s);
            let s = open_store(&pdir(fresh.path(), i), store_opts());
            check_model(&s, &rig.models[i], &format!("partition {} reopened", part));
        }
    }

}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// Small journal files (switches, put-off checkpoints, refused switches): a crash that
    /// cuts every active segment anywhere past what was fsynced loses nothing once the
    /// journal is replayed.
    #[test]
    fn a_crash_cutting_unsynced_log_tails_loses_nothing_after_replay(
        ops in proptest::collection::vec(op(4000, 0.1), 1..200),
        cuts in proptest::collection::vec(0.0..=1.0f64, PARTS.len()),
    ) {
        let mut rig = Rig::new(MIN_FILE_SIZE);
        rig.run(&ops);
        let Rig { root, jdir, stores, models, journal, durable, .. } = rig;
        let ends: Vec<u64> = stores.iter().map(|s| s.log_end()).collect();
        let mut cut_to = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            let seg = active_segment(s);
            let len = file_len(&seg);
            let (base, synced) = durable[i];
            // A roll since the last fsync sealed (fsynced) the segments before the active one.
            let min = if base == s.active_base() { synced } else { SEGMENT_HEADER_LEN as u64 };
            prop_assert!(min <= len);
            cut_to.push((seg, min + ((len - min) as f64 * cuts[i]) as u64));
        }
        drop(stores);
        drop(journal);
        for (seg, len) in &cut_to {
            set_file_len(seg, *len);
        }
        let recs = replayed(&jdir);
        for (i, &part) in PARTS.iter().enumerate() {
            let ctx = format!("partition {} cut to {:?}", part, cut_to[i]);
            let mut s = open_store(&pdir(root.path(), i), store_opts());
            let survived = s.log_end();
            let r = recs.get(&part).map_or(&[][..], |v| &v[..]);
            prop_assert_eq!(s.replay_journal(r).unwrap(), ends[i] - survived, "{}", ctx);
            prop_assert_eq!(s.log_end(), ends[i], "{}", ctx);
            check_model(&s, &models[i], &ctx);
            prop_assert_eq!(s.replay_journal(r).unwrap(), 0, "{}", ctx);
            drop(s);
            let s = open_store(&pdir(root.path(), i), store_opts());
            check_model(&s, &models[i], &format!("{ctx}, reopened"));
        }
    }
}

#[test]
fn invalidate_all_retires_every_frame_and_keeps_the_files_of_remaining_workers() {
    let root = tempfile::tempdir().unwrap();
    let jdir = root.path().join(JOURNAL_DIR);
    // Nothing there: fine.
    journal::invalidate_all(&jdir, 2).unwrap();
    let mut js: Vec<Journal> = [0u32, 1, 3]
        .iter()
        .map(|&w| open_journal(&jdir, w, MIN_FILE_SIZE))
        .collect();
    for (i, j) in js.iter_mut().enumerate() {
        assert_eq!(stage(j, i as u32, &payload(i, 80)), Staged::Staged);
        write_and_sync(j);
    }
    assert_eq!(read_dir(&jdir).frames, 3);
    journal::invalidate_all(&jdir, 2).unwrap();
    let rep = read_dir(&jdir);
    assert_eq!(rep.frames, 0, "no frame replays after invalidation");
    assert!(rep.partitions.is_empty());
    for w in [0, 1] {
        for i in 0..2 {
            let p = journal_path(&jdir, w, i);
            assert_eq!(
                file_len(&p),
                MIN_FILE_SIZE,
                "worker {w} keeps file {i} allocated"
            );
        }
    }
    for i in 0..2 {
        assert!(!journal_path(&jdir, 3, i).exists(), "worker 3 is gone");
    }
    // The remaining workers reuse their files.
    drop(js);
    let mut j = open_journal(&jdir, 1, MIN_FILE_SIZE);
    assert_eq!(stage(&mut j, 9, &payload(9, 40)), Staged::Staged);
    write_and_sync(&mut j);
    assert_eq!(replayed(&jdir)[&9], payload(9, 40));
    // Removing one worker's files is durable and reports whether there were any.
    assert!(journal::remove_worker_files(&jdir, 1).unwrap());
    assert!(!journal::remove_worker_files(&jdir, 1).unwrap());
    assert_eq!(read_dir(&jdir).frames, 0);
}
