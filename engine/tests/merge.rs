//! Merge invariants: it never changes what a read returns, never resurrects a deleted or
//! expired key, and a crash at any point of it loses nothing.
use std::cell::Cell;
use std::path::Path;

use simplekv_engine::{Durability, MergeError, Options, Store};

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000_000) };
}

fn clock() -> u64 {
    NOW.with(|n| n.get())
}

fn advance(ms: u64) {
    NOW.with(|n| n.set(n.get() + ms));
}

fn opts() -> Options {
    Options {
        segment_size: 8 << 10,
        durability: Durability::Always,
        clock,
        ..Options::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

/// (key, value, ttl) of every visible key, sorted.
type Snapshot = Vec<(Vec<u8>, Vec<u8>, Option<Option<u64>>)>;

fn snapshot(s: &Store) -> Snapshot {
    let mut keys = Vec::new();
    let mut c = 0;
    loop {
        c = s.scan(c, 100, |k| keys.push(k.to_vec()));
        if c == 0 {
            break;
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = s.get(&k).unwrap().unwrap();
            let t = s.ttl_ms(&k);
            (k, v, t)
        })
        .collect()
}

fn fill(s: &mut Store) {
    for round in 0..5u32 {
        for i in 0..300u32 {
            let k = format!("key{i}");
            s.put(k.as_bytes(), format!("{round}-{i}").as_bytes(), None)
                .unwrap();
        }
    }
    for i in (0..300u32).step_by(3) {
        s.delete(format!("key{i}").as_bytes()).unwrap();
    }
    s.commit().unwrap();
}

fn log_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn merge_never_changes_what_a_read_returns_and_reclaims_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    let before = snapshot(&s);
    let bytes_before = s.stats().total_bytes;
    let stats = s.merge_now(u64::MAX).unwrap().unwrap();
    assert!(stats.records_out < stats.records_in);
    assert_eq!(snapshot(&s), before);
    assert!(s.stats().total_bytes < bytes_before / 2, "{:?}", s.stats());
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(snapshot(&s), before);
    assert!(
        s.recovery_report().segments_from_hints >= 1,
        "merge writes hints"
    );
}

#[test]
fn merge_never_resurrects_a_deleted_key_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"gone", b"old", None).unwrap();
    s.roll().unwrap();
    for i in 0..200u32 {
        s.put(format!("filler{i}").as_bytes(), &[1u8; 64], None)
            .unwrap();
    }
    s.delete(b"gone").unwrap();
    s.roll().unwrap();
    // Merge only the segments up to the tombstone, then everything, reopening in between.
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.get(b"gone").unwrap(), None);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.get(b"gone").unwrap(), None);
    s.merge_now(u64::MAX).unwrap();
    drop(s);
    assert_eq!(open(dir.path()).get(b"gone").unwrap(), None);
}

#[test]
fn tombstones_above_the_horizon_are_kept_for_lagging_followers() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"k", b"v", None).unwrap();
    let del = s.log_end();
    s.delete(b"k").unwrap();
    s.merge_now(del).unwrap();
    // A follower that has applied up to `del` still needs the tombstone at `del`.
    let batch = s.read_records(del, 1 << 20).unwrap();
    assert_eq!(batch.count, 1);
    assert_eq!(batch.last_lsn, Some(del));
    // Once every follower is past it, the tombstone goes too.
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.read_records(0, 1 << 20).unwrap().count, 0);
}

