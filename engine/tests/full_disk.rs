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
