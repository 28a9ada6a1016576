//! A full disk under a store where the failure can only show when a batch is written (no
//! space reserved ahead): the records it drops take their whole batch with them.
use crate::test_tmpfs::Tmpfs;
use crate::{Durability, Options, Store, WriteError};

/// Options of these tests: 1 MiB segments, fsync always, write batches.
fn opts() -> Options {
    Options {
        segment_size: 1 << 20,
        durability: Durability::Always,
        write_batches: true,
        ..Options::default()
    }
}

/// Found by a black-box run (a full disk, BGREWRITEAOF, fsync always): a roll in the middle of
/// a turn wrote the turn's buffered records, the disk had no room, the reload after the failed
/// write dropped them, and the turn's commit then found nothing left to write and succeeded,
/// so the commands that had written them were answered OK.
#[test]
fn records_a_failed_write_dropped_fail_their_whole_batch() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = opts();
    let mut s = Store::open(&data, opts.clone()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    s.stop_reserving();
    let filler = fs.fill("filler");
    s.put(b"b", &[7u8; 8192], None).expect("applied, buffered");
    assert!(
        s.roll().is_err(),
        "the roll writes the buffer to a full disk"
    );
    std::fs::remove_file(&filler).expect("free");
    s.put(b"c", b"3", None).expect("applied after the failure");
    match s.commit_write() {
        Err(WriteError::BatchDropped(why)) => assert!(why.contains("No space left"), "{why}"),
        other => panic!("commit of a batch that lost records: {other:?}"),
    }
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(
        s.get(b"c").expect("get"),
        None,
        "the rest of the batch goes too"
    );
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    // The next batch is not affected.
    s.put(b"d", b"4", None).expect("put");
    s.commit().expect("commit");
    drop(s);
    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(s.get(b"c").expect("get"), None);
    assert_eq!(s.get(b"d").expect("get").as_deref(), Some(&b"4"[..]));
}

/// Found by a code review: a leader whose first write of its epoch failed reloaded the store,
/// the reload dropped the epoch (it started at the log end, past every record on disk), and
/// the records written next carried the previous epoch, so a returning replica's divergence
/// check (OffsetsForLeaderEpoch) could no longer tell them from the old leader's.
#[test]
fn a_leader_keeps_its_epoch_after_a_failed_write_reloads_the_store() {
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = opts();
    let mut s = Store::open(&data, opts.clone()).expect("open");
    s.begin_epoch(2).expect("epoch 2");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    s.begin_epoch(3).expect("epoch 3");
    s.stop_reserving();
    let filler = fs.fill_leaving("filler", 64 << 10);
    s.put(b"b", &[7u8; 512 << 10], None)
        .expect("applied, buffered");
    assert!(s.commit().is_err(), "the batch does not fit");
    std::fs::remove_file(&filler).expect("free");
    assert_eq!(s.epoch(), 3, "still the leader of epoch 3");
    let end = s.log_end();
    assert_eq!(
        s.end_offset_for_epoch(2),
        Some((2, end)),
        "epoch 2 ends here"
    );
    s.put(b"c", b"3", None).expect("put");
    s.commit().expect("commit");
    let batch = s.read_records(end, 1 << 20).expect("read");
    let epochs: Vec<u32> = crate::record::RecordIter::new(&batch.bytes)
        .map(|(_, r)| r.header.epoch)
        .collect();
    assert_eq!(epochs, [3], "the next record carries the leader's epoch");
    drop(s);
    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.epoch(), 3, "and the checkpoint says so");
}

/// Found by a code review: a merge whose install had no room for the tombstone of a value it
/// found expired returned early, still "running" and with its outputs on disk: no merge of
/// the partition could start again until a restart, and the outputs held the disk.
#[test]
fn a_merge_that_cannot_settle_its_expired_values_is_over_and_leaves_no_files() {
    use std::cell::Cell;
    thread_local! {
        static NOW: Cell<u64> = const { Cell::new(1_000_000) };
    }
    fn clock() -> u64 {
        NOW.with(|n| n.get())
    }
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = Options { clock, ..opts() };
    let mut s = Store::open(&data, opts).expect("open");
    s.put(b"k", b"v", Some(clock() + 10)).expect("put");
    for i in 0..50u32 {
        s.put(format!("o{i}").as_bytes(), &[1u8; 1000], None)
            .expect("put");
        s.put(format!("o{i}").as_bytes(), &[2u8; 1000], None)
            .expect("put");
    }
    s.commit().expect("commit");
    s.roll().expect("roll");
    NOW.with(|n| n.set(n.get() + 20));
    let out = s
        .start_merge(u64::MAX)
        .expect("start")
        .expect("a merge")
        .run()
        .expect("run");
    s.put(b"x", b"1", None).expect("put");
    s.commit().expect("commit");
    s.roll().expect("roll");
    // The active segment's reservation filled up to just below a page boundary.
    s.put(b"y", &vec![3u8; 266_132], None).expect("put");
    s.commit().expect("commit");
    let filler = fs.fill("filler");
    assert!(s.install_merge(out).is_err(), "no room for the tombstone");
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".merge"))
        .collect();
    assert!(leftovers.is_empty(), "outputs left on disk: {leftovers:?}");
    assert!(!s.merge_in_progress());
    std::fs::remove_file(&filler).expect("free");
    assert!(
        s.start_merge(u64::MAX).is_ok(),
        "merges start again once there is room"
    );
}

/// A follower's epochs are its leader's: a fetched batch of a new epoch whose write failed
/// leaves no entry for that epoch after the reload (it is fetched again), or the follower
/// would vouch for records of that epoch it does not have (found by a code review of the
/// fix above, which first kept the latest epoch on every reload).
#[test]
fn a_follower_forgets_the_epoch_of_a_fetched_batch_that_failed() {
    use crate::record::{self, Tag};
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let data = fs.path().join("p");
    let mut s = Store::open(&data, opts()).expect("open");
    s.set_replica(true);
    let mut b = Vec::new();
    record::encode(&mut b, 0, 2, 0, Tag::Put, b"a", b"1");
    s.append_records(&b).expect("append");
    s.commit().expect("commit");
    assert_eq!(s.epoch(), 2);
    s.stop_reserving();
    let filler = fs.fill_leaving("filler", 64 << 10);
    let mut b = Vec::new();
    record::encode(&mut b, 1, 3, 0, Tag::Put, b"b", &[7u8; 512 << 10]);
    let _ = s.append_records(&b);
    assert!(s.commit().is_err(), "the batch does not fit");
    std::fs::remove_file(&filler).expect("free");
    assert_eq!(s.log_end(), 1);
    assert_eq!(s.epoch(), 2, "epoch 3 had no record here");
    assert_eq!(s.end_offset_for_epoch(3), Some((2, 1)));
}
