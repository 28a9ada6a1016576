//! Scenario tests of the public `Store` API, one per behaviour or invariant.
use std::cell::Cell;

use simplekv_engine::{Durability, OpenError, Options, Prefetch, Store, WriteError};

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
        segment_size: 16 << 10,
        durability: Durability::Always,
        clock,
        ..Options::default()
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

#[test]
fn put_get_delete_round_trip_with_binary_keys_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let key = b"k\0\r\n\xff";
    let val = (0u8..=255).collect::<Vec<_>>();
    s.put(key, &val, None).unwrap();
    s.put(b"", b"empty key is a key", None).unwrap();
    assert_eq!(s.get(key).unwrap().unwrap(), val);
    assert_eq!(s.get(b"").unwrap().unwrap(), b"empty key is a key");
    assert!(s.delete(key).unwrap());
    assert!(!s.delete(key).unwrap());
    assert_eq!(s.get(key).unwrap(), None);
    assert_eq!(s.len(), 1);
}

#[test]
fn committed_writes_survive_reopen_and_lsns_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    for i in 0..2000u32 {
        s.put(format!("key{i}").as_bytes(), &i.to_le_bytes(), None)
            .unwrap();
    }
    s.delete(b"key7").unwrap();
    s.commit().unwrap();
    let end = s.log_end();
    assert_eq!(end, 2001);
    assert!(s.stats().segments > 1, "small segments must have rolled");
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.log_end(), end);
    assert_eq!(s.len(), 1999);
    assert_eq!(s.get(b"key1999").unwrap().unwrap(), 1999u32.to_le_bytes());
    assert_eq!(s.get(b"key7").unwrap(), None);
    assert_eq!(s.put(b"x", b"y", None).unwrap(), end);
}

#[test]
fn hint_files_make_reopen_skip_scanning_and_give_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    for i in 0..3000u32 {
        s.put(
            format!("k{}", i % 700).as_bytes(),
            &i.to_le_bytes(),
            Some(5_000_000 + i as u64),
        )
        .unwrap();
    }
    s.commit().unwrap();
    let jobs = s.take_hint_jobs();
    assert!(!jobs.is_empty());
    for j in jobs {
        j.run().unwrap();
    }
    let before: Vec<_> = (0..700)
        .map(|i| {
            (
                s.get(format!("k{i}").as_bytes()).unwrap(),
                s.ttl_ms(format!("k{i}").as_bytes()),
            )
        })
        .collect();
    let segments = s.stats().segments;
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.recovery_report().segments_from_hints, segments - 1);
    let after: Vec<_> = (0..700)
        .map(|i| {
            (
                s.get(format!("k{i}").as_bytes()).unwrap(),
                s.ttl_ms(format!("k{i}").as_bytes()),
            )
        })
        .collect();
    assert_eq!(before, after);
}

#[test]
fn expired_keys_are_invisible_to_every_read_and_sampled_for_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let now = clock();
    s.put(b"short", b"v", Some(now + 100)).unwrap();
    s.put(b"long", b"v", Some(now + 100_000)).unwrap();
    s.put(b"forever", b"v", None).unwrap();
    assert_eq!(s.ttl_ms(b"short"), Some(Some(100)));
    assert_eq!(s.ttl_ms(b"forever"), Some(None));
    assert_eq!(s.ttl_ms(b"missing"), None);
    advance(100);
    assert_eq!(s.get(b"short").unwrap(), None);
    assert!(!s.exists(b"short"));
    assert!(s.meta(b"short").is_none());
    assert_eq!(s.len(), 3, "not yet deleted, as Redis's DBSIZE");
    let mut seen = Vec::new();
    let mut c = 0;
    loop {
        c = s.scan(c, 10, |k| seen.push(k.to_vec()));
        if c == 0 {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, vec![b"forever".to_vec(), b"long".to_vec()]);
    let batch = s.expired_batch(20);
    assert_eq!(batch, vec![b"short".to_vec()]);
    assert!(
        !s.delete(b"short").unwrap(),
        "expired key reports as absent"
    );
    assert_eq!(s.len(), 2);
    // The tombstone is on disk: after reopen the key stays gone.
    s.commit().unwrap();
    drop(s);
    assert_eq!(open(dir.path()).len(), 2);
}

