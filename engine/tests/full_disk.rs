//! A full disk under a store: writes fail with a clear error, nothing acknowledged is lost, and
//! the store works again as soon as there is room, without a restart.
//!
//! Mounts a small tmpfs, which needs root (CI runs as root); elsewhere the test says why it
//! cannot run.
use std::io::Write;
use std::path::Path;

use simplekv_engine::{Durability, Options, Store, WriteError};

#[path = "support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

/// Writes a file that takes every free byte of the file system.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    let mut size = chunk.len();
    while size > 0 {
        match f.write(&chunk[..size]) {
            Ok(n) if n > 0 => {}
            _ => size /= 2,
        }
    }
}

fn opts() -> Options {
    Options {
        segment_size: 1 << 20,
        durability: Durability::Always,
        ..Options::default()
    }
}

/// Found by the chaos runs (disk-full faults): a write that failed for lack of space made the
/// store reload its state, the reload had to rewrite the leader-epoch checkpoint (an epoch began
/// at the log end), that rewrite failed for the same lack of space, and the store refused every
/// write until the process restarted, although the disk had room again a second later.
#[test]
fn a_store_that_hit_a_full_disk_works_again_once_there_is_room() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let data = fs.path().join("p");
    let filler = fs.path().join("filler");
    let mut s = Store::open(&data, opts()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    // A new leader epoch begins at the log end, as when this replica becomes leader.
    s.begin_epoch(3).expect("begin epoch");
    let start = s.log_end();

    fill(&filler);
    s.put(b"b", &[7u8; 4096], None).expect("buffered");
    match s.commit() {
        Err(WriteError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}")
        }
        other => panic!("commit on a full disk: {other:?}"),
    }
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

    let s = Store::open(&data, opts()).expect("reopen");
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
    let filler = fs.path().join("filler");
    let mut s = Store::open(&data, opts()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    fill(&filler);
    let segments = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".log"))
            .collect();
        v.sort();
        v
    };
    let before = segments(&data);
    assert!(s.roll().is_err(), "a roll on a full disk fails");
    assert_eq!(segments(&data), before, "the failed roll left no file");
    std::fs::remove_file(&filler).expect("free");
    // The log goes on, and rolls again, once there is room.
    s.put(b"b", b"2", None)
        .expect("put after the disk has room again");
    s.commit().expect("commit");
    s.roll().expect("roll");
    s.put(b"c", b"3", None).expect("put");
    s.commit().expect("commit");
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
