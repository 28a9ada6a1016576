//! Write batches: the records a partition takes between two hand-overs of its buffer to the
//! OS (one event-loop turn of the server, so every command's records: an MSET's keys, a
//! transaction's writes) stay whole. A torn batch is dropped whole on open, a batch never
//! spans segments, replication reads whole batches, and a truncation never keeps part of one.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use simplekv_engine::record::{self, MORE};
use simplekv_engine::segment::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use simplekv_engine::{Durability, Options, Store};

#[path = "support/files.rs"]
mod files;
use files::{copy_dir, records_with_batch_bits, segments, truncate_file};

use proptest::collection::vec;
use proptest::prelude::*;

fn opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Never,
        write_batches: true,
        ..Options::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn val(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 13) as usize)).into_bytes()
}

/// Writes `keys` as one batch (one commit).
fn put_batch(s: &mut Store, keys: std::ops::Range<u64>) {
    for i in keys {
        s.put(&key(i), &val(i), None).unwrap();
    }
    s.commit().unwrap();
}

/// Only the last record of each committed batch lacks `MORE`.
#[test]
fn each_commit_ends_one_batch_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    put_batch(&mut s, 0..1);
    put_batch(&mut s, 1..4);
    s.delete(&key(0)).unwrap();
    s.set_expire(&key(1), Some(u64::MAX / 2)).unwrap();
    s.commit().unwrap();
    drop(s);
    let more: Vec<bool> = records_with_batch_bits(&segments(dir.path())[0])
        .iter()
        .map(|r| r.3)
        .collect();
    assert_eq!(more, [false, true, true, false, true, false]);
}

/// A batch whose end never reached the disk is dropped whole, wherever the tear is: at a
/// record boundary (every record whole, the batch unfinished) or inside a record.
#[test]
fn a_batch_torn_before_its_last_record_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    put_batch(&mut s, 0..2);
    // One batch: five puts, a delete of key 0 and an overwrite of key 1.
    for i in 2..7 {
        s.put(&key(i), &val(i), None).unwrap();
    }
    s.delete(&key(0)).unwrap();
    s.put(&key(1), b"changed", None).unwrap();
    s.commit().unwrap();
    drop(s);
    let seg = segments(dir.path())[0].clone();
    let recs = records_with_batch_bits(&seg);
    assert_eq!(recs.len(), 9);
    let batch_start = recs[2].0;
    let end = fs::metadata(&seg).unwrap().len();
    let last = recs[8];
    let mut cuts: Vec<u64> = recs[3..].iter().map(|r| r.0).collect();
    cuts.extend([last.0 + 1, last.0 + 33, end - 1]);
    for cut in cuts {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        truncate_file(&copy.path().join(seg.file_name().unwrap()), cut);
        let s = open(copy.path());
        assert_eq!(s.log_end(), 2, "cut at {cut}");
        assert_eq!(s.get(&key(0)).unwrap(), Some(val(0)), "cut at {cut}");
        assert_eq!(s.get(&key(1)).unwrap(), Some(val(1)), "cut at {cut}");
        for i in 2..7 {
            assert_eq!(s.get(&key(i)).unwrap(), None, "cut at {cut}: key {i}");
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.recovery_report().truncated_tail_bytes, cut - batch_start);
        drop(s);
        assert_eq!(
            fs::metadata(copy.path().join(seg.file_name().unwrap()))
                .unwrap()
                .len(),
            batch_start
        );
        // The next batch takes the dropped LSNs and survives another open.
        let mut s = open(copy.path());
        put_batch(&mut s, 10..12);
        assert_eq!(s.log_end(), 4);
        drop(s);
        let s = open(copy.path());
        assert_eq!(s.log_end(), 4);
        assert_eq!(s.get(&key(11)).unwrap(), Some(val(11)));
    }
    // Whole, the batch is all there.
    let s = open(dir.path());
    assert_eq!(s.log_end(), 9);
    assert_eq!(s.get(&key(0)).unwrap(), None);
    assert_eq!(s.get(&key(1)).unwrap(), Some(b"changed".to_vec()));
    assert_eq!(s.len(), 6);
}

/// A batch larger than a segment stays in one segment; the roll comes after it.
#[test]
fn a_batch_never_spans_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    put_batch(&mut s, 0..1);
    // About 40 KiB in one batch, ten times the segment size.
    for i in 1..401 {
        s.put(&key(i), &[b'v'; 64], None).unwrap();
    }
    s.commit().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    put_batch(&mut s, 401..402);
    drop(s);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "the next batch rolls");
    let first = records_with_batch_bits(&segs[0]);
    assert_eq!(first.len(), 401);
    assert!(!first.last().unwrap().3);
    let s = open(dir.path());
    assert_eq!(s.log_end(), 402);
    assert_eq!(s.len(), 402);
}

