//! Recovery points (`simplekv_engine::points`): below how far a log was fsynced, what looks
//! like a torn write (a block of zeros with whole records after it, a tail of zeros, a file
//! cut short) is damage and is refused, or dropped with `repair`; above it the torn tail is
//! cut as before; and a point recorded before a cut of the log matches nothing after it.
use std::fs;
use std::path::{Path, PathBuf};

use simplekv_engine::points::RecoveryPoint;
use simplekv_engine::{Durability, OpenError, Options, Store};

#[path = "support/files.rs"]
mod files;
use files::{copy_dir, records_with_batch_bits, segments, truncate_file};

const BLOCK: u64 = 4096;

fn opts(points: &[RecoveryPoint], repair: bool) -> Options {
    Options {
        segment_size: 1 << 20,
        durability: Durability::Never,
        recovery_points: points.to_vec(),
        repair,
        ..Options::default()
    }
}

fn put_range(s: &mut Store, from: u64, to: u64) {
    for i in from..to {
        let value = format!("value-{i:05}-").repeat(16);
        s.put(format!("k{i:05}").as_bytes(), value.as_bytes(), None)
            .unwrap();
        s.commit().unwrap();
    }
}

/// 100 records fsynced, and the point that says so.
fn synced_log(dir: &Path) -> RecoveryPoint {
    let mut s = Store::open(dir, opts(&[], false)).unwrap();
    put_range(&mut s, 0, 100);
    s.sync().unwrap();
    let (file_id, synced) = s.synced_point().unwrap();
    RecoveryPoint {
        partition: 0,
        file_id,
        synced,
    }
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = segments(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

fn zero(path: &Path, from: u64, len: u64) {
    let mut b = fs::read(path).unwrap();
    let end = (from + len).min(b.len() as u64);
    b[from as usize..end as usize].fill(0);
    fs::write(path, b).unwrap();
}

/// A copy of `src` to damage, in a directory of its own under `root`.
fn copy_of(src: &Path, root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    fs::create_dir_all(&d).unwrap();
    copy_dir(src, &d);
    d
}

#[test]
fn a_zeroed_block_inside_fsynced_records_is_damage_not_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let point = synced_log(&src);
    let len = fs::metadata(only_segment(&src)).unwrap().len();
    assert!(point.synced == len && len > 4 * BLOCK, "{point:?} of {len}");

    // Without a point, a block of zeros with whole records after it is what a power loss
    // leaves of writes never fsynced: cut.
    let bare = copy_of(&src, tmp.path(), "bare");
    zero(&only_segment(&bare), 2 * BLOCK, BLOCK);
    let s = Store::open(&bare, opts(&[], false)).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
    assert!(s.len() < 100);

    // Below the point it is damage: refused, naming where.
    let marked = copy_of(&src, tmp.path(), "marked");
    zero(&only_segment(&marked), 2 * BLOCK, BLOCK);
    match Store::open(&marked, opts(&[point], false)) {
        Err(e @ OpenError::DamageBelowRecoveryPoint { offset, synced, .. }) => {
            assert!((2 * BLOCK - 400..=2 * BLOCK).contains(&offset), "{offset}");
            assert_eq!(synced, point.synced);
            let msg = e.to_string();
            assert!(
                msg.contains("storage.repair") && msg.contains("recovery-points"),
                "{msg}"
            );
        }
        other => panic!("expected damage, got {:?}", other.map(|s| s.len())),
    }
    // A point for another file id (a cut since) says nothing about this file.
    let other = RecoveryPoint {
        file_id: point.file_id ^ 1,
        ..point
    };
    assert!(Store::open(&marked, opts(&[other], false)).is_ok());

    // Repair drops from the damage on, saying so.
    let repaired = copy_of(&src, tmp.path(), "repaired");
    zero(&only_segment(&repaired), 2 * BLOCK, BLOCK);
    let s = Store::open(&repaired, opts(&[point], true)).unwrap();
    assert!(s.recovery_report().repaired_bytes_dropped > 0);
    assert_eq!(s.recovery_report().truncated_tail_bytes, 0);
}

#[test]
fn a_tail_of_zeros_or_a_file_cut_below_the_point_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let point = synced_log(&src);
    let recs = records_with_batch_bits(&only_segment(&src));
    let (mid, ..) = recs[60];

    // The fsynced tail read back as zeros: the device lost it.
    let zeroed = copy_of(&src, tmp.path(), "zeroed");
    zero(&only_segment(&zeroed), mid, u64::MAX / 2);
    assert!(
        Store::open(&zeroed, opts(&[], false)).is_ok(),
        "no point: a torn tail"
    );
    let zeroed = copy_of(&src, tmp.path(), "zeroed2");
    zero(&only_segment(&zeroed), mid, u64::MAX / 2);
    assert!(matches!(
        Store::open(&zeroed, opts(&[point], false)),
        Err(OpenError::DamageBelowRecoveryPoint { offset, .. }) if offset == mid
    ));

    // The file shorter than what was fsynced, ending on a record boundary.
    let short = copy_of(&src, tmp.path(), "short");
    truncate_file(&only_segment(&short), mid);
    match Store::open(&short, opts(&[point], false)) {
        Err(e @ OpenError::LostSyncedBytes { len, synced, .. }) => {
            assert_eq!((len, synced), (mid, point.synced));
            assert!(e.to_string().contains("storage.repair"), "{e}");
        }
        other => panic!("expected lost bytes, got {:?}", other.map(|s| s.len())),
    }
    let mut s = Store::open(&short, opts(&[point], true)).unwrap();
    assert_eq!(s.len(), 60, "repair keeps what is there");
    // Writes over the range the point covered, not fsynced, and torn by a crash: the old
    // point no longer names the file.
    assert_ne!(s.synced_point().unwrap().0, point.file_id);
    put_range(&mut s, 200, 260);
    drop(s);
    zero(&only_segment(&short), mid + 2 * BLOCK, BLOCK);
    let s = Store::open(&short, opts(&[point], false)).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
}

