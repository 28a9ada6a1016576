//! Recovery from damaged files: a torn or corrupt tail of the last segment is cut off and
//! everything before it survives; corruption in an older segment is refused (or repaired on
//! request); damaged or missing hint files only make recovery scan instead.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use simplekv_engine::record::HEADER_LEN;
use simplekv_engine::segment::{self, SEGMENT_HEADER_LEN};
use simplekv_engine::{Durability, OpenError, Options, ReadError, Store};

#[path = "support/files.rs"]
mod files;
use files::{copy_dir, records_with_batch_bits, segments, truncate_file};

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000_000) };
}

fn clock() -> u64 {
    NOW.with(|n| n.get())
}

fn opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Always,
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

/// Deterministic, binary, of varying length (0..=47 bytes); the last record gets 40.
fn value(i: u64) -> Vec<u8> {
    let len = (i * 7 % 48) as usize;
    (0..len).map(|j| (i as usize * 31 + j * 17) as u8).collect()
}

/// Visible state: key -> (value, absolute expiry).
type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn dump(s: &Store) -> State {
    let mut keys = Vec::new();
    let mut c = 0;
    loop {
        c = s.scan(c, 7, |k| keys.push(k.to_vec()));
        if c == 0 {
            break;
        }
    }
    let n = keys.len();
    let state: State = keys
        .into_iter()
        .map(|k| {
            let v = s.get(&k).unwrap().expect("scanned key has a value");
            let e = s.meta(&k).expect("scanned key has metadata").expire;
            (k, (v, e))
        })
        .collect();
    assert_eq!(state.len(), n, "scan returned a key twice");
    state
}

/// (offset, lsn, length) of every record of a segment file.
fn records_of(path: &Path) -> Vec<(u64, u64, u64)> {
    records_with_batch_bits(path)
        .into_iter()
        .map(|(off, lsn, len, _)| (off, lsn, len))
        .collect()
}

fn flip_byte(path: &Path, at: u64) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= 0x5a;
    fs::write(path, b).unwrap();
}

/// Writes `n` records (`put(key(i), value(i))`, LSN i) with a commit after each, so several
/// segments exist; with `hints`, the hint files of closed segments are written too.
fn write_records(dir: &Path, n: u64, hints: bool) {
    let mut s = open(dir);
    for i in 0..n {
        let v = if i + 1 == n { vec![0xa5; 40] } else { value(i) };
        assert_eq!(s.put(&key(i), &v, None).unwrap(), i);
        s.commit().unwrap();
    }
    if hints {
        for j in s.take_hint_jobs() {
            j.run().unwrap();
        }
    }
}

fn expected_value(i: u64, n: u64) -> Vec<u8> {
    if i + 1 == n { vec![0xa5; 40] } else { value(i) }
}

/// Asserts that exactly the records with LSN < `upto` are present with their values.
fn assert_prefix(s: &Store, upto: u64, n: u64) {
    for i in 0..n {
        let got = s.get(&key(i)).unwrap();
        if i < upto {
            assert_eq!(
                got,
                Some(expected_value(i, n)),
                "record {i} lost or changed"
            );
        } else {
            assert_eq!(
                got, None,
                "record {i} at or past the damage is still visible"
            );
        }
    }
    assert_eq!(dump(s).len() as u64, upto);
    assert_eq!(s.log_end(), upto);
}

const N: u64 = 200;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    Corrupt,
}