/// The log remembers, across restarts and later merges with a lower horizon, below which LSN
/// tombstones may be gone: a replica whose log ends below that mark cannot catch up from the
/// records and must copy the log instead.
#[test]
fn the_log_remembers_below_which_tombstones_may_have_been_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    assert_eq!(s.dropped_below(), 0);
    s.put(b"k", b"v", None).unwrap();
    s.delete(b"k").unwrap();
    let first_end = s.log_end();
    s.put(b"other", b"v", None).unwrap();
    // The horizon caps it, and so does the merged range (the active segment is never merged).
    s.merge_now(first_end).unwrap();
    assert_eq!(s.dropped_below(), first_end);
    s.put(b"more", b"v", None).unwrap();
    let end = s.log_end();
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.dropped_below(), end, "capped by the merged range");
    // A later merge with a lower horizon (a replica came back with less) keeps the mark.
    s.put(b"again", b"v", None).unwrap();
    s.merge_now(1).unwrap();
    assert_eq!(s.dropped_below(), end);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.dropped_below(), end, "kept in the segment headers");
    // What a cut leaves is an exact prefix: nothing is missing above the cut.
    s.truncate_to(2).unwrap();
    assert_eq!(s.dropped_below(), 2);
    drop(s);
    assert_eq!(open(dir.path()).dropped_below(), 2);
}

/// A merge under way whose horizon turns out too high (a replica came back lower) is given
/// up: its output is refused, and the tombstone stays for that replica.
#[test]
fn a_merge_dropping_tombstones_a_returning_replica_needs_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"k", b"v", None).unwrap();
    let del = s.log_end();
    s.delete(b"k").unwrap();
    s.roll().unwrap();
    let job = s.start_merge(u64::MAX).unwrap().unwrap();
    assert!(
        !s.abandon_merge_dropping_from(s.log_end()),
        "drops nothing at or above the end"
    );
    assert!(s.merge_in_progress());
    assert!(s.abandon_merge_dropping_from(del));
    let out = job.run().unwrap();
    assert!(matches!(s.install_merge(out), Err(MergeError::Stale)));
    let batch = s.read_records(del, 1 << 20).unwrap();
    assert_eq!(batch.last_lsn, Some(del), "the tombstone is still there");
    assert_eq!(s.dropped_below(), 0);
}

#[test]
fn merge_never_resurrects_an_expired_key_and_keeps_changed_expiries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let now = clock();
    s.put(b"expires", b"v", Some(now + 10)).unwrap();
    s.put(b"persisted", b"v", Some(now + 10)).unwrap();
    s.set_expire(b"persisted", None).unwrap();
    s.put(b"extended", b"v", None).unwrap();
    s.set_expire(b"extended", Some(now + 1_000_000)).unwrap();
    advance(20);
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.get(b"expires").unwrap(), None);
    assert_eq!(s.get(b"persisted").unwrap().unwrap(), b"v");
    assert_eq!(s.ttl_ms(b"persisted"), Some(None));
    assert_eq!(s.ttl_ms(b"extended"), Some(Some(1_000_000 - 20)));
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.get(b"expires").unwrap(), None);
    assert!(!s.exists(b"expires"));
    assert_eq!(s.ttl_ms(b"persisted"), Some(None));
    assert_eq!(s.ttl_ms(b"extended"), Some(Some(1_000_000 - 20)));
}

#[test]
fn writes_during_an_off_thread_merge_win_over_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    s.roll().unwrap();
    let job = s.start_merge(u64::MAX).unwrap().unwrap();
    assert!(matches!(s.start_merge(u64::MAX), Err(MergeError::Busy)));
    let handle = std::thread::spawn(move || job.run());
    // Meanwhile the owner keeps writing.
    s.put(b"key1", b"newer", None).unwrap();
    s.delete(b"key2").unwrap();
    s.put(b"key3", b"back", None).unwrap();
    let out = handle.join().unwrap().unwrap();
    let expected = snapshot(&s);
    s.install_merge(out).unwrap();
    let mut steps = 0;
    while s.merge_step(7) {
        steps += 1;
        assert_eq!(s.get(b"key1").unwrap().unwrap(), b"newer");
    }
    assert!(steps > 5, "installation ran in bounded steps");
    assert_eq!(snapshot(&s), expected);
    s.commit().unwrap();
    drop(s);
    assert_eq!(snapshot(&open(dir.path())), expected);
}

