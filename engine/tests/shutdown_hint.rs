//! Shutdown hints: a clean shutdown describes each active segment so that the next start loads
//! it without reading values. The state loaded from one is exactly the state a scan loads;
//! one that does not describe its segment exactly (stale, damaged, for another segment) is
//! never used; opening removes every one before anything is written.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use simplekv_engine::points::RecoveryPoint;
use simplekv_engine::{Durability, OpenError, Options, Store, StoreStats};

#[path = "support/files.rs"]
#[allow(dead_code)]
mod files;
use files::{copy_dir, segments};

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000_000) };
}

fn clock() -> u64 {
    NOW.with(|n| n.get())
}

fn opts() -> Options {
    Options {
        segment_size: 64 << 10,
        durability: Durability::EverySec,
        write_batches: true,
        clock,
        ..Options::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    let len = ((i * 7 + round * 13) % 90) as usize;
    (0..len)
        .map(|j| (i as usize * 31 + j * 17 + round as usize) as u8)
        .collect()
}

/// Visible state: key -> (value, absolute expiry).
type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Visible state, with each key's expiry, and the figures recovery rebuilds (dead bytes
/// included: a merge decides on them).
fn dump(s: &Store) -> (State, StoreStats) {
    let mut keys = Vec::new();
    let mut c = 0;
    loop {
        c = s.scan(c, 50, |k| keys.push(k.to_vec()));
        if c == 0 {
            break;
        }
    }
    let state = keys
        .into_iter()
        .map(|k| {
            let v = s.get(&k).unwrap().expect("scanned key has a value");
            let e = s.meta(&k).expect("scanned key has metadata").expire;
            (k, (v, e))
        })
        .collect();
    (state, s.stats())
}

/// Puts, overwrites, deletes and expiry changes over a few segments, in write batches, the
/// last batch ending in the active segment.
fn write_history(s: &mut Store, n: u64) {
    for round in 0..3 {
        for i in 0..n {
            let exp = (i % 5 == 0).then_some(10_000_000 + i);
            s.put(&key(i), &value(i, round), exp).unwrap();
            if i % 11 == round {
                s.delete(&key(i / 2)).unwrap();
            }
            if i % 13 == 0 {
                s.set_expire(&key(i / 3), Some(20_000_000)).unwrap();
            }
            if i % 17 == 0 {
                s.commit().unwrap();
            }
        }
    }
    s.commit().unwrap();
}

fn shutdown_hints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "shint"))
        .collect();
    v.sort();
    v
}

/// Records read back from the log, for replication: the offsets loaded from a hint must
/// find them as the scan's do.
fn log_records(s: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = s.log_start();
    while from < s.log_end() {
        let b = s.read_records(from, 4096).unwrap();
        out.extend_from_slice(&b.bytes);
        from = b.next_lsn;
    }
    out
}

/// Opens `dir` with `o`, checks that the start scanned its active segment (no shutdown hint
/// used, none left) and that it holds `want`.
fn open_scanning(dir: &Path, o: Options, want: &State) -> Store {
    let s = Store::open(dir, o).unwrap();
    assert!(!s.recovery_report().active_from_shutdown_hint);
    assert_eq!(&dump(&s).0, want);
    assert!(shutdown_hints(dir).is_empty());
    s
}

fn clean_close(mut s: Store) -> bool {
    s.sync().unwrap();
    s.close_with_shutdown_hint(0).unwrap()
}

