//! Recovery of a damaged last segment (`simplekv_engine::Store::open`).
//!
//! Each input writes a small partition with a real `Store` (puts, deletes, expiry changes,
//! clears, rolls, leader epochs; 4 KiB segments so several exist), optionally writes the hint
//! files of the closed segments, then damages the last segment file in one of three ways:
//!
//! - mode 0: XOR bytes at fuzzer-chosen offsets (header included);
//! - mode 1: truncate it to a fuzzer-chosen length;
//! - mode 2: truncate it, then append fuzzer-chosen garbage (a torn write).
//!
//! and reopens it. Expected, with `k` = the records that end before the first damaged byte
//! (all records of earlier segments included), checked against a model of what was written:
//!
//! - damage inside the 64-byte segment header is an error (a damaged header is never guessed
//!   at), except a file cut shorter than the header, which holds no record and is dropped;
//! - otherwise `open` succeeds, the visible state (every key's value and expiry, the key
//!   count, what a full SCAN returns) is exactly the model after the first `k` records, the
//!   log ends at LSN `k`, the report counts `k` records and the bytes cut from the tail, and
//!   the leader-epoch cache keeps only epochs that start before `k`;
//! - the recovered store takes new writes (with or without a roll in between), and reopening
//!   it gives them on top of the same state with nothing more cut.
//!
//! A damaged record that still decodes (a CRC collision the fuzzer constructed) cannot be
//! told from a good one by any reader; such inputs are skipped. So are damaged segment headers
//! that still decode (magic and CRC check: the fuzzer rewrote bytes 20..64, CRC included, with
//! a torn write, and libFuzzer's comparison tracing hands it the right CRC) and name the same
//! base as the file name: they are valid headers.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use simplekv_engine::record::{self, RecordIter, Tag};
use simplekv_engine::segment::{SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_name};
use simplekv_engine::{Durability, Options, Store};

const NOW: u64 = 1_700_000_000_000;

/// `SKV_FUZZ_TRACE=1` prints what an input does (for turning a crash into a test).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SKV_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if tracing() {
            eprintln!($($t)*);
        }
    };
}

fn clock() -> u64 {
    NOW
}

fn opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Never,
        clock,
        ..Options::default()
    }
}

/// The partition directory of this process, on tmpfs when there is one. Created by
/// `Store::open` and removed after every input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("simplekv-fuzz-recovery-{}", std::process::id()))
    })
}

const KEYS: &[&[u8]] = &[
    b"",
    b"a",
    b"b",
    b"key-c",
    b"\x00\xff",
    b"a-much-longer-key-over-22-bytes",
];

#[derive(Clone, Debug)]
struct Rec {
    tag: Tag,
    key: Vec<u8>,
    value: Vec<u8>,
    expire: u64,
}

/// key -> (value, expire): what the keydir holds (expired keys included).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn apply(m: &mut Model, r: &Rec) {
    match r.tag {
        Tag::Put => {
            m.insert(r.key.clone(), (r.value.clone(), r.expire));
        }
        Tag::Delete => {
            m.remove(&r.key);
        }
        Tag::Expire => {
            if let Some(e) = m.get_mut(&r.key) {
                e.1 = r.expire;
            }
        }
        Tag::Clear => m.clear(),
    }
}

fn visible(expire: u64) -> bool {
    expire == 0 || expire > NOW
}

fn expiry(u: &mut Unstructured<'_>) -> ArbResult<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 => 0,
        2 => NOW - 1 - u64::from(u.arbitrary::<u16>()?),
        _ => NOW + 1 + u64::from(u.arbitrary::<u16>()?),
    })
}