#[test]
fn a_crash_before_install_leaves_the_old_segments_and_removes_the_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    s.roll().unwrap();
    let expected = snapshot(&s);
    let out = s.start_merge(u64::MAX).unwrap().unwrap().run().unwrap();
    // "Crash": the store goes away with the merge output written but not installed.
    std::mem::forget(out);
    drop(s);
    let s = open(dir.path());
    assert_eq!(snapshot(&s), expected);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".merge")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn a_crash_after_commit_but_before_deleting_inputs_recovers_from_covered_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    s.roll().unwrap();
    let expected = snapshot(&s);
    let files_before = log_files(dir.path());
    // Keep copies of the inputs, to put back as if the crash happened before their deletion.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log" || x == "hint") {
            std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.merge_now(u64::MAX).unwrap();
    let merged_files = log_files(dir.path());
    assert!(merged_files < files_before);
    drop(s);
    let mut restored = 0;
    for e in std::fs::read_dir(copy.path()).unwrap() {
        let p = e.unwrap().path();
        let target = dir.path().join(p.file_name().unwrap());
        if !target.exists() {
            std::fs::copy(&p, &target).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 0);
    let s = open(dir.path());
    assert!(s.recovery_report().leftover_segments_removed > 0);
    assert_eq!(snapshot(&s), expected);
    assert_eq!(log_files(dir.path()), merged_files);
}

#[test]
fn a_merge_made_stale_by_truncation_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    s.roll().unwrap();
    let out = s.start_merge(u64::MAX).unwrap().unwrap().run().unwrap();
    s.truncate_to(100).unwrap();
    let expected = snapshot(&s);
    assert!(matches!(s.install_merge(out), Err(MergeError::Stale)));
    assert_eq!(snapshot(&s), expected);
    assert!(!s.merge_in_progress());
}

/// A store with `k` expired (by the test clock) and `other` live.
fn with_an_expired_value(dir: &Path) -> Store {
    let mut s = open(dir);
    s.put(b"k", b"v", Some(clock() + 10)).unwrap();
    s.put(b"other", b"v", None).unwrap();
    advance(20);
    s
}

#[test]
fn a_value_merge_drops_as_expired_gets_a_tombstone_that_replicas_receive() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = with_an_expired_value(dir.path());
    let end = s.log_end();
    s.merge_now(u64::MAX).unwrap();
    let b = s.read_records(end, 1 << 20).unwrap();
    let tags: Vec<_> = simplekv_engine::record::RecordIter::new(&b.bytes)
        .map(|(_, r)| (r.header.tag, r.key.to_vec()))
        .collect();
    assert_eq!(
        tags,
        vec![(simplekv_engine::record::Tag::Delete, b"k".to_vec())]
    );
    assert_eq!(s.len(), 1, "the expired key left the keydir");
}

/// A leader's merge that dropped an expired value would write a tombstone when installed;
/// once the leader is demoted (`abandon_merge`) it is discarded instead, and the log gets no
/// record of this node's own.
#[test]
fn an_abandoned_merge_is_discarded_without_writing_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = with_an_expired_value(dir.path());
    s.roll().unwrap();
    let out = s.start_merge(u64::MAX).unwrap().unwrap().run().unwrap();
    let end = s.log_end();
    s.abandon_merge();
    s.set_replica(true);
    assert!(matches!(s.install_merge(out), Err(MergeError::Stale)));
    assert_eq!(s.log_end(), end, "no record written");
    assert_eq!(s.read_records(end, 1 << 20).unwrap().count, 0);
    assert!(!s.merge_in_progress());
    // The next merge, as a replica, keeps the expired value and writes nothing.
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.log_end(), end);
}