fn check_every_offset_of_the_last_record(damage: Damage) {
    let orig = tempfile::tempdir().unwrap();
    write_records(orig.path(), N, true);
    let segs = segments(orig.path());
    assert!(
        segs.len() >= 3,
        "small segments must have rolled: {}",
        segs.len()
    );
    let last_seg = segs.last().unwrap().clone();
    let recs = records_of(&last_seg);
    let &(start, lsn, len) = recs.last().unwrap();
    assert_eq!(lsn, N - 1);
    assert_eq!(start + len, fs::metadata(&last_seg).unwrap().len());
    assert_eq!(len as usize, HEADER_LEN + key(0).len() + 40);
    let name = last_seg.file_name().unwrap();
    for at in start..start + len {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(orig.path(), copy.path());
        let target = copy.path().join(name);
        let expect_cut = match damage {
            Damage::Truncate => {
                truncate_file(&target, at);
                at - start
            }
            Damage::Corrupt => {
                flip_byte(&target, at);
                len
            }
        };
        let ctx = format!("{damage:?} at offset {at} (record at {start}, {len} bytes)");
        // A flipped byte of the key or value leaves the record whole, its checksum wrong:
        // damage (an fsync vouched for it), refused; repair cuts it as a torn tail was.
        let value_byte = at >= start + HEADER_LEN as u64;
        let mut s = match Store::open(copy.path(), opts()) {
            Ok(s) => {
                assert!(
                    !(value_byte && matches!(damage, Damage::Corrupt)),
                    "{ctx}: a whole last record with a flipped byte was cut as a torn tail"
                );
                assert_eq!(
                    s.recovery_report().truncated_tail_bytes,
                    expect_cut,
                    "{ctx}"
                );
                assert_eq!(s.recovery_report().repaired_bytes_dropped, 0, "{ctx}");
                s
            }
            Err(OpenError::CorruptSegment { offset, .. }) if matches!(damage, Damage::Corrupt) => {
                assert_eq!(offset, start, "{ctx}");
                let s = Store::open(
                    copy.path(),
                    Options {
                        repair: true,
                        ..opts()
                    },
                )
                .unwrap_or_else(|e| panic!("{ctx}: repair: {e}"));
                assert_eq!(s.recovery_report().repaired_bytes_dropped, len, "{ctx}");
                s
            }
            Err(e) => panic!("{ctx}: {e}"),
        };
        assert_prefix(&s, N - 1, N);
        assert_eq!(
            fs::metadata(&target).unwrap().len(),
            start,
            "{ctx}: the tail must be cut on disk"
        );
        // The log continues at the cut: the next write reuses the lost record's LSN.
        assert_eq!(s.put(b"after", b"recovery", None).unwrap(), N - 1, "{ctx}");
        s.commit().unwrap();
        drop(s);
        let s = open(copy.path());
        assert_eq!(s.recovery_report().truncated_tail_bytes, 0, "{ctx}");
        assert_eq!(
            s.get(b"after").unwrap().as_deref(),
            Some(&b"recovery"[..]),
            "{ctx}"
        );
        assert_eq!(s.log_end(), N, "{ctx}");
        for i in 0..N - 1 {
            assert_eq!(s.get(&key(i)).unwrap(), Some(value(i)), "{ctx}: record {i}");
        }
        assert_eq!(s.get(&key(N - 1)).unwrap(), None, "{ctx}");
    }
}

#[test]
fn a_last_record_truncated_at_any_byte_is_dropped_and_everything_before_survives() {
    check_every_offset_of_the_last_record(Damage::Truncate);
}

#[test]
fn a_last_record_corrupted_at_any_byte_is_refused_or_dropped_and_everything_before_survives() {
    check_every_offset_of_the_last_record(Damage::Corrupt);
}

#[test]
fn an_undamaged_directory_reports_no_truncation() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let s = open(dir.path());
    assert_eq!(s.recovery_report().truncated_tail_bytes, 0);
    assert_eq!(s.recovery_report().records, N);
    assert_prefix(&s, N, N);
}

/// A crash while a new segment is being created (between `create_new` and the header write)
/// leaves a last segment shorter than its header. It cannot hold a record: the header is
/// fsynced before any record is appended.
#[test]
fn a_last_segment_torn_inside_its_header_holds_nothing_and_open_succeeds() {
    let orig = tempfile::tempdir().unwrap();
    write_records(orig.path(), N, false);
    {
        let mut s = open(orig.path());
        s.roll().unwrap();
    }
    let last = segments(orig.path()).last().unwrap().clone();
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        SEGMENT_HEADER_LEN as u64
    );
    for len in 0..SEGMENT_HEADER_LEN as u64 {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(orig.path(), copy.path());
        truncate_file(&copy.path().join(last.file_name().unwrap()), len);
        let mut s = match Store::open(copy.path(), opts()) {
            Ok(s) => s,
            Err(e) => panic!("header torn at {len} bytes: {e}"),
        };
        assert_prefix(&s, N, N);
        assert_eq!(s.put(b"after", b"x", None).unwrap(), N);
        s.commit().unwrap();
        drop(s);
        assert_eq!(
            open(copy.path()).get(b"after").unwrap().as_deref(),
            Some(&b"x"[..])
        );
    }
}

