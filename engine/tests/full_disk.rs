//! A full disk under a store: writes fail with a clear error, nothing acknowledged is lost, and
//! the store works again as soon as there is room, without a restart.
//!
//! Mounts a small tmpfs, which needs root (CI runs as root); elsewhere the test says why it
//! cannot run.
use std::path::Path;

use simplekv_engine::{Durability, Options, Store, WriteError};

#[path = "support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

fn opts() -> Options {
    Options {
        segment_size: 1 << 20,
        durability: Durability::Always,
        ..Options::default()
    }
}

/// A store with 4 MiB segments on `fs` that holds `a` = `1`, committed: its directory, its
/// options and the store.
fn store_holding_a(fs: &Tmpfs) -> (std::path::PathBuf, Options, Store) {
    let data = fs.path().join("p");
    let opts = Options {
        segment_size: 4 << 20,
        ..opts()
    };
    let mut s = Store::open(&data, opts.clone()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    (data, opts, s)
}

/// Found by the chaos runs (disk-full faults): a write that failed for lack of space made the
/// store reload its state, the reload had to rewrite the leader-epoch checkpoint (an epoch began
/// at the log end), that rewrite failed for the same lack of space, and the store refused every
/// write until the process restarted, although the disk had room again a second later. (A write
/// the disk has no room for now fails before it is applied, with no reload.)
#[test]
fn a_store_that_hit_a_full_disk_works_again_once_there_is_room() {
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let (data, opts, mut s) = store_holding_a(&fs);
    // A new leader epoch begins at the log end, as when this replica becomes leader.
    s.begin_epoch(3).expect("begin epoch");
    let start = s.log_end();

    let filler = fs.fill("filler");
    // More than the space the segment has set aside.
    match s.put(b"b", &[7u8; 2 << 20], None) {
        Err(WriteError::Reserve { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}")
        }
        other => panic!("a write on a full disk: {other:?}"),
    }
    s.commit().expect("nothing to write");
    // Nothing of the failed write is visible; what was acknowledged is.
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.log_end(), start);
    assert_eq!(
        s.epoch(),
        3,
        "the epoch that began at the log end is still this one"
    );

    // Room again: the same store takes writes, in the same epoch.
    std::fs::remove_file(&filler).expect("free");
    s.put(b"c", b"3", None)
        .expect("put after the disk has room again");
    s.commit().expect("commit after the disk has room again");
    assert_eq!(s.epoch(), 3);
    drop(s);

    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(s.get(b"c").expect("get").as_deref(), Some(&b"3"[..]));
    assert_eq!(s.end_offset_for_epoch(3), Some((3, s.log_end())));
    assert_eq!(
        s.epoch_cache().latest().map(|e| (e.epoch, e.start_lsn)),
        Some((3, start))
    );
}

/// A write that failed on the disk itself is reported by `disk_failure` (a leader hands its
/// partitions over on it) until a write goes in or `probe_writes` finds room again; the probe
/// fails while the disk is full, and appends nothing when it succeeds.
#[test]
fn a_write_failed_on_a_full_disk_is_a_disk_failure_until_the_disk_has_room() {
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let (_data, _opts, mut s) = store_holding_a(&fs);
    s.begin_epoch(2).expect("begin epoch");
    assert_eq!(s.disk_failure(), None);

    let filler = fs.fill("filler");
    let refused = s
        .put(b"b", &[7u8; 2 << 20], None)
        .expect_err("a write on a full disk");
    let failure = s.disk_failure().expect("a disk failure").to_string();
    assert!(failure.contains("No space left"), "{failure}");
    assert!(refused.to_string().contains("No space left"), "{refused}");
    // A commit with nothing to write does not end it.
    s.commit().expect("nothing to write");
    assert!(s.disk_failure().is_some());
    match s.probe_writes(1 << 20) {
        Err(WriteError::Reserve { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}")
        }
        other => panic!("a probe on a full disk: {other:?}"),
    }
    assert!(s.disk_failure().is_some(), "a failed probe ends nothing");
    // Room for small writes is not room for the one that failed: a probe asks for as much.
    std::fs::remove_file(&filler).expect("free");
    let filler = fs.fill_leaving("filler", 1 << 20);
    assert!(
        s.probe_writes(64 << 10).is_err(),
        "1 MiB free, 2 MiB failed"
    );
    assert!(s.disk_failure().is_some());

    std::fs::remove_file(&filler).expect("free");
    let end = s.log_end();
    s.probe_writes(1 << 20).expect("the disk has room again");
    assert_eq!(s.disk_failure(), None);
    assert_eq!(s.log_end(), end, "a probe appends nothing");
    assert_eq!(s.end_offset_for_epoch(2), Some((2, end)));

    // A write that goes in ends a disk failure too, and so does a leader epoch that begins
    // (a failure met as follower says nothing of the leadership).
    let filler = fs.fill("filler");
    // (More than the probe set aside.)
    assert!(s.put(b"c", &[7u8; 3 << 20], None).is_err());
    assert!(s.disk_failure().is_some());
    std::fs::remove_file(&filler).expect("free");
    s.put(b"c", b"3", None).expect("put");
    s.commit().expect("commit");
    assert_eq!(s.disk_failure(), None);
    let filler = fs.fill("filler");
    assert!(s.put(b"d", &[7u8; 3 << 20], None).is_err());
    std::fs::remove_file(&filler).expect("free");
    s.begin_epoch(3).expect("begin epoch");
    assert_eq!(s.disk_failure(), None);
}