#[test]
fn a_replica_merge_keeps_expired_values_its_leader_may_still_extend() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(ld.path());
    let mut follower = open(fd.path());
    follower.set_replica(true);
    let now = clock();
    leader.put(b"k", b"v", Some(now + 10)).unwrap();
    leader.set_expire(b"k", None).unwrap();
    leader.commit().unwrap();
    // The follower has the put but not yet the PERSIST when its clock passes the expiry.
    let first = leader.read_records(0, 1).unwrap();
    assert_eq!(first.count, 1);
    follower.append_records(&first.bytes).unwrap();
    follower.commit().unwrap();
    advance(20);
    assert_eq!(
        follower.get(b"k").unwrap(),
        None,
        "hidden on the follower's clock"
    );
    follower.merge_now(u64::MAX).unwrap();
    let rest = leader.read_records(follower.log_end(), 1 << 20).unwrap();
    follower.append_records(&rest.bytes).unwrap();
    assert_eq!(follower.get(b"k").unwrap().unwrap(), b"v");
    assert_eq!(
        follower.log_end(),
        leader.log_end(),
        "the replica wrote nothing of its own"
    );
}

#[test]
fn a_merge_install_that_fails_midway_leaves_a_store_that_serves_the_same_and_merges_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    s.roll().unwrap();
    let out = s.start_merge(u64::MAX).unwrap().unwrap().run().unwrap();
    // Writes after the merge started, not yet committed when the install fails.
    s.put(b"late", b"value", None).unwrap();
    let expected = snapshot(&s);
    // The first output's hint file cannot be renamed into place: a directory has its name.
    // (The first output takes the base, so the name, of the oldest segment.)
    let mut logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let blocked = logs.first().expect("a segment").with_extension("hint");
    let _ = std::fs::remove_file(&blocked);
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("x"), b"x").unwrap();
    assert!(s.install_merge(out).is_err(), "the install fails");
    assert!(!s.merge_in_progress());
    // What the store serves after re-reading its files is what it served before.
    assert_eq!(snapshot(&s), expected);
    std::fs::remove_dir_all(&blocked).unwrap();
    s.put(b"after", b"the failure", None).unwrap();
    s.commit().unwrap();
    let mut expected_after = expected.clone();
    expected_after.push((b"after".to_vec(), b"the failure".to_vec(), Some(None)));
    expected_after.sort();
    assert_eq!(snapshot(&s), expected_after);
    // The store's segments are the files on disk again, so the next merge works (one that
    // still pointed at a replaced file would be refused as stale forever).
    s.roll().unwrap();
    let stats = s.merge_now(u64::MAX).expect("a merge after the failed one");
    assert!(stats.is_some(), "the merge ran");
    while s.merge_step(usize::MAX) {}
    assert_eq!(snapshot(&s), expected_after);
    drop(s);
    assert_eq!(snapshot(&open(dir.path())), expected_after);
}

/// A merge moves records but keeps their LSN, so a WATCHed key's version survives it.
#[test]
fn merge_keeps_every_key_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    fill(&mut s);
    let keys: Vec<String> = (0..300u32).map(|i| format!("key{i}")).collect();
    let versions: Vec<_> = keys.iter().map(|k| s.version(k.as_bytes())).collect();
    s.merge_now(u64::MAX).unwrap().unwrap();
    for (k, v) in keys.iter().zip(versions) {
        assert!(s.unchanged_since(k.as_bytes(), v).unwrap(), "{k}");
    }
}

/// `n` keys `{prefix}{i}`, each a value of `len` bytes `byte`.
fn put_many(s: &mut Store, prefix: &str, n: u32, byte: u8, len: usize) {
    for i in 0..n {
        s.put(format!("{prefix}{i}").as_bytes(), &vec![byte; len], None)
            .unwrap();
    }
}