#[test]
fn set_expire_and_persist_are_logged_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let now = clock();
    s.put(b"a", b"1", None).unwrap();
    s.put(b"b", b"2", Some(now + 50)).unwrap();
    assert!(s.set_expire(b"a", Some(now + 10_000)).unwrap());
    assert!(s.set_expire(b"b", None).unwrap());
    assert!(!s.set_expire(b"nope", Some(1)).unwrap());
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.ttl_ms(b"a"), Some(Some(10_000)));
    advance(60);
    assert_eq!(
        s.get(b"b").unwrap().unwrap(),
        b"2",
        "persisted key outlives its old expiry"
    );
}

#[test]
fn clear_deletes_everything_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    for i in 0..100u32 {
        s.put(&i.to_be_bytes(), b"v", None).unwrap();
    }
    s.clear().unwrap();
    s.put(b"after", b"v", None).unwrap();
    assert_eq!(s.len(), 1);
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.len(), 1);
    assert!(s.exists(b"after"));
}

#[test]
fn oversize_keys_and_values_are_refused_with_a_clear_error_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(
        dir.path(),
        Options {
            max_key_len: 8,
            max_value_len: 16,
            ..opts()
        },
    )
    .unwrap();
    let e = s.put(b"123456789", b"v", None).unwrap_err();
    assert!(matches!(e, WriteError::KeyTooLarge { len: 9, max: 8 }));
    assert!(e.to_string().contains("max_key_len"));
    let e = s.put(b"k", &[0u8; 17], None).unwrap_err();
    assert!(matches!(e, WriteError::ValueTooLarge { len: 17, max: 16 }));
    assert_eq!(s.log_end(), 0);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = open(dir.path());
    let e = Store::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(e, OpenError::Locked { .. }), "{e}");
}

#[test]
fn values_larger_than_a_segment_get_a_segment_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let big = vec![7u8; 100 << 10];
    s.put(b"small", b"v", None).unwrap();
    s.put(b"big", &big, None).unwrap();
    s.put(b"small2", b"v", None).unwrap();
    s.commit().unwrap();
    assert_eq!(s.get(b"big").unwrap().unwrap(), big);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.get(b"big").unwrap().unwrap(), big);
    assert!(s.exists(b"small2"));
}

#[test]
fn bad_options_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open(
        dir.path(),
        Options {
            segment_size: 10,
            ..opts()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("segment_size"), "{e}");
}

#[test]
fn stats_track_dead_bytes_from_overwrites_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"a", b"1", None).unwrap();
    let live = s.stats();
    assert_eq!(live.dead_bytes, 0);
    s.put(b"a", b"2", None).unwrap();
    let after = s.stats();
    assert!(after.dead_bytes > 0);
    s.delete(b"a").unwrap();
    assert!(s.stats().dead_bytes > after.dead_bytes);
}

#[test]
fn keydir_memory_per_key_is_within_48_bytes_beyond_the_key_for_16_byte_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(
        dir.path(),
        Options {
            segment_size: 64 << 20,
            durability: Durability::Never,
            ..opts()
        },
    )
    .unwrap();
    let n = 200_000u64;
    for i in 0..n {
        s.put(format!("key:{i:012}").as_bytes(), b"v", None)
            .unwrap();
    }
    let per_key = s.stats().keydir_bytes as f64 / n as f64;
    // 16-byte keys are stored inline; report the figure for the docs.
    eprintln!("keydir bytes per key (16-byte keys, {n} keys): {per_key:.1}");
    assert!(per_key - 16.0 <= 48.0, "{per_key} bytes per key");
}

/// A store with everysec fsyncs taken off its thread (`take_background_sync`).
fn everysec_in_background(dir: &std::path::Path) -> Store {
    let o = Options {
        durability: Durability::EverySec,
        background_sync: true,
        ..opts()
    };
    Store::open(dir, o).unwrap()
}