/// Picks a record in the middle of the oldest segment: (segment path, offset, lsn).
fn victim(dir: &Path) -> (PathBuf, u64, u64) {
    let first = segments(dir)[0].clone();
    let recs = records_of(&first);
    assert!(recs.len() > 4);
    let (off, lsn, _) = recs[recs.len() / 2];
    (first, off, lsn)
}

#[test]
fn corruption_inside_an_older_segment_refuses_to_open_and_names_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let (path, off, _) = victim(dir.path());
    // A byte inside the value, and (separately) the tag byte of the record header.
    for at in [off + HEADER_LEN as u64 + 3, off + 24] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join(path.file_name().unwrap());
        flip_byte(&target, at);
        for use_hints in [false, true] {
            match Store::open(
                copy.path(),
                Options {
                    use_hints,
                    ..opts()
                },
            ) {
                Err(e @ OpenError::CorruptSegment { .. }) => {
                    let msg = e.to_string();
                    let OpenError::CorruptSegment { path, offset, .. } = e else {
                        unreachable!()
                    };
                    assert_eq!(path, target);
                    assert_eq!(offset, off, "the offset of the damaged record");
                    assert!(msg.contains(&target.display().to_string()), "{msg}");
                    assert!(msg.contains(&format!("byte {off}")), "{msg}");
                }
                Err(e) => panic!("wrong error for corruption at {at}: {e}"),
                Ok(_) => panic!("opened despite corruption at {at} of an older segment"),
            }
        }
        // Refusing must not have changed any file.
        assert_eq!(
            fs::read(&target).unwrap().len(),
            fs::read(&path).unwrap().len()
        );
    }
}

#[test]
fn repair_drops_everything_from_a_corrupt_record_in_an_older_segment_on() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let (path, off, lsn) = victim(dir.path());
    flip_byte(&path, off + HEADER_LEN as u64 + 3);
    let mut s = match Store::open(
        dir.path(),
        Options {
            repair: true,
            ..opts()
        },
    ) {
        Ok(s) => s,
        Err(e) => panic!("repair refused to open: {e}"),
    };
    assert!(s.recovery_report().repaired_bytes_dropped > 0);
    assert_prefix(&s, lsn, N);
    assert_eq!(
        segments(dir.path()),
        vec![path.clone()],
        "later segments are dropped"
    );
    assert_eq!(s.put(b"after", b"repair", None).unwrap(), lsn);
    s.commit().unwrap();
    drop(s);
    // Repaired once, the directory opens without repair.
    let s = open(dir.path());
    assert_eq!(s.recovery_report().repaired_bytes_dropped, 0);
    assert_eq!(s.get(b"after").unwrap().as_deref(), Some(&b"repair"[..]));
    for i in 0..lsn {
        assert_eq!(s.get(&key(i)).unwrap(), Some(value(i)), "record {i}");
    }
    assert_eq!(s.log_end(), lsn + 1);
}

#[test]
fn a_value_corrupted_under_a_valid_hint_is_reported_on_read_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, true);
    let (path, off, lsn) = victim(dir.path());
    flip_byte(&path, off + HEADER_LEN as u64 + key(lsn).len() as u64 + 1);
    let s = open(dir.path());
    assert!(s.recovery_report().segments_from_hints >= 1);
    assert!(matches!(s.get(&key(lsn)), Err(ReadError::Corrupt { .. })));
    for i in (0..N).filter(|&i| i != lsn) {
        assert_eq!(
            s.get(&key(i)).unwrap(),
            Some(expected_value(i, N)),
            "record {i}"
        );
    }
}