#[test]
fn a_shutdown_hint_loads_exactly_what_a_scan_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    write_history(&mut s, 2_000);
    assert!(segments(dir.path()).len() > 3, "the history spans segments");
    let (before, _) = dump(&s);
    assert!(clean_close(s), "a synced active segment gets its hint");
    assert_eq!(shutdown_hints(dir.path()).len(), 1);

    // The same directory opened twice: once from the hint, once by a scan.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    for h in shutdown_hints(copy.path()) {
        fs::remove_file(h).unwrap();
    }
    let hinted = open(dir.path());
    assert!(hinted.recovery_report().active_from_shutdown_hint);
    assert!(
        shutdown_hints(dir.path()).is_empty(),
        "opening removes the hint"
    );
    let scanned = open(copy.path());
    assert!(!scanned.recovery_report().active_from_shutdown_hint);
    let (state, stats) = dump(&hinted);
    assert_eq!(state, before);
    assert_eq!((state, stats), dump(&scanned));
    assert_eq!(hinted.log_end(), scanned.log_end());
    assert_eq!(hinted.active_stats(), scanned.active_stats());
    assert_eq!(
        hinted.recovery_report().records,
        scanned.recovery_report().records
    );
    assert_eq!(log_records(&hinted), log_records(&scanned));

    // Writes go on from the same place, and survive a crash (no hint to meet).
    let mut hinted = hinted;
    hinted.put(b"after", b"restart", None).unwrap();
    hinted.commit().unwrap();
    drop(hinted);
    let again = open(dir.path());
    assert!(!again.recovery_report().active_from_shutdown_hint);
    assert_eq!(
        again.get(b"after").unwrap().as_deref(),
        Some(&b"restart"[..])
    );
    assert_eq!(again.len(), before.len() + 1);
}

#[test]
fn a_stale_shutdown_hint_is_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    write_history(&mut s, 300);
    assert!(clean_close(s));
    let hint = shutdown_hints(dir.path()).pop().unwrap();
    let saved = fs::read(&hint).unwrap();

    // The hint put back after the segment took more writes (as only a copy could do).
    let mut s = open(dir.path());
    s.put(b"later", b"write", None).unwrap();
    s.delete(&key(1)).unwrap();
    s.commit().unwrap();
    s.sync().unwrap();
    let (want, _) = dump(&s);
    drop(s);
    fs::write(&hint, &saved).unwrap();
    let mut s = open_scanning(dir.path(), opts(), &want);

    // The hint of a segment that is no longer the last one.
    s.roll().unwrap();
    s.put(b"newest", b"segment", None).unwrap();
    s.commit().unwrap();
    let (want, _) = dump(&s);
    drop(s);
    fs::write(&hint, &saved).unwrap();
    open_scanning(dir.path(), opts(), &want);
}

#[test]
fn a_damaged_shutdown_hint_makes_the_start_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    write_history(&mut s, 200);
    let (want, _) = dump(&s);
    assert!(clean_close(s));
    let hint = shutdown_hints(dir.path()).pop().unwrap();
    let good = fs::read(&hint).unwrap();
    let mut damaged: Vec<Vec<u8>> = vec![
        good[..good.len() - 1].to_vec(),
        good[..good.len() / 2].to_vec(),
        Vec::new(),
    ];
    for at in [0, 9, 20, 33, 40, 60, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x04;
        damaged.push(b);
    }
    let base = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), base.path());
    for (i, bytes) in damaged.iter().enumerate() {
        let d = tempfile::tempdir().unwrap();
        copy_dir(base.path(), d.path());
        fs::write(d.path().join(hint.file_name().unwrap()), bytes).unwrap();
        let s = open(d.path());
        assert!(
            !s.recovery_report().active_from_shutdown_hint,
            "damage {i} ignored"
        );
        assert_eq!(dump(&s).0, want, "damage {i}");
        assert!(shutdown_hints(d.path()).is_empty());
    }
    // The undamaged one is used.
    let s = open(dir.path());
    assert!(s.recovery_report().active_from_shutdown_hint);
    assert_eq!(dump(&s).0, want);
}

/// Exhaustive over a small hint: every single-bit flip (one per byte, the bit moving with
/// the offset) and every cut is refused, and the start loads by scanning what it would have
/// loaded.
#[test]
fn every_flipped_bit_and_every_cut_of_a_shutdown_hint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    write_history(&mut s, 6);
    let (want, _) = dump(&s);
    assert!(clean_close(s));
    let hint = shutdown_hints(dir.path()).pop().unwrap();
    let name = hint.file_name().unwrap().to_owned();
    let good = fs::read(&hint).unwrap();
    fs::remove_file(&hint).unwrap();
    let flips = (0..good.len()).map(|at| {
        let mut b = good.clone();
        b[at] ^= 1 << (at % 8);
        (format!("bit {} of byte {at}", at % 8), b)
    });
    let cuts = (0..good.len()).map(|len| (format!("cut to {len} bytes"), good[..len].to_vec()));
    let mut tried = 0;
    for (what, bytes) in flips.chain(cuts) {
        let d = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d.path());
        fs::write(d.path().join(&name), &bytes).unwrap();
        let s = open(d.path());
        assert!(
            !s.recovery_report().active_from_shutdown_hint,
            "{what}: used"
        );
        assert_eq!(dump(&s).0, want, "{what}");
        assert!(shutdown_hints(d.path()).is_empty(), "{what}: left");
        tried += 1;
    }
    assert_eq!(tried, 2 * good.len());
    assert!(good.len() > 500, "a hint of {} bytes", good.len());
    // The undamaged one is used.
    fs::write(&hint, &good).unwrap();
    let s = open(dir.path());
    assert!(s.recovery_report().active_from_shutdown_hint);
    assert_eq!(dump(&s).0, want);
}