#[test]
fn background_sync_takes_the_everysec_fsync_off_the_committing_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = everysec_in_background(dir.path());
    s.put(b"k", b"v", None).unwrap();
    s.commit().unwrap();
    assert!(s.has_unsynced());
    assert!(
        s.take_background_sync().unwrap().is_none(),
        "not due within the first second"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.commit().unwrap();
    assert!(
        s.has_unsynced(),
        "commit leaves the fsync to the background"
    );
    let job = s
        .take_background_sync()
        .unwrap()
        .expect("due after a second");
    let (job, result) = std::thread::spawn(move || {
        let r = job.run();
        (job, r)
    })
    .join()
    .unwrap();
    assert!(s.has_unsynced(), "synced only once the outcome is back");
    s.sync_done(&job, result).unwrap();
    assert!(!s.has_unsynced());
    assert!(
        s.take_background_sync().unwrap().is_none(),
        "at most one per second"
    );
    // Found by a code review: a failed background fsync was only logged, the bytes already
    // counted as synced, and the store went on taking writes. After EIO (the page cache may
    // have dropped the data) the store now refuses writes, as after any fsync EIO.
    s.put(b"k2", b"v", None).unwrap();
    s.commit().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let job = s.take_background_sync().unwrap().expect("due");
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    assert!(s.sync_done(&job, Err(eio)).is_err());
    assert!(s.is_failed(), "refuses writes until restarted");
    assert!(s.put(b"k3", b"v", None).is_err());
}

#[test]
fn prefetch_stages_are_hints_for_any_key_in_any_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), opts()).unwrap();
    let stages = [Prefetch::Index, Prefetch::Entry, Prefetch::Record];
    // An empty keydir has no index chunks yet.
    for st in stages {
        s.prefetch(b"nothing", s.key_hash(b"nothing"), st);
    }
    // Records still in the write buffer, flushed ones, a deleted key, a missing key, and a
    // key prefetched under another key's hash: nothing panics and reads are unchanged.
    for i in 0..2000u32 {
        s.put(
            format!("k{i}").as_bytes(),
            &vec![b'v'; (i % 300) as usize],
            None,
        )
        .unwrap();
    }
    s.commit().unwrap();
    s.delete(b"k7").unwrap();
    s.put(b"fresh", b"in the buffer", None).unwrap();
    let keys: Vec<Vec<u8>> = ["k1", "k7", "k1999", "fresh", "absent"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    for st in stages {
        for k in &keys {
            s.prefetch(k, s.key_hash(k), st);
            s.prefetch(k, s.key_hash(b"k1"), st);
        }
    }
    assert_eq!(s.get(b"k1").unwrap().unwrap(), vec![b'v'; 1]);
    assert_eq!(s.get(b"k1999").unwrap().unwrap(), vec![b'v'; 1999 % 300]);
    assert!(s.get(b"k7").unwrap().is_none());
    assert_eq!(s.get(b"fresh").unwrap().unwrap(), b"in the buffer");
    assert!(s.get(b"absent").unwrap().is_none());
}