/// A log with overwrites, deletes, expiries and a clear over several segments, hint files
/// written for every closed one.
fn write_rich_log(dir: &Path) {
    let mut s = open(dir);
    let now = clock();
    for round in 0..6u64 {
        for i in 0..40u64 {
            let k = format!("k{}", i % 23).into_bytes();
            match (round + i) % 5 {
                0 => {
                    s.delete(&k).unwrap();
                }
                1 => {
                    s.set_expire(&k, Some(now + 1_000_000 + i)).unwrap();
                }
                2 => {
                    s.put(&k, &value(round * 40 + i), Some(now + 5_000_000))
                        .unwrap();
                }
                _ => {
                    s.put(&k, &value(round * 40 + i), None).unwrap();
                }
            }
        }
        if round == 2 {
            s.clear().unwrap();
        }
        s.commit().unwrap();
    }
    s.roll().unwrap();
    for j in s.take_hint_jobs() {
        j.run().unwrap();
    }
}

#[test]
fn damaged_or_missing_hint_files_fall_back_to_scanning_with_the_same_result() {
    let orig = tempfile::tempdir().unwrap();
    write_rich_log(orig.path());
    let segs = segments(orig.path());
    let closed = segs.len() - 1;
    assert!(closed >= 3, "{closed} closed segments");
    let reference = {
        let s = Store::open(
            orig.path(),
            Options {
                use_hints: false,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(s.recovery_report().segments_from_hints, 0);
        dump(&s)
    };
    assert!(!reference.is_empty());
    {
        let s = open(orig.path());
        assert_eq!(s.recovery_report().segments_from_hints, closed);
        assert_eq!(dump(&s), reference);
    }
    let hint_of = |p: &Path| p.with_extension("hint");
    type Damager = fn(&Path, &Path);
    let damages: [(&str, Damager); 7] = [
        ("missing", |h, _| fs::remove_file(h).unwrap()),
        ("empty", |h, _| fs::write(h, b"").unwrap()),
        ("truncated to half", |h, _| {
            let len = fs::metadata(h).unwrap().len();
            truncate_file(h, len / 2);
        }),
        ("last byte cut", |h, _| {
            let len = fs::metadata(h).unwrap().len();
            truncate_file(h, len - 1);
        }),
        ("header byte flipped", |h, _| flip_byte(h, 9)),
        ("entry byte flipped", |h, _| {
            let len = fs::metadata(h).unwrap().len();
            flip_byte(h, len - 3);
        }),
        ("hint of another segment", |h, other| {
            fs::copy(other, h).unwrap();
        }),
    ];
    for (what, damage) in damages {
        for i in 0..closed {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(orig.path(), copy.path());
            let h = copy.path().join(hint_of(&segs[i]).file_name().unwrap());
            let other = copy
                .path()
                .join(hint_of(&segs[(i + 1) % closed]).file_name().unwrap());
            damage(&h, &other);
            let s = open(copy.path());
            assert_eq!(
                s.recovery_report().segments_from_hints,
                closed - 1,
                "hint {what} of segment {i} must be ignored, the others used"
            );
            assert_eq!(dump(&s), reference, "hint {what} of segment {i}");
        }
    }
}

/// Found by a black-box run: one flipped byte inside a record of the last segment, with whole
/// records after it, was taken for a torn tail: recovery cut everything from there on, silently
/// dropping later records (acknowledged ones, with `fsync = always`). That is damage inside
/// the log, refused as in an older segment unless repair is asked for; a last record damaged
/// with nothing after it is still a torn tail (tests above).
#[test]
fn a_flipped_byte_with_whole_records_after_it_in_the_last_segment_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let last = segments(dir.path()).last().unwrap().clone();
    let recs = records_of(&last);
    assert!(recs.len() >= 3, "the last segment holds several records");
    let (off, lsn, _) = recs[recs.len() - 3];
    let len_before = fs::metadata(&last).unwrap().len();
    // The value's bytes (a checksum mismatch) of a record two before the end.
    flip_byte(&last, off + HEADER_LEN as u64 + key(0).len() as u64);
    match Store::open(dir.path(), opts()) {
        Err(e @ OpenError::CorruptSegment { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("byte {off}")), "{msg}");
            assert!(msg.contains("storage.repair"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened, dropping the records after the damage"),
    }
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        len_before,
        "nothing cut"
    );
    // With repair: everything from the damaged record on goes, loudly.
    let s = Store::open(
        dir.path(),
        Options {
            repair: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(s.recovery_report().repaired_bytes_dropped > 0);
    assert_eq!(s.recovery_report().truncated_tail_bytes, 0);
    assert_prefix(&s, lsn, N);
}

fn open_repair(dir: &Path) -> Store {
    Store::open(
        dir,
        Options {
            repair: true,
            ..opts()
        },
    )
    .unwrap()
}

fn refused_as_damage(dir: &Path, what: &str) {
    match Store::open(dir, opts()) {
        Err(OpenError::CorruptSegment { .. }) | Err(OpenError::MissingRecords { .. }) => {}
        Err(e) => panic!("{what}: wrong error: {e}"),
        Ok(_) => panic!("{what}: opened, dropping or losing records silently"),
    }
}

/// Found by a black-box run after the fix above: a flip in the tag or a length of a record in
/// the last segment made the next record's position unknown, and the damage was still cut as a
/// torn tail. Recovery now looks for any whole record after the damage.
#[test]
fn a_flipped_tag_or_length_inside_the_last_segment_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let last = segments(dir.path()).last().unwrap().clone();
    let recs = records_of(&last);
    let (off, lsn, _) = recs[recs.len() - 3];
    // The tag (24), the key length's low byte (25) and the value length's (29).
    for (at, flip) in [(24, 0x80u8), (25, 0x01), (29, 0x01), (29, 0x10)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join(last.file_name().unwrap());
        let mut b = fs::read(&target).unwrap();
        b[(off + at) as usize] ^= flip;
        fs::write(&target, b).unwrap();
        refused_as_damage(copy.path(), &format!("byte {at} ^ {flip:#x}"));
        let s = open_repair(copy.path());
        assert_prefix(&s, lsn, N);
    }
}

/// Found by a storage torture run: a record whose value holds zeros (512 aligned bytes or
/// more) with a flipped length bit lost its framing, and the zeros between it and the next
/// record looked like a power loss's torn write: the records after it were dropped silently.
/// A record whose checksum matches once a length is taken from where the next record starts
/// (or whose length fields lead there) is damage, refused.
#[test]
fn a_flipped_length_of_a_value_of_zeros_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(
        dir.path(),
        Options {
            segment_size: 1 << 20,
            ..opts()
        },
    )
    .unwrap();
    s.put(b"zeros", &[0u8; 4096], None).unwrap();
    s.commit().unwrap();
    for i in 1..20 {
        s.put(&key(i), &value(i), None).unwrap();
        s.commit().unwrap();
    }
    drop(s);
    let last = segments(dir.path()).last().unwrap().clone();
    let off = records_of(&last)[0].0;
    // Value length, key length, tag (put to expire), the LSN.
    for (at, flip) in [
        (29, 0x01u8),
        (29, 0x40),
        (30, 0x01),
        (25, 0x01),
        (24, 0x02),
        (4, 0x01),
    ] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join(last.file_name().unwrap());
        let mut b = fs::read(&target).unwrap();
        b[(off + at) as usize] ^= flip;
        fs::write(&target, b).unwrap();
        refused_as_damage(copy.path(), &format!("byte {at} ^ {flip:#x}"));
    }
    // The same zeros cut by a torn write (the record's end and everything after missing)
    // are a torn tail, as before.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let target = copy.path().join(last.file_name().unwrap());
    truncate_file(&target, off + 2000);
    let s = Store::open(copy.path(), opts()).unwrap();
    assert_eq!(s.log_end(), 0);
}

/// Blocks of zeros before whole records are what a power loss leaves when the device wrote a
/// later page of a write and not an earlier one: still a torn write (records never synced,
/// so never acknowledged with fsync always), cut as before.
#[test]
fn a_zeroed_block_before_later_records_of_the_last_segment_is_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 300, false);
    let last = segments(dir.path()).last().unwrap().clone();
    let recs = records_of(&last);
    let block = recs[0].0.next_multiple_of(512);
    let (first_hit, lsn, _) = *recs
        .iter()
        .find(|(o, _, l)| o + l > block)
        .expect("a record over the block");
    assert!(
        recs.last().unwrap().0 > block + 512,
        "records after the block"
    );
    let mut b = fs::read(&last).unwrap();
    let len_before = b.len() as u64;
    b[block as usize..block as usize + 512].fill(0);
    fs::write(&last, b).unwrap();
    let s = open(dir.path());
    assert_eq!(
        s.recovery_report().truncated_tail_bytes,
        len_before - first_hit
    );
    assert_eq!(fs::metadata(&last).unwrap().len(), first_hit);
    assert_prefix(&s, lsn, 300);
}