/// Found by a black-box run: a roll (BGREWRITEAOF) on a full disk created the new segment but
/// could not write its header, and the empty file stayed between segments once the log went
/// on; every restart then refused the partition ("shorter than the header").
#[test]
fn a_roll_that_failed_on_a_full_disk_leaves_no_file_and_the_store_reopens() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let data = fs.path().join("p");
    let mut s = Store::open(&data, opts()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    let filler = fs.fill("filler");
    let segments = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".log"))
            .collect();
        v.sort();
        v
    };
    // The segment's records use up the space it set aside (within a page: sealing it frees
    // nothing the new segment could take).
    let mut n = 0;
    for size in [64 << 10, 4 << 10, 256] {
        while s
            .put(format!("fill{n}").as_bytes(), &vec![1u8; size], None)
            .is_ok()
        {
            n += 1;
        }
    }
    s.commit()
        .expect("the records within the space set aside are written");
    let before = segments(&data);
    assert!(s.roll().is_err(), "a roll on a full disk fails");
    assert_eq!(segments(&data), before, "the failed roll left no file");
    std::fs::remove_file(&filler).expect("free");
    // Hint files are written in the background as segments close: the one that could not
    // close gets none (a hint of its records so far, found after a later segment, once hid
    // the records it took after the failed roll).
    for job in s.take_hint_jobs() {
        job.run().expect("hint");
    }
    // The log goes on, and rolls again, once there is room.
    s.put(b"b", b"2", None)
        .expect("put after the disk has room again");
    s.commit().expect("commit");
    s.roll().expect("roll");
    s.put(b"c", b"3", None).expect("put");
    s.commit().expect("commit");
    // As after a crash before the hint of the segment closed by the roll was written.
    drop(s);
    // A file left by an older build in the same place (shorter than a header, between
    // segments) is dropped on open, as it holds no record.
    let stray = data.join("00000000000000000001.log");
    std::fs::write(&stray, b"").expect("stray");
    let s = Store::open(&data, opts()).expect("reopen");
    for (k, v) in [(&b"a"[..], &b"1"[..]), (b"b", b"2"), (b"c", b"3")] {
        assert_eq!(s.get(k).expect("get").as_deref(), Some(v));
    }
    assert!(!stray.exists());
}