/// WATCH: every kind of change to a key since its version was taken shows, present or absent
/// then; reads, other keys and reopening... do not (a reopen forgets, which shows as changed).
#[test]
fn a_key_version_tells_whether_the_key_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let unchanged = |s: &Store, k: &[u8], v| s.unchanged_since(k, v).unwrap();
    // Absent, and created.
    let v = s.version(b"k");
    s.put(b"other", b"x", None).unwrap();
    s.delete(b"other").unwrap();
    assert!(unchanged(&s, b"k", v), "other keys written and deleted");
    s.put(b"k", b"v", None).unwrap();
    assert!(!unchanged(&s, b"k", v), "created");
    // Present: reads and other keys do not count; every write does.
    let v = s.version(b"k");
    s.get(b"k").unwrap();
    s.put(b"other", b"y", None).unwrap();
    assert!(unchanged(&s, b"k", v), "reads and other keys");
    type Write = fn(&mut Store);
    let writes: [(&str, Write); 6] = [
        ("the same value", |s| {
            s.put(b"k", b"v", None).unwrap();
        }),
        ("an expiry set", |s| {
            s.set_expire(b"k", Some(clock() + 10_000)).unwrap();
        }),
        ("an expiry removed", |s| {
            s.set_expire(b"k", None).unwrap();
        }),
        ("an expiry set and removed again", |s| {
            s.set_expire(b"k", Some(clock() + 10_000)).unwrap();
            s.set_expire(b"k", None).unwrap();
        }),
        ("the same expiry set again", |s| {
            s.set_expire(b"k", Some(clock() + 20_000)).unwrap();
            s.set_expire(b"k", Some(clock() + 20_000)).unwrap();
        }),
        ("deleted and written back", |s| {
            s.delete(b"k").unwrap();
            s.put(b"k", b"v", None).unwrap();
        }),
    ];
    for (what, write) in writes {
        let v = s.version(b"k");
        write(&mut s);
        assert!(!unchanged(&s, b"k", v), "{what}");
    }
    // Absent then: created and deleted again, or created and expired.
    s.delete(b"k").unwrap();
    let v = s.version(b"k");
    s.put(b"k", b"v", None).unwrap();
    s.delete(b"k").unwrap();
    assert!(!unchanged(&s, b"k", v), "came and went");
    let v = s.version(b"k");
    s.put(b"k", b"v", Some(clock() + 5)).unwrap();
    advance(10);
    assert!(!unchanged(&s, b"k", v), "came and expired");
    // Expired when watched and still: unchanged.
    let v = s.version(b"k");
    assert!(unchanged(&s, b"k", v));
    // ... and then deleted (a DEL, or expiry removing it): unchanged, as in Redis 7.
    s.delete(b"k").unwrap();
    assert!(unchanged(&s, b"k", v), "an expired value deleted");
    // Expired when watched, then written again, expired and deleted: changed.
    s.put(b"k", b"v", Some(clock() + 5)).unwrap();
    advance(10);
    let v = s.version(b"k");
    s.put(b"k", b"w", Some(clock() + 5)).unwrap();
    advance(10);
    s.delete(b"k").unwrap();
    assert!(
        !unchanged(&s, b"k", v),
        "written again, expired and deleted"
    );
    // A present key that expires.
    s.put(b"k", b"v", Some(clock() + 5)).unwrap();
    let v = s.version(b"k");
    advance(10);
    assert!(!unchanged(&s, b"k", v), "expired");
    // A clear changes the keys it deletes, as FLUSHALL does in Redis: not a key absent then
    // and still absent, but one present then, or one that came after the version.
    s.delete(b"k").unwrap();
    let v = s.version(b"k");
    s.clear().unwrap();
    assert!(unchanged(&s, b"k", v), "absent, and cleared");
    s.put(b"k", b"v", None).unwrap();
    let v = s.version(b"k");
    s.clear().unwrap();
    assert!(!unchanged(&s, b"k", v), "present, and cleared");
    let v = s.version(b"k");
    s.put(b"k", b"v", None).unwrap();
    s.clear().unwrap();
    assert!(!unchanged(&s, b"k", v), "created, then cleared");
    let v = s.version(b"k");
    s.put(b"k", b"v", None).unwrap();
    s.delete(b"k").unwrap();
    s.clear().unwrap();
    assert!(!unchanged(&s, b"k", v), "came and went, then cleared");
    // More deletes than the store remembers count for absent keys.
    let v = s.version(b"k");
    for i in 0..=simplekv_engine::RECENT_TOUCHES {
        let key = format!("d{i}");
        s.put(key.as_bytes(), b"x", None).unwrap();
        s.delete(key.as_bytes()).unwrap();
    }
    assert!(!unchanged(&s, b"k", v), "deletes forgotten");
    // A reopen forgets.
    s.put(b"k", b"v", None).unwrap();
    let v = s.version(b"k");
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path());
    assert!(!unchanged(&s, b"k", v), "reopened");
    let v = s.version(b"k");
    assert!(unchanged(&s, b"k", v));
}