/// Replication reads whole batches whatever the byte budget, so a follower's log (and the
/// high watermark over it) ends only between batches; the follower's copy is byte for byte
/// the leader's, `MORE` bits included.
#[test]
fn replication_reads_and_appends_whole_batches() {
    let ldir = tempfile::tempdir().unwrap();
    let fdir = tempfile::tempdir().unwrap();
    let mut leader = open(ldir.path());
    put_batch(&mut leader, 0..30);
    put_batch(&mut leader, 30..31);
    put_batch(&mut leader, 31..60);
    let mut follower = open(fdir.path());
    follower.set_replica(true);
    let mut counts = Vec::new();
    let mut from = 0;
    while from < leader.log_end() {
        let b = leader.read_records(from, 1).unwrap();
        counts.push(b.count);
        follower.append_records(&b.bytes).unwrap();
        follower.commit().unwrap();
        from = b.next_lsn;
    }
    assert_eq!(counts, [30, 1, 29]);
    // A read starting inside a batch takes the rest of it.
    assert_eq!(leader.read_records(40, 1).unwrap().count, 20);
    assert_eq!(follower.log_end(), 60);
    drop((leader, follower));
    let l = fs::read(&segments(ldir.path())[0]).unwrap();
    let f = fs::read(&segments(fdir.path())[0]).unwrap();
    assert_eq!(l[SEGMENT_HEADER_LEN..], f[SEGMENT_HEADER_LEN..]);
}

/// A follower told to cut inside a batch cuts at the batch's start, and the log end says so.
#[test]
fn a_truncation_inside_a_batch_cuts_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    put_batch(&mut s, 0..10);
    put_batch(&mut s, 10..20);
    put_batch(&mut s, 20..25);
    s.truncate_to(15).unwrap();
    assert_eq!(s.log_end(), 10);
    assert_eq!(s.get(&key(9)).unwrap(), Some(val(9)));
    assert_eq!(s.get(&key(10)).unwrap(), None);
    // At a batch boundary the cut is exact.
    put_batch(&mut s, 30..35);
    assert_eq!(s.log_end(), 15);
    s.truncate_to(10).unwrap();
    assert_eq!(s.log_end(), 10);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.log_end(), 10);
    assert_eq!(s.len(), 10);
}

