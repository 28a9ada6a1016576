//! Recovery from damaged hint files (`simplekv_engine::Store::open` through `hint.rs`).
//!
//! Each input writes a small partition as `segment_recovery` does (`common/log.rs`: puts,
//! deletes, expiry changes, clears, rolls, leader epochs; 4 KiB segments), writes the hint
//! files of its closed segments, closes it cleanly with a shutdown hint for its active
//! segment (`Store::close_with_shutdown_hint`, no size floor), then damages one of those
//! hint files in one of four ways:
//!
//! - mode 0: XOR bytes at fuzzer-chosen offsets (header included);
//! - mode 1: truncate it to a fuzzer-chosen length;
//! - mode 2: truncate it, then append fuzzer-chosen bytes;
//! - mode 3: replace it with another hint file of the partition (a hint of another segment).
//!
//! and reopens the partition. A hint is only an index of its segment: whatever is done to it,
//! the segments are intact, so the expected state is always the whole model. Checked:
//!
//! - `open` succeeds, and the visible state (every key's value and expiry, the key count, what
//!   a full SCAN returns), the log end, the record count and the leader-epoch cache (the
//!   epochs that start below the log end, as `segment_recovery` expects them) are exactly
//!   those of the log as written, and as an open with the intact hints loads them, with
//!   nothing cut;
//! - a hint damaged within its original bytes (not only added to) is not used: the recovery
//!   report counts its segment as read whole;
//! - no shutdown hint is left after the open, and the store takes a write and reopens to it.
//!
//! A damaged hint that is still a well-formed hint of the same segment (header and every
//! entry with a matching CRC: libFuzzer's comparison tracing can hand it the right CRCs) but
//! describes other records cannot be told from a good one without reading the segment, which
//! is what hints are there to avoid; such inputs are skipped, as `segment_recovery` skips
//! forged records.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use simplekv_engine::Store;

#[path = "common/log.rs"]
#[macro_use]
mod log;
use log::{KEYS, Written, check_state, damage, opts, scratch, write_log};

/// Hint header: magic (8), file id (8), count (8), CRC of bytes 0..24 (4), zero (4).
const HINT_HEADER: usize = 32;
/// Entry before its key: CRC (4), LSN (8), epoch (4), expire (8), tag (1), key length (4),
/// value length (4), offset (4).
const ENTRY_FIXED: usize = 37;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The file id and entries (as byte ranges) of a well-formed hint: a header whose CRC
/// matches, then exactly its count of entries, each with a matching CRC. Read here
/// independently of the engine, from `engine/FORMAT.md`.
fn well_formed(b: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    if b.len() < HINT_HEADER || &b[..8] != b"SKVHINT\x01" {
        return None;
    }
    if crc32fast::hash(&b[..24]) != u32_at(b, 24) {
        return None;
    }
    let count = u64_at(b, 16);
    let mut entries = Vec::new();
    let mut at = HINT_HEADER;
    for _ in 0..count {
        if b.len() < at + ENTRY_FIXED {
            return None;
        }
        let key_len = u32_at(b, at + 25) as usize;
        let end = at.checked_add(ENTRY_FIXED)?.checked_add(key_len)?;
        if end > b.len() || crc32fast::hash(&b[at + 4..end]) != u32_at(b, at) {
            return None;
        }
        entries.push(&b[at..end]);
        at = end;
    }
    Some((u64_at(b, 8), entries))
}

fn hint_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint" || x == "shint"))
        .collect();
    v.sort();
    v
}

fn epochs_of(s: &Store) -> Vec<(u32, u64)> {
    s.epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_lsn))
        .collect()
}

fn is_shutdown_hint(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "shint")
}