/// Opens the log with `point`, writes keys `from..to` above it without an fsync, closes it;
/// returns its only segment.
fn unsynced_above(dir: &Path, point: RecoveryPoint, from: u64, to: u64) -> PathBuf {
    let mut s = Store::open(dir, opts(&[point], false)).unwrap();
    put_range(&mut s, from, to);
    drop(s);
    only_segment(dir)
}

#[test]
fn a_torn_write_above_the_point_is_still_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let point = synced_log(&dir);
    // Not fsynced: a crash may tear any of it.
    let seg = unsynced_above(&dir, point, 100, 200);
    let first_block_above = point.synced.div_ceil(BLOCK) * BLOCK;
    zero(&seg, first_block_above, BLOCK);
    let s = Store::open(&dir, opts(&[point], false)).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
    assert!((100..200).contains(&s.len()), "{}", s.len());
    assert!(s.get(b"k00099").unwrap().is_some());
}

#[test]
fn a_point_from_before_a_cut_does_not_make_a_later_torn_write_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let point = synced_log(&dir);
    {
        // A follower cuts its log back to LSN 20 and takes new, unsynced records after it.
        let mut s = Store::open(&dir, opts(&[point], false)).unwrap();
        s.truncate_to(20).unwrap();
        assert_ne!(
            s.synced_point().unwrap().0,
            point.file_id,
            "a cut renews the file id"
        );
        put_range(&mut s, 1000, 1080);
    }
    // Torn below the old point, which no longer names this file.
    zero(&only_segment(&dir), 2 * BLOCK, BLOCK);
    let s = Store::open(&dir, opts(&[point], false)).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
}

#[test]
fn a_torn_tail_cut_at_open_renews_the_file_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let point = synced_log(&dir);
    let seg = unsynced_above(&dir, point, 100, 150);
    let len = fs::metadata(&seg).unwrap().len();
    truncate_file(&seg, len - 10);
    let (file_id, _) = {
        let s = Store::open(&dir, opts(&[point], false)).unwrap();
        assert!(s.recovery_report().truncated_tail_bytes > 0);
        s.synced_point().unwrap()
    };
    assert_ne!(file_id, point.file_id);
}