/// The first segment file deleted: the log used to start silently at the next one's base,
/// every value of the lost file gone. A log starts at LSN 0 unless its first segment says
/// its start was cut on purpose.
#[test]
fn the_first_segment_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, true);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let second_base = records_of(&segs[1])[0].1;
    fs::remove_file(&segs[0]).unwrap();
    let _ = fs::remove_file(segs[0].with_extension("hint"));
    match Store::open(dir.path(), opts()) {
        Err(OpenError::MissingRecords { from, last, .. }) => {
            assert_eq!((from, last), (0, second_base - 1));
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened without the first segment"),
    }
    let s = open_repair(dir.path());
    assert_eq!(s.log_start(), second_base);
    assert_eq!(s.get(&key(N - 1)).unwrap(), Some(expected_value(N - 1, N)));
    drop(s);
    // A log whose start was cut on purpose (its first segment says so) opens as it is.
    for (dropped_below, opens) in [(5, true), (0, false)] {
        let cut = tempfile::tempdir().unwrap();
        let header = segment::SegmentHeader {
            base: 5,
            covered_end: 0,
            file_id: 1,
            dropped_below,
            format: segment::SEGMENT_FORMAT,
        };
        fs::write(segment::segment_path(cut.path(), 5), header.encode()).unwrap();
        match Store::open(cut.path(), opts()) {
            Ok(s) => {
                assert!(opens, "a log missing LSN 0 to 4 opened");
                assert_eq!((s.log_start(), s.log_end()), (5, 5));
            }
            Err(e) => assert!(!opens, "refused: {e}"),
        }
    }
}