#[test]
fn no_shutdown_hint_for_what_is_not_fsynced_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(
        !s.close_with_shutdown_hint(0).unwrap(),
        "an empty segment has nothing to describe"
    );
    let mut s = open(dir.path());
    write_history(&mut s, 100);
    assert!(
        !s.close_with_shutdown_hint(0).unwrap(),
        "bytes not fsynced may not be what the next start finds"
    );
    let mut s = open(dir.path());
    s.sync().unwrap();
    assert!(
        !s.close_with_shutdown_hint(1 << 30).unwrap(),
        "below the size asked for, a scan is cheaper"
    );
    assert!(shutdown_hints(dir.path()).is_empty());

    let off = Options {
        use_hints: false,
        ..opts()
    };
    let mut s = Store::open(dir.path(), off.clone()).unwrap();
    s.sync().unwrap();
    assert!(!s.close_with_shutdown_hint(0).unwrap(), "hints are off");
    // A hint written with hints on is ignored (and removed) by a start with them off.
    let s = open(dir.path());
    let (want, _) = dump(&s);
    assert!(clean_close(s));
    drop(open_scanning(dir.path(), off, &want));

    // Nor while the commit journal holds records of the partition: the scan cuts damage at
    // or above them, for the journal's replay to restore.
    let s = open(dir.path());
    assert!(clean_close(s));
    let journaled = Options {
        journaled_from: Some(0),
        ..opts()
    };
    open_scanning(dir.path(), journaled, &want);
}

/// Like a closed segment loaded from its hint, an active one loaded from its shutdown hint
/// has its records' checksums checked when they are read, not at the start: a value damaged
/// on disk after the clean shutdown is an error for its key only.
#[test]
fn damage_under_a_shutdown_hint_is_found_when_the_record_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"first", &[7u8; 300], None).unwrap();
    s.put(b"second", &[9u8; 300], None).unwrap();
    s.commit().unwrap();
    assert!(clean_close(s));
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = simplekv_engine::segment::SEGMENT_HEADER_LEN + 100;
    bytes[at] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let s = open(dir.path());
    assert!(s.recovery_report().active_from_shutdown_hint);
    assert!(
        matches!(
            s.get(b"first"),
            Err(simplekv_engine::ReadError::Corrupt { .. })
        ),
        "the damaged value is an error"
    );
    assert_eq!(s.get(b"second").unwrap().as_deref(), Some(&[9u8; 300][..]));
}

/// A recovery point says more of the file was fsynced than the file holds: the hint does not
/// hide that from the scan, which refuses to open.
#[test]
fn a_shutdown_hint_does_not_hide_lost_synced_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    write_history(&mut s, 100);
    assert!(clean_close(s));
    let seg = segments(dir.path()).pop().unwrap();
    let head = fs::read(&seg).unwrap();
    let file_id = simplekv_engine::segment::SegmentHeader::decode(
        &head[..simplekv_engine::segment::SEGMENT_HEADER_LEN],
    )
    .unwrap()
    .file_id;
    let with_point = Options {
        recovery_points: vec![RecoveryPoint {
            partition: 0,
            file_id,
            synced: head.len() as u64 + 100,
        }],
        ..opts()
    };
    match Store::open(dir.path(), with_point) {
        Err(OpenError::LostSyncedBytes { .. }) => {}
        other => panic!("expected LostSyncedBytes, got {other:?}"),
    }
}