fn run(u: &mut Unstructured<'_>, dir: &Path) -> ArbResult<()> {
    // ---- write a log, its hints and, at a clean close, its shutdown hint
    let Written {
        mut store,
        state,
        recs,
        epochs,
    } = write_log(u, dir)?;
    for job in store.take_hint_jobs() {
        trace!("hint job: {}", job.hint.display());
        job.run().expect("hint job");
    }
    store.sync().expect("sync");
    let shutdown_hint = store
        .close_with_shutdown_hint(0)
        .expect("close with a shutdown hint");
    let hints = hint_files(dir);
    trace!("hints {hints:?}; shutdown hint written: {shutdown_hint}");
    // As recovery keeps them: the epochs that start below the log end (one begun at the end,
    // with no record yet, is not in the log).
    let n = recs.len() as u64;
    let want_epochs: Vec<(u32, u64)> = epochs.iter().copied().filter(|&(_, s)| s < n).collect();
    if hints.is_empty() {
        return Ok(());
    }
    // Undamaged, every hint is used.
    {
        let scratch_copy = dir.with_extension("undamaged");
        let _ = fs::remove_dir_all(&scratch_copy);
        fs::create_dir_all(&scratch_copy).expect("mkdir");
        for e in fs::read_dir(dir).expect("read dir") {
            let e = e.expect("dir entry");
            if e.file_type().expect("file type").is_file() && e.file_name() != "LOCK" {
                fs::copy(e.path(), scratch_copy.join(e.file_name())).expect("copy");
            }
        }
        let s = Store::open(&scratch_copy, opts()).expect("open with intact hints");
        let r = s.recovery_report().clone();
        let closed = hints.iter().filter(|p| !is_shutdown_hint(p)).count();
        assert_eq!(r.segments_from_hints, closed, "intact hints used: {r:?}");
        assert_eq!(r.active_from_shutdown_hint, shutdown_hint, "{r:?}");
        check_state(&s, &state, "intact hints");
        assert_eq!(
            epochs_of(&s),
            want_epochs,
            "leader-epoch cache with intact hints"
        );
        drop(s);
        let _ = fs::remove_dir_all(&scratch_copy);
    }

    // ---- damage one hint
    let target = u.choose(&hints)?.clone();
    let orig = fs::read(&target).expect("read hint");
    let mode = u.int_in_range(0..=3u8)?;
    let mut bytes = orig.clone();
    if mode < 3 {
        damage(u, &mut bytes, mode)?;
    } else {
        bytes = fs::read(u.choose(&hints)?).expect("read other hint");
    }
    if bytes == orig {
        return Ok(());
    }
    let (orig_id, orig_entries) = well_formed(&orig).expect("the engine wrote a well-formed hint");
    if let Some((id, entries)) = well_formed(&bytes)
        && id == orig_id
        && entries != orig_entries
    {
        trace!("a well-formed hint of the same segment with other entries: skipped");
        return Ok(());
    }
    // Only added to: the hint may still be used (its entries are the right ones).
    let first_bad = orig
        .iter()
        .zip(&bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(orig.len().min(bytes.len()));
    let refused = first_bad < orig.len();
    trace!(
        "damage mode {mode} to {} ({} -> {} bytes), first damaged byte {first_bad}",
        target.display(),
        orig.len(),
        bytes.len()
    );
    fs::write(&target, &bytes).expect("write damaged hint");

    // ---- reopen: the whole log, nothing cut
    let store = Store::open(dir, opts())
        .unwrap_or_else(|e| panic!("open failed with only a hint damaged: {e}"));
    check_state(&store, &state, "after a damaged hint");
    assert_eq!(store.log_end(), n, "log end");
    let report = store.recovery_report().clone();
    assert_eq!(report.records, n, "records recovered: {report:?}");
    assert_eq!(report.truncated_tail_bytes, 0, "{report:?}");
    assert_eq!(report.repaired_bytes_dropped, 0, "{report:?}");
    if refused {
        if is_shutdown_hint(&target) {
            assert!(
                !report.active_from_shutdown_hint,
                "a damaged shutdown hint was used: {report:?}"
            );
        } else {
            let closed = hints.iter().filter(|p| !is_shutdown_hint(p)).count();
            assert!(
                report.segments_from_hints < closed,
                "a damaged hint was used: {report:?}"
            );
        }
    }
    assert_eq!(epochs_of(&store), want_epochs, "leader-epoch cache");
    assert!(
        hint_files(dir).iter().all(|p| !is_shutdown_hint(p)),
        "a shutdown hint outlived the open"
    );

    // ---- it takes a write and reopens to it
    let mut store = store;
    let mut want = state;
    let key = u.choose(KEYS)?.to_vec();
    store.put(&key, b"after", None).expect("put after reopen");
    want.insert(key, (b"after".to_vec(), 0));
    store.commit().expect("commit after reopen");
    drop(store);
    let store = Store::open(dir, opts()).expect("reopen after the write");
    check_state(&store, &want, "reopened after the write");
    assert_eq!(store.log_end(), n + 1);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch("hints");
    let _ = fs::remove_dir_all(dir);
    let _ = run(&mut Unstructured::new(data), dir);
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_dir_all(dir.with_extension("undamaged"));
});