/// Found by the same run: a segment file deleted from the middle of the log (or cut below its
/// header, which recovery removes as holding nothing) silently undid the deletes and
/// overwrites it held. The LSNs between two segments must follow on.
#[test]
fn a_segment_missing_from_the_middle_of_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, true);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let first_lost = records_of(victim)[0].1;
    for cut in [None, Some(0u64), Some(30)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let target = copy.path().join(victim.file_name().unwrap());
        match cut {
            None => fs::remove_file(&target).unwrap(),
            Some(len) => truncate_file(&target, len),
        }
        match Store::open(copy.path(), opts()) {
            Err(e @ OpenError::MissingRecords { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("LSN {first_lost} to")), "{msg}");
                assert!(msg.contains("storage.repair"), "{msg}");
            }
            Err(e) => panic!("{cut:?}: wrong error: {e}"),
            Ok(_) => panic!("{cut:?}: opened with a segment missing"),
        }
        let s = open_repair(copy.path());
        assert_prefix(&s, first_lost, N);
    }
}

/// A whole, checksummed record out of LSN order in the last segment (a file out of place) is
/// no torn write either.
#[test]
fn records_out_of_lsn_order_in_the_last_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), N, false);
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    // Append a copy of the first segment's first record (LSN 0) to the last segment.
    let (off, _, len) = records_of(&segs[0])[0];
    let first = fs::read(&segs[0]).unwrap()[off as usize..(off + len) as usize].to_vec();
    let mut b = fs::read(last).unwrap();
    b.extend_from_slice(&first);
    fs::write(last, b).unwrap();
    match Store::open(dir.path(), opts()) {
        Err(e @ OpenError::CorruptSegment { .. }) => {
            assert!(e.to_string().contains("LSN 0 does not follow"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened, cutting a whole record as a torn tail"),
    }
}

/// Found by a black-box run: damage to a record whose value holds 512 or more zero bytes was
/// taken for a torn write (the value's zeros looked like unwritten blocks) and cut, with the
/// records after it. A damaged record whose header leads right to a whole record is damage,
/// whatever its value holds; records a commit journal replays after opening are cut, since
/// the replay brings them back.
#[test]
fn damage_to_a_record_of_zeros_is_refused_unless_a_journal_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(
            dir.path(),
            Options {
                segment_size: 1 << 20,
                ..opts()
            },
        )
        .unwrap();
        s.put(b"a", &[b'A'; 100], None).unwrap();
        s.put(b"b", &[0u8; 8192], None).unwrap();
        s.put(b"c", &[b'C'; 50], None).unwrap();
        s.commit().unwrap();
    }
    let last = segments(dir.path()).last().unwrap().clone();
    let recs = records_of(&last);
    let (off_b, lsn_b, _) = recs[1];
    flip_byte(&last, off_b); // its checksum
    let big = |o: Options| Options {
        segment_size: 1 << 20,
        ..o
    };
    match Store::open(dir.path(), big(opts())) {
        Err(OpenError::CorruptSegment { offset, .. }) => assert_eq!(offset, off_b),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened, cutting b and c silently"),
    }
    let s = Store::open(
        dir.path(),
        big(Options {
            journaled_from: Some(lsn_b),
            ..opts()
        }),
    )
    .unwrap();
    assert_eq!(s.log_end(), lsn_b, "cut at b, for the journal to replay");
    assert!(s.recovery_report().truncated_tail_bytes > 0);
}