/// Found by a black-box run: on a full disk a SET failed when its turn's records were written,
/// after a GET in the same pipeline had already returned its value (and a DEL after it had
/// found the key), and the store then went back to the value on disk. A write is now given its
/// disk space before it is applied: what the disk has room for is written whatever else fills
/// the disk meanwhile, and what it has no room for fails at once, seen by nobody.
#[test]
fn a_write_applied_on_a_full_disk_is_one_the_disk_has_room_for() {
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let (data, opts, mut s) = store_holding_a(&fs);
    let filler = fs.fill("filler");
    // Within the space set aside by the first write: applied, and written.
    s.put(b"b", &[7u8; 64 << 10], None)
        .expect("a write the segment has room for");
    assert_eq!(s.get(b"b").expect("get").map(|v| v.len()), Some(64 << 10));
    s.commit().expect("its batch is written on the full disk");
    // A command's records get their room together, before the first is applied.
    let big = vec![9u8; 600 << 10];
    let pairs: [(&[u8], &[u8]); 3] = [(b"x", &big), (b"y", &big), (b"z", b"small")];
    assert!(
        s.make_room_for(&pairs, &[]).is_err(),
        "1.2 MiB more than the space set aside"
    );
    assert!(s.get(b"x").expect("get").is_none());
    s.make_room_for(&pairs[2..], &[b"a"])
        .expect("room for a small record and a tombstone");
    s.put(b"z", b"small", None).expect("put");
    assert!(s.delete(b"a").expect("delete"));
    s.commit().expect("commit");
    drop(s);
    std::fs::remove_file(&filler).expect("free");
    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.get(b"a").expect("get"), None);
    assert_eq!(s.get(b"b").expect("get").map(|v| v.len()), Some(64 << 10));
    assert_eq!(s.get(b"z").expect("get").as_deref(), Some(&b"small"[..]));
    assert!(s.get(b"x").expect("get").is_none());
}