/// A hint job reads its segment with plain reads: a follower's truncation may shrink the file
/// while the job walks it (a map would fault, SIGBUS, at the pages cut off). Found by a code
/// review. The hint of a whole segment lists every record; a segment cut mid-record gets no
/// hint (a partial one would hide the records past the cut at the next open).
#[test]
fn a_hint_job_describes_its_segment_and_survives_the_file_shrinking() {
    use simplekv_engine::hint;
    let dir = tempfile::tempdir().unwrap();
    let one_segment = Options {
        segment_size: 1 << 20,
        ..opts()
    };
    let mut s = Store::open(dir.path(), one_segment).unwrap();
    for i in 0..100u32 {
        s.put(format!("k{i}").as_bytes(), &[b'v'; 300], None)
            .unwrap();
    }
    s.commit().unwrap();
    s.roll().unwrap();
    let jobs = s.take_hint_jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    job.run().unwrap();
    let bytes = std::fs::read(&job.hint).unwrap();
    let entries = hint::decode_all(&bytes, job.file_id).expect("a valid hint");
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[99].key, b"k99");
    // Cut in the middle of the 51st record.
    let len = std::fs::metadata(&job.segment).unwrap().len();
    let cut = entries[50].offset as u64 + 10;
    assert!(cut < len);
    std::fs::remove_file(&job.hint).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&job.segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    assert!(job.run().is_err(), "the segment ends inside a record");
    assert!(
        !job.hint.exists(),
        "no hint for a segment that does not check out"
    );
}

/// Found by a code review: a failed fsync reloads the store, and records the turn had only
/// buffered (not yet written) went with the reload while the turn's commit then found nothing
/// to write and succeeded: the clients were answered OK for writes that were gone.
#[test]
fn records_buffered_when_an_fsync_fails_fail_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = everysec_in_background(dir.path());
    s.put(b"a", b"1", None).unwrap();
    s.commit().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ticket = s.take_background_sync().unwrap().expect("due");
    // The next turn's write, still in the buffer when the fsync's failure comes back.
    s.put(b"b", b"2", None).unwrap();
    let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
    assert!(s.sync_done(&ticket, Err(enospc)).is_err());
    assert!(!s.is_failed(), "not EIO: the store reloaded and goes on");
    assert!(
        matches!(s.commit_write(), Err(WriteError::BatchDropped(_))),
        "the turn that lost its record fails"
    );
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    s.put(b"c", b"3", None).unwrap();
    s.commit().unwrap();
}

/// The change tap (keyspace notifications) says what each local write did to its key: a
/// put over nothing, a live value or an expired one, a delete of a live or an expired value,
/// an expiry set or cleared. Nothing is recorded while it is off, nor for writes that did
/// nothing.
#[test]
fn the_change_tap_records_what_each_write_did_to_its_key() {
    use simplekv_engine::{Change, ChangeKind, Prior};
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.put(b"before", b"v", None).unwrap();
    let mut got = Vec::new();
    s.take_changes(&mut got);
    assert!(got.is_empty(), "off by default");
    s.set_change_tap(true);
    s.put(b"a", b"1", None).unwrap();
    s.put(b"a", b"2", Some(clock() + 10)).unwrap();
    s.set_expire(b"a", None).unwrap();
    s.set_expire(b"a", Some(clock() + 10)).unwrap();
    assert!(!s.set_expire(b"missing", Some(1)).unwrap());
    advance(20);
    s.put(b"a", b"3", None).unwrap();
    s.put(b"b", b"x", Some(clock() + 5)).unwrap();
    advance(10);
    s.delete(b"b").unwrap();
    s.delete(b"a").unwrap();
    assert!(!s.delete(b"never").unwrap());
    s.take_changes(&mut got);
    let kinds: Vec<(&[u8], ChangeKind)> = got.iter().map(|c| (&c.key[..], c.kind)).collect();
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "in the order written"
    );
    use ChangeKind::*;
    assert_eq!(
        kinds,
        vec![
            (
                &b"a"[..],
                Set {
                    prior: Prior::Absent
                }
            ),
            (b"a", Set { prior: Prior::Live }),
            (b"a", Persist),
            (b"a", Expire),
            (
                b"a",
                Set {
                    prior: Prior::Expired
                }
            ),
            (
                b"b",
                Set {
                    prior: Prior::Absent
                }
            ),
            (b"b", Deleted { was_visible: false }),
            (b"a", Deleted { was_visible: true }),
        ]
    );
    let mut again: Vec<Change> = Vec::new();
    s.take_changes(&mut again);
    assert!(again.is_empty(), "taken once");
    s.set_change_tap(false);
    s.put(b"c", b"1", None).unwrap();
    s.take_changes(&mut again);
    assert!(again.is_empty());
}