/// A torn last record is cut whichever of its 512-byte blocks the crash left unwritten (read
/// as zeros), the first one it shares with the record before it and the last one it shares
/// with the space after it included; with every block written, a flipped byte in any of them
/// is damage, refused.
#[test]
fn a_last_record_with_a_block_unwritten_is_torn_and_with_a_flipped_byte_is_damage() {
    let orig = tempfile::tempdir().unwrap();
    let (seg, start, len, n) = {
        let mut s = open(orig.path());
        let mut n = 0;
        loop {
            assert!(n < 200, "no record crossed a block boundary");
            s.put(&key(n), &[7u8; 300], None).unwrap();
            s.commit().unwrap();
            n += 1;
            let last = segments(orig.path()).last().unwrap().clone();
            if let Some(&(start, _, len)) = records_of(&last).last()
                && start / 512 != (start + len - 1) / 512
                && start % 512 != 0
            {
                break (last, start, len, n);
            }
        }
    };
    let end = start + len;
    let name = seg.file_name().unwrap();
    let mut block = start - start % 512;
    while block < end {
        let (a, b) = (block.max(start), (block + 512).min(end));
        // Unwritten: the record's part of the block reads as zeros.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(orig.path(), copy.path());
        let path = copy.path().join(name);
        let mut bytes = fs::read(&path).unwrap();
        bytes[a as usize..b as usize].fill(0);
        fs::write(&path, &bytes).unwrap();
        let ctx = format!("block {block}: record at {start}..{end}");
        let s = Store::open(copy.path(), opts()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(s.recovery_report().truncated_tail_bytes, len, "{ctx}");
        assert_eq!(s.get(&key(n - 1)).unwrap(), None, "{ctx}");
        assert_eq!(s.get(&key(n - 2)).unwrap(), Some(vec![7u8; 300]), "{ctx}");
        drop(s);
        // Written, a byte flipped: damage.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(orig.path(), copy.path());
        let path = copy.path().join(name);
        flip_byte(&path, b - 1);
        match Store::open(copy.path(), opts()) {
            Err(OpenError::CorruptSegment { offset, .. }) => assert_eq!(offset, start, "{ctx}"),
            Err(e) => panic!("{ctx}: {e}"),
            Ok(_) => panic!("{ctx}: a flipped byte of a whole last record was cut"),
        }
        block += 512;
    }
}