/// The space an active segment sets aside is given back when the store closes (found by a
/// black-box run: after a clean restart every partition's log kept 1 MiB past its end).
#[test]
fn a_closed_store_gives_back_the_space_its_log_set_aside() {
    let _serial = tmpfs::serial();
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("p");
    let mut s = Store::open(&data, opts()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    let seg = std::fs::read_dir(&data)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let allocated = || std::fs::metadata(&seg).expect("metadata").blocks() * 512;
    if allocated() < 128 << 10 {
        eprintln!("skipped: this file system sets no space aside (no fallocate)");
        return;
    }
    drop(s);
    assert!(
        allocated() < 64 << 10,
        "{} bytes still allocated",
        allocated()
    );
    let s = Store::open(&data, opts()).expect("reopen");
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
}

/// A follower given a write batch of its leader's on a full disk takes all of it or none of
/// it: a log ending inside a batch loses that batch's first records at the next open
/// (recovery drops an unfinished batch), after the leader counted them as replicated. It
/// used to get room record by record and keep the records the disk had room for.
#[test]
fn a_follower_on_a_full_disk_takes_a_leaders_write_batch_whole_or_not_at_all() {
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let batched = Options {
        write_batches: true,
        ..opts()
    };
    let mut leader = Store::open(leader_dir.path(), batched.clone()).expect("open leader");
    leader.put(b"a", b"1", None).expect("put");
    leader.commit().expect("commit");
    let first = leader.log_end();
    // One command's three records: one write batch of 300 KiB, more than the 256 KiB a
    // segment sets aside at a time.
    let big = vec![5u8; 100 << 10];
    for k in [&b"x1"[..], b"x2", b"x3"] {
        leader.put(k, &big, None).expect("put");
    }
    leader.commit().expect("commit");
    let end = leader.log_end();

    // The follower has the first batch; then the disk fills up.
    let data = fs.path().join("p");
    let mut follower = Store::open(&data, batched.clone()).expect("open follower");
    let one = leader.read_records(0, 1).expect("read the first batch");
    assert_eq!(one.next_lsn, first);
    follower.append_records(&one.bytes).expect("first batch");
    follower.commit().expect("commit");
    let filler = fs.fill("filler");
    let rest = leader.read_records(first, 1 << 20).expect("read");
    assert_eq!(rest.next_lsn, end);
    assert!(
        follower.append_records(&rest.bytes).is_err(),
        "300 KiB on a full disk"
    );
    assert_eq!(
        follower.log_end(),
        first,
        "no record of the batch was taken"
    );
    assert_eq!(follower.get(b"x1").expect("get"), None);
    follower.commit().expect("nothing half written");
    drop(follower);
    let follower = Store::open(&data, batched.clone()).expect("reopen");
    assert_eq!(follower.log_end(), first);
    drop(follower);

    // Room again: the batch is taken whole, and kept.
    std::fs::remove_file(&filler).expect("free");
    let mut follower = Store::open(&data, batched.clone()).expect("reopen");
    assert_eq!(
        follower.append_records(&rest.bytes).expect("append"),
        3,
        "all three records"
    );
    follower.commit().expect("commit");
    drop(follower);
    let follower = Store::open(&data, batched).expect("reopen");
    assert_eq!(follower.log_end(), end);
    assert_eq!(
        follower.get(b"x3").expect("get").map(|v| v.len()),
        Some(big.len())
    );
}

/// With less free than `min_free_space`, writes that add data are refused while deletes and
/// merges go on in the space kept for them; once merges freed enough, writes resume by
/// themselves. (Without it, a disk filled by overwrites could not be merged, having no room
/// for the merge's output, and every write, deletes too, was refused until space was freed
/// by hand.)
#[test]
fn under_the_free_space_floor_deletes_and_merges_go_on_and_free_room_for_writes() {
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = Options {
        min_free_space: 3 << 20,
        ..opts()
    };
    let mut s = Store::open(&data, opts.clone()).expect("open");
    let value = |round: u8| vec![round; 8 << 10];
    // 800 KiB live, written four times over: 2.4 MiB of the logs is dead.
    for round in 0..4u8 {
        for k in 0..100 {
            s.put(format!("k{k}").as_bytes(), &value(round), None)
                .expect("put");
        }
        s.commit().expect("commit");
    }
    // 2 MiB left free: under the floor.
    fs.fill_leaving("filler", 2 << 20);

    let mut taken = 0;
    let refused = loop {
        match s.put(format!("new{taken}").as_bytes(), &value(9), None) {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 64, "writes go on under the floor");
    };
    assert!(
        matches!(refused, WriteError::DiskLow { floor, free, .. } if floor == 3 << 20 && free < floor),
        "{refused}"
    );
    assert!(refused.to_string().contains("storage.min_free_space"));
    // The disk works: a refusal under the floor is no disk failure (a leader keeps its
    // partitions for it), and a probe of the disk says it works.
    assert_eq!(s.disk_failure(), None);
    s.probe_writes(0).expect("the disk works under the floor");
    assert_eq!(s.get(format!("new{taken}").as_bytes()).expect("get"), None);
    s.commit().expect("what was taken is written");
    // Deletes go on, past the space set aside before.
    for k in 0..100 {
        assert!(
            s.delete(format!("k{k}").as_bytes())
                .expect("delete under the floor")
        );
    }
    s.commit().expect("commit the deletes");
    assert!(
        s.put(b"still", &value(9), None).is_err(),
        "still under the floor"
    );
    // A merge has room to run, and frees what the overwrites and deletes left dead.
    s.merge_now(u64::MAX).expect("merge under the floor");
    s.put(b"after", &value(7), None)
        .expect("writes resume once the merge freed space");
    s.commit().expect("commit");
    drop(s);
    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.get(b"k0").expect("get"), None);
    assert_eq!(s.get(b"after").expect("get"), Some(value(7)));
    for i in 0..taken {
        assert_eq!(
            s.get(format!("new{i}").as_bytes()).expect("get"),
            Some(value(9))
        );
    }
}

/// Room set aside for a command's records stays theirs: other writes get room past it, and
/// the records it was for are written into it once it is given back to them.
#[test]
fn room_set_aside_is_not_taken_by_other_writes() {
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let (_data, _opts, mut s) = store_holding_a(&fs);
    let _filler = fs.fill("filler");
    let held = vec![4u8; 150 << 10];
    let kept = s
        .set_aside(&[(b"held", &held)], &[])
        .expect("within the 256 KiB the segment set aside");
    assert!(kept > held.len() as u64);
    // 150 KiB kept out of about 256: 120 KiB more does not fit.
    assert!(
        s.put(b"other", &[5u8; 120 << 10], None).is_err(),
        "another write took the room set aside"
    );
    s.put(b"small", &[6u8; 16 << 10], None)
        .expect("a write that fits past the room set aside");
    s.release_set_aside(kept);
    s.put(b"held", &held, None)
        .expect("the records the room was kept for");
    s.commit().expect("commit");
    assert_eq!(s.get(b"held").expect("get"), Some(held));
}