/// The commit journal's copy of a turn's records is the log's, the batch's end included: a
/// replay after a crash writes the same bytes.
#[test]
fn the_journal_copy_of_a_batch_matches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(
        dir.path(),
        Options {
            durability: Durability::Always,
            ..opts()
        },
    )
    .unwrap();
    s.set_journal_tap(true);
    for i in 0..5 {
        s.put(&key(i), &val(i), None).unwrap();
    }
    assert!(s.commit_write().unwrap());
    let tap = s.journal_records().to_vec();
    let log = fs::read(&segments(dir.path())[0]).unwrap();
    assert_eq!(tap, log[SEGMENT_HEADER_LEN..]);
    let last = record::RecordIter::new(&tap).last().unwrap().1;
    assert!(!last.header.more);
    assert_eq!(tap[tap.len() - last.header.record_len() + 24] & MORE, 0);
    // Replayed on a log that lost the batch, the records come back as one whole batch.
    let other = tempfile::tempdir().unwrap();
    let mut r = open(other.path());
    assert_eq!(r.replay_journal(&tap).unwrap(), 5);
    drop(r);
    let again = fs::read(&segments(other.path())[0]).unwrap();
    assert_eq!(again[SEGMENT_HEADER_LEN..], log[SEGMENT_HEADER_LEN..]);
}

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn dump(s: &Store) -> State {
    let mut keys = Vec::new();
    let mut c = 0;
    loop {
        c = s.scan(c, 16, |k| keys.push(k.to_vec()));
        if c == 0 {
            break;
        }
    }
    keys.into_iter()
        .map(|k| {
            let v = s.get(&k).unwrap().expect("scanned key has a value");
            (k, v)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Batches of puts and deletes, then a tear at any byte of the last segment: the log
    /// reopens at the end of the last batch wholly before the tear, with exactly the state
    /// the model had there.
    #[test]
    fn a_tear_anywhere_leaves_exactly_the_whole_batches_before_it(
        batches in vec(vec((0u8..12, prop::option::of(vec(any::<u8>(), 0..300))), 1..8), 1..30),
        at in 0.0f64..=1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let mut model = State::new();
        let mut states = BTreeMap::from([(0u64, model.clone())]);
        for b in &batches {
            for (k, v) in b {
                let k = key(u64::from(*k));
                match v {
                    Some(v) => {
                        s.put(&k, v, None).unwrap();
                        model.insert(k, v.to_vec());
                    }
                    None => {
                        s.delete(&k).unwrap();
                        model.remove(&k);
                    }
                }
            }
            s.commit().unwrap();
            states.insert(s.log_end(), model.clone());
        }
        drop(s);
        let last = segments(dir.path()).last().unwrap().clone();
        let base = segment::parse_segment_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
        let len = fs::metadata(&last).unwrap().len();
        let header = SEGMENT_HEADER_LEN as u64;
        let cut = header + ((len - header) as f64 * at) as u64;
        // The end of the last batch wholly before the cut (or where the segment starts).
        let mut expect_end = base;
        for (off, lsn, rec_len, more) in records_with_batch_bits(&last) {
            if !more && off + rec_len <= cut {
                expect_end = lsn + 1;
            }
        }
        truncate_file(&last, cut);
        let s = open(dir.path());
        prop_assert_eq!(s.log_end(), expect_end);
        let want = states.get(&expect_end).expect("the log ends where a batch ended");
        prop_assert_eq!(&dump(&s), want);
    }
}

/// The error of an open that must fail.
fn refusal(r: Result<Store, simplekv_engine::OpenError>, what: &str) -> simplekv_engine::OpenError {
    match r {
        Ok(_) => panic!("{what}: the store opened"),
        Err(e) => e,
    }
}

fn rewrite_format(path: &Path, format: u8) {
    let mut b = fs::read(path).unwrap();
    let mut h = SegmentHeader::decode(&b).unwrap();
    h.format = format;
    b[..SEGMENT_HEADER_LEN].copy_from_slice(&h.encode());
    fs::write(path, b).unwrap();
}

/// Records with `MORE` never go into a file of format 1 (a build that knows only format 1
/// would read the bit as damage and, in the last segment, cut it as a torn tail): a format 1
/// active segment with records is closed at open, an empty one gets a format 2 header; a
/// format newer than the build's is refused, naming it.
#[test]
fn batches_never_go_into_a_segment_of_the_older_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(
        dir.path(),
        Options {
            write_batches: false,
            ..opts()
        },
    )
    .unwrap();
    put_batch(&mut s, 0..3);
    drop(s);
    let first = segments(dir.path())[0].clone();
    rewrite_format(&first, 1);
    let mut s = open(dir.path());
    put_batch(&mut s, 3..6);
    drop(s);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "the format 1 segment was closed");
    let format = |p: &Path| SegmentHeader::decode(&fs::read(p).unwrap()).unwrap().format;
    assert_eq!(format(&segs[0]), 1);
    assert_eq!(format(&segs[1]), segment::SEGMENT_FORMAT);
    assert!(records_with_batch_bits(&segs[0]).iter().all(|r| !r.3));
    let s = open(dir.path());
    assert_eq!(s.len(), 6);
    drop(s);
    // An empty format 1 segment is rewritten in place.
    let empty = tempfile::tempdir().unwrap();
    drop(open(empty.path()));
    let only = segments(empty.path())[0].clone();
    rewrite_format(&only, 1);
    drop(open(empty.path()));
    assert_eq!(segments(empty.path()), std::slice::from_ref(&only));
    assert_eq!(format(&only), segment::SEGMENT_FORMAT);
    // A newer format is refused.
    rewrite_format(&only, segment::SEGMENT_FORMAT + 1);
    let err = refusal(Store::open(empty.path(), opts()), "refused").to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

/// Repairing damage in a closed segment cuts at the start of the batch the damage is in, not
/// at the damaged record: no part of a batch stays, and the log end is the same at the next
/// open (a shorter log at a later open would give LSNs out again).
#[test]
fn repair_of_a_closed_segment_keeps_no_part_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    put_batch(&mut s, 0..4);
    put_batch(&mut s, 10..15);
    s.roll().unwrap();
    put_batch(&mut s, 20..23);
    drop(s);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    // No hint: the segment is scanned (a hint would hide the damage until the value is read).
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            fs::remove_file(p).unwrap();
        }
    }
    let recs = records_with_batch_bits(&segs[0]);
    let (off, _, len, _) = recs[6];
    let mut b = fs::read(&segs[0]).unwrap();
    b[(off + len - 1) as usize] ^= 0xff;
    fs::write(&segs[0], b).unwrap();
    let refused = refusal(Store::open(dir.path(), opts()), "damage is refused");
    assert!(refused.to_string().contains(&off.to_string()), "{refused}");
    let repair = || {
        Store::open(
            dir.path(),
            Options {
                repair: true,
                ..opts()
            },
        )
        .unwrap()
    };
    let s = repair();
    assert_eq!(s.log_end(), 4);
    assert_eq!(s.len(), 4);
    assert_eq!(s.get(&key(10)).unwrap(), None);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.log_end(), 4, "the log end stays where repair left it");
    assert_eq!(s.len(), 4);
}