#[test]
fn the_commit_journal_replaying_from_the_damage_takes_precedence_over_the_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let point = synced_log(&dir);
    let recs = records_with_batch_bits(&only_segment(&dir));
    let (mid, lsn, ..) = recs[60];
    zero(&only_segment(&dir), mid, u64::MAX / 2);
    // The journal holds the records from LSN 50 on: cut, the replay restores them.
    let o = Options {
        journaled_from: Some(lsn - 10),
        ..opts(&[point], false)
    };
    let s = Store::open(&dir, o).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
    assert_eq!(s.log_end(), lsn);
}

/// Above the point, records written since the points were last recorded may never have been
/// fsynced: a block of zeros inside one of them, with its header whole and whole records
/// after it, is what a power cut leaves of a large write it tore (a later page persisted, an
/// earlier one not), and it is cut. Without a point the same bytes are refused: a value of
/// zeros with a flipped byte looks alike, and only the point tells that it was not fsynced.
/// (Found by a black-box run: such torn writes made the start refuse.)
#[test]
fn a_zeroed_block_inside_a_big_record_above_the_point_is_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let point = synced_log(&src);
    {
        let mut s = Store::open(&src, opts(&[point], false)).unwrap();
        s.put(b"big", &[b'B'; 40_000], None).unwrap();
        s.commit().unwrap();
        put_range(&mut s, 300, 310);
    }
    let recs = records_with_batch_bits(&only_segment(&src));
    let (big_off, big_lsn, big_len, _) = recs[100];
    assert_eq!(big_off, point.synced, "the big record starts at the point");
    let block = (big_off + 4096).next_multiple_of(BLOCK);
    assert!(block + BLOCK < big_off + big_len);

    let with_point = copy_of(&src, tmp.path(), "with");
    zero(&only_segment(&with_point), block, BLOCK);
    let s = Store::open(&with_point, opts(&[point], false)).unwrap();
    assert_eq!(s.log_end(), big_lsn, "cut at the torn record");
    assert_eq!(s.len(), 100);
    drop(s);

    let without = copy_of(&src, tmp.path(), "without");
    zero(&only_segment(&without), block, BLOCK);
    assert!(matches!(
        Store::open(&without, opts(&[], false)),
        Err(OpenError::CorruptSegment { offset, .. }) if offset == big_off
    ));
}

/// With the commit journal, every record below the first one it holds was fsynced in the log
/// (the journal lets frames go only after the logs are fsynced): damage there is refused
/// before anything is cut, whatever the bytes look like. (It was cut as a torn write, and the
/// replay then refused the gap between the shorter log and the journal, the evidence gone.)
#[test]
fn damage_below_the_first_journaled_record_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    synced_log(&dir);
    let seg = only_segment(&dir);
    let len = fs::metadata(&seg).unwrap().len();
    zero(&seg, 2 * BLOCK, BLOCK);
    let o = Options {
        journaled_from: Some(99),
        ..opts(&[], false)
    };
    assert!(matches!(
        Store::open(&dir, o),
        Err(OpenError::CorruptSegment { .. })
    ));
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "nothing cut");
    // The journal holding the records from the damage on: cut, for the replay to restore.
    let o = Options {
        journaled_from: Some(0),
        ..opts(&[], false)
    };
    let s = Store::open(&dir, o).unwrap();
    assert!(s.recovery_report().truncated_tail_bytes > 0);
}

/// A power cut can take the block that holds the end of the fsynced records and the start of
/// unsynced ones back to what was on disk: the fsynced part, then zeros up to the block's
/// end, with later blocks persisted and whole records in them. Zeros through a record's whole
/// header are no flipped bit (no header is all zeros): a torn write, cut. (Found by a
/// black-box run simulating power cuts: such a start was refused.)
#[test]
fn a_zeroed_header_up_to_its_block_end_above_the_point_is_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let point = synced_log(&dir);
    let seg = unsynced_above(&dir, point, 100, 140);
    let recs = records_with_batch_bits(&seg);
    let (off, lsn, ..) = recs[100];
    assert_eq!(off, point.synced);
    let mut end = off.next_multiple_of(512);
    if end - off < 33 {
        end += 512;
    }
    zero(&seg, off, end - off);
    assert!(
        recs.iter().any(|&(o, ..)| o > end),
        "whole records after it"
    );
    let s = Store::open(&dir, opts(&[point], false)).unwrap();
    assert_eq!(s.log_end(), lsn);
    assert!(s.recovery_report().truncated_tail_bytes > 0);
}