/// Found by a review: the free space floor was checked against the space free before a
/// write, so one large write could take the file system far below it; and room set aside
/// (`set_aside`) was left behind in the closed segment by a roll, so the records it was
/// kept for found the floor in their way after all.
#[test]
fn the_floor_counts_the_write_and_room_set_aside_survives_a_roll() {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("p");
    let free = |p: &Path| simplekv_engine::free_space(p).expect("statvfs");
    let floor = 4 << 20;
    let opts = Options {
        min_free_space: floor,
        ..opts()
    };
    let mut s = Store::open(&data, opts).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    // 2 MiB over the floor.
    fs.fill_leaving("filler", floor + (2 << 20));
    match s.put(b"big", &[1u8; 3 << 20], None) {
        Err(WriteError::DiskLow { .. }) => {}
        other => panic!("3 MiB with 2 MiB over the floor: {other:?}"),
    }
    let held = vec![2u8; 100 << 10];
    let kept = s.set_aside(&[(b"held", &held)], &[]).expect("set aside");
    // Under the floor now (something else took the space), and the segment closed.
    std::fs::write(fs.path().join("more"), vec![1u8; 3 << 20]).expect("more filler");
    assert!(free(fs.path()) < floor);
    // (A delete goes on under the floor; the segment it is in is closed.)
    assert!(s.delete(b"a").expect("delete"));
    s.roll().expect("roll");
    let other = s.put(b"other", b"x", None);
    assert!(
        matches!(other, Err(WriteError::DiskLow { .. })),
        "under the floor: {other:?}, {} free",
        free(fs.path())
    );
    s.release_set_aside(kept);
    s.set_floor_credit(kept);
    s.put(b"held", &held, None)
        .expect("the records the room was set aside for");
    // The credit was the room set aside: what comes after it (past the space reserved
    // already) is checked again.
    let past = s.put(b"past", &[3u8; 2 << 20], None);
    assert!(
        matches!(past, Err(WriteError::DiskLow { .. })),
        "past the room set aside: {past:?}"
    );
    s.set_floor_credit(0);
    s.commit().expect("commit");
    assert_eq!(s.get(b"held").expect("get"), Some(held));
}

/// Found by a black-box run: a merge that failed for want of space left its partly written
/// output behind until a restart, and on a nearly full disk those files took the space the
/// next merges (and writes) needed.
#[test]
fn a_merge_that_fails_on_a_full_disk_leaves_no_file_behind() {
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = Options {
        segment_size: 256 << 10,
        ..opts()
    };
    let mut s = Store::open(&data, opts).expect("open");
    for i in 0..40 {
        s.put(format!("k{i}").as_bytes(), &[7u8; 32 << 10], None)
            .expect("put");
    }
    s.commit().expect("commit");
    s.roll().expect("roll");
    let _filler = fs.fill("filler");
    let job = s.start_merge(u64::MAX).expect("start").expect("a job");
    assert!(job.run().is_err(), "1.25 MiB of live data on a full disk");
    s.abort_merge();
    let left: Vec<String> = std::fs::read_dir(&data)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".merge"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(s.get(b"k3").expect("get").map(|v| v.len()), Some(32 << 10));
}

/// Found by a black-box run: an MSETNX (an MSET too) answered "disk space low" had some of
/// its keys set. Its room was taken for all its records, checked against the floor, but a
/// periodic free space check then ran between its records, with the free space its own room
/// had taken. Records within room a checked write took are not checked again.
#[test]
fn a_command_with_room_near_the_floor_writes_all_its_records() {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("p");
    let floor = 4 << 20;
    let opts = Options {
        min_free_space: floor,
        segment_size: 4 << 20,
        ..opts()
    };
    let mut s = Store::open(&data, opts).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    fs.fill_leaving("filler", floor + (330 << 10));
    let value = vec![4u8; 30 << 10];
    let keys: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &value[..])).collect();
    s.make_room_for(&pairs, &[])
        .expect("room for 300 KiB, 330 KiB over the floor");
    for (k, v) in &pairs {
        s.put(k, v, None)
            .expect("a record within the room its command took");
    }
    s.commit().expect("commit");
}