/// A merge of only the oldest closed segments (what a nearly full disk has room for) drops
/// their dead bytes, leaves the newer segments as they are, keeps every read the same, and
/// never brings a deleted key back: a tombstone in the prefix hides nothing older outside
/// it, a value in the prefix deleted by a newer segment's tombstone stays deleted.
#[test]
fn a_merge_of_the_oldest_segments_only_frees_their_dead_bytes_and_changes_no_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    // Segment 1: old values (overwritten below), two keys deleted later, a few kept.
    put_many(&mut s, "old", 30, 1, 150);
    s.put(b"gone-in-prefix", b"v", None).unwrap();
    s.put(b"gone-later", b"v", None).unwrap();
    put_many(&mut s, "kept", 5, 4, 150);
    s.roll().unwrap();
    // Segment 2: the overwrites, and one delete.
    put_many(&mut s, "old", 30, 2, 150);
    s.delete(b"gone-in-prefix").unwrap();
    s.roll().unwrap();
    // Segment 3: live data only, and the other delete.
    put_many(&mut s, "new", 30, 3, 150);
    s.delete(b"gone-later").unwrap();
    s.roll().unwrap();
    s.commit().unwrap();
    let before = snapshot(&s);
    let files = log_files(dir.path());
    let (total, dead) = s.closed_stats();
    assert!(dead > 0);
    // Too little for even the oldest segment's live data: nothing to do.
    assert!(s.start_merge_within(u64::MAX, 100).unwrap().is_none());
    // Room for the live data of the first two segments, not the third's.
    let live_third = 30 * 150;
    let job = s
        .start_merge_within(u64::MAX, total - dead - live_third)
        .unwrap()
        .expect("a merge of the first two segments");
    let out = job.run().unwrap();
    // The newest values of old* and kept*; not the value of gone-later, which the third
    // segment deletes (nor gone-in-prefix and its tombstone).
    assert_eq!(out.stats.records_out, 35, "{:?}", out.stats);
    s.install_merge(out).unwrap();
    while s.merge_step(usize::MAX) {}
    assert_eq!(snapshot(&s), before);
    // Two inputs became one output; the third segment and the active one are untouched.
    assert_eq!(log_files(dir.path()), files - 1);
    let (total_after, dead_after) = s.closed_stats();
    assert!(
        total_after < total && dead_after < dead,
        "{total_after} {dead_after}"
    );
    assert_eq!(s.get(b"gone-in-prefix").unwrap(), None);
    assert_eq!(s.get(b"gone-later").unwrap(), None);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(snapshot(&s), before);
    assert_eq!(s.get(b"gone-later").unwrap(), None);
    // Then everything: the same again.
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(snapshot(&s), before);
    drop(s);
    assert_eq!(snapshot(&open(dir.path())), before);
}

/// When the oldest segments hold more live data than the free space takes (the outputs of
/// earlier merges, say), a run of later segments is merged instead: its dead bytes go, but
/// every tombstone stays, since an older segment outside it may hold the value it hides.
#[test]
fn a_merge_of_a_run_of_later_segments_keeps_its_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    // Segment 1: live data only, and the value of a key deleted in segment 2.
    put_many(&mut s, "base", 40, 1, 150);
    s.put(b"hidden", b"old value", None).unwrap();
    s.roll().unwrap();
    // Segment 2: values overwritten in segment 3, and the delete.
    put_many(&mut s, "w", 30, 2, 100);
    s.delete(b"hidden").unwrap();
    s.roll().unwrap();
    // Segment 3: the overwrites.
    put_many(&mut s, "w", 30, 3, 100);
    s.roll().unwrap();
    s.commit().unwrap();
    let before = snapshot(&s);
    let files = log_files(dir.path());
    // Room for segments 2 and 3's live data, not segment 1's.
    let job = s
        .start_merge_within(u64::MAX, 5000)
        .unwrap()
        .expect("a merge of segments 2 and 3");
    let out = job.run().unwrap();
    // The newest w* values and the tombstone.
    assert_eq!(out.stats.records_out, 31, "{:?}", out.stats);
    s.install_merge(out).unwrap();
    while s.merge_step(usize::MAX) {}
    assert_eq!(snapshot(&s), before);
    assert_eq!(log_files(dir.path()), files - 1);
    assert_eq!(s.get(b"hidden").unwrap(), None);
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(snapshot(&s), before);
    assert_eq!(
        s.get(b"hidden").unwrap(),
        None,
        "the deleted value came back"
    );
    // Then everything: the same again.
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(snapshot(&s), before);
    drop(s);
    assert_eq!(snapshot(&open(dir.path())), before);
}
