//! Reproducers of what the fuzz targets in `fuzz/` found in the engine (see `fuzz/README.md`).
//! A test marked `#[ignore = "BUG: ..."]` documents a bug that is not fixed yet; run it with
//! `cargo test -p simplekv-engine --test fuzz_regressions -- --ignored`.
use std::fs::OpenOptions;
use std::path::Path;

use simplekv_engine::segment::{SEGMENT_HEADER_LEN, hint_path, segment_path};
use simplekv_engine::{Durability, Options, Store};

fn opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Never,
        ..Options::default()
    }
}

fn run_hint_jobs(s: &mut Store) {
    for job in s.take_hint_jobs() {
        job.run().unwrap();
    }
}

fn cut(path: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// Found by `segment_recovery` (a last segment cut inside its header, then a write, a roll
/// and a reopen).
///
/// A last segment shorter than its header holds no record and is dropped on open (a crash
/// between creating a segment and writing its header; also what a failed header write on a
/// full disk leaves). The segment before it becomes the active one again, but its hint file,
/// written when it was closed, stays in place with the same file id. Records appended to it
/// after that are not in the hint; once another roll closes it, the next open loads it from
/// the stale hint (file id, count, offsets and LSNs all check) and never scans the appended
/// records: acknowledged writes vanish and the values they replaced come back.
#[test]
fn closed_segment_made_active_again_keeps_a_stale_hint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let mut s = Store::open(d, opts()).unwrap();
        s.put(b"k", b"old", None).unwrap(); // LSN 0, segment 0
        s.roll().unwrap(); // segment 0 closed, segment 1 active
        s.commit().unwrap();
        run_hint_jobs(&mut s); // 0.hint describes segment 0 as it is now
    }
    assert!(hint_path(d, 0).exists());
    // The newest segment is cut inside its header (it has no record yet).
    cut(&segment_path(d, 1), SEGMENT_HEADER_LEN as u64 - 10);
    {
        let mut s = Store::open(d, opts()).unwrap();
        assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        assert!(!segment_path(d, 1).exists(), "the torn segment is dropped");
        // Segment 0 is active again; these records are appended to it.
        s.put(b"k", b"new", None).unwrap(); // LSN 1
        s.put(b"other", b"v", None).unwrap(); // LSN 2
        s.commit().unwrap();
        s.roll().unwrap(); // segment 0 closed again; its new hint job is never run (a crash)
        s.put(b"last", b"x", None).unwrap(); // LSN 3, segment 3
        s.commit().unwrap();
    }
    let s = Store::open(d, opts()).unwrap();
    assert_eq!(
        s.get(b"k").unwrap().as_deref(),
        Some(&b"new"[..]),
        "an overwritten value came back"
    );
    assert_eq!(s.get(b"other").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(s.get(b"last").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(s.log_end(), 4);
    assert_eq!(s.recovery_report().records, 4);
}

/// The same sequence without the stale hint (hint jobs never run): recovery scans the
/// segment and keeps everything. Guards the reproducer above against testing the wrong thing.
#[test]
fn closed_segment_made_active_again_without_a_hint_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let mut s = Store::open(d, opts()).unwrap();
        s.put(b"k", b"old", None).unwrap();
        s.roll().unwrap();
        s.commit().unwrap();
    }
    assert!(!hint_path(d, 0).exists());
    cut(&segment_path(d, 1), SEGMENT_HEADER_LEN as u64 - 10);
    {
        let mut s = Store::open(d, opts()).unwrap();
        s.put(b"k", b"new", None).unwrap();
        s.put(b"other", b"v", None).unwrap();
        s.commit().unwrap();
        s.roll().unwrap();
        s.put(b"last", b"x", None).unwrap();
        s.commit().unwrap();
    }
    let s = Store::open(d, opts()).unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(s.get(b"other").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(s.get(b"last").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(s.log_end(), 4);
}