/// Epoch entries as `LeaderEpochCache::assign` keeps them.
fn assign(epochs: &mut Vec<(u32, u64)>, epoch: u32, start: u64) {
    if epochs.last().is_some_and(|&(e, _)| epoch <= e) {
        return;
    }
    epochs.retain(|&(_, s)| s < start);
    epochs.push((epoch, start));
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().into_string().ok()?;
            parse_segment_name(&name).map(|b| (b, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Checks the visible state of `s` against the model.
fn check_state(s: &Store, m: &Model, what: &str) {
    assert_eq!(s.len(), m.len(), "{what}: key count (expired included)");
    for k in KEYS {
        let want = m.get(*k).filter(|(_, e)| visible(*e));
        let got = s
            .get(k)
            .unwrap_or_else(|e| panic!("{what}: read of {k:?} failed: {e}"));
        assert_eq!(
            got.as_ref(),
            want.map(|(v, _)| v),
            "{what}: value of key {k:?}"
        );
        let meta = s.meta(k);
        assert_eq!(
            meta.map(|m| m.expire),
            want.map(|&(_, e)| (e != 0).then_some(e)),
            "{what}: expiry of key {k:?}"
        );
        assert_eq!(s.exists(k), want.is_some());
    }
    let mut scanned = BTreeSet::new();
    let mut cursor = 0;
    let mut rounds = 0;
    loop {
        cursor = s.scan(cursor, 3, |k| {
            scanned.insert(k.to_vec());
        });
        rounds += 1;
        assert!(rounds < 10_000, "{what}: scan does not terminate");
        if cursor == 0 {
            break;
        }
    }
    let want: BTreeSet<Vec<u8>> = m
        .iter()
        .filter(|(_, (_, e))| visible(*e))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        scanned, want,
        "{what}: SCAN returns keys that were not written"
    );
}

fn run(u: &mut Unstructured<'_>, dir: &Path) -> ArbResult<()> {
    // ---- write a log
    let mut store = Store::open(dir, opts()).expect("open a fresh partition");
    let mut state = Model::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut epochs: Vec<(u32, u64)> = Vec::new();
    let mut next_epoch = 1u32;
    let n_ops = u.int_in_range(1..=20u8)?;
    for _ in 0..n_ops {
        let key = u.choose(KEYS)?.to_vec();
        let rec = match u.int_in_range(0..=9u8)? {
            0..=4 => {
                // Mostly small values, sometimes over a segment (the segment grows for it).
                let len = match u.int_in_range(0..=7u8)? {
                    0 => usize::from(u.arbitrary::<u16>()? % 6000),
                    1..=3 => usize::from(u.arbitrary::<u16>()? % 1500),
                    _ => usize::from(u.arbitrary::<u8>()? % 40),
                };
                let seed = u.arbitrary::<u8>()?;
                let value: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect();
                let expire = expiry(u)?;
                let e = (expire != 0).then_some(expire);
                store.put(&key, &value, e).expect("put");
                Some(Rec {
                    tag: Tag::Put,
                    key,
                    value,
                    expire,
                })
            }
            5 => {
                let present = state.contains_key(&key);
                let was_visible = state.get(&key).is_some_and(|(_, e)| visible(*e));
                assert_eq!(store.delete(&key).expect("delete"), was_visible);
                present.then(|| Rec {
                    tag: Tag::Delete,
                    key,
                    value: Vec::new(),
                    expire: 0,
                })
            }
            6 => {
                let expire = expiry(u)?;
                let vis = state.get(&key).is_some_and(|(_, e)| visible(*e));
                let e = (expire != 0).then_some(expire);
                assert_eq!(store.set_expire(&key, e).expect("expire"), vis);
                vis.then(|| Rec {
                    tag: Tag::Expire,
                    key,
                    value: Vec::new(),
                    expire,
                })
            }
            7 => {
                store.clear().expect("clear");
                Some(Rec {
                    tag: Tag::Clear,
                    key: Vec::new(),
                    value: Vec::new(),
                    expire: 0,
                })
            }
            8 => {
                trace!("op: roll");
                store.roll().expect("roll");
                None
            }
            _ => {
                let lsn = recs.len() as u64;
                trace!("op: begin epoch {next_epoch} at LSN {lsn}");
                store.begin_epoch(next_epoch).expect("begin epoch");
                assign(&mut epochs, next_epoch, lsn);
                next_epoch += u32::from(u.int_in_range(1..=2u8)?);
                None
            }
        };
        if let Some(r) = &rec {
            trace!(
                "op: {:?} key {:?} value {} bytes expire {} -> LSN {}",
                r.tag,
                r.key,
                r.value.len(),
                r.expire,
                recs.len()
            );
        }
        if let Some(r) = rec {
            apply(&mut state, &r);
            recs.push(r);
        }
        if u.ratio(1, 3)? {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
    assert_eq!(store.log_end(), recs.len() as u64);
    check_state(&store, &state, "before damage");
    if u.arbitrary::<bool>()? {
        for job in store.take_hint_jobs() {
            trace!("hint job: {}", job.hint.display());
            job.run().expect("hint job");
        }
    }
    drop(store);

    // ---- the files hold exactly the records written, LSN 0.. in order
    let segs = segments(dir);
    let mut all = Vec::new(); // (segment index, offset, end) per record
    for (i, (base, path)) in segs.iter().enumerate() {
        let bytes = fs::read(path).expect("read segment");
        let body = &bytes[SEGMENT_HEADER_LEN..];
        let mut it = RecordIter::new(body);
        for (off, r) in it.by_ref() {
            let lsn = all.len() as u64;
            assert_eq!(r.header.lsn, lsn, "segment {base}: LSNs not consecutive");
            assert!(lsn >= *base);
            let w = &recs[lsn as usize];
            assert_eq!(
                (r.header.tag, r.key, r.value),
                (w.tag, &w.key[..], &w.value[..])
            );
            assert_eq!(r.header.expire, w.expire);
            let start = SEGMENT_HEADER_LEN + off;
            all.push((i, start, start + r.header.record_len()));
        }
        assert_eq!(
            it.error(),
            None,
            "segment {base} has a bad record before damage"
        );
    }
    assert_eq!(all.len(), recs.len(), "records missing from the files");
    let (last_base, last_path) = segs.last().expect("a segment exists").clone();
    let last_idx = segs.len() - 1;
    let orig = fs::read(&last_path).expect("read last segment");
    let in_earlier = all.iter().filter(|r| r.0 < last_idx).count();
    assert_eq!(in_earlier as u64, last_base);

    // ---- damage the last segment
    let mode = u.int_in_range(0..=2u8)?;
    let mut bytes = orig.clone();
    match mode {
        0 => {
            let n = u.int_in_range(1..=4u8)?;
            for _ in 0..n {
                let off = usize::from(u.arbitrary::<u16>()?) % bytes.len();
                bytes[off] ^= u.int_in_range(1..=255u8)?;
            }
        }
        _ => {
            let cut = u.arbitrary::<u16>()? as usize % (bytes.len() + 1);
            bytes.truncate(cut);
            if mode == 2 {
                let n = u.int_in_range(1..=200usize)?;
                let garbage = u.bytes(n)?;
                if record::decode(garbage).is_ok() {
                    return Ok(()); // a valid record is not garbage
                }
                bytes.extend_from_slice(garbage);
            }
        }
    }
    // First damaged byte: first difference, or the cut.
    let first_bad = orig
        .iter()
        .zip(&bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(orig.len().min(bytes.len()));
    let kept_last: Vec<_> = all
        .iter()
        .filter(|r| r.0 == last_idx && r.2 <= first_bad)
        .collect();
    // The record holding the first damaged byte must not decode any more, or nobody can
    // tell it is damaged.
    if let Some(hit) = all.iter().find(|r| r.0 == last_idx && r.2 > first_bad)
        && let Some(rest) = bytes.get(hit.1..)
        && let Ok(r) = record::decode(rest)
        && r.header.lsn >= (in_earlier + kept_last.len()) as u64
    {
        return Ok(());
    }
    trace!(
        "segments {:?}; damage mode {mode} to {} ({} -> {} bytes), first damaged byte {first_bad}",
        segs.iter().map(|s| s.0).collect::<Vec<_>>(),
        last_path.display(),
        orig.len(),
        bytes.len()
    );
    fs::write(&last_path, &bytes).expect("write damaged segment");

    let header_damaged = first_bad < SEGMENT_HEADER_LEN && bytes.len() >= SEGMENT_HEADER_LEN;
    // A damaged header that is still a valid header of this file cannot be told from a good one.
    if header_damaged
        && let Ok(h) = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN])
        && h.base == last_base
    {
        trace!("damaged header still decodes: {h:?}; skipped");
        return Ok(());
    }
    let header_torn = bytes.len() < SEGMENT_HEADER_LEN;
    let k = in_earlier + if header_torn { 0 } else { kept_last.len() };
    let kept_end = kept_last.last().map_or(SEGMENT_HEADER_LEN, |r| r.2);

    // ---- reopen
    let reopened = Store::open(dir, opts());
    if header_damaged {
        assert!(
            reopened.is_err(),
            "a damaged segment header (byte {first_bad}) was accepted"
        );
        return Ok(());
    }
    let store = reopened.unwrap_or_else(|e| {
        panic!("open failed although only the tail past byte {first_bad} was damaged: {e}")
    });
    let mut want = Model::new();
    for r in &recs[..k] {
        apply(&mut want, r);
    }
    check_state(&store, &want, "after recovery");
    assert_eq!(store.log_end(), k as u64, "log end after recovery");
    let report = store.recovery_report().clone();
    assert_eq!(report.records, k as u64, "records recovered");
    let cut = if header_torn {
        0
    } else {
        (bytes.len() - kept_end) as u64
    };
    assert_eq!(report.truncated_tail_bytes, cut, "bytes cut from the tail");
    let want_epochs: Vec<(u32, u64)> = epochs
        .iter()
        .copied()
        .filter(|&(_, s)| s < k as u64)
        .collect();
    let got_epochs: Vec<(u32, u64)> = store
        .epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_lsn))
        .collect();
    assert_eq!(got_epochs, want_epochs, "leader-epoch cache after recovery");

    // ---- the recovered log takes writes (in the recovered segment and, after a roll, in a
    // new one) and reopens to exactly them, with nothing more cut. The hint jobs of the rolls
    // are not run: a crash may always come before them.
    trace!("recovered: k = {k}, report {:?}", store.recovery_report());
    let mut store = store;
    let key = u.choose(KEYS)?.to_vec();
    trace!("put {key:?} = after");
    store.put(&key, b"after", None).expect("put after recovery");
    want.insert(key, (b"after".to_vec(), 0));
    if u.arbitrary::<bool>()? {
        trace!("roll after recovery");
        store.roll().expect("roll after recovery");
    }
    let key = u.choose(KEYS)?.to_vec();
    trace!("put {key:?} = after-2");
    store
        .put(&key, b"after-2", None)
        .expect("put after recovery");
    want.insert(key, (b"after-2".to_vec(), 0));
    store.commit().expect("commit after recovery");
    check_state(&store, &want, "after recovery and writes");
    drop(store);
    trace!(
        "after the writes: segments {:?}",
        segments(dir)
            .iter()
            .map(|(b, p)| (*b, fs::metadata(p).map_or(0, |m| m.len())))
            .collect::<Vec<_>>()
    );
    let store = Store::open(dir, opts()).expect("reopen after recovery");
    trace!("reopened: report {:?}", store.recovery_report());
    check_state(&store, &want, "reopened after recovery and writes");
    assert_eq!(store.log_end(), k as u64 + 2);
    assert_eq!(store.recovery_report().truncated_tail_bytes, 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = fs::remove_dir_all(dir);
    let _ = run(&mut Unstructured::new(data), dir);
    let _ = fs::remove_dir_all(dir);
});
